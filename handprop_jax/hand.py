"""Annotations γ = (root, pose, betas) → hand joints and vertices in the camera frame."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

import mano_jax
from handprop_jax.config import Config


def hand_in_camera(model: mano_jax.ManoModel, root: jnp.ndarray, pose: jnp.ndarray,
                   betas: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """MANO hand placed in the camera frame.

    Args:
      model: the MANO model (official or synthetic).
      root: (B, 3) wrist joint location, camera frame, metres.
      pose: (B, 48) full axis-angle pose, radians (global rotation in the camera frame first;
        hands_mean already included, i.e. ``flat_hand_mean=True`` semantics).
      betas: (B, 10) shape coefficients.
    Returns:
      vertices (B, 778, 3) and joints (B, 21, 3), camera frame, metres (manopth joint order) — the
      order of ``mano_jax.forward``.
    """
    verts, joints = mano_jax.forward(model, pose, betas, use_pca=False, flat_hand_mean=True,
                                     center_idx=0)
    offset = root[:, None, :]
    return verts + offset, joints + offset


hand_in_camera_jit = jax.jit(hand_in_camera)  # the one compiled copy, for callers outside a jit


@functools.lru_cache(maxsize=4)
def _load_model(path: str | None, side: str) -> mano_jax.ManoModel:
    if path is None:
        return mano_jax.synthetic(side=side, seed=0)
    return mano_jax.load(path)


def load_mano(path: str | None, side: str = "right") -> mano_jax.ManoModel:
    """The official MANO file at ``path`` (.pkl / .npz), or the synthetic hand (seed 0) for None;
    cached. ``default_mano`` for a run's config."""
    return _load_model(path, side)


def default_mano(config: Config, side: str = "right") -> mano_jax.ManoModel:
    """The MANO model a run uses: the official file named in ``config.model.mano_model``, or the
    procedural synthetic hand (seed 0) when none is given."""
    return _load_model(config.model.mano_model, side)
