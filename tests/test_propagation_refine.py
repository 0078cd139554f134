"""Crop-aware transfer and the photometric refinement (the default propagation) against hand-computed
cases, its exact zero-evidence behaviour and a rendered scene whose motion is known."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mano_jax
from handprop_jax import config as config_lib
from handprop_jax.camera import project
from handprop_jax.gamma import Gamma
from handprop_jax.hand import default_mano, hand_in_camera
from handprop_jax.propagation import refine as R
from handprop_jax.propagation.core import Propagator, propagate_video
from handprop_jax.propagation.transfer import crop_aware_root
from handprop_jax.render import render

S, Z_OFF = 64, 0.4
K0 = np.array([[180.0, 0, 31.5], [0, 180.0, 31.5], [0, 0, 1]], np.float32)


@pytest.fixture(scope="module")
def config():
    return config_lib.override(config_lib.load("synthetic"), [])


def test_crop_aware_root_hand_computed():
    root = np.array([[0.02, -0.01, 0.5]], np.float32)
    same = np.asarray(crop_aware_root(root, K0[None], K0[None], S, Z_OFF))
    np.testing.assert_allclose(same, root, atol=1e-7)
    # the crop moved: principal point +5 px → same pixel, same depth, X moves by -5 Z / f
    Ku = K0.copy()
    Ku[0, 2] += 5.0
    moved = np.asarray(crop_aware_root(root, K0[None], Ku[None], S, Z_OFF))[0]
    np.testing.assert_allclose(moved, [0.02 - 5 * 0.5 / 180.0, -0.01, 0.5], atol=1e-6)
    # the crop zoomed 2x about the same principal point: d_f = (Z - z_off) / f kept → Z - z_off doubles
    Kz = K0.copy()
    Kz[0, 0] = Kz[1, 1] = 360.0
    z = np.asarray(crop_aware_root(root, K0[None], Kz[None], S, Z_OFF))[0]
    assert z[2] == pytest.approx(Z_OFF + 2 * (0.5 - Z_OFF), rel=1e-5)


def _gamma(rng):
    pose = np.concatenate([[2.8, 0.3, -0.2], rng.normal(0, 0.15, 45)]).astype(np.float32)
    return Gamma(np.array([0.0, 0.01, 0.45], np.float32), pose, np.zeros(10, np.float32))


def _rows(g):
    """One annotation as a batch of one."""
    return Gamma(*(jnp.asarray(x)[None] for x in g))


def test_zero_update_is_the_prior_exactly(config):
    g = _gamma(np.random.default_rng(0))
    out = R.apply_update(g, jnp.zeros(R.UPDATE_SIZE), jnp.asarray(K0), R.update_scales(config.propagation),
                         S, Z_OFF, 1e-3)
    for a, b in zip(out, g, strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_no_image_evidence_keeps_the_prior(config):
    """Uniform images give no photometric gradient: with the box terms off, the result is the prior."""
    mano = default_mano(config)
    settings = dataclasses.replace(config.propagation, box_weight=0.0, centre_weight=0.0, steps=4)
    g = _gamma(np.random.default_rng(1))
    img = jnp.full((S, S, 3), 128, jnp.uint8)
    out, _ = R.refine_frame(mano, settings, S, Z_OFF, 1e-3, 16, g, jnp.asarray(K0), img,
                            R.References(img[None], _rows(g), jnp.asarray(K0)[None], jnp.ones(1)),
                            jax.random.PRNGKey(0))
    for a, b in zip(out, g, strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)


def _scene(mano, gamma, colours, background):
    verts, _ = hand_in_camera(mano, gamma.root[None], gamma.pose[None], gamma.betas[None])
    out = render(verts[0], mano.faces, jnp.asarray(K0), colours, jnp.array([0.0, 0.0, -1.0]), (S, S),
                 background, ambient=0.6, splat_window=16)
    return np.clip(np.asarray(out["image"]) * 255 + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.slow  # renders a scene and compiles the refinement
def test_refinement_recovers_a_known_motion(config):
    """Frame u is the labelled frame's hand moved 6 mm sideways and turned by 0.1 rad: starting from the
    copied label, the refinement against the rendered frames gets much closer to u's hand."""
    mano = default_mano(config)
    rng = np.random.default_rng(2)
    colours = jnp.asarray(rng.uniform(0.2, 1.0, (778, 3)), jnp.float32)
    background = jnp.asarray(rng.uniform(0.0, 0.3, (S, S, 3)), jnp.float32)
    g_r = _gamma(rng)
    turn = np.asarray(mano_jax.matrix_to_axis_angle(
        mano_jax.rodrigues(jnp.array([0.0, 0.0, 0.1])) @ mano_jax.rodrigues(jnp.asarray(g_r.pose[:3]))))
    g_u = Gamma(g_r.root + np.array([0.006, 0.0, 0.0], np.float32),
                np.concatenate([turn, g_r.pose[3:]]).astype(np.float32), g_r.betas)
    I_r, I_u = _scene(mano, g_r, colours, background), _scene(mano, g_u, colours, background)
    # the crops of this scene do not follow the hand: the box terms do not apply
    settings = dataclasses.replace(config.propagation, steps=40, box_weight=0.0, centre_weight=0.0)
    out, losses = R.refine_frame(mano, settings, S, Z_OFF, 1e-3, 16, g_r, jnp.asarray(K0), jnp.asarray(I_u),
                                 R.References(jnp.asarray(I_r)[None], _rows(g_r), jnp.asarray(K0)[None],
                                              jnp.ones(1)),
                                 jax.random.PRNGKey(0))

    def mpjpe(g):
        _, j = hand_in_camera(mano, *_rows(g))
        _, t = hand_in_camera(mano, *_rows(g_u))
        return 1000 * float(jnp.linalg.norm(j - t, axis=-1).mean())

    before, after = mpjpe(g_r), mpjpe(Gamma(*map(np.asarray, out)))
    assert before > 8.0
    assert after < 0.5 * before, (before, after)
    assert float(losses[-1]) < float(losses[0])


@pytest.mark.slow  # compiles the refinement for every method
def test_propagator_methods_on_a_video(config):
    """copy/crop give the hand-computed transfers; photometric with no step is crop-aware interpolation."""
    T = 5
    rng = np.random.default_rng(3)
    truth = Gamma(*(np.stack([getattr(_gamma(rng), f) for _ in range(T)]) for f in Gamma._fields))
    K = np.tile(K0, (T, 1, 1))
    K[:, 0, 2] += np.arange(T)  # the crop drifts one pixel per frame
    images = rng.integers(0, 255, (T, S, S, 3), dtype=np.uint8)
    lab = np.array([0, 4])
    copy = propagate_video(Propagator.from_config(config, "copy"), images, K, lab, truth.take(lab))
    np.testing.assert_array_equal(copy.gamma.root[1:3], truth.root[[0, 0]])
    crop = propagate_video(Propagator.from_config(config, "crop"), images, K, lab, truth.take(lab))
    expect = crop_aware_root(truth.root[[0, 0, 4]], K[[0, 0, 4]], K[[1, 2, 3]], S, config.data.z_off)
    np.testing.assert_allclose(crop.gamma.root[1:4], np.asarray(expect), atol=1e-7)
    still = dataclasses.replace(config, propagation=dataclasses.replace(config.propagation, steps=0))
    both = propagate_video(Propagator.from_config(still, "photometric"), images, K, lab, truth.take(lab),
                           both_sides=True, with_nearest=True)
    interp = propagate_video(Propagator.from_config(config, "crop"), images, K, lab, truth.take(lab),
                             both_sides=True)
    for a, b in zip(both.gamma, interp.gamma, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for a, b in zip(both.nearest, interp.nearest, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for a, b in zip(both.gamma.take(lab), truth.take(lab), strict=True):  # labels kept exactly
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # compiles the refinement twice
def test_a_side_floor_alone_grows_a_hand_smaller_than_it(config):
    """Box terms off, a uniform image: a floor above the prior hand's side pulls the hand up to about
    the floor (closer to the camera); a floor below it changes nothing (one-sided)."""
    mano = default_mano(config)
    settings = dataclasses.replace(config.propagation, box_weight=0.0, centre_weight=0.0, steps=40)
    g = _gamma(np.random.default_rng(3))
    img = jnp.full((S, S, 3), 128, jnp.uint8)
    refs = R.References(img[None], _rows(g), jnp.asarray(K0)[None], jnp.ones(1))

    def side(gamma):
        uv = np.asarray(project(R._verts(mano, Gamma(*map(jnp.asarray, gamma))), jnp.asarray(K0)))
        return float((uv.max(0) - uv.min(0)).max())

    before = side(g)
    grown, _ = R.refine_frame(mano, settings, S, Z_OFF, 1e-3, 16, g, jnp.asarray(K0), img, refs,
                              jax.random.PRNGKey(0), side_floor=1.15 * before)
    assert 1.05 * before < side(grown) <= 1.16 * before, (before, side(grown))
    assert float(grown.root[2]) < float(g.root[2])  # by coming closer
    below, _ = R.refine_frame(mano, settings, S, Z_OFF, 1e-3, 16, g, jnp.asarray(K0), img, refs,
                              jax.random.PRNGKey(0), side_floor=0.8 * before)
    none, _ = R.refine_frame(mano, settings, S, Z_OFF, 1e-3, 16, g, jnp.asarray(K0), img, refs,
                             jax.random.PRNGKey(0))
    for a, b in zip(below, none, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_uncovered_hand_computed():
    """Distances to the nearest projected vertex beyond the tolerance, capped, weighted mean; and its
    gradient against finite differences where no point is capped."""
    uv = jnp.array([[0.0, 0.0], [10.0, 0.0]])
    points = jnp.array([[0.0, 0.0], [4.0, 3.0], [30.0, 0.0]])
    # misses 0, 5 - 1 = 4, min(20 - 1, 6) = 6
    assert float(R.uncovered(uv, points, jnp.ones(3), 1.0, 6.0)) == pytest.approx((0 + 16 + 36) / 3)
    assert float(R.uncovered(uv, points, jnp.array([1.0, 1.0, 0.0]), 1.0, 6.0)) == pytest.approx(8.0)
    assert float(R.uncovered(uv, points, jnp.zeros(3), 1.0, 6.0)) == 0.0
    from jax.test_util import check_grads
    check_grads(lambda q: R.uncovered(q, points[:2], jnp.ones(2), 1.0, 6.0), (uv + 0.3,), order=1,
                modes=("rev",), atol=1e-2, rtol=1e-2)


@pytest.mark.slow  # compiles the refinement
def test_mask_points_beside_the_hand_pull_it_over_them(config):
    """Box terms off, a uniform image (no photometric evidence): the outline of the prior hand's own
    silhouette leaves it in place; the outline moved 3 px to the right pulls the hand ~3 px right."""
    from handprop_jax.propagation import background
    mano = default_mano(config)
    settings = dataclasses.replace(config.propagation, box_weight=0.0, centre_weight=0.0, floor_weight=0.0,
                                   cover_weight=0.1, cover_tolerance=0.0, steps=40)
    g = _gamma(np.random.default_rng(3))
    img = jnp.full((S, S, 3), 128, jnp.uint8)
    verts = R._verts(mano, Gamma(*map(jnp.asarray, g)))
    K = np.array([[90.0, 0, 31.5], [0, 90.0, 31.5], [0, 0, 1]], np.float32)  # the hand ~40 px wide
    K[:2, 2] += 31.5 - np.asarray(project(verts, jnp.asarray(K))).mean(0)  # ... at the crop's centre
    refs = R.References(img[None], _rows(g), jnp.asarray(K)[None], jnp.ones(1))
    sil = background.silhouettes(mano, np.asarray(verts)[None], K[None], S)
    assert not (sil[0, 0].any() or sil[0, -1].any() or sil[0, :, 0].any() or sil[0, :, -1].any())
    points, weights = background.outline_points(sil, 64)
    assert weights.sum() == 64

    def centre_x(gamma):
        uv = np.asarray(project(R._verts(mano, Gamma(*map(jnp.asarray, gamma))), jnp.asarray(K)))
        return float(uv[:, 0].mean())

    kept, _ = R.refine_frame(mano, settings, S, Z_OFF, 1e-3, 16, g, jnp.asarray(K), img, refs,
                             jax.random.PRNGKey(0), cover=(jnp.asarray(points[0]), jnp.asarray(weights[0])))
    assert abs(centre_x(kept) - centre_x(g)) < 0.5
    shifted = points[0] + np.array([3.0, 0.0], np.float32)
    moved, _ = R.refine_frame(mano, settings, S, Z_OFF, 1e-3, 16, g, jnp.asarray(K), img, refs,
                              jax.random.PRNGKey(0), cover=(jnp.asarray(shifted), jnp.asarray(weights[0])))
    assert 1.5 < centre_x(moved) - centre_x(g) < 4.0, centre_x(moved) - centre_x(g)

    def miss(gamma):
        uv = project(R._verts(mano, Gamma(*map(jnp.asarray, gamma))), jnp.asarray(K))
        return float(R.uncovered(uv, jnp.asarray(shifted), jnp.asarray(weights[0]), 0.0, 6.0))

    assert miss(moved) < 0.4 * miss(g), (miss(moved), miss(g))
