"""The photometric warp (handprop_jax.photometric) against hand-computed flows, finite differences and a
rendered scene whose motion is known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from handprop_jax import photometric as P

F, C, S = 20.0, 7.5, 16
K = np.array([[F, 0, C], [0, F, C], [0, 0, 1]], np.float32)
FACES = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
QUAD = np.array([[-0.3, -0.3, 2.0], [0.3, -0.3, 2.0], [0.3, 0.3, 2.0], [-0.3, 0.3, 2.0]], np.float32)


def _texture(seed=0):
    """A smooth random image (S, S, 3) in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:S, 0:S] / S
    img = sum(rng.uniform(0.1, 0.3) * np.sin(rng.uniform(3, 8) * xx + rng.uniform(3, 8) * yy
                                              + rng.uniform(0, 6))[..., None] * rng.uniform(0, 1, 3)
              for _ in range(4))
    return (0.5 + img).clip(0, 1).astype(np.float32)


def _reference(verts=QUAD, image=None, n=64, sigmas=(0.0,)):
    image = _texture() if image is None else image
    return P.sample_reference(jnp.asarray(verts), jnp.asarray(FACES), jnp.asarray(K), jnp.asarray(image), n,
                              jax.random.PRNGKey(0), sigmas, 8)


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_reference_pixels_are_the_silhouette():
    ref = _reference(n=64)
    # the quad covers pixel centres 5..10 in u and v: 36 pixels, the other 28 rows are padding
    assert int(ref.valid.sum()) == 36
    px = np.asarray(ref.pixel)[np.asarray(ref.valid)]
    assert px.min() == 5 and px.max() == 10
    assert len({tuple(p) for p in px}) == 36  # drawn without replacement
    # barycentrics reproduce the pixel (screen space) and sum to one (both kinds)
    valid = np.asarray(ref.valid)
    q = np.asarray(P.warp(ref, jnp.asarray(QUAD), jnp.asarray(K)))
    np.testing.assert_allclose(q[valid], px, atol=1e-4)
    np.testing.assert_allclose(np.asarray(ref.persp).sum(-1), 1.0, atol=1e-5)


def test_warp_of_a_translated_mesh_is_the_projected_flow():
    """Moving the mesh by (dx, dy) at constant depth z moves every pixel by f (dx, dy) / z."""
    ref = _reference()
    d = np.array([0.05, -0.1, 0.0], np.float32)
    q = np.asarray(P.warp(ref, jnp.asarray(QUAD + d), jnp.asarray(K)))
    valid = np.asarray(ref.valid)
    np.testing.assert_allclose(q[valid], np.asarray(ref.pixel)[valid] + F * d[:2] / 2.0, atol=1e-4)


def test_warp_gradient_matches_finite_differences():
    ref = _reference()
    check_grads(lambda v: P.warp(ref, v, jnp.asarray(K)), (jnp.asarray(QUAD + 0.01),), order=1,
                modes=("rev",), atol=1e-2, rtol=1e-2)


def test_error_is_lowest_for_the_true_motion():
    """Frame u is frame r's texture shifted by 2 pixels to the right: the mesh moved by the matching
    3D translation explains it; the unmoved mesh and a wrongly moved one do not."""
    tex = _texture(1)
    ref = _reference(image=tex, sigmas=(0.0, 1.0))
    shifted = np.roll(tex, 2, axis=1)  # I_u(p + (2, 0)) = I_r(p)
    true = QUAD + np.array([2.0 * 2.0 / F, 0, 0], np.float32)  # 2 px at depth 2
    wrong = QUAD - np.array([2.0 * 2.0 / F, 0, 0], np.float32)
    mask = jnp.ones(ref.valid.shape, bool)

    def err(verts, level=0):
        q = P.warp(ref, jnp.asarray(verts), jnp.asarray(K))
        image_u = P.gaussian_blur(jnp.asarray(shifted), (0.0, 1.0)[level])
        return float(P.error(ref, image_u, q, mask, level)[0])

    assert err(true) < 1e-5
    assert err(QUAD) > 0.01 and err(wrong) > err(QUAD)
    assert err(true, 1) < 0.5 * err(QUAD, 1)


def test_visible_drops_occluded_points():
    """A second quad in front of the target position hides the reference's points in frame u."""
    ref = _reference()
    near = np.array([[-1, -1, 1.0], [1, -1, 1.0], [1, 1, 1.0], [-1, 1, 1.0]], np.float32)
    faces = np.concatenate([FACES, FACES + 4])
    verts_u = np.concatenate([QUAD, near])
    vis = np.asarray(P.visible(ref, jnp.asarray(verts_u), jnp.asarray(K), jnp.asarray(faces), (S, S), None))
    assert not vis[np.asarray(ref.valid)].any()
    alone = np.asarray(P.visible(ref, jnp.asarray(QUAD), jnp.asarray(K), jnp.asarray(FACES), (S, S), 8))
    assert alone[np.asarray(ref.valid)].all()


def test_blur_keeps_constants_and_mass():
    img = np.full((S, S, 3), 0.3, np.float32)
    np.testing.assert_allclose(np.asarray(P.gaussian_blur(jnp.asarray(img), 1.5)), 0.3, atol=1e-6)
    spike = np.zeros((S, S, 1), np.float32)
    spike[8, 8] = 1.0
    out = np.asarray(P.gaussian_blur(jnp.asarray(spike), 1.0))
    assert abs(out.sum() - 1.0) < 1e-4 and out[8, 8] < 0.2
