"""``handprop train`` as a separate process, stopped from outside as a user (or the machine) would:
SIGKILL mid-step while a checkpoint is being written, SIGKILL again at a random step, then Ctrl-C
(SIGINT); each time the same command resumes, and the final parameters equal an uninterrupted run's
bit for bit. Also: a second process on the same run folder is refused, and a lock left by a killed
process is taken over.

Cost: one uninterrupted run and four interrupted/resumed ones of the tiny config's stage 1 (32 steps);
they share a persistent JAX compilation cache, so only the first two (run side by side) compile. Each
process spends most of its time starting (importing JAX, ~12 s on a busy 2-core machine): measured
222 s for the kill test there with one SIGKILL fewer (marked slow); the lock test takes under a second.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from handprop_jax.training import checkpoint

STEPS = 32  # room for the Ctrl-C to land mid-training
ARGS = ["--config", "tiny", "--no-progress", "--stage", "1", "--set", f"train.stage1_steps={STEPS}",
        "--set", "train.checkpoint_every=2", "--set", "train.keep_checkpoints=2",
        "--set", "train.val_batches=0"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    data = root / "data"
    from handprop_jax import config as config_lib
    from handprop_jax.data.build import build

    config = config_lib.load("tiny", [f"data.data_dir={str(data)!r}"])
    build(config.data.name, str(data), data_config=config.data, verbose=False)
    return {"root": root, "data": data,
            "env": dict(os.environ, HANDPROP_HUGEPAGES="0", JAX_PLATFORMS="cpu",
                        JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"),
                        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Train:
    """``handprop train`` in a child process; its stdout/stderr lines collected as they come."""

    def __init__(self, env, workdir: Path, *extra: str):
        cmd = [sys.executable, "-m", "handprop_jax.cli", "train", "--workdir", str(workdir), *ARGS,
               "--set", f"data.data_dir={env['data']}", *extra]
        # SIGINT as in a terminal: a test run started in the background (``cmd &``) has it ignored, and
        # a child would inherit that and never see the Ctrl-C
        self.proc = subprocess.Popen(cmd, env=env["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, preexec_fn=_default_sigint)
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(s, lines), daemon=True)
                         for s, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream, lines):
        for line in stream:
            lines.append(line.rstrip("\n"))

    def stepped(self) -> bool:
        """This process has finished a train step (its log line)."""
        return any(ln.startswith("[stage1 stage 1] step ") for ln in list(self.out))

    def poll(self):
        return self.proc.poll()

    def kill(self, sig=signal.SIGKILL) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 420.0) -> int:
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join(10)
        return rc

    def text(self) -> str:
        return "\n".join(self.out) + "\n" + "\n".join(self.err)


def _wait_for(run: Train, ready, timeout: float = 420.0, poll: float = 0.002) -> None:
    """Poll until ``ready()``; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if run.poll() is not None:
            run.wait()
            pytest.fail(f"handprop train ended (rc {run.proc.returncode}) before the kill point:\n"
                        f"{run.text()}")
        if time.monotonic() > deadline:
            run.kill()
            pytest.fail("timed out waiting for the kill point")
        time.sleep(poll)


def _logged_steps(workdir: Path) -> list[int]:
    path = workdir / "logs" / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "loss" in record:
            steps.append(record["step"])
    return steps


def _writing(workdir: Path, step: int | None = None) -> list[str]:
    """The temporary folders of checkpoint writes under way (or cut short), e.g. 4.orbax-checkpoint-tmp;
    only those of ``step`` when given."""
    folder = workdir / "checkpoints" / "stage1"
    try:
        return [n for n in os.listdir(folder)
                if "tmp" in n and (step is None or n.split(".")[0].split("-")[0] == str(step))]
    except FileNotFoundError:
        return []


def _final_state(workdir: Path) -> dict:
    ck = checkpoint.PhaseCheckpoints(workdir, "stage1", read_only=True)
    assert ck.latest_step() == STEPS
    state, _ = ck.restore(STEPS)
    ck.close()
    return state


@pytest.mark.slow  # five processes that each start JAX: ~4-5 min on 2 busy CPU cores, ~1 min on 16
def test_sigkills_mid_checkpoint_and_mid_step_then_ctrl_c_resume_bit_exact(env):
    reference, workdir = env["root"] / "reference", env["root"] / "run"
    ref = Train(env, reference)  # the uninterrupted run, alongside the first interrupted one
    # 1. SIGKILL mid-step and mid-checkpoint-write: checkpoints are written in the background while
    # the next steps run; kill as soon as orbax's temporary folder of step 4 is there
    run = Train(env, workdir)
    _wait_for(run, lambda: _writing(workdir, step=4), poll=0.0005)
    run.kill()
    assert run.wait() == -signal.SIGKILL
    assert _writing(workdir, step=4), "the kill did not land during the write"
    assert max(_logged_steps(workdir)) < STEPS
    # 2. resume (from checkpoint 2); SIGKILL again at a random step (seeded draw), wherever that is
    # in the step / log / checkpoint cycle
    k = int(np.random.default_rng(2026).integers(8, STEPS - 8))
    run = Train(env, workdir)
    _wait_for(run, lambda: max(_logged_steps(workdir), default=0) >= k, poll=0.0005)
    run.kill()
    assert run.wait() == -signal.SIGKILL
    assert max(_logged_steps(workdir)) < STEPS
    # 3. resume; Ctrl-C (SIGINT) mid-training: one line naming the step, exit code 130
    run = Train(env, workdir)
    _wait_for(run, run.stepped)
    run.kill(signal.SIGINT)
    assert run.wait() == 130, run.text()
    assert "Traceback" not in run.text(), run.text()
    lines = [ln for ln in run.err if ln.startswith("handprop train:")]
    assert len(lines) == 1 and lines[0].startswith("handprop train: interrupted at step "), run.text()
    assert "of phase 'stage1'" in lines[0] and lines[0].endswith("re-run the same command to resume")
    # 4. resume to the end
    run = Train(env, workdir)
    assert run.wait() == 0, run.text()
    assert f"stage1: step {STEPS}, loss" in run.out[-1]
    assert ref.wait() == 0, ref.text()

    resumed, expected = _final_state(workdir), _final_state(reference)
    same = jax.tree.map(np.array_equal, resumed, expected)
    assert all(jax.tree.leaves(same)), "resumed parameters differ from the uninterrupted run's"
    # every step logged exactly once, in order: rows logged after the last checkpoint of a killed
    # run (and a line cut short by the kill) were dropped when it resumed
    assert _logged_steps(workdir) == list(range(1, STEPS + 1)) == _logged_steps(reference)
    assert not _writing(workdir)  # the half-written checkpoint did not stay behind


def test_second_process_on_one_workdir_is_refused_and_a_dead_holder_lock_is_taken_over(env, tmp_path,
                                                                                      capsys):
    from handprop_jax.cli import main
    from handprop_jax.training.runlock import WorkdirLock

    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from handprop_jax.training.runlock import WorkdirLock; "
         f"WorkdirLock({str(workdir)!r}).acquire(); print('locked', flush=True); time.sleep(600)"],
        env=env["env"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc = main(["train", "--workdir", str(workdir), *ARGS, "--set", f"data.data_dir={env['data']}"])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1, err
        assert f"workdir {workdir} in use by PID {holder.pid} " in err, err
        assert not (workdir / "config.json").exists()  # refused before writing anything
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder died without releasing: its record is still in the file, the lock is free
    assert (workdir / ".lock").read_text().split("\n")[0] == str(holder.pid)
    lock = WorkdirLock(workdir)
    lock.acquire()
    assert (workdir / ".lock").read_text().split("\n")[0] == str(os.getpid())
    lock.release()
