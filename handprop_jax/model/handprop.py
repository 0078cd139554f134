"""The HandProp Flax module: encoder ψ, regressor (π^r, π^θ) and Pose Alignment (φ^r, φ^θ).

The module is purely neural (arrays in, arrays out); the MANO layer and the root
parametrisation, which need the MANO model and the intrinsics, are applied to its outputs by
:func:`regress_gamma`; the model facade :class:`handprop_jax.model.api.HandPropModel` puts the
pieces together (and adds the aligners' offsets to γ_b, Eqs. 2–4). Variables:

- ``params``: ``encoder`` (ResNet-18, :mod:`handprop_jax.model.encoder`), ``root_regressor``,
  ``pose_regressor``, ``root_aligner``, ``pose_aligner``.
- ``batch_stats``: the encoder's BatchNorm running statistics.

``PREDICTOR_KEYS`` / ``ALIGNER_KEYS`` split ``params`` into the Single-frame Hand Predictor and
the Pose Alignment module (what stage 2 freezes / stage 1 leaves untouched).

Methods (use with ``module.apply(variables, ..., method=...)``):

- ``__call__(images_uint8, train)`` → (z_r, z_theta, raw_root (B, 3), raw_pose (B, R + ncomps + 10)); also
  runs the aligners once at ``init`` so that every parameter is created.
- ``encode(images_uint8, train, stem=None)`` → (z_r, z_theta), float32 (B, feature_dim); ``stem``
  is added to the first convolution's output (extra input channels, e.g. a temporal input).
- ``regress(z_r, z_theta)`` → (raw_root (B, 3), raw_pose (B, R + ncomps + 10)), R = 3 (axis-angle) or 6.
- ``align(root_b, pose_b, dz_r, dz_theta)`` → (Δr (B, 3) metres, Δθ (B, 48) radians).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

import mano_jax
from handprop_jax.config import Config
from handprop_jax.gamma import Gamma
from handprop_jax.model import encoder as encoder_lib
from handprop_jax.model import heads

PREDICTOR_KEYS = ("encoder", "root_regressor", "pose_regressor")
ALIGNER_KEYS = ("root_aligner", "pose_aligner")


class HandProp(nn.Module):
    """ψ + π^r + π^θ + φ^r + φ^θ (see module docstring). ``encoder`` is any Flax module
    ``(normalised images (B,H,W,3), train) -> (z_r, z_theta)``."""

    encoder: nn.Module
    ncomps: int = 15
    root_aligner_hidden: int = 128
    root_aligner_blocks: int = 2
    pose_aligner_hidden: int = 512
    pose_aligner_blocks: int = 2
    pose_aligner_scale: float = jnp.pi
    compute_dtype: str = "float32"
    rotation_dim: int = 3  # π^θ's global rotation: 3 (axis-angle) or 6 (6-D representation)

    def setup(self):
        self.root_regressor = heads.RootRegressor()
        self.pose_regressor = heads.PoseShapeRegressor(ncomps=self.ncomps, rotation_dim=self.rotation_dim)
        self.root_aligner = heads.RootAligner(self.root_aligner_hidden, self.root_aligner_blocks)
        self.pose_aligner = heads.PoseAligner(self.pose_aligner_hidden, self.pose_aligner_blocks,
                                              self.pose_aligner_scale)

    def encode(self, images: jnp.ndarray, train: bool = False, stem: jnp.ndarray | None = None
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """uint8 (B, S, S, 3) images → (z_r, z_theta) float32 (B, F). ``stem``: optional addition to
        the encoder's first convolution output (extra input channels, see ``Encoder``)."""
        x = encoder_lib.normalize_images(images, jnp.dtype(self.compute_dtype))
        if stem is None:
            return self.encoder(x, train)
        return self.encoder(x, train, stem)

    def regress(self, z_r: jnp.ndarray, z_theta: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        return self.root_regressor(z_r), self.pose_regressor(z_theta)

    def align(self, root_b: jnp.ndarray, pose_b: jnp.ndarray, dz_r: jnp.ndarray,
              dz_theta: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        return self.root_aligner(root_b, dz_r), self.pose_aligner(pose_b, dz_theta)

    def __call__(self, images: jnp.ndarray, train: bool = False):
        z_r, z_theta = self.encode(images, train)
        raw_root, raw_pose = self.regress(z_r, z_theta)
        if self.is_initializing():  # create the aligner parameters too
            b = images.shape[0]
            self.align(jnp.zeros((b, 3)), jnp.zeros((b, heads.POSE_DIM)), z_r, z_theta)
        return z_r, z_theta, raw_root, raw_pose


def from_config(config: Config) -> HandProp:
    """The HandProp module a run's config describes."""
    m = config.model
    return HandProp(encoder=encoder_lib.from_config(m), ncomps=m.ncomps,
                    root_aligner_hidden=m.root_aligner_hidden, root_aligner_blocks=m.root_aligner_blocks,
                    pose_aligner_hidden=m.pose_aligner_hidden, pose_aligner_blocks=m.pose_aligner_blocks,
                    pose_aligner_scale=m.pose_aligner_scale, compute_dtype=m.dtype,
                    rotation_dim=heads.ROTATION_DIMS[m.global_rotation])


def regress_gamma(mano: mano_jax.ManoModel, raw_root: jnp.ndarray, raw_pose: jnp.ndarray,
                  K: jnp.ndarray, image_size: int, z_off: float, ncomps: int,
                  depth_unit: float = 1e-3) -> Gamma:
    """Raw regressor outputs → γ^reg: root (B,3) m, pose (B,48) rad (full, with hands_mean), betas
    (B,10) (handprop's γ convention, see docs/design.md). ``raw_pose`` (B, R + ncomps + 10): its
    global rotation is axis-angle (R = 3) or 6-D (R = 6, converted to axis-angle in [0, π])."""
    r = raw_pose.shape[-1] - ncomps - heads.N_BETAS
    root = heads.recover_root(raw_root, K, image_size, z_off, depth_unit)
    rotation = raw_pose[:, :r]
    if r != 3:
        rotation = mano_jax.matrix_to_axis_angle(heads.global_rotation_matrix(rotation))
    pose = heads.pca_pose_to_full(mano, jnp.concatenate([rotation, raw_pose[:, r:r + ncomps]], -1))
    return Gamma(root=root, pose=pose, betas=raw_pose[:, r + ncomps:])
