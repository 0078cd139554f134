"""Transparent huge pages for malloc'd host memory (glibc), for XLA:CPU's per-step buffers.

XLA:CPU allocates the temporary buffers of every executable run afresh (hundreds of MB for a
64 px train step) and frees them when the run ends; glibc returns such large blocks to the
kernel, so each step touches them for the first time again: tens of thousands of minor page faults
(4 KiB pages) per training step. glibc's ``glibc.malloc.hugetlb=1`` tunable makes malloc ask for
transparent huge pages (2 MiB, ``madvise``), which removes almost all of them; the measured effect
on the CPU train step is in docs/benchmarks.md ("Malloc huge pages"). PyTorch's step is slower with
it, so the benchmarks run the PyTorch reference without it.

Where it is applied — only where it pays: processes that train on the XLA:CPU backend, i.e.
``handprop train`` and ``handprop demo`` (the other commands — data, evaluate, propagate, visualize
— do not re-execute), and the train-step benchmarks (``benchmarks/train_step.py``,
``benchmarks/profile_step.py``); and not when a GPU/TPU backend is requested
(:func:`accelerator_requested`: ``JAX_PLATFORMS`` naming one first, or, when it is unset, an
installed accelerator plugin whose device node exists — decided without importing JAX).

glibc reads tunables only when a process starts, so :func:`reexec_with_hugepages` re-executes
the current command line (``sys.orig_argv``) once with ``GLIBC_TUNABLES`` extended by
``glibc.malloc.hugetlb=1``. It does nothing when the tunable is already there, when
``HANDPROP_HUGEPAGES=0`` (the off switch), off Linux/glibc (the tunable needs glibc >= 2.35), when
transparent huge pages are disabled ("never"), or when an accelerator is requested.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
#: ``handprop`` sub-commands whose process trains on XLA:CPU (the only ones that re-execute)
PAYING_COMMANDS = ("train", "demo")
# accelerator backends: (their JAX plugin packages, a device file that exists when the hardware does)
_ACCELERATORS = ((("jax_cuda12_plugin", "jax_cuda13_plugin"), ("/dev/nvidiactl",)),
                 (("jax_rocm60_plugin", "jax_rocm7_plugin"), ("/dev/kfd",)),
                 (("libtpu",), ("/dev/accel0", "/dev/vfio")))
ORIGINAL = "HANDPROP_ORIGINAL_GLIBC_TUNABLES"  # what GLIBC_TUNABLES was before the re-execution
HELD = "HANDPROP_SIGINT_HELD"  # set for the new process: SIGINT is blocked across the re-execution
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


def accelerator_requested(environ: dict[str, str] | None = None,
                          installed: Callable[[str], bool] | None = None,
                          exists: Callable[[str], bool] | None = None) -> bool:
    """Whether JAX will run on a GPU/TPU rather than the CPU, decided without importing JAX.

    ``JAX_PLATFORMS`` (or the older ``JAX_PLATFORM_NAME``), when set, decides by its first entry;
    otherwise an accelerator counts when its plugin package is installed and its device node exists
    (``installed``/``exists`` are for tests)."""
    environ = os.environ if environ is None else environ
    platforms = environ.get("JAX_PLATFORMS") or environ.get("JAX_PLATFORM_NAME") or ""
    first = platforms.split(",")[0].strip().lower()
    if first:
        return first != "cpu"
    installed = installed or (lambda name: importlib.util.find_spec(name) is not None)
    exists = exists or (lambda path: Path(path).exists())
    return any(any(map(installed, plugins)) and any(map(exists, nodes)) for plugins, nodes in _ACCELERATORS)


def command_pays_off(args: list[str]) -> bool:
    """Whether a ``handprop`` command line (without the program name) is a CPU training process that
    should run with malloc huge pages (:data:`PAYING_COMMANDS`, no accelerator requested)."""
    command = next((a for a in args if not a.startswith("-")), None)
    return command in PAYING_COMMANDS and not accelerator_requested()


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
    should not inherit the tunable (the PyTorch reference, whose step is slower with it)."""
    env = dict(os.environ if environ is None else environ)
    if ORIGINAL in env:
        original = env.pop(ORIGINAL)
        if original:
            env["GLIBC_TUNABLES"] = original
        else:
            env.pop("GLIBC_TUNABLES", None)
    return env


def reexec_with_hugepages(execve: Callable[..., None] = os.execve, supported: bool | None = None) -> bool:
    """Re-execute this process with malloc's huge pages on (see the module docstring). Call it only
    from processes that train on the CPU (:func:`command_pays_off`); it checks the rest itself.

    SIGINT is blocked across the re-execution (the signal mask and a pending signal survive
    ``execve``), so that a Ctrl-C in between does not kill the new interpreter before it has a handler:
    the new process calls :func:`release_held_interrupt` once its handler is installed.

    Returns False when nothing was done; otherwise ``execve`` does not return (the parameters are
    for tests: ``execve(path, argv, env)`` and whether the tunable is wanted and supported here).
    """
    import signal

    if supported is None:
        supported = _glibc_supports_hugetlb() and _thp_enabled() and not accelerator_requested()
    env = hugepage_env(dict(os.environ)) if supported else None
    argv = list(getattr(sys, "orig_argv", []) or [])
    if env is None or not argv:
        return False
    sys.stdout.flush()
    sys.stderr.flush()
    env[HELD] = "1"
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        execve(sys.executable, argv, env)
    finally:  # only where execve returned or failed
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return True


def release_held_interrupt() -> None:
    """In the process :func:`reexec_with_hugepages` started: unblock SIGINT (a Ctrl-C that arrived
    during the re-execution is delivered now, to the handler the caller installed first); elsewhere
    nothing."""
    import signal

    if os.environ.pop(HELD, None) is not None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
