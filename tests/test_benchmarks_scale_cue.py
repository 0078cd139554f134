"""benchmarks/scale_cue_probe.py's geometry: moving a crop into another crop of the same camera
(against crop_intrinsics' pixel convention) and the background-model hand mask on a hand-made case."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import scale_cue_probe as probe  # noqa: E402

from handprop_jax.data.crop import crop_intrinsics  # noqa: E402


def _scene(size, box):
    """A crop of the full-frame image f(x, y) = (x, y, x + y) (full-frame pixels) at ``box``."""
    K = crop_intrinsics(np.eye(3), np.asarray(box, np.float64), size)
    p = np.arange(size, dtype=np.float64)
    # crop pixel q of full pixel x: q = K[0, 0] x + K[0, 2]
    x = (p - K[0, 2]) / K[0, 0]
    y = (p - K[1, 2]) / K[1, 1]
    xx, yy = np.meshgrid(x, y)
    return np.stack([xx, yy, xx + yy], -1)


def test_resample_maps_a_crop_through_another_box_of_the_same_camera():
    size = 16
    a, b = np.array([100.0, 80.0, 40.0]), np.array([104.0, 77.0, 30.0])
    moved, inside = probe.resample(_scene(size, a), a, b)
    want = _scene(size, b)
    # b lies inside a: every pixel is seen, and the linear image is resampled exactly
    assert inside.all()
    np.testing.assert_allclose(moved, want, atol=1e-3)
    same, inside = probe.resample(_scene(size, a), a, a)
    np.testing.assert_allclose(same, _scene(size, a), atol=1e-4)
    # a box half outside a: the pixels beyond a's edge are flagged
    _, inside = probe.resample(_scene(size, a), a, np.array([120.0, 80.0, 40.0]))
    assert inside[:, : size // 2].all() and not inside[:, -1].any()


def test_hand_mask_is_where_the_frame_differs_from_the_background_model():
    size = 24
    box = np.array([50.0, 50.0, 24.0])
    rng = np.random.default_rng(0)
    background = rng.integers(0, 200, (size, size, 3)).astype(np.float32)
    frame = background.copy()
    frame[5:15, 8:20] = 255.0  # the hand
    # two labelled views: one with its own hand over the right half (masked out as not background)
    ref_hand = np.zeros((size, size), bool)
    ref_hand[:, 12:] = True
    ref1 = (np.where(ref_hand[..., None], 0.0, background), box, ~ref_hand)
    ref2 = (background, box, np.ones((size, size), bool))
    mask = probe.hand_mask(frame, box, [ref1, ref2], threshold=20.0)
    want = np.zeros((size, size), bool)
    want[5:15, 8:20] = True
    for corner in ((5, 8), (5, 19), (14, 8), (14, 19)):  # the cross's opening rounds the corners
        want[corner] = False
    np.testing.assert_array_equal(mask, want)
