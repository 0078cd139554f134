"""The re-cropping photometric propagation (handprop_jax.propagation.recrop): its boxes are the labels'
rule applied to the first pass's hands, the crops are asked for at those boxes only, and without a
re-crop round it is the photometric propagation with the box and centre terms off."""

import dataclasses

import numpy as np
import pytest

from handprop_jax import config as config_lib
from handprop_jax.data import boxes as boxes_lib
from handprop_jax.data import crop as crop_lib
from handprop_jax.gamma import Gamma
from handprop_jax.hand import default_mano
from handprop_jax.propagation import recrop as recrop_lib
from handprop_jax.propagation.core import Propagator, propagate_video
from handprop_jax.propagation.recrop import Recrop, hand_boxes, propagate_recrop

S, T = 16, 7
K_FULL = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])


@pytest.fixture(scope="module")
def setup():
    config = config_lib.load("synthetic", [f"data.image_size={S}", "propagation.steps=2",
                                           "propagation.blur=(1.0,)", "propagation.pixels=16"])
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, T)[:, None]
    pose = np.concatenate([np.tile([[2.8, 0.3, -0.2]], (T, 1)), rng.normal(0, 0.1, (T, 45))], 1)
    gamma = Gamma((np.array([-0.03, 0.0, 0.45]) + t * [0.06, 0.02, 0.05]).astype(np.float32),
                  pose.astype(np.float32), np.zeros((T, 10), np.float32))
    prop = Propagator.from_config(config, method="photometric")
    return config, prop, gamma


def _crop_fn(calls):
    """A frame source: crops of noise images whose K is the boxes' crop of K_FULL; records the calls."""
    def crop(boxes):
        calls.append(np.array(boxes))
        rng = np.random.default_rng(len(calls))
        K = crop_lib.crop_intrinsics(K_FULL, boxes, S).astype(np.float32)
        return rng.integers(0, 255, (len(boxes), S, S, 3), dtype=np.uint8), K
    return crop


def test_hand_boxes_is_the_label_rule(setup):
    config, _, gamma = setup
    mano = default_mano(config)
    got = hand_boxes(mano, gamma, np.tile(K_FULL, (T, 1, 1)))
    joints, verts = boxes_lib.label_geometry(mano, gamma)
    for i in range(T):
        box = boxes_lib.label_box(joints[i], K_FULL, 480, 640, vertices3d=verts[i])
        np.testing.assert_allclose(got[i], [box.cx, box.cy, box.side], rtol=1e-5)


@pytest.mark.slow  # quick tier (make test-fast): compiles the two-pass propagation, ~1 min on 2 cores
def test_recrop_crops_at_the_first_pass_hands(setup):
    config, prop, gamma = setup
    lab = np.array([0, 6])
    joints, verts = boxes_lib.label_geometry(prop.mano, gamma.take(lab))
    boxes, _ = boxes_lib.video_boxes(T, 480, 640, K_FULL, lab, joints, vertices3d=verts)
    calls = []
    res, last = propagate_recrop(prop, _crop_fn(calls), boxes, K_FULL, lab, gamma.take(lab), both_sides=True,
                                 recrop=Recrop(rounds=1))
    assert len(calls) == 2  # the first crops, then one re-crop
    np.testing.assert_array_equal(calls[0], boxes)
    first = propagate_video(dataclasses.replace(prop, settings=dataclasses.replace(
        prop.settings, box_weight=0.0, centre_weight=0.0)), *_crop_fn([])(boxes), lab, gamma.take(lab),
        both_sides=True)
    u = np.arange(1, 6)
    want = hand_boxes(prop.mano, first.gamma.take(u), np.tile(K_FULL, (5, 1, 1)))
    np.testing.assert_allclose(calls[1][u], want, rtol=1e-5)
    np.testing.assert_array_equal(calls[1][lab], boxes[lab])  # labelled frames keep their boxes
    np.testing.assert_array_equal(last, calls[1])
    np.testing.assert_array_equal(res.gamma.root[lab], gamma.root[lab])


def test_no_round_is_photometric_without_box_terms(setup):
    """(The background cue off: noise frames make random masks; the cue has its own tests.)"""
    config, prop, gamma = setup
    prop = dataclasses.replace(prop, settings=dataclasses.replace(prop.settings, background_floor=False))
    lab = np.array([0, 3, 6])
    boxes = np.tile([320.0, 240.0, 150.0], (T, 1))
    images, K = _crop_fn([])(boxes)
    res, _ = propagate_recrop(prop, _crop_fn([]), boxes, K_FULL, lab, gamma.take(lab),
                              recrop=Recrop(rounds=0), images=images, K=K)
    settings = dataclasses.replace(prop.settings, box_weight=0.0, centre_weight=0.0)
    off = dataclasses.replace(prop, settings=settings)
    want = propagate_video(off, images, K, lab, gamma.take(lab))
    for a, b in zip(res.gamma, want.gamma, strict=True):
        np.testing.assert_array_equal(a, b)


def test_frame_cropper_intrinsics_are_the_boxes_crops(monkeypatch):
    """A user's frames cut at boxes come with data.crop's intrinsics of those boxes (float32)."""
    boxes = np.array([[320.0, 240.0, 150.0], [10.5, 400.0, 77.0]])
    monkeypatch.setattr(recrop_lib, "load_frames",
                        lambda frames, size, boxes: (None, np.zeros((len(boxes), size, size, 3), np.uint8),
                                                     None, None))
    _, K = recrop_lib.frame_cropper("frames", 64, K_FULL)(boxes)
    assert K.dtype == np.float32
    for k, b in zip(K, boxes, strict=True):  # the closed form A @ K (data.crop's module docstring)
        s, x0, y0 = 64 / b[2], b[0] - b[2] / 2, b[1] - b[2] / 2
        A = np.array([[s, 0.0, -s * x0 - 0.5], [0.0, s, -s * y0 - 0.5], [0.0, 0.0, 1.0]])
        np.testing.assert_allclose(k, A @ K_FULL, rtol=1e-6)


@pytest.mark.slow  # quick tier: compiles the propagation for three step counts, ~1 min on 2 cores
def test_second_pass_runs_recrop_steps(setup, monkeypatch):
    """The pass after re-cropping runs ``propagation.recrop_steps`` iterations (the first pass
    ``steps``); with 0 it leaves the first pass's annotations exactly as they were."""
    config, prop, gamma = setup
    lab = np.array([0, 6])
    joints, verts = boxes_lib.label_geometry(prop.mano, gamma.take(lab))
    boxes, _ = boxes_lib.video_boxes(T, 480, 640, K_FULL, lab, joints, vertices3d=verts)
    seen = []
    real = recrop_lib.refine_frames

    def spy(p, *args, **kwargs):
        seen.append(p.settings.steps)
        return real(p, *args, **kwargs)

    monkeypatch.setattr(recrop_lib, "refine_frames", spy)
    first = propagate_video(dataclasses.replace(prop, settings=dataclasses.replace(
        prop.settings, box_weight=0.0, centre_weight=0.0)), *_crop_fn([])(boxes), lab, gamma.take(lab),
        both_sides=True)
    results = {}
    for n in (0, 3):
        p = dataclasses.replace(prop, settings=dataclasses.replace(prop.settings, recrop_steps=n))
        results[n], _ = propagate_recrop(p, _crop_fn([]), boxes, K_FULL, lab, gamma.take(lab),
                                         both_sides=True, recrop=Recrop(rounds=1))
    assert seen == [0, 3]
    for a, b in zip(results[0].gamma, first.gamma, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(results[3].gamma.root, first.gamma.root, rtol=0, atol=1e-7)


@pytest.mark.slow  # compiles the two-pass propagation
@pytest.mark.parametrize("measure", ["area", "side"])
def test_second_pass_floor_is_the_first_pass_hand_scaled_to_the_mask_area(setup, monkeypatch, measure):
    """With a usable background, the second pass's floors come from the first pass's hands in the new
    crops (``floor_measure="area"``: their sides and areas, ``background.extents``) or from the mask
    alone ("side"); the first pass uses the mask's side."""
    from handprop_jax.propagation import background

    config, prop, gamma = setup
    prop = dataclasses.replace(prop, settings=dataclasses.replace(prop.settings, floor_measure=measure))
    lab = np.array([0, 6])
    joints, verts = boxes_lib.label_geometry(prop.mano, gamma.take(lab))
    boxes, _ = boxes_lib.video_boxes(T, 480, 640, K_FULL, lab, joints, vertices3d=verts)
    real_model, real_prop, real_ext = background.model, recrop_lib.propagate_video, background.extents
    passes, estimates, extents, crops = [], [], [], []

    def usable(*args):  # noise frames fail the check; the wiring is what is tested here
        return dataclasses.replace(real_model(*args), check=background.Check(np.ones(2), True))

    square = np.zeros((S, S), bool)
    square[4:10, 5:12] = True
    covers = []

    def floors(scene, images, boxes, frames, estimate=None, hand_masks=None):
        estimates.append(estimate)
        np.testing.assert_array_equal(hand_masks, np.broadcast_to(square, (len(frames), S, S)))
        return np.full(len(frames), 3.0, np.float32)

    def first_pass(*args, **kwargs):
        covers.append(kwargs["cover"])
        passes.append(real_prop(*args, **kwargs))
        return passes[-1]

    def ext(mano, g, K, size):
        extents.append((g, K, real_ext(mano, g, K, size)))
        return extents[-1][2]

    def crop(b):
        crops.append(_crop_fn([])(b))
        return crops[-1]

    monkeypatch.setattr(background, "model", usable)
    monkeypatch.setattr(background, "side_floors", floors)
    monkeypatch.setattr(background, "masks", lambda scene, images, boxes, frames: np.broadcast_to(
        square, (len(frames), S, S)).copy())
    monkeypatch.setattr(background, "extents", ext)
    monkeypatch.setattr(recrop_lib, "propagate_video", first_pass)
    propagate_recrop(prop, crop, boxes, K_FULL, lab, gamma.take(lab), both_sides=True,
                     recrop=Recrop(rounds=1))
    u = np.arange(1, 6)
    assert len(passes) == 1 and len(estimates) == 2 and estimates[0] is None  # first pass: the mask's side
    # the first pass's hand pixels: the masks' outlines on the unlabelled frames, nothing on the labelled
    points, weights = covers[0]
    want_points, want_weights = background.outline_points(square[None], prop.settings.cover_points)
    np.testing.assert_array_equal(points[u], np.broadcast_to(want_points, (5, *want_points.shape[1:])))
    np.testing.assert_array_equal(weights[u], np.broadcast_to(want_weights, (5, want_weights.shape[1])))
    assert want_weights.sum() == 22 and not weights[lab].any()  # 6 x 7 square: 2 * (6 + 7) - 4
    if measure == "side":
        assert estimates[1] is None and not extents
        return
    (g, K, out), = extents
    for a, b in zip(g, passes[0].gamma.take(u), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(K, crops[-1][1][u])  # the re-cropped frames' intrinsics
    assert estimates[1] is out
