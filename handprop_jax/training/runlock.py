"""One training process per run folder: an exclusive lock on ``workdir/.lock``.

``handprop train`` (``training.loop.train``) holds the lock while it runs; a second process on the
same folder is refused with :class:`WorkdirInUse` ("workdir ... in use by PID ..."). The lock is an
``flock`` on the file, which the kernel releases when its process ends however it ends (kill -9
included), so a lock left by a dead process is simply taken over; the file only records who holds it
(PID, host, command) for the message. Where ``flock`` is not supported (some network file
systems), the recorded PID decides: a live process on this host keeps the folder, a dead one's lock
is taken over.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
from pathlib import Path

from handprop_jax.errors import UserError, process_alive

LOCK_NAME = ".lock"


class WorkdirInUse(UserError):
    """Another live process trains in this run folder."""


def _holder(text: str) -> tuple[int | None, str, str]:
    lines = text.splitlines() + ["", "", ""]
    pid = int(lines[0]) if lines[0].strip().isdigit() else None
    return pid, lines[1], lines[2]


class WorkdirLock:
    """``with WorkdirLock(workdir): ...`` — see the module docstring."""

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, host, command = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            raise WorkdirInUse(self._message(pid, host, command)) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            pid, host, command = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            if pid is not None and pid != os.getpid() and host == socket.gethostname() and process_alive(pid):
                os.close(fd)
                raise WorkdirInUse(self._message(pid, host, command)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{socket.gethostname()}\n{' '.join(sys.argv)}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def _message(self, pid: int | None, host: str, command: str) -> str:
        who = f"PID {pid}" if pid is not None else "another process"
        where = f" on {host}" if host and host != socket.gethostname() else ""
        return (f"workdir {self.path.parent} in use by {who}{where} ({command.strip() or 'handprop train'}); "
                "wait for it to finish or use another --workdir")

    def release(self) -> None:
        if self._fd is None:
            return
        try:  # leave the file (removing it would race with a process opening it); drop our record
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
