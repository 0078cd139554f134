"""Rotation helpers: axis-angle <-> rotation matrix with exact, finite derivatives everywhere.

All functions are batched over arbitrary leading axes and work under jit/vmap/grad.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Below this squared angle (rad^2) the Taylor series are used; the first neglected terms are
# below 1e-15 relative there, so the series are exact to float64 precision.
_SMALL_SQ = 1e-4


def _skew(v: jnp.ndarray) -> jnp.ndarray:
    """(..., 3) -> (..., 3, 3) cross-product matrix [v]_x."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = jnp.zeros_like(x)
    return jnp.stack([
        jnp.stack([o, -z, y], -1),
        jnp.stack([z, o, -x], -1),
        jnp.stack([-y, x, o], -1),
    ], -2)


@jax.jit
def rodrigues(axis_angle: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrices from axis-angle vectors.

    ``R = cos(t) I + sin(t)/t [v]_x + (1 - cos(t))/t^2 v v^T`` with ``t = |v|``; the three
    coefficients are evaluated from ``t^2`` with Taylor series near zero, so values and all
    derivatives (of any order) are exact and finite at ``v = 0``.

    Args:
      axis_angle: (..., 3) rotation vectors, radians.
    Returns:
      (..., 3, 3) rotation matrices.
    """
    v = jnp.asarray(axis_angle)
    t2 = jnp.sum(v * v, axis=-1)
    small = t2 < _SMALL_SQ
    t2s = jnp.where(small, jnp.ones_like(t2), t2)   # safe: never sqrt(0) on the taken branch
    t = jnp.sqrt(t2s)
    cos_big = jnp.cos(t)
    a_big = jnp.sin(t) / t
    b_big = (1.0 - cos_big) / t2s
    cos_small = 1.0 - t2 / 2.0 + t2 * t2 / 24.0
    a_small = 1.0 - t2 / 6.0 + t2 * t2 / 120.0
    b_small = 0.5 - t2 / 24.0 + t2 * t2 / 720.0
    c = jnp.where(small, cos_small, cos_big)[..., None, None]
    a = jnp.where(small, a_small, a_big)[..., None, None]
    b = jnp.where(small, b_small, b_big)[..., None, None]
    eye = jnp.eye(3, dtype=v.dtype)
    return c * eye + a * _skew(v) + b * (v[..., :, None] * v[..., None, :])


@jax.jit
def matrix_to_quaternion(rotmat: jnp.ndarray) -> jnp.ndarray:
    """Unit quaternions (w, x, y, z) with w >= 0 from rotation matrices.

    Uses the numerically best of the four standard formulae per matrix (Shepperd's method), so it
    is accurate for every rotation including angles near 0 and pi.

    Args:
      rotmat: (..., 3, 3) rotation matrices.
    Returns:
      (..., 4) quaternions, scalar first, w >= 0.
    """
    R = jnp.asarray(rotmat)
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # 4 q_i^2 for i = w, x, y, z
    sq = jnp.stack([
        1.0 + m00 + m11 + m22,
        1.0 + m00 - m11 - m22,
        1.0 - m00 + m11 - m22,
        1.0 - m00 - m11 + m22,
    ], -1)
    # Candidate quaternions (times 4 q_i) computed from row i of the standard table.
    cands = jnp.stack([
        jnp.stack([sq[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
        jnp.stack([m21 - m12, sq[..., 1], m10 + m01, m02 + m20], -1),
        jnp.stack([m02 - m20, m10 + m01, sq[..., 2], m21 + m12], -1),
        jnp.stack([m10 - m01, m20 + m02, m21 + m12, sq[..., 3]], -1),
    ], -2)
    best = jnp.argmax(sq, axis=-1)
    q = jnp.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    # The chosen row has a large pivot (>= 1), so the norm is bounded away from zero.
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    return jnp.where(q[..., :1] < 0, -q, q)


@jax.jit
def quaternion_to_axis_angle(quat: jnp.ndarray) -> jnp.ndarray:
    """Axis-angle vectors from unit quaternions (w, x, y, z); angle in [0, pi] when w >= 0.

    Exact, finite derivatives at the identity (series for ``2 atan2(s, w) / s`` near s = 0).

    Args:
      quat: (..., 4) unit quaternions, scalar first.
    Returns:
      (..., 3) rotation vectors, radians.
    """
    q = jnp.asarray(quat)
    q = jnp.where(q[..., :1] < 0, -q, q)
    w, xyz = q[..., 0], q[..., 1:]
    s2 = jnp.sum(xyz * xyz, axis=-1)
    small = s2 < _SMALL_SQ
    s2s = jnp.where(small, jnp.ones_like(s2), s2)
    s = jnp.sqrt(s2s)
    big = 2.0 * jnp.arctan2(s, w) / s
    ws = jnp.where(small, w, jnp.ones_like(w))  # w ~ 1 on the small branch
    # 2 atan(s/w)/s = (2/w) (1 - u/3 + u^2/5 - u^3/7), u = (s/w)^2
    u = s2 / (ws * ws)
    small_f = (2.0 / ws) * (1.0 - u / 3.0 + u * u / 5.0 - u * u * u / 7.0)
    factor = jnp.where(small, small_f, big)
    return xyz * factor[..., None]


@jax.jit
def matrix_to_axis_angle(rotmat: jnp.ndarray) -> jnp.ndarray:
    """Axis-angle vectors (angle in [0, pi]) from rotation matrices; robust near 0 and pi.

    Args:
      rotmat: (..., 3, 3) rotation matrices.
    Returns:
      (..., 3) rotation vectors, radians; ``rodrigues(matrix_to_axis_angle(R)) == R``.
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(rotmat))


@jax.jit
def slerp_axis_angle(a: jnp.ndarray, b: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """Geodesic interpolation between rotations given as axis-angle vectors.

    ``R(t) = R_a exp(t log(R_a^T R_b))`` — the same path as quaternion slerp along the shorter arc.

    Args:
      a, b: (..., 3) rotation vectors, radians.
      t: (...) interpolation weight on b in [0, 1] (broadcast against ``a[..., 0]``).
    Returns:
      (..., 3) rotation vectors, radians (angle in [0, pi]).
    """
    ra, rb = rodrigues(a), rodrigues(b)
    rel = matrix_to_axis_angle(jnp.swapaxes(ra, -1, -2) @ rb)
    t = jnp.asarray(t, rel.dtype)[..., None]
    return matrix_to_axis_angle(ra @ rodrigues(t * rel))


@jax.jit
def nearest_rotation(matrix: jnp.ndarray) -> jnp.ndarray:
    """The rotation closest in Frobenius norm to each 3x3 matrix: ``U diag(1, 1, det(U V^T)) V^T``
    from the SVD ``M = U S V^T`` (reflections are excluded by the sign of the last column).

    Args:
      matrix: (..., 3, 3).
    Returns:
      (..., 3, 3) rotation matrices (det +1).
    """
    u, _, vt = jnp.linalg.svd(matrix)
    d = jnp.sign(jnp.linalg.det(u @ vt))
    d = jnp.where(d == 0, 1.0, d)
    flip = jnp.stack([jnp.ones_like(d), jnp.ones_like(d), d], -1)
    return (u * flip[..., None, :]) @ vt


def chordal_mean_axis_angle(axis_angle: jnp.ndarray, axis: int = 0) -> jnp.ndarray:
    """Chordal L2 mean of rotations given as axis-angle vectors: the rotation minimising the sum of
    squared Frobenius distances ``sum_i ||R - R_i||^2``, i.e. the arithmetic mean of the rotation
    matrices projected back onto SO(3) (:func:`nearest_rotation`). Unlike the mean of the vectors it
    does not depend on how the angles wrap (±(pi - e) about one axis average to pi, not to 0).

    Args:
      axis_angle: (..., 3) rotation vectors, radians; ``axis`` indexes the rotations averaged.
      axis: the axis to average over (not the last one).
    Returns:
      the mean rotations, radians, shape of ``axis_angle`` without ``axis``.
    """
    v = jnp.asarray(axis_angle)
    if v.ndim < 2 or v.shape[-1] != 3 or axis % v.ndim == v.ndim - 1:
        raise ValueError(f"chordal_mean_axis_angle: expected (..., 3) rotation vectors averaged over a "
                         f"leading axis, got shape {v.shape} and axis {axis}")
    if v.shape[axis] == 0:
        raise ValueError("chordal_mean_axis_angle: no rotation to average")
    return matrix_to_axis_angle(nearest_rotation(jnp.mean(rodrigues(v), axis=axis % v.ndim)))


@jax.jit
def rotation_6d_to_matrix(six: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrices from the continuous 6-D representation (Zhou et al., CVPR 2019).

    The 6 numbers are two 3-vectors ``a, b`` (the first two *columns* of the matrix before
    orthonormalisation); Gram–Schmidt gives ``c1 = a / |a|``, ``c2 = (b − (c1·b) c1) / |…|``,
    ``c3 = c1 × c2``. Every rotation has a preimage and the map is smooth wherever ``a`` and ``b`` are
    independent, so a network can regress any orientation without the axis-angle wrap at π.

    Args:
      six: (..., 6) = (a, b), unitless.
    Returns:
      (..., 3, 3) rotation matrices with columns (c1, c2, c3).
    """
    a, b = six[..., :3], six[..., 3:6]
    eps = jnp.asarray(1e-8, six.dtype)
    c1 = a / jnp.sqrt(jnp.sum(a * a, -1, keepdims=True) + eps)
    b = b - jnp.sum(c1 * b, -1, keepdims=True) * c1
    c2 = b / jnp.sqrt(jnp.sum(b * b, -1, keepdims=True) + eps)
    c3 = jnp.cross(c1, c2)
    return jnp.stack([c1, c2, c3], axis=-1)


@jax.jit
def matrix_to_rotation_6d(rotmat: jnp.ndarray) -> jnp.ndarray:
    """Inverse of :func:`rotation_6d_to_matrix` on rotations: (..., 3, 3) → (..., 6), the first two
    columns."""
    return jnp.concatenate([rotmat[..., :, 0], rotmat[..., :, 1]], axis=-1)


@jax.jit
def geodesic_angle(r_a: jnp.ndarray, r_b: jnp.ndarray) -> jnp.ndarray:
    """Angle of the rotation taking ``r_b`` to ``r_a`` (the geodesic distance on SO(3)), radians.

    ``θ = atan2(|vee(M − Mᵀ)| / 2, (tr M − 1) / 2)`` with ``M = r_aᵀ r_b``: sin θ and cos θ of the
    relative rotation, so the angle is accurate over all of [0, π] (``arccos`` of the trace loses
    precision near 0 and has an infinite derivative there). The sine's norm is smoothed by 1e-12 so
    that the gradient is finite (zero) at θ = 0.

    Args:
      r_a, r_b: (..., 3, 3) rotation matrices.
    Returns:
      (...,) angles in [0, π], radians.
    """
    m = jnp.swapaxes(r_a, -1, -2) @ r_b
    v = jnp.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
    sin = 0.5 * jnp.sqrt(jnp.sum(v * v, -1) + 1e-12)
    cos = 0.5 * (jnp.trace(m, axis1=-2, axis2=-1) - 1.0)
    return jnp.arctan2(sin, cos)
