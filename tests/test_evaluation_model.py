"""Evaluation and propagation through the real model facade (``handprop_jax.model.api``) with
freshly initialised tiny networks: the aligner's output layers start at zero, so scenario-2
propagation must reproduce copy-propagation exactly; perturbing them must move exactly the
unlabelled frames."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from handprop_jax import config as config_lib
from handprop_jax.data.export import write_example
from handprop_jax.evaluation import rows as R
from handprop_jax.evaluation import runner
from handprop_jax.gamma import Gamma
from handprop_jax.model.api import HandPropModel
from handprop_jax.propagation.cli import PropagateOptions, propagate_files
from handprop_jax.propagation.core import propagate_video

S = 32
pytestmark = pytest.mark.slow  # compiles a (tiny) ResNet: ~10 s alone, more on a busy machine


@pytest.fixture(scope="module")
def setup():
    config = config_lib.override(config_lib.load("tiny"), [f"data.image_size={S}", "data.label_stride=4",
                                                          "model.encoder_width=8", "eval.batch_size=4"])
    variables = HandPropModel.create(config).init(jax.random.PRNGKey(0))
    return config, variables


def predictor_from_variables(config, variables):
    return HandPropModel.create(config).bind(variables)


def _video(T, seed):
    rng = np.random.default_rng(seed)
    K = np.tile(np.array([[40.0, 0, 15.5], [0, 40.0, 15.5], [0, 0, 1]], np.float32), (T, 1, 1))
    return {"image": rng.integers(0, 255, (T, S, S, 3), dtype=np.uint8), "K": K,
            "root": (rng.normal(size=(T, 3)) * 0.01 + [0, 0, 0.5]).astype(np.float32),
            "pose": (rng.normal(size=(T, 48)) * 0.2).astype(np.float32),
            "betas": (rng.normal(size=(T, 10)) * 0.2).astype(np.float32),
            "joints3d": np.zeros((T, 21, 3), np.float32)}


def test_zero_initialised_aligner_is_copy_propagation(setup):
    config, variables = setup
    pred = predictor_from_variables(config, variables)
    video = _video(9, 0)
    out = runner.video_predictions(video, 4, {"baseline": pred, "align": pred}, None)
    rows = out["rows"]
    for prop, copy, base, truth in zip(rows[R.PAPER], rows[R.COPY], rows[R.BASELINE],
                                       Gamma.of(video), strict=True):
        np.testing.assert_array_equal(prop, copy)
        assert base.shape == (6,) + truth.shape[1:]
    assert np.all(np.isfinite(rows[R.BASELINE].root))


def test_trained_like_aligner_moves_only_unlabelled_frames(setup):
    config, variables = setup
    params = jax.tree_util.tree_map(lambda x: x, variables["params"])
    out_layer = params["root_aligner"]["net"]["out"]
    out_layer["bias"] = jnp.array([0.01, -0.02, 0.03])
    pred = predictor_from_variables(config, {**variables, "params": params})
    video = _video(9, 1)
    lab = np.array([0, 4, 8])
    labels = Gamma.of(video).take(lab)
    res = propagate_video(pred, video["image"], video["K"], lab, labels).gamma
    copy = propagate_video(predictor_from_variables(config, variables), video["image"], video["K"], lab,
                           labels).gamma
    delta = res.root - copy.root
    np.testing.assert_allclose(delta[lab], 0.0)
    np.testing.assert_allclose(delta[~np.isin(np.arange(9), lab)], np.tile([0.01, -0.02, 0.03], (6, 1)),
                               atol=1e-6)
    np.testing.assert_array_equal(res.betas, copy.betas)  # β is copied by the aligner


@pytest.mark.parametrize("both_sides", [False, True])
def test_propagate_tool_reproduces_evaluation_rows(setup, tmp_path, both_sides):
    """`handprop propagate` on a video written to disk in the tool's formats (PNG frames, labels.json,
    per-frame intrinsics.npy, boxes.json: the frames are the crops) gives the evaluation's
    Propagation rows for the unlabelled frames."""
    config, variables = setup
    params = jax.tree_util.tree_map(lambda x: x, variables["params"])
    for name, scale in (("root_aligner", 0.01), ("pose_aligner", 0.05)):
        out_layer = params[name]["net"]["out"]
        out_layer["bias"] = scale * jnp.linspace(-1.0, 1.0, out_layer["bias"].shape[0])
        out_layer["kernel"] = scale * jax.random.normal(jax.random.PRNGKey(1), out_layer["kernel"].shape)
    pred = predictor_from_variables(config, {**variables, "params": params})
    video = _video(10, 2)
    files = write_example(video, tmp_path / "example", stride=4)
    arrays = propagate_files(files["frames"], files["labels"], tmp_path / "out",
                             PropagateOptions(intrinsics=str(files["intrinsics"]), both_sides=both_sides,
                                              boxes=files["boxes"], method="paper"),
                             bound=(config, pred))
    table = runner.video_predictions(video, 4, {"align": pred}, None, both_sides=both_sides)
    unl = table["frames"]
    np.testing.assert_array_equal(unl, np.nonzero(~arrays["labelled"])[0])
    row = table["rows"][R.PAPER_BOTH if both_sides else R.PAPER]
    copy = table["rows"][R.COPY]
    for k, v in row.as_dict().items():
        np.testing.assert_allclose(arrays[k][unl], v, rtol=1e-6, atol=1e-6, err_msg=k)
    # the aligner really moved the annotations (the comparison is not copy against copy)
    assert np.abs(arrays["root"][unl] - copy.root).max() > 1e-3
    assert np.abs(arrays["pose"][unl] - copy.pose).max() > 1e-3
