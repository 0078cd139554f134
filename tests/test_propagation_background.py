"""The background cue of the propagation on user crops (``propagation.background``): moving a crop
into another crop of the same camera against crop_intrinsics' convention, the mask on a hand-made
case, and on rendered hands: with a static camera the floor is a lower bound on the hand's side;
with a moving one the labelled frames' check turns the cue off."""

import jax.numpy as jnp
import numpy as np
import pytest

from handprop_jax import config as config_lib
from handprop_jax.camera import project
from handprop_jax.data.crop import crop_intrinsics
from handprop_jax.gamma import Gamma
from handprop_jax.hand import default_mano, hand_mesh
from handprop_jax.propagation import background as bg
from handprop_jax.render import render


def _linear_scene(size, box):
    """A crop of the full-frame image f(x, y) = (x, y, x + y) (full-frame pixels) at ``box``."""
    K = crop_intrinsics(np.eye(3), np.asarray(box, np.float64), size)
    p = np.arange(size, dtype=np.float64)
    xx, yy = np.meshgrid((p - K[0, 2]) / K[0, 0], (p - K[1, 2]) / K[1, 1])  # crop q = K00 x + K02
    return np.stack([xx, yy, xx + yy], -1)


def test_resample_maps_a_crop_through_another_box_of_the_same_camera():
    size = 16
    a, b = np.array([100.0, 80.0, 40.0]), np.array([104.0, 77.0, 30.0])
    moved, inside = bg.resample(_linear_scene(size, a), a, b)
    assert inside.all()  # b lies inside a, and a linear image is resampled exactly
    np.testing.assert_allclose(moved, _linear_scene(size, b), atol=1e-3)
    same, _ = bg.resample(_linear_scene(size, a), a, a)
    np.testing.assert_allclose(same, _linear_scene(size, a), atol=1e-4)
    _, inside = bg.resample(_linear_scene(size, a), a, np.array([120.0, 80.0, 40.0]))
    assert inside[:, : size // 2].all() and not inside[:, -1].any()  # beyond a's edge: flagged


def test_hand_mask_is_where_the_frame_differs_from_the_background_model():
    size = 24
    box = np.array([50.0, 50.0, 24.0])
    rng = np.random.default_rng(0)
    background = rng.integers(0, 200, (size, size, 3)).astype(np.float32)
    frame = background.copy()
    frame[5:15, 8:20] = 255.0  # the hand
    ref_hand = np.zeros((size, size), bool)
    ref_hand[:, 12:] = True  # a labelled view whose own hand covers the right half: not background
    refs = [(np.where(ref_hand[..., None], 0.0, background), box, ~ref_hand),
            (background, box, np.ones((size, size), bool))]
    mask = bg.hand_mask(frame, box, refs, threshold=20.0)
    want = np.zeros((size, size), bool)
    want[5:15, 8:20] = True
    for corner in ((5, 8), (5, 19), (14, 8), (14, 19)):  # the cross's opening rounds the corners
        want[corner] = False
    np.testing.assert_array_equal(mask, want)
    assert bg.mask_side(mask) == 12.0 and bg.mask_side(np.zeros((4, 4), bool)) == 0.0


S = 48
K_FULL = np.array([[500.0, 0, 320.0], [0, 500.0, 240.0], [0, 0, 1]])
CANVAS_BOX = np.array([320.0, 240.0, 720.0])


def _video(mano, shift_camera: bool):
    """7 frames of a hand moving right (about half a hand per frame) and closer over a textured canvas,
    each cropped around it (the canvas covers the frame); ``shift_camera``: the canvas moves too (a
    camera that pans)."""
    rng = np.random.default_rng(5)
    canvas = rng.uniform(0, 0.5, (S, S, 3)).astype(np.float32)
    pose = np.concatenate([[0.3, 0.2, -0.3], rng.normal(0, 0.2, 45)]).astype(np.float32)
    T = 7
    root = np.stack([np.linspace(-0.3, 0.2, T), np.zeros(T), np.linspace(0.55, 0.45, T)], 1)
    root = root.astype(np.float32)
    gamma = Gamma(root, np.tile(pose, (T, 1)), np.zeros((T, 10), np.float32))
    verts, _ = hand_mesh(mano, gamma)
    uv = np.asarray(project(jnp.asarray(verts), jnp.asarray(K_FULL, jnp.float32)))
    lo, hi = uv.min(1), uv.max(1)
    boxes = np.concatenate([(lo + hi) / 2, 1.2 * (hi - lo).max(1, keepdims=True)], 1)
    K = crop_intrinsics(K_FULL, boxes, S).astype(np.float32)
    colours = jnp.asarray(rng.uniform(0.6, 1.0, (778, 3)), jnp.float32)
    images = []
    for t in range(T):
        canvas_box = CANVAS_BOX + (np.array([25.0 * t, -15.0 * t, 0]) if shift_camera else 0)
        back, _ = bg.resample(canvas, canvas_box, boxes[t])
        out = render(jnp.asarray(verts[t]), mano.faces, jnp.asarray(K[t]), colours,
                     jnp.array([0.0, 0.0, -1.0]), (S, S), jnp.asarray(back), ambient=0.6)
        images.append(np.clip(np.asarray(out["image"]) * 255 + 0.5, 0, 255).astype(np.uint8))
    sides = (np.asarray(project(jnp.asarray(verts), jnp.asarray(K))).max(1)
             - np.asarray(project(jnp.asarray(verts), jnp.asarray(K))).min(1)).max(1)
    return np.stack(images), K, boxes, gamma, sides


@pytest.fixture(scope="module")
def mano():
    return default_mano(config_lib.load("tiny"))


@pytest.mark.slow  # quick tier (make test-fast): renders a video and rasterises its labels
def test_a_static_camera_gives_a_lower_bound_on_the_hand_side(mano):
    images, K, boxes, gamma, sides = _video(mano, shift_camera=False)
    labelled, frames = np.array([0, 2, 4, 6]), np.array([1, 3, 5])
    scene = bg.model(mano, images, K, boxes, labelled, gamma.take(labelled))
    floors, result = bg.side_floors(scene, images, boxes, frames), scene.check
    assert result.usable, result.ratio
    # never above the truth on the labelled frames (the check); tight where others saw the background
    assert np.all(result.ratio <= 1.05) and np.sum(result.ratio > 0.95) >= 2, result.ratio
    ratio = floors / sides[frames]
    assert np.all(ratio <= 1.05) and np.all(ratio >= 0.5) and ratio.max() >= 0.9, ratio


@pytest.mark.slow  # renders a video and rasterises its labels
def test_a_moving_camera_turns_the_cue_off(mano):
    images, K, boxes, gamma, _ = _video(mano, shift_camera=True)
    labelled, frames = np.array([0, 2, 4, 6]), np.array([1, 3, 5])
    scene = bg.model(mano, images, K, boxes, labelled, gamma.take(labelled))
    floors, result = bg.side_floors(scene, images, boxes, frames), scene.check
    assert not result.usable, result.ratio
    np.testing.assert_array_equal(floors, 0.0)


def _one_frame_model(usable: bool):
    """A labelled background view and an unlabelled frame whose 'hand' is a 10 x 12 block."""
    size, box = 24, np.array([50.0, 50.0, 24.0])
    rng = np.random.default_rng(1)
    back = rng.integers(0, 200, (size, size, 3)).astype(np.uint8)
    frame = back.copy()
    frame[5:15, 8:20] = 255
    images, boxes = np.stack([back, frame]), np.stack([box, box])
    scene = bg.Model(np.array([0]), images[:1], boxes[:1], np.ones((1, size, size), bool),
                     bg.Check(np.ones(1), usable))
    return scene, images, boxes


def test_the_area_floor_scales_the_estimate_to_the_mask_area():
    scene, images, boxes = _one_frame_model(usable=True)
    area = 10 * 12 - 4  # the block, less the four corners the opening rounds off
    assert bg.side_floors(scene, images, boxes, np.array([1]))[0] == 12.0  # the mask's box side
    # an estimate of side 30 px and area 400 px² scaled to the mask's area: 30 · sqrt(116 / 400)
    got = bg.side_floors(scene, images, boxes, np.array([1]), (np.array([30.0]), np.array([400.0])))
    np.testing.assert_allclose(got, [30.0 * np.sqrt(area / 400.0)], rtol=1e-6)
    off, _, _ = _one_frame_model(usable=False)
    estimate = (np.array([30.0]), np.array([400.0]))
    np.testing.assert_array_equal(bg.side_floors(off, images, boxes, np.array([1]), estimate), 0.0)


def test_extents_follow_the_focal_length(mano):
    """The same hand through half the focal length: box side halves, silhouette area quarters (to
    rasterisation; the wrist at the principal point of a 128-px crop keeps the whole hand inside)."""
    pose = np.zeros((2, 48), np.float32)
    pose[:, 0] = 1.5  # palm towards the camera
    root = np.tile(np.array([[0.0, 0.0, 0.6]], np.float32), (2, 1))
    gamma = Gamma(root, pose, np.zeros((2, 10), np.float32))
    K = np.array([[[f, 0, 63.5], [0, f, 63.5], [0, 0, 1]] for f in (150.0, 75.0)], np.float32)
    sides, areas = bg.extents(mano, gamma, K, 128)
    assert sides[0] < 64 and areas[0] > 500  # the whole hand inside the crop, many pixels
    np.testing.assert_allclose(sides[1] / sides[0], 0.5, rtol=1e-5)
    np.testing.assert_allclose(areas[1] / areas[0], 0.25, rtol=0.06)  # ~240 px: pixel-centre sampling


def test_outline_points_are_the_masks_border_pixels():
    mask = np.zeros((2, 12, 12), bool)
    mask[0, 3:8, 2:7] = True  # a 5 x 5 square: 16 outline pixels
    pts, w = bg.outline_points(mask, 64)
    assert pts.shape == (2, 64, 2) and w.shape == (2, 64)
    assert w[0].sum() == 16 and w[1].sum() == 0  # the empty mask: padding only
    got = {tuple(p) for p in pts[0, :16].astype(int)}
    square = {(x, y) for y in range(3, 8) for x in range(2, 7)}
    inner = {(x, y) for y in range(4, 7) for x in range(3, 6)}
    assert got == square - inner  # (x, y), the interior excluded
    few, wf = bg.outline_points(mask, 4)
    assert wf[0].sum() == 4 and {tuple(p) for p in few[0].astype(int)} <= square - inner
