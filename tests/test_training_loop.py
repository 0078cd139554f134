"""The training loop: all phases in order, kill-and-resume equality, NaN stop, logs, CLI wiring."""

import argparse
import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from tb_events import read_events
from test_training_fakes import FakeSource, TinyEncoder, fake_sources, interrupting, make_frames, tiny_config

from handprop_jax import config as config_lib
from handprop_jax.config import Config
from handprop_jax.errors import UserError
from handprop_jax.model import encoder as encoder_lib
from handprop_jax.model.api import HandPropModel
from handprop_jax.training import checkpoint, cli, loop, registry

STEPS = dict(stage1_steps=4, stage2_steps=2, stage3_steps=3, log_every=2, eval_every=2, checkpoint_every=2,
             keep_checkpoints=1)


@pytest.fixture(scope="module", autouse=True)
def tiny_encoder():
    """Use the small stand-in encoder everywhere in this module (fast compilation)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(encoder_lib, "from_config", lambda m: TinyEncoder(m.feature_dim))
        yield


@pytest.fixture(scope="module")
def data():
    config = tiny_config(**STEPS)
    return config, make_frames(config, 12), make_frames(config, 4, seed=1)


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    config, frames, val = data
    workdir = tmp_path_factory.mktemp("full")
    summary = loop.train(config, workdir, sources=fake_sources(frames, val), progress=False)
    return workdir, summary


def _params(workdir, phase):
    ck = checkpoint.PhaseCheckpoints(workdir, phase, read_only=True)
    state, meta = ck.restore(ck.latest_step())
    ck.close()
    return state, meta


@pytest.mark.slow  # trains every phase of the tiny config (the full_run fixture): minutes on 2 busy cores
def test_all_phases_run_and_are_checkpointed(full_run, data):
    config = data[0]
    workdir, summary = full_run
    assert list(summary) == ["stage1", "baseline", "stage2", "align", "pseudo"]
    want = {"stage1": 4, "baseline": 5, "pseudo": 5, "stage2": 2, "align": 3}
    for phase, n in want.items():
        state, meta = _params(workdir, phase)
        assert int(state["step"]) == n and meta["step"] == n and meta["phase"] == phase
        assert np.isfinite(summary[phase]["loss"]) and summary[phase]["val_mpjpe_mm"] > 0
    # baseline and stage2 both start from stage1's final parameters; stage2 keeps its predictor
    s1, _ = _params(workdir, "stage1")
    s2, _ = _params(workdir, "stage2")
    chex_equal = jax.tree.map(np.array_equal, s1["params"]["encoder"], s2["params"]["encoder"])
    assert all(jax.tree.leaves(chex_equal))
    # last N (=1) + best kept
    assert len(checkpoint.PhaseCheckpoints(workdir, "stage1", read_only=True).all_steps()) <= 2
    # logs: JSONL and TensorBoard events with the same numbers
    records = [json.loads(ln) for ln in (workdir / "logs" / "metrics.jsonl").read_text().splitlines()]
    s1_losses = [r for r in records if r["phase"] == "stage1" and "loss" in r]
    assert [r["step"] for r in s1_losses] == [2, 4] and all(r["stage"] == 1 for r in s1_losses)
    events = read_events(next((workdir / "logs" / "tb" / "stage1").glob("events.out.tfevents.*")))
    tb = {e["step"]: e["scalars"]["loss"] for e in events if "loss" in e["scalars"]}
    np.testing.assert_allclose([tb[2], tb[4]], [r["loss"] for r in s1_losses], rtol=1e-6)
    # the run reads back into the model facade
    cfg, variables = checkpoint.load_run(workdir, "align")
    assert cfg == config
    fr = FakeSource(data[1], "stage1", 4).batch_at(0)
    net = HandPropModel.create(cfg).bind(variables)
    gamma = net.regress(net.features(fr["image"]), fr["K"])
    assert gamma.pose.shape == (4, 48) and np.all(np.isfinite(gamma.root))
    # re-running finds every phase finished
    again = loop.train(config, workdir, sources=fake_sources(data[1], data[2]), progress=False)
    assert all(s.get("skipped") for s in again.values())


@pytest.mark.slow  # full_run plus two interrupted and resumed runs
@pytest.mark.parametrize("phase,at", [("stage1", 3), ("align", 2)])
def test_kill_and_resume_gives_the_uninterrupted_parameters(full_run, data, tmp_path, phase, at):
    config, frames, val = data
    with pytest.raises(KeyboardInterrupt):
        loop.train(config, tmp_path, sources=interrupting(fake_sources(frames, val), phase, at),
                   progress=False)
    loop.train(config, tmp_path, sources=fake_sources(frames, val), progress=False)
    for p in ("stage1", "align"):
        resumed, _ = _params(tmp_path, p)
        reference, _ = _params(full_run[0], p)
        same = jax.tree.map(np.array_equal, resumed, reference)
        assert all(jax.tree.leaves(same)), p
    # it really resumed from the checkpoint at step 2 (a restart would log step 2 twice)
    records = [json.loads(ln) for ln in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in records if r["phase"] == phase and "loss" in r]
    assert logged == {"stage1": [2, 4], "align": [2, 3]}[phase]


@pytest.mark.slow  # quick tier (make test-fast): trains and compiles twice, runs in make test
def test_nan_loss_stops_with_clear_message_and_good_checkpoint(data, tmp_path):
    config, frames, val = data

    class PoisonedSource(FakeSource):
        def batch_at(self, counter):
            batch = super().batch_at(counter)
            if counter == 2:  # the batch of step 3
                batch["joints3d"] = np.full_like(batch["joints3d"], np.nan)
            return batch

    def sources(cfg, phase, split, i, n):
        if split == "val":
            return None
        return PoisonedSource(frames, phase, cfg.train.batch_size, 0, i, n)

    with pytest.raises(loop.NonFiniteLossError, match=r"phase 'stage1' \(stage 1\) at step 3"):
        loop.train(config, tmp_path, ["stage1"], sources=sources, progress=False)
    ck = checkpoint.PhaseCheckpoints(tmp_path, "stage1", read_only=True)
    assert ck.latest_step() == 2  # the checkpoint before the bad step, and nothing after it
    state, _ = ck.restore(2)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state["params"]))


@pytest.mark.slow  # needs the full_run fixture
def test_resume_with_a_different_config_is_refused(full_run, data):
    config = data[0]
    other = tiny_config(**{**STEPS, "lr": 0.5})
    with pytest.raises(UserError, match="train.lr"):
        loop.train(other, full_run[0], sources=fake_sources(data[1]), progress=False)
    assert config.train.lr != 0.5


def test_cli_arguments_and_stage_names():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--config", "tiny", "--workdir", "w", "--stage", "3", "--stage", "1",
                              "--set", "train.lr=1e-4"])
    assert loop.resolve_phases(args.stage) == ("stage1", "align")
    assert loop.resolve_phases(None) == ("stage1", "baseline", "stage2", "align", "pseudo")
    assert loop.resolve_phases(["baseline"]) == ("baseline",)
    with pytest.raises(ValueError, match="stage 4"):
        loop.resolve_phases([4])
    bad = parser.parse_args(["--config", "no_such_config", "--workdir", "w"])
    assert cli.run(bad) == 2


DAMAGE = {
    "truncated data file": lambda d: [p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
                                      for p in (d / "state" / "ocdbt.process_0" / "d").iterdir()],
    "_METADATA deleted": lambda d: (d / "state" / "_METADATA").unlink(),
    "manifest deleted": lambda d: [p.unlink() for p in d.rglob("manifest.ocdbt")],
}
LONG = dict(STEPS, stage1_steps=6, keep_checkpoints=3)


@pytest.fixture(scope="module")
def long_reference(data, tmp_path_factory):
    """stage1 for 6 steps: uninterrupted (checkpoints 2, 4, 6), and stopped before step 5
    (checkpoints 2, 4), to be copied by the tests."""
    config = tiny_config(**LONG)
    workdir, stopped = tmp_path_factory.mktemp("long"), tmp_path_factory.mktemp("stopped")
    loop.train(config, workdir, ["stage1"], sources=fake_sources(data[1], data[2]), progress=False)
    with pytest.raises(KeyboardInterrupt):
        loop.train(config, stopped, ["stage1"], progress=False,
                   sources=interrupting(fake_sources(data[1], data[2]), "stage1", 5))
    return config, workdir, stopped


def _copy(folder, tmp_path):
    import shutil

    return Path(shutil.copytree(folder, tmp_path / "run"))


def _same_stage1(a, b):
    same = jax.tree.map(np.array_equal, _params(a, "stage1")[0], _params(b, "stage1")[0])
    return all(jax.tree.leaves(same))


# orbax abandons the other reads of a failed restore; each used to be printed as an "Exception ignored
# in ..." traceback when collected (pytest turns those into this warning)
QUIET = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


@QUIET
@pytest.mark.slow  # the long_reference fixture trains stage 1 twice
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_checkpoint_is_named_set_aside_and_the_phase_resumes_from_the_previous(
        long_reference, data, tmp_path, capsys, damage):
    """A truncated file in checkpoints/stage1/4 (or its _METADATA or manifest deleted) used to end a
    re-run in orbax tracebacks; now the step is named, moved aside and the phase resumes from step 2,
    reaching the uninterrupted parameters; loading it for inference names it too."""
    config, reference, stopped = long_reference
    run = _copy(stopped, tmp_path)
    step4 = checkpoint.phase_dir(run, "stage1") / "4"
    DAMAGE[damage](step4)
    with pytest.raises(checkpoint.DamagedCheckpoint, match=rf"checkpoint {step4} is incomplete or damaged "
                                                           r"\(.*\); the previous kept step is 2; re-run"):
        checkpoint.load_run(run, "stage1")
    capsys.readouterr()
    loop.train(config, run, ["stage1"], sources=fake_sources(data[1], data[2]), progress=False)
    err = capsys.readouterr().err
    assert f"warning: checkpoint {step4} is incomplete or damaged" in err and "Traceback" not in err, err
    assert "resuming phase 'stage1' from step 2" in err
    moved = list((run / "checkpoints" / "stage1.damaged").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("4-")
    assert _same_stage1(run, reference)


@QUIET
@pytest.mark.slow  # long_reference
def test_a_damaged_final_checkpoint_makes_the_phase_redo_its_last_steps(long_reference, data, tmp_path,
                                                                        capsys):
    config, reference, _ = long_reference
    run = _copy(reference, tmp_path)
    final = checkpoint.phase_dir(run, "stage1") / "6"
    DAMAGE["truncated data file"](final)
    summary = loop.train(config, run, ["stage1"], sources=fake_sources(data[1], data[2]), progress=False)
    assert not summary["stage1"].get("skipped")  # not taken as finished
    assert f"checkpoint {final} is incomplete or damaged" in capsys.readouterr().err
    assert _same_stage1(run, reference)


@pytest.mark.slow  # long_reference
def test_resuming_with_other_data_workers_names_the_value_to_use(long_reference, data, tmp_path):
    config, reference, stopped = long_reference
    other = dataclasses.replace(config, data=dataclasses.replace(config.data, num_workers=2))
    with pytest.raises(UserError, match=r"phase 'stage1' was checkpointed at step 4 with "
                                        r"data.num_workers=0; resume it with --set data.num_workers=0"):
        loop.train(other, _copy(stopped, tmp_path), ["stage1"], sources=fake_sources(data[1], data[2]),
                   progress=False)
    # at a phase boundary the worker count may change: a finished phase is not resumed
    assert loop.train(other, reference, ["stage1"], sources=fake_sources(data[1]),
                      progress=False)["stage1"]["skipped"]


@pytest.fixture()
def cli_fakes(data, monkeypatch):
    """``handprop train --config tiny`` in this process, on the in-memory frames."""
    config = config_lib.load("tiny")
    frames, val = make_frames(config, 8), make_frames(config, 4, seed=1)
    monkeypatch.setattr(loop, "default_sources", fake_sources(frames, val))
    return config


@pytest.mark.slow  # compiles the tiny config's real train step (ResNet-18, width 8)
def test_disk_full_is_one_line_naming_phase_and_step(cli_fakes, tmp_path, capsys):
    from handprop_jax.cli import main

    (tmp_path / "run" / "logs").mkdir(parents=True)
    (tmp_path / "run" / "logs" / "metrics.jsonl").symlink_to("/dev/full")  # writes fail with ENOSPC
    rc = main(["train", "--config", "tiny", "--workdir", str(tmp_path / "run"), "--stage", "1",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    log = tmp_path / "run" / "logs" / "metrics.jsonl"  # the file is named
    assert err.startswith(f"handprop train: disk full ([Errno 28] No space left on device: '{log}') at "
                          "step 1 of phase 'stage1' (no checkpoint of it yet); re-run the same command to "
                          "resume"), err


def test_workdir_that_is_a_file_is_refused_in_one_line(tmp_path, capsys):
    from handprop_jax.cli import main

    (tmp_path / "a_file").write_text("x")
    for workdir in (tmp_path / "a_file", tmp_path / "a_file" / "run"):
        assert main(["train", "--config", "tiny", "--workdir", str(workdir)]) == 2
        err = capsys.readouterr().err
        assert err == f"handprop train: --workdir {workdir}: {tmp_path / 'a_file'} is a file, not a folder\n"


def test_resuming_with_another_config_is_one_line(cli_fakes, tmp_path, capsys):
    """A run folder trained with one config and resumed with another is refused with one line naming
    the differing field (exit code 2, no traceback), before anything is trained or overwritten."""
    from handprop_jax.cli import main

    workdir = tmp_path / "run"
    workdir.mkdir()
    config_lib.save_json(dataclasses.replace(cli_fakes, train=dataclasses.replace(cli_fakes.train, lr=0.5)),
                         workdir / "config.json")
    recorded = (workdir / "config.json").read_text()
    rc = main(["train", "--config", "tiny", "--workdir", str(workdir), "--stage", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("handprop train: ") and "records a different config (train.lr)" in err, err
    assert (workdir / "config.json").read_text() == recorded and not (workdir / "checkpoints").exists()


def test_a_comparison_sections_change_is_refused_only_once_its_phase_has_trained(tmp_path):
    """``demo --compare`` resumes a plain demo's run with a resized Hasson ramp: allowed while no
    ``photometric`` checkpoint exists, refused (naming the field) once one does."""
    config = tiny_config()
    workdir = tmp_path / "run"
    workdir.mkdir()
    config_lib.save_json(config, workdir / "config.json")
    changed = dataclasses.replace(config, hasson=dataclasses.replace(config.hasson, ramp_steps=7))
    loop._check_config(workdir, changed)  # no photometric checkpoint: accepted, and recorded
    assert json.loads((workdir / "config.json").read_text())["hasson"]["ramp_steps"] == 7
    (checkpoint.phase_dir(workdir, "photometric") / "100").mkdir(parents=True)
    with pytest.raises(UserError, match=r"records a different config \(hasson\.ramp_steps\)"):
        loop._check_config(workdir, config)
    # a section whose phases have not trained is still free
    loop._check_config(workdir, dataclasses.replace(changed, temporal=dataclasses.replace(
        changed.temporal, clip_batch_stats=True)))


def test_every_phase_config_section_is_a_section_no_core_phase_reads():
    """``Phase.config_section`` names a real section of Config, owned by that method's phases alone:
    the paper's phases and pseudo declare none, each comparison method its own."""
    defaults = Config()
    sections = {f.name for f in dataclasses.fields(Config)
                if dataclasses.is_dataclass(getattr(defaults, f.name))}
    owned = {name: p.config_section for name, p in registry.phases().items()}
    assert owned == {"stage1": None, "baseline": None, "stage2": None, "align": None, "pseudo": None,
                     "photometric": "hasson", "adversarial_motion": "adversarial",
                     "adversarial_motion_labels": "adversarial", "temporal_consistency": "temporal"}
    assert {s for s in owned.values() if s} <= sections
