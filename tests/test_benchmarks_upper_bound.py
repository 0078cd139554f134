"""benchmarks/aligner_upper_bound.py on a tiny built data set: before any training (zero-initialised
output layers) each design's propagation is exactly its reference row from the package's
Propagator — the stacked design's residual on crop-aware copy / interpolation, the paper's aligner
on copy (or on the crop-aware transfer) — through the script's own evaluation queries."""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import aligner_upper_bound as ub  # noqa: E402

from handprop_jax import config as config_lib  # noqa: E402
from handprop_jax.hand import default_mano  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    config = config_lib.load("tiny", [f"data.data_dir={str(data_dir)!r}", "data.synth_videos=[2,1,2]",
                                      "data.synth_frames=11", "data.label_stride=4", "data.max_gap=3"])
    from handprop_jax.data.build import build

    build(config.data.name, config.data.data_dir, data_config=config.data, verbose=False)
    train = ub.load_videos(config.data, "train")
    test = ub.load_videos(config.data, "test")
    return config, train, test


def _context(data, argv):
    config, train, test = data
    args = ub.parse_args(["--config", "tiny", *argv])
    return ub.Context(config=config, mano=default_mano(config), args=args, train=train, splits={"test": test})


def _assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_eval_items_follow_table_one(data):
    _, _, test = data
    it = ub.eval_items(test, 4)
    # 11 frames, K = 4: labelled 0, 4, 8, 10; unlabelled 1-3, 5-7, 9 in each of the two videos
    np.testing.assert_array_equal(it.u, [1, 2, 3, 5, 6, 7, 9, 12, 13, 14, 16, 17, 18, 20])
    np.testing.assert_array_equal(it.nearest[:7], [0, 0, 4, 4, 4, 8, 8])  # ties to the earlier frame
    np.testing.assert_array_equal(it.gap[:7], [1, 2, 1, 1, 2, 1, 1])
    np.testing.assert_allclose(it.weight[:7], [0.25, 0.5, 0.75, 0.25, 0.5, 0.75, 0.5])


@pytest.mark.slow  # compiles the aligner benchmark
def test_zero_residual_is_exactly_the_crop_aware_prior(data):
    ctx = _context(data, ["--design", "stacked", "--width", "8", "--eval-batch", "8"])
    design = ub.StackedDesign(ctx)
    params = design.init(jax.random.PRNGKey(0))
    out = design.propagate(params, "test")
    refs = ub.reference_rows(ctx.config, ctx.splits["test"])
    _assert_same(out["near"], refs["Copy (crop-aware)"])
    _assert_same(out["both"], refs["Interpolation (crop-aware)"])
    # and a non-zero last layer does move it
    params = jax.tree_util.tree_map(lambda x: x + 0.01, params)
    moved = design.propagate(params, "test")["both"]
    assert np.abs(moved.root - refs["Interpolation (crop-aware)"].root).max() > 1e-4


@pytest.mark.slow  # compiles the paper's aligner
def test_untrained_paper_aligner_from_the_crop_aware_transfer_is_its_reference(data):
    # random encoder, aligner output layers zero: the crop-aware start passes through unchanged
    ctx = _context(data, ["--design", "paper", "--eval-batch", "8", "--crop-aware"])
    design = ub.PaperDesign(ctx)
    out = design.propagate(design.init(None), "test")
    refs = ub.reference_rows(ctx.config, ctx.splits["test"])
    _assert_same(out["near"], refs["Copy (crop-aware)"])
    _assert_same(out["both"], refs["Interpolation (crop-aware)"])
