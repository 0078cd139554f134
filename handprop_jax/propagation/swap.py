"""Replacing the results in a folder so that, at every instant, the folder holds either the complete
old results or the complete new ones (``handprop propagate --out``), also when the process is killed.

:func:`replace_results` writes the new results into ``OUT/.handprop-partial-<pid>/`` (``write`` does
that), then marks them complete (``.complete``, listing their names; written under another name and
renamed, so it is either there whole or not at all), then moves, name by name, the old entry into
``OUT/.handprop-backup-<pid>/`` and the new one into its place, and finally deletes the backup and
the partial folder. Ctrl-C during the moves is held back until they are done (then
:class:`~handprop_jax.errors.InterruptedRun`: the new results are in place); Ctrl-C while the new
results are written leaves ``OUT`` as it was.

A process killed part way (SIGKILL, a crash, power) leaves those folders behind; :func:`recover`, run
before the next use of ``OUT``, finishes the swap when the new results were complete (the marker is
there) and else deletes the unfinished ones (the old results were never touched), and says which.
Standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from handprop_jax.errors import process_alive

PARTIAL = ".handprop-partial-"
BACKUP = ".handprop-backup-"
MARKER = ".complete"

#: tests only: called with a step's name before each step of the swap (to kill the process there)
_step: Callable[[str], None] = lambda name: None


def leftovers(out: Path) -> list[Path]:
    """The partial and backup folders of earlier swaps in ``out``."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.name.startswith((PARTIAL, BACKUP)))


def _pid(folder: Path) -> int | None:
    tail = folder.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _alive(pid: int | None) -> bool:
    return pid is not None and pid != os.getpid() and process_alive(pid)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _finish(out: Path, partial: Path, backup: Path, names: Iterable[str], new: list[str]) -> None:
    """The moves and the clean-up of a swap whose new results in ``partial`` are complete (idempotent:
    also finishes a swap cut anywhere in here)."""
    backup.mkdir(exist_ok=True)
    for name in names:
        target, fresh = out / name, partial / name
        if name in new and not (fresh.exists() or fresh.is_symlink()):
            continue  # already moved in
        if target.exists() or target.is_symlink():  # the old entry
            _step(f"backup {name}")
            os.replace(target, backup / name)
        if name in new:
            _step(f"move {name}")
            os.replace(fresh, target)
    _step("delete backup")
    shutil.rmtree(backup)
    _step("delete partial")
    shutil.rmtree(partial)


def recover(out: str | Path, names: Iterable[str], say: Callable[[str], None] | None = None) -> None:
    """Repair ``out`` after a swap that was cut short (module docstring): finish it when its new
    results were complete, else delete them; ``say`` (default: nothing) gets one line per repair.
    Raises ``FileExistsError`` when the process named by a leftover folder is still running (another
    command is writing there)."""
    out, names = Path(out), list(names)
    say = say or (lambda line: None)
    found = leftovers(out)
    for folder in found:
        if _alive(_pid(folder)):
            raise FileExistsError(f"{out}: process {_pid(folder)} is writing its results there "
                                  f"({folder.name}); wait for it or stop it")
    for folder in found:
        if not folder.name.startswith(PARTIAL) or not folder.exists():
            continue
        backup = out / (BACKUP + folder.name[len(PARTIAL):])
        marker = folder / MARKER
        if marker.is_file():
            new = json.loads(marker.read_text())
            _finish(out, folder, backup, names, new)
            say(f"{out}: finished replacing the results there by those of an interrupted run "
                f"(process {_pid(folder)}): {', '.join(new)}")
        else:
            shutil.rmtree(folder)
            say(f"{out}: removed the unfinished results of an interrupted run ({folder.name}); the "
                "results there are the earlier ones")
    for folder in leftovers(out):  # a backup whose swap had finished its moves
        shutil.rmtree(folder)
        say(f"{out}: removed the backup of an interrupted run ({folder.name}); the results there are "
            "complete")


def replace_results(out: str | Path, names: Iterable[str], write: Callable[[Path], None],
                    interrupts=None) -> list[str]:
    """Write new results with ``write(folder)`` and swap them for the old ones in ``out`` (module
    docstring); every name of ``names`` in ``out`` is an old result (replaced or, when ``write`` does
    not make it, removed). ``interrupts``: an :class:`~handprop_jax.errors.Interrupts` whose
    ``deferred()`` holds Ctrl-C back during the moves. Returns the names written."""
    import contextlib

    out, names = Path(out), list(names)
    partial, backup = out / f"{PARTIAL}{os.getpid()}", out / f"{BACKUP}{os.getpid()}"
    partial.mkdir()
    try:
        write(partial)
        new = [n for n in names if (partial / n).exists()]
        hold = interrupts.deferred() if interrupts is not None else contextlib.nullcontext()
        with hold:
            _step("mark complete")
            (partial / (MARKER + ".tmp")).write_text(json.dumps(new))
            os.replace(partial / (MARKER + ".tmp"), partial / MARKER)
            _finish(out, partial, backup, names, new)
    except BaseException:
        if partial.exists() and not (partial / MARKER).is_file():  # cut before the moves: old untouched
            shutil.rmtree(partial, ignore_errors=True)
        elif partial.exists():  # an error during the moves (a full disk cannot happen there): finish
            recover(out, names)
        raise
    return new
