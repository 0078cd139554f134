"""Errors that are the user's to fix (a bad file, a wrong path, a run folder in use, a full disk).

Every ``handprop`` command reports a :class:`UserError` in one line on stderr, exit code 2, without a
traceback (``handprop_jax.cli.main``); modules raise subclasses that name the file, the field or the
step concerned. Imports nothing of ours (first in the layering, with ``config``).
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path


class UserError(Exception):
    """Bad input or a state of the user's files that the user can fix; the message says what and
    where (and, where there is one, what to do)."""


class InterruptedRun(KeyboardInterrupt):
    """A command stopped by Ctrl-C (SIGINT); the message is the one line to print (e.g. "interrupted
    at step N of phase stage1; re-run the same command to resume")."""


def disk_full(error: BaseException | None) -> OSError | None:
    """The ``OSError`` with errno ENOSPC/EDQUOT in ``error``'s cause/context chain, else None (orbax and
    tensorstore wrap the original error: their message becomes an ENOSPC ``OSError`` naming the file
    their message names last, e.g. ``[Errno 28] No space left on device: '.../ocdbt.process_0/d/...'``)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        for code, text in ((errno.ENOSPC, "No space left on device"), (errno.EDQUOT, "Disk quota exceeded")):
            if text in str(error):
                if isinstance(error, OSError):
                    return error
                files = re.findall(r'"(/[^"]+)"', str(error).split(text)[0])
                return OSError(code, text, files[-1]) if files else OSError(code, str(error))
        error = error.__cause__ or error.__context__
    return None


def writable_dir(path: str | Path, what: str) -> Path:
    """``path`` as a folder that can be created or written (checked before any work); raises
    :class:`UserError` naming it and ``what`` (the option, e.g. ``--out``) when it is a file, lies
    under a file, or is not writable."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: {probe} is not writable")
    return path


def numbers(value, where: str, error: type[Exception] = UserError, depth: int = 3):
    """``value`` (decoded JSON, or an array read from .npy/.npz) as a float64 numpy array, strictly:
    only ints and floats are numbers — ``true``/``false``, strings ("1.0"), null and objects are
    refused (``error`` naming ``where``), as are lists nested deeper than ``depth`` and ragged ones.
    The one reader of the numbers a user gives (labels, intrinsics, boxes)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise error(f"{where}: expected numbers, got an array of {value.dtype} (booleans, strings and "
                        "objects are not numbers)")
        return value.astype(np.float64)
    stack = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, list | tuple):
            if level >= depth:
                raise error(f"{where}: nested deeper than expected (at most {depth} levels of lists)")
            stack.extend((v, level + 1) for v in item)
        elif isinstance(item, bool) or not isinstance(item, int | float | np.integer | np.floating):
            raise error(f"{where}: {_short(item)} is not a number (booleans, strings and null are not "
                        "numbers)")
    try:
        with np.errstate(all="ignore"):
            return np.asarray(value, np.float64)
    except (ValueError, TypeError, OverflowError) as e:
        raise error(f"{where}: not a rectangular array of numbers") from e


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: JAX's call of the XLA compiler (file suffix, function). jaxlib polls for Ctrl-C while XLA compiles
#: and, when Python's handler raises, returns at once with the compilation still running in a detached
#: C++ thread; the interpreter's exit then destroys what that thread uses and the process dies after
#: its last line ("pure virtual method called", "terminate called", SIGABRT/SIGSEGV, issue 27 item 3).
#: tests/test_ctrl_c_train.py checks that the function still exists under this name.
XLA_COMPILE = ("jax/_src/compiler.py", "backend_compile_and_load")


def compiling(frame) -> bool:
    """Whether ``frame`` (the main thread's frame a signal handler receives) or a caller of it is JAX
    running the XLA compiler (:data:`XLA_COMPILE`)."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == XLA_COMPILE[1] and code.co_filename.replace(os.sep, "/").endswith(XLA_COMPILE[0]):
            return True
        frame = frame.f_back
    return False


class Interrupts:
    """Ctrl-C (SIGINT) that a callback cannot swallow: the handler counts every SIGINT before it raises
    ``KeyboardInterrupt`` as Python's own does, so when JAX's garbage-collection callback (or any
    ``__del__``) catches that exception ("Exception ignored in ..."), :meth:`check` still raises
    :class:`InterruptedRun` at the next safe point. Inside :meth:`deferred` a SIGINT is only counted
    (a step that must not be cut in two, e.g. the swap of results) and raised when the step is done.
    While XLA compiles (:func:`compiling`) a SIGINT is only counted too: cutting the compilation short
    leaves it running in a C++ thread that crashes the process at exit, so the Ctrl-C takes effect at
    the first :meth:`check` after the compilation. Use :func:`watch_interrupts` to install it."""

    def __init__(self) -> None:
        self.count = 0
        self._defer = 0

    def handler(self, signum, frame) -> None:
        self.count += 1
        if not self._defer and not compiling(frame):
            raise KeyboardInterrupt

    def check(self, message: str = "interrupted") -> None:
        """Raise InterruptedRun(message) when a SIGINT arrived (even one whose exception was lost)."""
        if self.count:
            raise InterruptedRun(message)

    def deferred(self, message: str = "interrupted"):
        import contextlib

        @contextlib.contextmanager
        def block():
            self._defer += 1
            try:
                yield
            finally:
                self._defer -= 1
            self.check(message)
        return block()


def watch_interrupts():
    """Context manager: installs an :class:`Interrupts` handler for SIGINT (restored on exit) and
    yields it; outside the main thread (where Python cannot install one) it yields an instance that
    never sees a signal."""
    import contextlib
    import signal
    import threading

    @contextlib.contextmanager
    def watch():
        watcher = Interrupts()
        if threading.current_thread() is not threading.main_thread():
            yield watcher
            return
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started with Ctrl-C ignored (nohup, &)
            yield watcher
            return
        previous = signal.signal(signal.SIGINT, watcher.handler)
        try:
            yield watcher
        finally:
            signal.signal(signal.SIGINT, previous)
    return watch()


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user counts as alive); the
    owner checks of the run lock and of propagate's interrupted swaps."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
