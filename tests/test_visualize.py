"""handprop visualize: frame picking, the overlay grid (through the renderer) and training curves."""

import json

import numpy as np
import pytest
from PIL import Image
from test_evaluation import _predictor, _video  # shared stand-ins (tests/ is on sys.path)

from handprop_jax import visualize as V


@pytest.fixture(scope="module")
def config():
    from handprop_jax import config as config_lib

    return config_lib.override(config_lib.load("tiny"), ["data.image_size=16", "data.label_stride=4",
                                                        "eval.batch_size=4"])


def test_pick_frames_largest_gap_round_robin():
    vids = [{"image": np.zeros((9, 2, 2, 3), np.uint8)}, {"image": np.zeros((6, 2, 2, 3), np.uint8)}]
    picks = V.pick_frames(vids, 4, 3)
    # video 0 (labelled 0, 4, 8): gap 2 at frames 2 and 6; video 1 (labelled 0, 4, 5): gap 2 at frame 2
    assert [(id(v), u) for v, u in picks] == [(id(vids[0]), 2), (id(vids[1]), 2), (id(vids[0]), 6)]


def _still_photometric(config):
    """The photometric propagation with no refinement step: crop-aware interpolation itself."""
    import dataclasses

    from handprop_jax.propagation.core import Propagator

    cfg = dataclasses.replace(config, propagation=dataclasses.replace(config.propagation, steps=0))
    return {"photometric": Propagator.from_config(cfg, "photometric")}


def test_columns_are_the_evaluation_rows(config):
    """Each picked frame's cells: ground truth γ_u, Baseline = the regressor's hand, Propagation (both
    sides) = the labelled neighbours blended — exactly γ_u for the stand-in video, whose hand moves
    along a geodesic at constant speed (and every crop has the same K)."""
    from handprop_jax.evaluation import rows as R

    assert V.COLUMNS[2:] == (R.BASELINE, R.ALIGN, R.BOTH_SIDES)
    vids = [_video(config, 9, 0), _video(config, 6, 1)]
    picks = V.pick_frames(vids, 4, 3)
    preds = V.frame_predictions(picks, 4, {"baseline": _predictor(), "pseudo": _predictor()},
                                _still_photometric(config))
    for i, (video, u) in enumerate(picks):
        np.testing.assert_array_equal(preds["image"][i], video["image"][u])
        np.testing.assert_allclose(preds["K"][i], video["K"][u])
        np.testing.assert_allclose(preds["Ground truth"].pose[i], video["pose"][u])
        np.testing.assert_allclose(preds["Baseline"].root[i], [0.0, 0.0, 0.5])
        np.testing.assert_allclose(preds[R.BOTH_SIDES].root[i], video["root"][u], atol=1e-6)
        np.testing.assert_allclose(preds[R.BOTH_SIDES].pose[i], video["pose"][u], atol=1e-4)
    only_align = V.frame_predictions(picks, 4, {"pseudo": _predictor()})
    assert set(only_align) == {"image", "K", "Ground truth", R.ALIGN}


@pytest.mark.slow  # renders the overlay grid of a run
def test_overlays_and_curves(tmp_path, config):
    vids = [_video(config, 9, 0), _video(config, 6, 1)]
    logs = tmp_path / "logs"
    logs.mkdir()
    recs = [{"phase": p, "stage": s, "step": i, "loss": 1.0 / (i + 1), "l_align": 0.5}
            for p, s in (("stage1", 1), ("align", 3)) for i in range(5)]
    (logs / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\nnot json\n")
    paths = V.visualize(tmp_path, config, num_frames=2, display=16, predictors={"baseline": _predictor(),
                                                                     "pseudo": _predictor()}, videos=vids)
    grid = np.asarray(Image.open(paths["overlays"]))
    assert grid.shape[0] > 150 and grid.shape[1] > 400
    assert np.asarray(Image.open(paths["curves"])).std() > 0
    assert V.plot_curves(V.read_metrics(logs / "metrics.jsonl"), tmp_path / "c.png") == ["stage1", "align"]


def test_rendered_mesh_changes_the_image(config):
    """The overlay of the ground-truth mesh differs from the input exactly where the hand projects."""
    from handprop_jax.gamma import Gamma
    from handprop_jax.hand import default_mano, hand_mesh
    from handprop_jax.propagation.overlays import render_overlays

    video = _video(config, 6, 3)
    mano = default_mano(config)
    verts, joints = hand_mesh(mano, Gamma.of(video).take([0]))
    img = np.zeros((1, 16, 16, 3), np.uint8)
    out = render_overlays(img, verts, video["K"][:1], mano.faces, batch_size=8)  # as overlay_grid
    changed = np.argwhere(out[0].sum(-1) > 0)
    assert len(changed) > 5
    uv = (video["K"][0] @ joints[0].T).T
    uv = uv[:, :2] / uv[:, 2:]
    # the wrist's pixel is covered by the rendered hand
    wrist = np.round(uv[0]).astype(int)
    assert 0 <= wrist[0] < 16 and 0 <= wrist[1] < 16  # the stand-in video puts the wrist at the centre
    assert out[0, wrist[1], wrist[0]].sum() > 0
