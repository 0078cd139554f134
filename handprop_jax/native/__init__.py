"""Compiled XLA FFI handlers (C++), built on first use with the system C++ compiler.

One source file, ``conv_cols.cc``: the bfloat16 im2col column builders of the ``"bf16_cols"``
CPU convolution (:mod:`handprop_jax.model.conv_cols`). It is compiled with ``-O3 -march=native``
against the XLA FFI headers that ship with jaxlib (``jax.ffi.include_dir()``) into
``$HANDPROP_CACHE/native`` (default ``~/.cache/handprop/native``), keyed by a hash of the source,
the compiler command, the jax version and this CPU's feature flags, so a rebuild happens only
when one of those changes. The compiler is ``$CXX`` or ``c++``.

:func:`load` compiles if needed, loads the library and registers its handlers with XLA for the
CPU platform; it raises :class:`NativeBuildError` naming the command and the compiler's output
when that is not possible. :func:`available` says whether it worked, without raising.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import jax

SOURCE = Path(__file__).with_name("conv_cols.cc")

# XLA FFI target name -> symbol in the library.
TARGETS = {
    "handprop_im2col_bf16": "HandpropIm2colBf16",
    "handprop_kernel_bf16": "HandpropKernelBf16",
    "handprop_transpose_bf16": "HandpropTransposeBf16",
    "handprop_col2im_f32": "HandpropCol2imF32",
}

_lock = threading.Lock()
_loaded: ctypes.CDLL | None = None


class NativeBuildError(RuntimeError):
    """The C++ handlers could not be compiled or loaded (message names the command and output)."""


def cache_dir() -> Path:
    root = os.environ.get("HANDPROP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "handprop")
    return Path(root) / "native"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compile_command(output: Path) -> list[str]:
    cxx = os.environ.get("CXX") or "c++"
    return [cxx, "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC",
            "-isystem", jax.ffi.include_dir(), str(SOURCE), "-o", str(output)]


def library_path() -> Path:
    """Where the compiled library for this source, compiler, jax and CPU lives."""
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    key.update(" ".join(compile_command(Path("out.so"))).encode())
    key.update(jax.__version__.encode())
    key.update(_cpu_flags().encode())
    return cache_dir() / f"handprop_conv_cols_{key.hexdigest()[:16]}.so"


def build(force: bool = False) -> Path:
    """Compile ``conv_cols.cc`` unless an up-to-date library is cached; returns its path."""
    target = library_path()
    if target.exists() and not force:
        return target
    cmd0 = compile_command(target)
    if shutil.which(cmd0[0]) is None:
        raise NativeBuildError(f"no C++ compiler {cmd0[0]!r} on PATH (set $CXX) to build {SOURCE}")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Compile to a private name and rename: several processes (pytest -n 2) may build at once.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = compile_command(Path(tmp))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise NativeBuildError(f"building {SOURCE} failed (exit {proc.returncode}):\n  "
                                   f"{' '.join(cmd)}\n{proc.stderr.strip()}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load() -> ctypes.CDLL:
    """Build (if needed), load and register the handlers with XLA:CPU, once per process."""
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        try:
            lib = ctypes.cdll.LoadLibrary(str(build()))
            for name, symbol in TARGETS.items():
                jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
        except (OSError, AttributeError) as e:
            raise NativeBuildError(f"loading the handlers built from {SOURCE} failed: {e}") from e
        _loaded = lib
        return lib


def available() -> tuple[bool, str]:
    """(True, "") when :func:`load` works here, else (False, the reason)."""
    try:
        load()
        return True, ""
    except NativeBuildError as e:
        return False, str(e)
