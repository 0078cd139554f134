"""Annotations γ = (root, pose, betas) → hand joints and vertices in the camera frame.

- :func:`hand_in_camera` ``(model, root, pose, betas) -> (verts, joints)`` (jax; ``hand_in_camera_jit``);
- :func:`hand_mesh` ``(mano, gamma) -> (verts (T, 778, 3), joints (T, 21, 3))`` (numpy, in batches);
- :func:`default_mano` ``(config)`` / :func:`load_mano` ``(path)``: the MANO model of a run.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import mano_jax
from handprop_jax.batching import batched
from handprop_jax.config import Config
from handprop_jax.errors import UserError
from handprop_jax.gamma import Gamma


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


def hand_mesh(mano: mano_jax.ManoModel, gamma: Gamma, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (T, 778, 3) and joints (T, 21, 3), camera frame, metres, of annotations γ (T, ...)."""
    return batched(lambda g: hand_in_camera_jit(mano, *g), Gamma.of(gamma).numpy(), batch_size=batch_size)


class ManoModelError(UserError, mano_jax.ManoFileError):
    """An unreadable or malformed MANO file (``mano_jax.ManoFileError``, which cannot derive from our
    :class:`~handprop_jax.errors.UserError` since ``mano_jax`` imports nothing of ours), as the
    user's error: ``handprop`` reports it in one line, exit code 2."""


@functools.lru_cache(maxsize=4)
def _load_model(path: str | None, side: str) -> mano_jax.ManoModel:
    if path is None:
        return mano_jax.synthetic(side=side, seed=0)
    try:
        return mano_jax.load(path)
    except mano_jax.ManoFileError as e:
        raise ManoModelError(str(e)) from e


def load_mano(path: str | None, side: str = "right") -> mano_jax.ManoModel:
    """The official MANO file at ``path`` (.pkl / .npz), or the synthetic hand (seed 0) for None;
    cached. ``default_mano`` for a run's config."""
    return _load_model(path, side)


def default_mano(config: Config, side: str = "right") -> mano_jax.ManoModel:
    """The MANO model a run uses: the official file named in ``config.model.mano_model``, or the
    procedural synthetic hand (seed 0) when none is given."""
    return _load_model(config.model.mano_model, side)
