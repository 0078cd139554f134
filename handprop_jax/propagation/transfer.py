"""Geometric transfer of a labelled frame's annotation to another frame, without image evidence.

- **copy**: γ_u = γ_s unchanged (root in the camera frame, pose, betas).
- **crop-aware**: the root is carried in crop coordinates instead of camera coordinates:
  ``recover_root(root_to_raw(r_s, K_s), K_u)`` (``handprop_jax.model.heads``) keeps the wrist's pixel
  offset from the crop centre and its focal-normalised depth d_f = (Z − z_off) / f, so when the crop
  follows the hand across the image (and zooms with it) the root follows too. Pose and betas are
  copied.

Both-sides variants blend the two neighbours' transfers by temporal distance
(:func:`handprop_jax.gamma.blend`: linear root and betas, slerp of every joint rotation): plain and
crop-aware *interpolation*. All functions are pure jax with a leading batch axis.
"""

from __future__ import annotations

import jax.numpy as jnp

from handprop_jax.gamma import Gamma
from handprop_jax.model.heads import recover_root, root_to_raw


def crop_aware_root(root_s: jnp.ndarray, K_s: jnp.ndarray, K_u: jnp.ndarray, image_size: int, z_off: float,
                    depth_unit: float = 1e-3) -> jnp.ndarray:
    """The root (B, 3) metres of frame s carried into frame u's crop (module docstring): K_s, K_u
    (B, 3, 3) the two crops' intrinsics, S = ``image_size``; identity when K_u = K_s."""
    raw = root_to_raw(root_s, K_s, image_size, z_off, depth_unit)
    return recover_root(raw, K_u, image_size, z_off, depth_unit)


def transfer(gamma_s: Gamma, K_s: jnp.ndarray, K_u: jnp.ndarray, crop_aware: bool, image_size: int,
             z_off: float, depth_unit: float = 1e-3) -> Gamma:
    """γ_s moved to frame u by copy (``crop_aware=False``) or crop-aware copy (module docstring)."""
    if not crop_aware:
        return gamma_s
    return Gamma(crop_aware_root(gamma_s.root, K_s, K_u, image_size, z_off, depth_unit), gamma_s.pose,
                 gamma_s.betas)
