"""Pinhole camera helpers, shared by the data pipeline, the model and the evaluation.

Convention everywhere in handprop: camera frame is OpenCV's (x right, y down, z forward, metres);
pixel coordinates (u, v): **the centre of pixel (row i, column j) is at u = j, v = i** (OpenCV's
convention), so that u = fx * X / Z + cx and an image of width W has its centre at u = (W - 1) / 2.
K is the 3x3 intrinsic matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in pixels.
All functions are pure jnp, broadcast over leading axes, and work under jit/vmap/grad.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

# OpenGL camera (x right, y up, z backward) -> OpenCV camera (x right, y down, z forward).
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])  # numpy: importing must not start a JAX backend


def project(points: jnp.ndarray, K: jnp.ndarray) -> jnp.ndarray:
    """Project camera-frame points to pixels.

    Args:
      points: (..., N, 3) metres, camera frame (z > 0 in front of the camera).
      K: (..., 3, 3) intrinsics in pixels.
    Returns:
      (..., N, 2) pixel coordinates (u, v).
    """
    uvw = jnp.einsum("...ij,...nj->...ni", K, points)
    return uvw[..., :2] / uvw[..., 2:3]


def backproject(uv: jnp.ndarray, depth: jnp.ndarray, K: jnp.ndarray) -> jnp.ndarray:
    """Inverse of ``project`` for given depths.

    Args:
      uv: (..., 2) pixels. depth: (...,) metres (the z coordinate). K: (..., 3, 3).
    Returns:
      (..., 3) camera-frame points with z = depth.
    """
    fx, fy = K[..., 0, 0], K[..., 1, 1]
    cx, cy = K[..., 0, 2], K[..., 1, 2]
    x = (uv[..., 0] - cx) / fx * depth
    y = (uv[..., 1] - cy) / fy * depth
    return jnp.stack([x, y, depth], axis=-1)
