"""Hand crops and intrinsics (handprop_jax.data.crop), against closed forms and pixel content."""

import numpy as np
import pytest

from handprop_jax.data import builder_support as support
from handprop_jax.data import crop as crop_lib


def _closed_form(box, size):
    """The module docstring's A = [[s, 0, -s x0 - 0.5], [0, s, -s y0 - 0.5], [0, 0, 1]], by hand."""
    s, x0, y0 = size / box.side, box.cx - box.side / 2, box.cy - box.side / 2
    return np.array([[s, 0.0, -s * x0 - 0.5], [0.0, s, -s * y0 - 0.5], [0.0, 0.0, 1.0]])


def test_crop_matrix_is_the_closed_form():
    """crop_matrix (crop_intrinsics of the identity camera) and crop_points are the docstring's A."""
    rng = np.random.default_rng(5)
    for cx, cy, side in zip(rng.uniform(-50, 700, 20), rng.uniform(-50, 500, 20), rng.uniform(20, 400, 20),
                            strict=True):
        box = crop_lib.Box(float(cx), float(cy), float(side))
        A = crop_lib.crop_matrix(box, 64)
        assert A.dtype == np.float64
        np.testing.assert_allclose(A, _closed_form(box, 64), rtol=1e-13, atol=1e-11)
        uv = rng.uniform(0, 640, (5, 2))
        want = np.c_[uv, np.ones(5)] @ _closed_form(box, 64).T
        np.testing.assert_allclose(crop_lib.crop_points(uv, box, 64), want[:, :2], rtol=1e-13, atol=1e-11)


def test_crop_matrix_closed_form_centre_maps_to_crop_centre():
    K = np.array([[100.0, 0, 50], [0, 120.0, 40], [0, 0, 1]])
    box = crop_lib.Box(cx=50.0, cy=40.0, side=20.0)
    K2 = crop_lib.crop_intrinsics(K, box, 10)
    # s = 10 / 20 = 0.5: focal halves; the box centre (= principal point) lands on (size-1)/2.
    np.testing.assert_allclose(K2, [[50.0, 0, 4.5], [0, 60.0, 4.5], [0, 0, 1]])


def test_projection_commutes_with_crop():
    rng = np.random.default_rng(0)
    K = np.array([[617.3, 0, 312.4], [0, 617.3, 241.4], [0, 0, 1]])
    X = rng.uniform([-0.1, -0.1, 0.4], [0.1, 0.1, 0.7], size=(21, 3))
    uv = X @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    box = crop_lib.hand_box(uv, scale=1.7)
    K2 = crop_lib.crop_intrinsics(K, box, 37)
    uv2 = X @ K2.T
    np.testing.assert_allclose(uv2[:, :2] / uv2[:, 2:], crop_lib.crop_points(uv, box, 37), atol=1e-9)
    # the joints' bounding box is centred in the crop, with the requested margin
    c = crop_lib.crop_points(uv, box, 37)
    np.testing.assert_allclose((c.min(0) + c.max(0)) / 2, [18.0, 18.0], atol=1e-9)
    assert np.isclose(np.max(c.max(0) - c.min(0)), 37 / 1.7)


def test_crop_intrinsics_vectorised_are_the_crop_matrix_box_by_box():
    """(T, 3) boxes with one K or T of them (skew, an unnormalised last row included): box by box the
    closed form ``A @ K`` (module docstring); a Box gives the same as its array."""
    rng = np.random.default_rng(2)
    T = 50
    boxes = np.stack([rng.uniform(-50, 700, T), rng.uniform(-50, 500, T), rng.uniform(20, 400, T)], 1)
    Ks = np.tile(np.array([[600.0, 0, 320], [0, 580.0, 240], [0, 0, 1]]), (T, 1, 1))
    Ks[:, 0, 1] = rng.uniform(-2, 2, T)  # skew
    Ks[::3] *= 2.5  # the same camera, last row (0, 0, 2.5)
    for K in (Ks, Ks[0]):
        got = crop_lib.crop_intrinsics(K, boxes, 64)
        assert got.shape == (T, 3, 3) and got.dtype == np.float64
        for g, k, b in zip(got, np.broadcast_to(K, (T, 3, 3)), boxes, strict=True):
            want = _closed_form(crop_lib.Box(*b), 64) @ k
            np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-9)
    one = crop_lib.crop_intrinsics(Ks[7], crop_lib.Box(*boxes[7]), 64)
    np.testing.assert_array_equal(one, crop_lib.crop_intrinsics(Ks[7], boxes[7], 64))


def test_crop_intrinsics_keep_float32_and_map_pixels_into_the_crop():
    """float32 K and boxes give float32 intrinsics (the synthetic renderer's arithmetic); a 3D point
    seen through them lands at (u - c) * size / side + (size - 1) / 2 of its source pixel u."""
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]], np.float32)
    boxes = np.array([[400.0, 200.0, 100.0], [100.5, 300.25, 61.0]], np.float32)
    got = crop_lib.crop_intrinsics(K, boxes, 50)
    assert got.dtype == np.float32
    X = np.array([0.03, -0.02, 0.5])
    full = (K.astype(np.float64) @ X)[:2] / X[2]
    for k, (cx, cy, side) in zip(got.astype(np.float64), boxes.astype(np.float64), strict=True):
        np.testing.assert_allclose((k @ X)[:2] / X[2], (full - [cx, cy]) * 50 / side + 24.5, atol=1e-4)


def test_crop_image_unit_scale_is_an_exact_copy():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    # box of side 8 whose edges fall on pixel edges: columns 10..17, rows 5..12
    box = crop_lib.Box(cx=13.5, cy=8.5, side=8.0)
    np.testing.assert_array_equal(crop_lib.crop_image(image, box, 8), image[5:13, 10:18])


@pytest.mark.parametrize("side,size", [(60.0, 24), (23.0, 32)])
def test_crop_image_puts_a_blob_where_crop_points_says(side, size):
    """A Gaussian blob at a sub-pixel source location has its centroid at crop_points(location)."""
    h, w = 120, 160
    u0, v0 = 70.3, 55.8
    vv, uu = np.mgrid[0:h, 0:w]
    blob = 255 * np.exp(-((uu - u0) ** 2 + (vv - v0) ** 2) / (2 * 2.5 ** 2))
    image = np.repeat(blob[..., None], 3, axis=2).round().astype(np.uint8)
    box = crop_lib.Box(cx=72.1, cy=54.2, side=side)
    out = crop_lib.crop_image(image, box, size)[..., 0].astype(np.float64)
    vv, uu = np.mgrid[0:size, 0:size]
    centroid = np.array([(out * uu).sum(), (out * vv).sum()]) / out.sum()
    np.testing.assert_allclose(centroid, crop_lib.crop_points(np.array([[u0, v0]]), box, size)[0],
                               atol=0.15)


def test_crop_outside_the_image_is_black():
    image = np.full((10, 10, 3), 200, np.uint8)
    out = crop_lib.crop_image(image, crop_lib.Box(cx=-0.5, cy=4.5, side=10.0), 10)
    assert np.all(out[:, :5] == 0) and np.all(out[:, 5:] == 200)


def test_crop_frame_rejects_hands_outside_or_behind():
    K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
    image = np.zeros((48, 64, 3), np.uint8)
    joints = np.random.default_rng(0).uniform([-0.02, -0.02, 0.5], [0.02, 0.02, 0.55], size=(21, 3))
    crop, K2, uv = crop_lib.crop_frame(image, K, joints, 16)
    assert crop.shape == (16, 16, 3) and uv.shape == (21, 2)
    with pytest.raises(ValueError, match="outside the image"):
        crop_lib.crop_frame(image, K, joints + [1.0, 0, 0], 16)  # projects 200 px to the right
    with pytest.raises(ValueError, match="behind the camera"):
        crop_lib.crop_frame(image, K, joints * [1, 1, -1], 16)


def test_skip_log_counts_or_raises():
    log = support.SkipLog("skip")
    log.handle("train", support.BadInput("missing image", "/x/rgb/0001.png"))
    log.handle("train", support.BadInput("missing image", "/x/rgb/0002.png"))
    assert log.counts == {"train": {"missing image": 2}}
    assert "train: 2 skipped (missing image: 2)" == log.summary()
    with pytest.raises(ValueError, match="/x/rgb/0003.png: corrupt image"):
        support.SkipLog("raise").handle("val", support.BadInput("corrupt image", "/x/rgb/0003.png"))


def test_checked_array_names_the_key():
    with pytest.raises(support.BadInput, match="handPose has shape"):
        support.checked_array(np.zeros(45), (48,), "handPose", "/m.pkl")
    with pytest.raises(support.BadInput, match="NaN") as info:
        support.checked_array([1.0, np.nan, 0.0], (3,), "trans", "/m.json")
    assert info.value.reason == "non-finite values" and info.value.path == "/m.json"
