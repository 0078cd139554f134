"""The MANO model as a JAX pytree: arrays are leaves, the side and kinematic tree are static."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mano_jax import constants as C

#: Array fields of a ManoModel with their expected shapes (None: any size on that axis).
ARRAY_SHAPES: dict[str, tuple[int | None, ...]] = {
    "v_template": (C.NUM_VERTS, 3),
    "shapedirs": (C.NUM_VERTS, 3, C.NUM_BETAS),
    "posedirs": (C.NUM_VERTS, 3, C.NUM_POSE_FEATS),
    "J_regressor": (C.NUM_JOINTS, C.NUM_VERTS),
    "weights": (C.NUM_VERTS, C.NUM_JOINTS),
    "faces": (C.NUM_FACES, 3),
    "hands_components": (45, 45),
    "hands_mean": (45,),
}


class ManoFileError(ValueError):
    """A MANO model file or array set is unreadable or malformed (the message names the file)."""


@dataclasses.dataclass(frozen=True, eq=False)   # identity equality/hash: arrays are not hashable
class ManoModel:
    """Arrays of one MANO hand (metres). A pytree: arrays are leaves; ``side``/``parents`` static.

    Attributes:
      v_template: (778, 3) rest-pose template vertices, metres.
      shapedirs: (778, 3, 10) shape blend shapes, metres per unit beta.
      posedirs: (778, 3, 135) pose-corrective blend shapes, metres per unit of (R - I) entry.
      J_regressor: (16, 778) joint regressor (rows sum to 1).
      weights: (778, 16) linear-blend-skinning weights (rows sum to 1).
      faces: (1538, 3) int32 triangle vertex indices.
      hands_components: (45, 45) PCA basis of finger poses (row k = component k), radians.
      hands_mean: (45,) mean finger pose (axis-angle), radians.
      side: "right" or "left" (static).
      parents: (16,) parent of each joint, -1 for the root (static tuple).
    """

    v_template: jnp.ndarray
    shapedirs: jnp.ndarray
    posedirs: jnp.ndarray
    J_regressor: jnp.ndarray
    weights: jnp.ndarray
    faces: jnp.ndarray
    hands_components: jnp.ndarray
    hands_mean: jnp.ndarray
    side: str = "right"
    parents: tuple[int, ...] = C.PARENTS

    @property
    def tip_vertex_ids(self) -> tuple[int, ...]:
        """Fingertip vertex indices (thumb, index, middle, ring, pinky) for this side."""
        return C.TIP_VERTEX_IDS[self.side]

    def astype(self, dtype: Any) -> ManoModel:
        """Copy with all float arrays cast to ``dtype`` (faces stay int32)."""
        kw = {f: jnp.asarray(getattr(self, f), dtype) for f in ARRAY_SHAPES if f != "faces"}
        return dataclasses.replace(self, **kw)

    def numpy(self) -> dict[str, np.ndarray]:
        """The arrays as a dict of numpy arrays (float64 for floats, int32 faces)."""
        out: dict[str, np.ndarray] = {f: np.asarray(getattr(self, f), np.float64) for f in ARRAY_SHAPES}
        out["faces"] = np.asarray(self.faces, np.int32)
        return out


jax.tree_util.register_dataclass(
    ManoModel,
    data_fields=list(ARRAY_SHAPES),
    meta_fields=["side", "parents"],
)


def make_model(arrays: dict[str, Any], side: str, parents: tuple[int, ...] = C.PARENTS,
               source: str = "arrays") -> ManoModel:
    """Validate numpy arrays and build a ManoModel (floats in JAX's default float dtype).

    Args:
      arrays: mapping with every key of ``ARRAY_SHAPES``.
      side: "right" or "left".
      parents: parent of each of the 16 joints (-1 root).
      source: name used in error messages (e.g. the file path).
    Raises:
      ManoFileError (a ValueError) naming ``source``, the key and the shapes on bad input.
    """
    if side not in ("right", "left"):
        raise ManoFileError(f"{source}: side must be 'right' or 'left', got {side!r}")
    parents = tuple(int(p) for p in parents)
    if len(parents) != C.NUM_JOINTS or parents[0] != -1 or any(
            not 0 <= p < i for i, p in enumerate(parents[1:], start=1)):
        raise ManoFileError(f"{source}: kinematic tree parents must be 16 entries, root -1 and each "
                         f"parent before its child; got {parents}")
    out = {}
    for key, shape in ARRAY_SHAPES.items():
        if key not in arrays:
            raise ManoFileError(f"{source}: missing key {key!r} (have {sorted(arrays)})")
        a = np.asarray(arrays[key])
        if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape, strict=True)):
            raise ManoFileError(f"{source}: key {key!r} has shape {a.shape}, expected {shape}")
        if key == "faces":
            if a.min() < 0 or a.max() >= C.NUM_VERTS:
                raise ManoFileError(f"{source}: key 'faces' has vertex indices outside [0, 778)")
            out[key] = jnp.asarray(a.astype(np.int32))
        else:
            if not np.all(np.isfinite(a)):
                raise ManoFileError(f"{source}: key {key!r} contains non-finite values")
            out[key] = jnp.asarray(a.astype(np.float64), dtype=jnp.result_type(float))
    return ManoModel(**out, side=side, parents=parents)
