"""Rotation averaging and interpolation (``mano_jax.geometry``) against scipy's independent
implementations and hand-computed cases."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

import mano_jax


def test_slerp_matches_scipy():
    rng = np.random.default_rng(0)
    a = Rotation.random(20, random_state=1)
    b = Rotation.random(20, random_state=2)
    t = rng.uniform(0, 1, 20)
    ours = np.asarray(mano_jax.slerp_axis_angle(jnp.asarray(a.as_rotvec(), jnp.float32),
                                                jnp.asarray(b.as_rotvec(), jnp.float32), jnp.asarray(t)))
    for i in range(20):
        ref = Slerp([0, 1], Rotation.concatenate([a[i], b[i]]))(t[i])
        assert (Rotation.from_rotvec(ours[i]) * ref.inv()).magnitude() < 1e-4


def test_slerp_endpoints_and_midpoint_through_pi():
    a = jnp.array([[0.0, 0.0, np.deg2rad(170)]])
    b = jnp.array([[0.0, 0.0, -np.deg2rad(170)]])
    for t, want in ((0.0, a), (1.0, b)):
        got = Rotation.from_rotvec(np.asarray(mano_jax.slerp_axis_angle(a, b, jnp.array([t]))))
        assert (got * Rotation.from_rotvec(np.asarray(want)).inv()).magnitude()[0] < 1e-5
    # the shorter arc between ±170° about z passes through 180°, not through the identity
    mid = np.asarray(mano_jax.slerp_axis_angle(a, b, jnp.array([0.5])))
    np.testing.assert_allclose(np.abs(mid), [[0, 0, np.pi]], atol=1e-3)


def test_chordal_mean_matches_scipy_mean():
    """scipy's ``Rotation.mean`` (Markley's quaternion average) minimises the same chordal cost."""
    rots = Rotation.random(9, random_state=0)
    # (9 rotations, 4 joints, 3): each joint column holds a different subset of rotations
    v = np.stack([rots.as_rotvec(), rots.as_rotvec()[::-1], np.roll(rots.as_rotvec(), 3, 0),
                  rots.as_rotvec() * 0.1], axis=1)
    got = np.asarray(mano_jax.chordal_mean_axis_angle(jnp.asarray(v, jnp.float32)))
    assert got.shape == (4, 3)
    for j in range(4):
        ref = Rotation.from_rotvec(v[:, j]).mean()
        assert (Rotation.from_rotvec(got[j]) * ref.inv()).magnitude() < 1e-4, j


def test_chordal_mean_of_opposite_angles_is_the_half_turn():
    # ±3 rad about z are 0.28 rad apart (through pi): their mean is the rotation by pi about z,
    # while the mean of the axis-angle vectors would be the identity
    v = jnp.array([[0.0, 0.0, 3.0], [0.0, 0.0, -3.0]])
    np.testing.assert_allclose(np.abs(np.asarray(mano_jax.chordal_mean_axis_angle(v))), [0, 0, np.pi],
                               atol=1e-3)
    with pytest.raises(ValueError, match="no rotation"):
        mano_jax.chordal_mean_axis_angle(jnp.zeros((0, 3)))


def test_nearest_rotation_fixes_rotations_and_rejects_reflections():
    r = Rotation.random(5, random_state=3).as_matrix()
    np.testing.assert_allclose(np.asarray(mano_jax.nearest_rotation(jnp.asarray(r))), r, atol=1e-5)
    # a reflection's nearest rotation: flip the axis of the smallest singular value (here z)
    m = np.diag([2.0, 1.0, -0.5])
    got = np.asarray(mano_jax.nearest_rotation(jnp.asarray(m)))
    np.testing.assert_allclose(got, np.eye(3), atol=1e-6)
    # a scaled, slightly perturbed rotation projects back onto it
    noisy = 3.0 * r[0] + 1e-3 * np.random.default_rng(0).normal(size=(3, 3))
    got = np.asarray(mano_jax.nearest_rotation(jnp.asarray(noisy)))
    np.testing.assert_allclose(got, r[0], atol=2e-3)
    np.testing.assert_allclose(np.linalg.det(got), 1.0, atol=1e-5)
