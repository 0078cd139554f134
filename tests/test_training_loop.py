"""The training loop: all phases in order, kill-and-resume equality, NaN stop, logs, CLI wiring."""

import argparse
import json

import jax
import numpy as np
import pytest
from tb_events import read_events
from test_training_fakes import FakeSource, TinyEncoder, fake_sources, make_frames, tiny_config

from handprop_jax.model import encoder as encoder_lib
from handprop_jax.model.api import HandPropModel
from handprop_jax.training import checkpoint, cli, loop

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


@pytest.mark.parametrize("phase,at", [("stage1", 3), ("align", 2)])
def test_kill_and_resume_gives_the_uninterrupted_parameters(full_run, data, tmp_path, phase, at):
    config, frames, val = data
    with pytest.raises(KeyboardInterrupt):
        loop.train(config, tmp_path, sources=fake_sources(frames, val), progress=False,
                   interrupt_at=(phase, at))
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


def test_resume_with_a_different_config_is_refused(full_run, data):
    config = data[0]
    other = tiny_config(**{**STEPS, "lr": 0.5})
    with pytest.raises(ValueError, match="train.lr"):
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
