"""Procedural stand-in for the MANO hand (PLACEHOLDER: correct shapes, crude geometry)."""

from __future__ import annotations

import functools

import numpy as np

from mano_jax import constants as C
from mano_jax.model import ManoModel, make_model


@functools.lru_cache(maxsize=8)
def _arrays(side: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    # joints: wrist at origin, fingers along -x, thumb towards +z
    J = np.zeros((16, 3))
    bases = {1: (-0.09, 0.026), 4: (-0.094, 0.004), 7: (-0.08, -0.035), 10: (-0.088, -0.017)}
    for b, (x, z) in bases.items():
        for lvl in range(3):
            J[b + lvl] = (x - 0.035 * lvl, 0.0, z)
    for lvl in range(3):
        J[13 + lvl] = (-0.025 - 0.028 * lvl, -0.005, 0.022 + 0.022 * lvl)
    V = rng.uniform([-0.17, -0.012, -0.045], [0.01, 0.012, 0.04], size=(C.NUM_VERTS, 3))
    tips = {13: -1, 1: -1, 4: -1, 10: -1, 7: -1}
    for (b, _), vid in zip(sorted(tips.items(), key=lambda t: [13, 1, 4, 10, 7].index(t[0])),
                           C.TIP_VERTEX_IDS[side], strict=True):
        V[vid] = J[b + 2] + (J[b + 2] - J[b + 1])
    jids = np.arange(16) * 7 + 3   # vertices that sit on the joints
    V[jids] = J
    Jr = np.zeros((16, C.NUM_VERTS))
    Jr[np.arange(16), jids] = 1.0
    d = np.linalg.norm(V[:, None] - J[None], axis=-1)
    W = np.exp(-(d / 0.02) ** 2) + 1e-6
    W /= W.sum(1, keepdims=True)
    faces = np.stack([np.arange(C.NUM_FACES) % C.NUM_VERTS, (np.arange(C.NUM_FACES) + 1) % C.NUM_VERTS,
                      (np.arange(C.NUM_FACES) + 2) % C.NUM_VERTS], 1)
    return dict(v_template=V, shapedirs=rng.normal(0, 1e-3, (778, 3, 10)),
                posedirs=rng.normal(0, 1e-4, (778, 3, 135)), J_regressor=Jr, weights=W,
                faces=faces, hands_components=np.eye(45), hands_mean=np.zeros(45))


def synthetic(side: str = "right", seed: int = 0) -> ManoModel:
    """A procedural MANO-shaped hand (placeholder geometry)."""
    return make_model(_arrays(side, seed), side=side, source=f"synthetic({side!r}, seed={seed})")


def synthetic_pose_std(side: str = "right", seed: int = 0) -> np.ndarray:
    """(45,) standard deviation of each PCA coefficient under the natural-pose distribution."""
    return np.full(45, 0.3)
