"""Replacing ``propagate``'s results is atomic at every instant (issue 27, item 1): a process killed
(SIGKILL) or interrupted (SIGINT) before each step of the swap leaves — once the next run has
recovered the folder — either the complete old results or the complete new ones, never a mix, never
neither; and the recovery says what it did."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from handprop_jax.propagation import swap
from handprop_jax.propagation.cli import OUTPUTS

#: a child process: old results in OUT, then a swap to new ones with a kill before step KILL_AT
CHILD = r"""
import os, signal, sys
from pathlib import Path
from handprop_jax.errors import watch_interrupts
from handprop_jax.propagation import swap

out, kill_at, sig = Path(sys.argv[1]), int(sys.argv[2]), getattr(signal, sys.argv[3])
overlays = sys.argv[4] == "1"
steps = []

def step(name):
    steps.append(name)
    if len(steps) - 1 == kill_at:
        os.kill(os.getpid(), sig)

def write(folder):
    for name in ("annotations.json", "annotations.npz"):
        step(f"write {name}")
        (folder / name).write_text("new " + name)
    if overlays:
        (folder / "overlays").mkdir()
        for i in range(3):
            step(f"write overlay {i}")
            (folder / "overlays" / f"{i}.png").write_text(f"new {i}")

swap._step = step
try:
    with watch_interrupts() as interrupts:
        swap.replace_results(out, sys.argv[5].split(","), write, interrupts)
except KeyboardInterrupt:
    print("\n".join(steps))
    sys.exit(130)
print("\n".join(steps))
"""


def _old(out: Path, overlays: bool) -> dict[str, str]:
    out.mkdir()
    files = {"annotations.json": "old annotations.json", "annotations.npz": "old annotations.npz"}
    if overlays:
        files.update({f"overlays/{i}.png": f"old {i}" for i in range(4)})
    for name, text in files.items():
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_text(text)
    (out / "notes.txt").write_text("the user's own file")  # not a result: never touched
    return {**files, "notes.txt": "the user's own file"}


def _new(overlays: bool) -> dict[str, str]:
    files = {"annotations.json": "new annotations.json", "annotations.npz": "new annotations.npz"}
    if overlays:
        files.update({f"overlays/{i}.png": f"new {i}" for i in range(3)})
    return {**files, "notes.txt": "the user's own file"}


def _content(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*")) if p.is_file()}


def _child(out: Path, kill_at: int, sig: str, old_overlays: bool, new_overlays: bool):
    # the child gets the default SIGINT disposition: a test run started in the background (nohup, &)
    # has SIGINT ignored, which the child would inherit (and propagate then rightly leaves it ignored)
    return subprocess.run([sys.executable, "-c", CHILD, str(out), str(kill_at), sig,
                           "1" if new_overlays else "0", ",".join(OUTPUTS)],
                          capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.slow  # quick tier (make test-fast): three killed subprocesses, runs in make test
@pytest.mark.parametrize("old_overlays, new_overlays", [(True, True), (True, False), (False, True)])
def test_a_kill_before_any_step_of_the_swap_leaves_old_or_new_results(tmp_path, old_overlays, new_overlays):
    # every step of an uninterrupted swap, in order
    ref = tmp_path / "ref"
    _old(ref, old_overlays)
    done = _child(ref, -1, "SIGKILL", old_overlays, new_overlays)
    assert done.returncode == 0, done.stderr
    steps = done.stdout.splitlines()
    assert _content(ref) == _new(new_overlays) and not swap.leftovers(ref)
    assert "mark complete" in steps and "delete partial" in steps[-2:]
    seen = {"old": 0, "new": 0}
    for sig in ("SIGKILL", "SIGINT"):
        for k in range(len(steps)):
            out = tmp_path / f"{sig}_{k}"
            old = _old(out, old_overlays)
            result = _child(out, k, sig, old_overlays, new_overlays)
            expected_rc = -signal.SIGKILL if sig == "SIGKILL" else 130
            assert result.returncode == expected_rc, (sig, k, steps[k], result.stderr)
            said = []
            swap.recover(out, OUTPUTS, said.append)  # what the next run does first
            content = _content(out)
            assert content in (old, _new(new_overlays)), (sig, k, steps[k], content)
            assert not swap.leftovers(out)
            state = "old" if content == old else "new"
            seen[state] += 1
            if sig == "SIGINT":  # Ctrl-C once the new results are complete: the swap is finished first
                assert state == ("new" if steps.index("mark complete") <= k else "old"), (k, steps[k])
                assert said == []  # nothing left to recover after a Ctrl-C
            elif steps.index("mark complete") < k:  # killed after the marker: the swap is finished
                assert state == "new" and said and "finished replacing the results" in said[0], (k, said)
            elif k > 0:  # killed while writing the new results: they are removed
                assert state == "old" and "removed the unfinished results" in said[0], (k, said)
    assert seen["old"] and seen["new"]


def test_recovery_refuses_while_the_other_process_runs(tmp_path):
    out = tmp_path / "out"
    _old(out, False)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (out / f"{swap.PARTIAL}{child.pid}").mkdir()
        with pytest.raises(FileExistsError, match=f"process {child.pid} is writing its results there"):
            swap.recover(out, OUTPUTS)
    finally:
        child.kill()
        child.wait()
    swap.recover(out, OUTPUTS)  # once it has gone, its leftovers are removed
    assert not swap.leftovers(out) and json.dumps(_content(out))
