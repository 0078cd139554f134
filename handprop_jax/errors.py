"""Errors that are the user's to fix (a bad file, a wrong path, a run folder in use, a full disk).

Every ``handprop`` command reports a :class:`UserError` in one line on stderr, exit code 2, without a
traceback (``handprop_jax.cli.main``); modules raise subclasses that name the file, the field or the
step concerned. Imports nothing of ours (first in the layering, with ``config``).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class UserError(Exception):
    """Bad input or a state of the user's files that the user can fix; the message says what and
    where (and, where there is one, what to do)."""


class InterruptedRun(KeyboardInterrupt):
    """A command stopped by Ctrl-C (SIGINT); the message is the one line to print (e.g. "interrupted
    at step N of phase stage1; re-run the same command to resume")."""


def disk_full(error: BaseException) -> OSError | None:
    """The ``OSError`` with errno ENOSPC/EDQUOT in ``error``'s cause/context chain, else None (orbax and
    tensorstore wrap the original error)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
            return error if isinstance(error, OSError) else OSError(errno.ENOSPC, str(error))
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
