"""The hand annotation γ = (root, pose, betas), one type for the whole code base.

:class:`Gamma` is a ``typing.NamedTuple`` and therefore a pytree: it passes through ``jax.jit``,
``jax.tree.map`` and optax like a tuple, and its leaves may be numpy or jax arrays. Fields, with a
leading batch axis B (docs/design.md, "Annotation γ"):

- ``root`` (B, 3): the wrist joint (joint 0) in the camera frame, metres;
- ``pose`` (B, 48): full MANO axis-angle, radians (3 global rotation in the camera frame, then 15×3
  finger joints; hands_mean included, not PCA);
- ``betas`` (B, 10): MANO shape coefficients.

Helpers: :meth:`Gamma.of` (from a dict or frame batch with those keys), :meth:`Gamma.take` (rows),
:meth:`Gamma.numpy`, :func:`concatenate`, :func:`split`, :func:`broadcast` and :func:`blend` (the
both-sides propagation's blend: linear root and betas, slerp of every joint rotation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from mano_jax import slerp_axis_angle

#: per-row shape of each field
FIELD_SHAPES: dict[str, tuple[int, ...]] = {"root": (3,), "pose": (48,), "betas": (10,)}


class Gamma(NamedTuple):
    """γ = (root (B, 3) metres, pose (B, 48) radians, betas (B, 10)); see the module docstring."""

    root: Any
    pose: Any
    betas: Any

    @classmethod
    def of(cls, mapping: Mapping[str, Any] | Gamma) -> Gamma:
        """The γ of a dict, or of a frame batch / video dict that holds ``root``, ``pose`` and
        ``betas`` among other keys (the other keys are ignored). A Gamma is returned as it is."""
        if isinstance(mapping, Gamma):
            return mapping
        return cls(mapping["root"], mapping["pose"], mapping["betas"])

    def take(self, index: Any) -> Gamma:
        """Rows ``index`` (an integer array, a boolean mask or a slice) of every field."""
        return Gamma(*(field[index] for field in self))

    def numpy(self, dtype: Any = np.float32) -> Gamma:
        """Host copy with numpy leaves of ``dtype``."""
        return Gamma(*(np.asarray(field, dtype) for field in self))

    def as_dict(self) -> dict[str, Any]:
        """{"root", "pose", "betas"} (for JSON/NPZ writers and ``**`` into a batch dict)."""
        return self._asdict()

    @property
    def batch_size(self) -> int:
        return int(np.shape(self.root)[0])


def _xp(leaves: Sequence[Any]):
    """numpy when every leaf is a numpy array (host code stays off the device), else jax.numpy."""
    if all(isinstance(x, np.ndarray | np.generic) for x in leaves):
        return np
    import jax.numpy as jnp

    return jnp


def concatenate(gammas: Sequence[Gamma]) -> Gamma:
    """The rows of several γ one after the other (numpy if every leaf is numpy, else jax)."""
    if not gammas:
        raise ValueError("concatenate: no Gamma given")
    xp = _xp([x for g in gammas for x in g])
    return Gamma(*(xp.concatenate(fields, axis=0) for fields in zip(*gammas, strict=True)))


def split(gamma: Gamma, sizes: Sequence[int]) -> list[Gamma]:
    """Inverse of :func:`concatenate`: consecutive row blocks of the given sizes."""
    if sum(sizes) != gamma.batch_size:
        raise ValueError(f"split: sizes {list(sizes)} do not add up to {gamma.batch_size} rows")
    bounds = np.cumsum([0, *sizes])
    return [gamma.take(slice(int(a), int(b))) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def broadcast(gamma: Gamma, rows: int) -> Gamma:
    """A single annotation (root (3,), pose (48,), betas (10,)) repeated as ``rows`` rows (numpy)."""
    return Gamma(*(np.broadcast_to(np.asarray(field, np.float32), (rows, *FIELD_SHAPES[name]))
                   for name, field in zip(Gamma._fields, gamma, strict=True)))


def blend(gamma_a: Gamma, gamma_b: Gamma, weight_b: Any) -> Gamma:
    """Blend two annotations row by row: root and betas linearly, each of the 16 joint rotations of
    the pose along the geodesic (``mano_jax.slerp_axis_angle``), weight ``weight_b`` (B,) in [0, 1]
    on ``gamma_b``. Weights exactly 0 or 1 return ``gamma_a`` or ``gamma_b`` unchanged (the rotation
    round trip is only accurate to rounding). Pure jax; jit it for repeated calls."""
    import jax.numpy as jnp

    w = jnp.asarray(weight_b)
    B = w.shape[0]
    col = w[:, None]
    pose = slerp_axis_angle(jnp.reshape(gamma_a.pose, (B, 16, 3)), jnp.reshape(gamma_b.pose, (B, 16, 3)),
                            col).reshape(B, 48).astype(jnp.result_type(gamma_a.pose))
    mixed = Gamma(root=(1.0 - col) * gamma_a.root + col * gamma_b.root, pose=pose,
                  betas=(1.0 - col) * gamma_a.betas + col * gamma_b.betas)
    return Gamma(*(jnp.where(col == 0.0, a, jnp.where(col == 1.0, b, m))
                   for a, b, m in zip(gamma_a, gamma_b, mixed, strict=True)))
