"""Table I runner, writers and gap analysis with stand-in predictors on small synthetic videos."""

import csv
import json

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from handprop_jax import config as config_lib
from handprop_jax import metrics
from handprop_jax.evaluation import gap as gap_lib
from handprop_jax.evaluation import rows as R
from handprop_jax.evaluation import runner
from handprop_jax.evaluation import table as table_lib
from handprop_jax.gamma import Gamma
from handprop_jax.hand import default_mano, hand_mesh
from handprop_jax.model.api import BoundModel, Features

S = 16


#: every row but the photometric propagation (its own tests: test_propagation_photometric.py) and the
#: comparison methods' rows (their own tests: test_comparison_methods.py)
NO_PHOTOMETRIC = tuple(r.name for r in R.ROWS if r.method != "photometric"
                       and r.phase in (None, "baseline", "pseudo", "align"))


@pytest.fixture(scope="module")
def config():
    return config_lib.override(config_lib.load("tiny"), [f"data.image_size={S}", "data.label_stride=4",
                                                        "eval.batch_size=4", f"eval.rows={NO_PHOTOMETRIC}"])


def _predictor(root_offset=0.0):
    """Features from pixels; regress → a fixed hand; align → γ_b with its root moved by root_offset."""

    def features(images):
        z = jnp.asarray(images, jnp.float32).reshape(images.shape[0], -1)[:, :512] / 255.0
        return Features(z, z)

    def regress(z, K):
        B = z.z_r.shape[0]
        return Gamma(jnp.tile(jnp.array([[0.0, 0.0, 0.5]]), (B, 1)), jnp.zeros((B, 48)), jnp.zeros((B, 10)))

    def align(gamma_b, frame_a, frame_b):
        return gamma_b._replace(root=gamma_b.root + root_offset)

    return BoundModel(features=features, regress=regress, align=align, image_size=S, batch_size=4)


def _video(config, T, seed):
    """A hand moving along a geodesic (pose) and a line (root) over T frames."""
    rng = np.random.default_rng(seed)
    ends = {"root": np.array([[0.0, 0.0, 0.45], [0.03, -0.02, 0.5]], np.float32),
            "pose": (rng.normal(size=(2, 48)) * 0.3).astype(np.float32),
            "betas": np.repeat(rng.normal(size=(1, 10)).astype(np.float32), 2, 0)}
    t = np.arange(T) / (T - 1)
    # geodesic per joint with scipy (no JAX compilation): R(t) = R_a exp(t log(R_a^-1 R_b))
    ra = Rotation.from_rotvec(ends["pose"][0].reshape(16, 3))
    rel = (ra.inv() * Rotation.from_rotvec(ends["pose"][1].reshape(16, 3))).as_rotvec()
    pose = np.stack([(ra * Rotation.from_rotvec(ti * rel)).as_rotvec().reshape(48) for ti in t])
    gamma = Gamma(((1 - t)[:, None] * ends["root"][0] + t[:, None] * ends["root"][1]).astype(np.float32),
                  pose.astype(np.float32), np.repeat(ends["betas"][:1], T, 0))
    _, joints = hand_mesh(default_mano(config), gamma)
    K = np.tile(np.array([[20.0, 0, 7.5], [0, 20.0, 7.5], [0, 0, 1]], np.float32), (T, 1, 1))
    return {"image": rng.integers(0, 255, (T, S, S, 3), dtype=np.uint8), "K": K, **gamma.as_dict(),
            "joints3d": joints,
            "video_id": np.full(T, seed), "frame_index": np.arange(T)}


@pytest.fixture(scope="module")
def videos(config):
    return {"train": [_video(config, 9, 0), _video(config, 6, 1)], "test": [_video(config, 10, 2)]}


def test_mean_gamma_is_rotation_mean():
    rots = Rotation.random(7, random_state=0)
    rng = np.random.default_rng(0)
    pose = np.tile(rots.as_rotvec()[:, None], (1, 16, 1)).reshape(7, 48)
    g = Gamma(rng.normal(size=(7, 3)), pose, rng.normal(size=(7, 10)))
    m = runner.mean_gamma(g)
    ref = rots.mean()  # quaternion (Markley) mean = chordal L2 mean on SO(3)
    for j in range(16):
        assert (Rotation.from_rotvec(m.pose[3 * j:3 * j + 3]) * ref.inv()).magnitude() < 1e-4
    np.testing.assert_allclose(m.root, g.root.mean(0), rtol=1e-6)
    np.testing.assert_allclose(m.betas, g.betas.mean(0), rtol=1e-5)
    assert m.pose.shape == (48,) and m.pose.dtype == np.float32


def test_rows_of_one_video(config, videos):
    video = videos["train"][0]  # T = 9, K = 4: labelled 0, 4, 8
    mean = runner.mean_gamma(Gamma.of(video))
    models = {"baseline": _predictor(), "pseudo": _predictor(), "align": _predictor()}
    pred = runner.video_predictions(video, 4, models, mean)
    np.testing.assert_array_equal(pred["frames"], [1, 2, 3, 5, 6, 7])
    np.testing.assert_array_equal(pred["gap"], [1, 2, 1, 1, 2, 1])
    rows = pred["rows"]
    # every row but the photometric ones (no propagator given for them)
    assert list(rows) == list(NO_PHOTOMETRIC)
    nearest = np.array([0, 0, 4, 4, 4, 8])  # the tie at frame 2 and 6 goes to the earlier frame
    for copy, prop, crop, truth in zip(rows[R.COPY], rows[R.PAPER], rows[R.COPY_CROP], Gamma.of(video),
                                       strict=True):
        np.testing.assert_array_equal(copy, truth[nearest])
        # a zero aligner propagates exactly the copy
        np.testing.assert_array_equal(prop, copy)
        # every crop has the same K: crop-aware copy is copy (to the rounding of the root round trip)
        np.testing.assert_allclose(crop, copy, atol=1e-6)
    frames = runner.score(default_mano(config), pred)
    # the hand moves along a geodesic: both-sides blending of copies is exact, copying is not
    for name in (R.PAPER_BOTH, R.INTERPOLATION, R.INTERPOLATION_CROP):
        assert frames[name]["MPJPE"].max() < 0.05
    assert frames[R.COPY]["MPJPE"].min() > 1.0
    # a moved aligner gives exactly that root displacement on MPJPE... of the same frames
    moved = runner.video_predictions(video, 4, {"align": _predictor(np.array([0.004, 0.003, 0.0]))}, None,
                                     both_sides=False)
    assert set(moved["rows"]) == {R.ALIGN_PAPER, R.PAPER, R.COPY, R.COPY_CROP}
    mf = runner.score(default_mano(config), moved)
    cf = runner.score(default_mano(config), {**pred, "rows": {R.COPY: rows[R.COPY]}})
    np.testing.assert_allclose(mf[R.PAPER]["MPJPE (T)"], cf[R.COPY]["MPJPE (T)"], atol=1e-3)
    np.testing.assert_allclose(mf[R.PAPER]["MPJPE (P)"], cf[R.COPY]["MPJPE (P)"], atol=1e-3)


def test_rows_measure_neighbours_and_gaps_in_source_time(videos):
    """A video with a hole (source frame 4 missing, e.g. skipped as bad input): K, N(u), the gaps and
    the both-sides weights are measured in frame_time, so the hole shifts nothing (before the frames
    were renumbered: position 4, source frame 5, became a labelled frame)."""
    full = videos["train"][0]  # T = 9
    keep = np.array([0, 1, 2, 3, 5, 6, 7, 8])
    video = {k: np.asarray(v)[keep] for k, v in full.items()}
    video["frame_time"] = keep.copy()
    pred = runner.video_predictions(video, 4, {}, None, table_rows=R.by_name([R.COPY, R.INTERPOLATION]))
    # labelled: source times 0 and 8 (4, on the K grid, is missing: no other frame is promoted)
    np.testing.assert_array_equal(pred["frames"], [1, 2, 3, 4, 5, 6])  # positions
    np.testing.assert_array_equal(pred["gap"], [1, 2, 3, 3, 2, 1])  # source frames to N(u)
    truth = Gamma.of(full)
    nearest = np.array([0, 0, 0, 8, 8, 8])  # source frames 1, 2, 3 → 0; 5, 6, 7 → 8
    for copy, t in zip(pred["rows"][R.COPY], truth, strict=True):
        np.testing.assert_array_equal(copy, np.asarray(t)[nearest])
    # interpolation: the root is blended linearly with weight (t_u - 0) / (8 - 0) on frame 8
    w = np.array([1, 2, 3, 5, 6, 7], np.float32)[:, None] / 8
    root = np.asarray(truth.root)
    np.testing.assert_allclose(pred["rows"][R.INTERPOLATION].root, (1 - w) * root[0] + w * root[8],
                               atol=1e-6)


def test_evaluate_writes_table_and_gap(tmp_path, config, videos):
    preds = {"baseline": _predictor(), "pseudo": _predictor(), "align": _predictor()}
    train_lab = Gamma.of(videos["train"][0]).take([0, 4, 8])
    rows = runner.evaluate(tmp_path, config, predictors=preds, videos=lambda s: iter(videos[s]),
                           labelled_train=train_lab, progress=False)
    # train: 9 frames → 6 unlabelled, 6 frames (labelled 0, 4, 5) → 3; test: 10 (0, 4, 8, 9) → 6
    counts = {(r["split"], r["model"]): r["frames"] for r in rows}
    assert counts[("train", runner.BASELINE)] == 9 and counts[("test", R.PAPER)] == 6
    assert [r["model"] for r in rows if r["split"] == "test"] == list(NO_PHOTOMETRIC)
    out = tmp_path / "eval"
    doc = json.loads((out / "table1.json").read_text())
    assert doc == json.loads(json.dumps(rows))
    assert set(metrics.COLUMNS) <= set(doc[0]) and {"split", "model"} <= set(doc[0])
    with (out / "table1.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows)
    assert float(csv_rows[0]["MPJPE"]) == pytest.approx(rows[0]["MPJPE"])
    md = (out / "table1.md").read_text()
    assert md.count("\n") == len(rows) + 2 and "MPJPE (SD) ↓" in md and "F@5 ↑" in md
    # gap table: the frames of each bin add up to the split
    with (out / "gap.csv").open() as f:
        g = [r for r in csv.DictReader(f) if r["model"] == runner.COPY]
    assert sum(int(r["frames"]) for r in g if r["split"] == "train") == 9
    assert (out / "gap.png").stat().st_size > 1000 and (out / "gap.md").is_file()
    # the mean over bins weighted by frames is the table value
    tr = [r for r in g if r["split"] == "train"]
    weighted = sum(int(r["frames"]) * float(r["MPJPE"]) for r in tr) / 9
    assert weighted == pytest.approx(next(r["MPJPE"] for r in rows if r["split"] == "train"
                                          and r["model"] == runner.COPY))


def test_max_frames_cap(tmp_path, config, videos):
    import dataclasses

    capped = dataclasses.replace(config, eval=dataclasses.replace(config.eval, max_frames=4,
                                                                  splits=("train",)))
    train_lab = Gamma.of(videos["train"][0]).take([0])
    rows = runner.evaluate(tmp_path, capped, predictors={"align": _predictor()},
                           videos=lambda s: iter(videos[s]), labelled_train=train_lab, progress=False,
                           write=False)
    assert {r["frames"] for r in rows} == {4}
    assert runner.BASELINE not in {r["model"] for r in rows}


def test_markdown_bold_and_format():
    row = lambda scenario, model, v: {"split": "test", "scenario": scenario, "model": model, "frames": 3,
                                      **{c: v for c in metrics.COLUMNS}}
    rows = [row(1, "A", 1.0), row(2, "B", 2.0), row("ref", "C", 0.5)]
    lines = table_lib.markdown(rows).splitlines()
    a, b, c = lines[2], lines[3], lines[4]
    assert "**2.000**" in b and "**1.00**" in a  # F higher is better, errors lower is better
    assert "**" not in c  # reference rows are never bold
    assert gap_lib.gap_bins(64) == [(1, 1), (2, 3), (4, 7), (8, 15), (16, 31), (32, 63), (64, 127)]


def test_unfinished_phase_is_recorded(tmp_path, config, videos, monkeypatch, capsys):
    """A run whose align phase stopped at step 3 of 10 (and has no other phase): its rows are
    evaluated with a warning, and eval/checkpoints.json records the step read and that the phase
    is unfinished."""
    from test_training_fakes import phase_checkpoint

    from handprop_jax.training import checkpoint
    from handprop_jax.training.checkpoint import load_run

    config_lib.save_json(config, tmp_path / "config.json")
    phase_checkpoint(tmp_path, "align", step=3, total_steps=10)
    monkeypatch.setattr(checkpoint, "bound_from_run", lambda workdir, phase, *a, **k: (  # read, stand-in net
        load_run(workdir, phase)[0], _predictor()))
    train_lab = Gamma.of(videos["train"][0]).take([0, 4, 8])
    rows = runner.evaluate(tmp_path, config, videos=lambda s: iter(videos[s]), labelled_train=train_lab,
                           progress=False)
    assert R.PAPER in {r["model"] for r in rows} and runner.BASELINE not in {r["model"] for r in rows}
    err = capsys.readouterr().err
    assert "phase 'align' of" in err and "unfinished (step 3 of 10)" in err
    used = json.loads((tmp_path / "eval" / "checkpoints.json").read_text())
    # the default eval.checkpoint is "best"; a checkpoint without a validation value is never best, so
    # the latest step is read
    assert config.eval.checkpoint == "best"
    assert used == {"align": {"phase": "align", "step": 3, "total_steps": 10, "finished": False,
                              "which": "best"}}


def test_recurrent_row_takes_the_whole_video_prediction(config, videos):
    """A phase with a temporal input: its recurrent row is ``BoundModel.sequence`` over the whole video
    (every frame, in order) restricted to the unlabelled frames; its single-frame row is ``regress``."""
    import dataclasses

    video = videos["train"][0]  # T = 9, K = 4
    truth = Gamma.of(video)
    calls = []

    def sequence(images, K):
        calls.append(images.shape[0])
        return Gamma(*(np.asarray(x) + 0.001 for x in truth))

    model = dataclasses.replace(_predictor(), sequence=sequence)
    pred = runner.video_predictions(video, 4, {"temporal_consistency": model}, None,
                                    table_rows=R.by_name([R.TEMPORAL, R.TEMPORAL_SINGLE]))
    assert calls == [9] and list(pred["rows"]) == [R.TEMPORAL, R.TEMPORAL_SINGLE]
    np.testing.assert_allclose(pred["rows"][R.TEMPORAL].root, truth.root[[1, 2, 3, 5, 6, 7]] + 0.001)
    np.testing.assert_allclose(pred["rows"][R.TEMPORAL_SINGLE].root, np.tile([[0.0, 0.0, 0.5]], (6, 1)))
    # a single-frame model has no recurrent row
    plain = runner.video_predictions(video, 4, {"temporal_consistency": _predictor()}, None,
                                     table_rows=R.by_name([R.TEMPORAL]))
    assert plain["rows"] == {}
