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


def swallowing(frame) -> bool:
    """Whether ``frame`` or a caller of it is code whose exceptions Python reports and drops ("Exception
    ignored in ..."): a garbage-collector callback (``gc.callbacks``: JAX registers one) or a
    ``__del__`` finaliser. A KeyboardInterrupt raised there is printed as a traceback and lost."""
    import gc

    callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    while frame is not None:
        if frame.f_code in callbacks or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def importing(frame) -> bool:
    """Whether ``frame`` or a caller of it is Python importing a module. A KeyboardInterrupt raised
    inside an import can leave an extension module (numpy's, jaxlib's) half initialised: the import
    fails with an ImportError and a traceback, or the process crashes at exit (SIGSEGV)."""
    while frame is not None:
        if frame.f_globals.get("__name__") == "importlib._bootstrap":
            return True
        frame = frame.f_back
    return False


def unsafe_to_raise(frame) -> bool:
    """Whether a KeyboardInterrupt raised at ``frame`` would crash the process (:func:`compiling`,
    :func:`importing`) or be lost with a traceback (:func:`swallowing`)."""
    return compiling(frame) or importing(frame) or swallowing(frame)


class Interrupts:
    """Ctrl-C (SIGINT) that a callback cannot swallow: the handler counts every SIGINT before it raises
    ``KeyboardInterrupt`` as Python's own does, so when a callback catches that exception anyway,
    :meth:`check` still raises :class:`InterruptedRun` at the next safe point. Inside :meth:`deferred`
    a SIGINT is only counted (a step that must not be cut in two, e.g. the swap of results) and raised
    when the step is done. Where raising is unsafe (:func:`unsafe_to_raise`) it is only counted too:
    while XLA compiles (cutting the compilation short leaves it running in a C++ thread that crashes
    the process at exit), during an import (it breaks extension modules) and in a garbage-collector
    callback or ``__del__`` (the exception would be printed and lost). A watcher thread then waits for
    the main thread to leave that code and sends the SIGINT again, so the Ctrl-C takes effect right
    after it, in every command (and at the next :meth:`check` at the latest). Use
    :func:`watch_interrupts` to install it."""

    #: how often the watcher looks whether the main thread has left the unsafe code (seconds)
    POLL_S = 0.01

    def __init__(self) -> None:
        self.count = 0
        self._defer = 0
        self._held = False  # installed by hold_interrupts: only counting until watch_interrupts adopts it
        self._watcher = None  # the thread that waits to send the SIGINT again (one at a time)
        self._closed = False  # the handler is no longer installed: the watcher sends nothing

    def handler(self, signum, frame) -> None:
        self.count += 1
        if self._defer:
            return
        if unsafe_to_raise(frame):
            self._raise_later()
            return
        raise KeyboardInterrupt

    def _raise_later(self) -> None:
        """Start the thread that re-sends SIGINT to the main thread once it has left the code where
        raising is unsafe (:func:`unsafe_to_raise`; one thread at a time: the handler, which runs again
        then, raises or — inside another compilation — waits again)."""
        import signal
        import sys
        import threading
        import time

        if self._watcher is not None:
            return
        main = threading.main_thread().ident
        if main is None:
            return

        def wait() -> None:
            me = threading.current_thread()
            try:
                while not self._closed:
                    time.sleep(self.POLL_S)
                    frame = sys._current_frames().get(main)
                    if frame is None:  # the main thread has ended
                        return
                    if not unsafe_to_raise(frame):
                        break
                if not self._closed:
                    self._watcher = None  # the handler may need a new watcher (another compilation)
                    signal.pthread_kill(main, signal.SIGINT)
            finally:
                if self._watcher is me:  # never clear the flag of a watcher started after this one
                    self._watcher = None

        self._watcher = threading.Thread(target=wait, name="handprop-ctrl-c-later", daemon=True)
        self._watcher.start()

    def check(self, message: str = "interrupted") -> None:
        """Raise InterruptedRun(message) when a SIGINT arrived (even one whose exception was lost)."""
        if self.count:
            raise InterruptedRun(message)

    def settle(self) -> None:
        """From now on only count SIGINTs (the command has ended and says so; a second Ctrl-C must not
        cut that line or the interpreter's teardown short)."""
        self._defer += 1
        self._closed = True

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


def hold_interrupts() -> Interrupts:
    """Install an :class:`Interrupts` that only counts SIGINTs until :func:`watch_interrupts` adopts it
    (which raises a counted one then). For the ``handprop`` program's entry module
    (:mod:`handprop_jax.program`): pip's console script runs code of its own between importing the
    entry and calling it, where a KeyboardInterrupt would escape (exit −2)."""
    import signal
    import threading

    watcher = Interrupts()
    watcher._defer += 1
    watcher._held = True
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, watcher.handler)
    return watcher


def watch_interrupts():
    """Context manager: installs an :class:`Interrupts` handler for SIGINT and yields it; the previous
    handler is restored on exit. Where one is installed already it yields that one and installs
    nothing, and leaves it installed (``handprop_jax.cli.main`` installs one around every command, so a
    command's checks see every SIGINT since the program started); one that :func:`hold_interrupts`
    installed starts raising, and a SIGINT it held is raised on entry (the ``handprop`` program's: it
    stays installed, settled by ``cli.main``, while the interpreter exits). Outside the main thread
    (where Python cannot install one), and when the process was started with SIGINT ignored (nohup,
    ``&``), it yields an instance that never sees a signal."""
    import contextlib
    import signal
    import threading

    @contextlib.contextmanager
    def watch():
        current = signal.getsignal(signal.SIGINT)
        installed = getattr(current, "__self__", None)
        if isinstance(installed, Interrupts):
            if installed._held:
                installed._held = False
                installed._defer -= 1
                if installed.count:
                    raise KeyboardInterrupt
            yield installed
            return
        watcher = Interrupts()
        if threading.current_thread() is not threading.main_thread():
            yield watcher
            return
        if current is signal.SIG_IGN:  # started with Ctrl-C ignored (nohup, &)
            yield watcher
            return
        previous = signal.signal(signal.SIGINT, watcher.handler)
        try:
            yield watcher
        finally:
            watcher._closed = True
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
