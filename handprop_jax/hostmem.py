"""Transparent huge pages for malloc'd host memory (glibc), for XLA:CPU's per-run buffers.

XLA:CPU allocates the temporary buffers of every executable run afresh (hundreds of MB for a
64 px train step) and frees them when the run ends; glibc returns such large blocks to the
kernel, so each step touches them for the first time again: ~77,000 minor page faults (4 KiB
pages) per 64 px batch-64 stage-1 step. glibc's ``glibc.malloc.hugetlb=1`` tunable makes malloc
ask for transparent huge pages (2 MiB, ``madvise``): 400-700 faults per step and the
``bf16_cols`` stage-1 step 194-206 -> 227-230 img/s on this 2-core CPU (interleaved
``benchmarks/train_step.py`` runs, its page-fault column; README "Malloc huge pages"). PyTorch's
step is slower with it, so benchmarks run the PyTorch reference without it.

glibc reads tunables only when a process starts, so :func:`reexec_with_hugepages` re-executes
the current command line (``sys.orig_argv``) once with ``GLIBC_TUNABLES`` extended by
``glibc.malloc.hugetlb=1``. The ``handprop`` command and the benchmarks call it first thing. It
does nothing when the tunable is already there, when ``HANDPROP_HUGEPAGES=0``, off Linux/glibc
(the tunable needs glibc >= 2.35), or when transparent huge pages are disabled ("never").
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
ORIGINAL = "HANDPROP_ORIGINAL_GLIBC_TUNABLES"  # what GLIBC_TUNABLES was before the re-execution
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _glibc_supports_hugetlb() -> bool:
    if sys.platform != "linux":
        return False
    lib, version = platform.libc_ver()
    if lib != "glibc":
        return False
    try:
        major, minor = (int(v) for v in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 35)


def _thp_enabled(setting_file: Path = THP_SETTING) -> bool:
    """True when the kernel's transparent huge pages are "always" or "madvise" (not "never")."""
    try:
        text = setting_file.read_text()
    except OSError:
        return False
    return "[never]" not in text and "[" in text


def hugepage_env(environ: dict[str, str]) -> dict[str, str] | None:
    """The environment to re-execute with, or None when no re-execution is wanted."""
    if environ.get("HANDPROP_HUGEPAGES", "1") == "0":
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb=" in tunables:
        return None
    new = dict(environ)
    new["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    new[ORIGINAL] = tunables
    return new


def original_environ(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment as it was before :func:`reexec_with_hugepages`, for child processes that
    should not inherit the tunable (the PyTorch reference: its step measured ~15% slower with it,
    177-181 vs 148-160 img/s at 64 px, batch 64)."""
    env = dict(os.environ if environ is None else environ)
    if ORIGINAL in env:
        original = env.pop(ORIGINAL)
        if original:
            env["GLIBC_TUNABLES"] = original
        else:
            env.pop("GLIBC_TUNABLES", None)
    return env


def reexec_with_hugepages(execve: Callable[..., None] = os.execve, supported: bool | None = None) -> bool:
    """Re-execute this process with malloc's huge pages on (see the module docstring).

    Returns False when nothing was done; otherwise ``execve`` does not return (the parameters are
    for tests: ``execve(path, argv, env)`` and whether this platform supports the tunable).
    """
    if supported is None:
        supported = _glibc_supports_hugetlb() and _thp_enabled()
    env = hugepage_env(dict(os.environ)) if supported else None
    argv = list(getattr(sys, "orig_argv", []) or [])
    if env is None or not argv:
        return False
    sys.stdout.flush()
    sys.stderr.flush()
    execve(sys.executable, argv, env)
    return True
