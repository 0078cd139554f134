"""The user evaluation protocol (handprop_jax.evaluation.protocol): the boxes are data/boxes.py's,
no ground truth of an unlabelled frame is read to make them, and the re-rendered crops are the data
set's at the data set's boxes."""

import numpy as np
import pytest

from handprop_jax import config as config_lib
from handprop_jax.data import boxes as boxes_lib
from handprop_jax.data import synthetic
from handprop_jax.data.sparse import label_sets
from handprop_jax.errors import UserError
from handprop_jax.evaluation import data as eval_data
from handprop_jax.evaluation import protocol, runner
from handprop_jax.gamma import Gamma
from handprop_jax.hand import default_mano, hand_mesh

STRIDE = 4


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny built synthetic data set (1 test video of 11 frames at 32 px) and its config."""
    from handprop_jax.data.build import build

    data_dir = tmp_path_factory.mktemp("data")
    config = config_lib.load("tiny", [f"data.data_dir={str(data_dir)!r}", "data.synth_videos=[1,1,1]",
                                      "data.synth_frames=11", f"data.label_stride={STRIDE}"])
    build(config.data.name, config.data.data_dir, data_config=config.data, verbose=False)
    video = next(eval_data.iter_videos(config, "test"))
    return config, video


def test_tool_boxes_are_data_boxes_rule(built):
    """(a) The user protocol's boxes are video_boxes' for the same labels, and, computed here from
    the labels' mesh with numpy: on labelled frames the square around the projected vertices (side
    1.2x their extent, >= 0.15 m at the wrist's depth), in between linear in time. On the labelled
    frames they are the renderer's crops (the data set's boxes)."""
    config, video = built
    spec = synthetic.spec_from_config(config.data)
    mano = default_mano(config)
    T = len(video["image"])
    lab, _ = label_sets(T, STRIDE)
    assert lab.tolist() == [0, 4, 8, 10]
    labels = Gamma.of(video).numpy().take(lab)
    K_full = synthetic.video_parameters(spec, "test", 0)["K_full"].astype(np.float64)
    got = protocol.tool_boxes(mano, lab, labels, K_full, T)
    # the same function the tool and the hand_videos builder call
    joints, verts = boxes_lib.label_geometry(mano, labels)
    want, source = boxes_lib.video_boxes(T, 480, 640, K_full, lab, joints, vertices3d=verts)
    np.testing.assert_array_equal(got, want)
    assert source[lab].tolist() == ["label"] * 4
    # independent numbers: numpy projection of the MANO vertices, np.interp in time
    v, _ = hand_mesh(mano, labels)
    uvw = np.asarray(v, np.float64) @ K_full.T
    uv = uvw[..., :2] / uvw[..., 2:]
    lo, hi = uv.min(1), uv.max(1)
    side = np.maximum(1.2 * (hi - lo).max(1), K_full[0, 0] * 0.15 / labels.root[:, 2])
    anchors = np.concatenate([(lo + hi) / 2, side[:, None]], 1)
    np.testing.assert_allclose(got[lab], anchors, atol=1e-3)
    t = np.arange(T)
    for c in range(3):
        np.testing.assert_allclose(got[:, c], np.interp(t, lab, anchors[:, c]), atol=1e-3)
    # the renderer's crops on the labelled frames: one rule
    np.testing.assert_allclose(got[lab], synthetic.crop_boxes(spec, "test", 0)[lab], atol=1e-2)


def test_user_crop_reads_no_unlabelled_ground_truth(built, monkeypatch):
    """(b) Spy: the boxes are made from the labelled frames' labels only — every label handed to the
    box rule is a labelled frame's, and NaN in every unlabelled frame's ground truth changes nothing
    of the user crops (image, K, box)."""
    config, video = built
    spec = synthetic.spec_from_config(config.data)
    mano = default_mano(config)
    T = len(video["image"])
    lab, unl = label_sets(T, STRIDE)
    seen = []
    original = boxes_lib.label_geometry

    def spy(mano_, gamma):
        seen.append(Gamma.of(gamma).numpy())
        return original(mano_, gamma)

    monkeypatch.setattr(boxes_lib, "label_geometry", spy)
    clean = protocol.user_video(video, spec, "test", STRIDE, mano)
    assert len(seen) == 1 and len(seen[0].root) == len(lab)
    np.testing.assert_array_equal(seen[0].root, video["root"][lab])
    np.testing.assert_array_equal(seen[0].pose, video["pose"][lab])
    poisoned = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in video.items()}
    for key in ("root", "pose", "betas", "joints3d", "joints2d"):
        poisoned[key] = poisoned[key].astype(np.float32)
        poisoned[key][unl] = np.nan
    again = protocol.user_video(poisoned, spec, "test", STRIDE, mano)
    for key in ("image", "K", "box"):
        np.testing.assert_array_equal(again[key], clean[key])
    assert np.all(np.isfinite(clean["box"]))
    # the unlabelled frames are cropped elsewhere than the stored ground-truth-centred crops
    assert not np.allclose(clean["K"][unl], video["K"][unl], atol=1e-2)


def test_rerendered_crop_at_the_stored_box_is_the_stored_crop(built):
    """(c) At the data set's own boxes the re-rendered crops are the stored (PNG-decoded) crops and
    their K the stored K; the user protocol's labelled frames (the vertex rule's boxes) too."""
    config, video = built
    spec = synthetic.spec_from_config(config.data)
    image, K = synthetic.render_video_at(spec, "test", 0, synthetic.crop_boxes(spec, "test", 0))
    diff = np.abs(image.astype(np.int64) - video["image"])
    assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3  # rounding of a pixel at most
    np.testing.assert_allclose(K, video["K"], atol=1e-3)
    user = protocol.user_video(video, spec, "test", STRIDE, default_mano(config))
    lab, _ = label_sets(len(video["image"]), STRIDE)
    diff = np.abs(user["image"][lab].astype(np.int64) - video["image"][lab])
    assert diff.max() <= 2 and np.mean(diff > 0) < 1e-2
    np.testing.assert_allclose(user["K"][lab], video["K"][lab], rtol=1e-4, atol=1e-3)


def test_evaluate_reports_both_protocols(built, tmp_path):
    """evaluate(protocol="both"): the propagation and reference rows once per protocol, the user ones
    under "test (user crops)"; "user" is refused where the crops cannot be re-rendered."""
    config, _ = built
    rows_wanted = ("Copy", "Copy (crop-aware)", "Interpolation (crop-aware)", "Mean pose")
    config = config_lib.override(config, [f"eval.rows={rows_wanted}", "eval.splits=('test',)"])
    mean = Gamma(np.zeros((1, 3), np.float32) + [0, 0, 0.5], np.zeros((1, 48), np.float32),
                 np.zeros((1, 10), np.float32))
    rows = runner.evaluate(tmp_path, config, predictors={}, labelled_train=mean, progress=False,
                           protocol="both")
    names = {(r["split"], r["model"]) for r in rows}
    assert ("test", "Mean pose") in names and ("test (user crops)", "Mean pose") not in names
    assert {("test (user crops)", m) for m in rows_wanted[:3]} <= names
    by = {(r["split"], r["model"]): r for r in rows}
    # plain copy ignores the crops: the same under both protocols; the crop-aware one does not
    assert by["test", "Copy"]["MPJPE"] == pytest.approx(by["test (user crops)", "Copy"]["MPJPE"], abs=1e-4)
    assert by["test", "Copy (crop-aware)"]["MPJPE"] != pytest.approx(
        by["test (user crops)", "Copy (crop-aware)"]["MPJPE"], abs=1e-3)
    assert "test (user crops)" in (tmp_path / "eval" / "gap.md").read_text()
    with pytest.raises(UserError, match="synthetic"):
        runner.evaluate(tmp_path, config, predictors={}, labelled_train=mean, progress=False,
                        protocol="user", videos=lambda split: iter([]))
