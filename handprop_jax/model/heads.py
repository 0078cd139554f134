"""Regression heads (π^r, π^θ) and the Pose Alignment networks (φ^r, φ^θ) of HandProp.

Regressor (paper Eq. 1, Sec. IV; "similar to [9]": Hasson et al., Table 4 and their released
``meshreg`` code):

- π^r (:class:`RootRegressor`): z^r (B, 512) → Dense 256 → ReLU → Dense 3 = (d_f, t_u, t_v):
  a focal-normalised depth offset and a pixel offset of the projected root from the **image
  centre**. :func:`recover_root` turns it into the root (wrist) location:
  ``Z = f · d_f + z_off`` with ``f = K[0, 0]`` (fx, pixels) and ``z_off`` metres (0.4 m, per
  dataset: ``DataConfig.z_off``), then ``(X, Y)`` by back-projecting the pixel
  ``image centre + (t_u, t_v)`` at depth ``Z`` through K (:func:`handprop_jax.camera.backproject`).
  *Image centre*: like the baseline code (``recover_3d_proj``: the centre is ``input_res / 2``,
  the centre of the crop, **not** the principal point; the principal point enters through K when
  back-projecting), we use the geometric centre of the S×S crop, which in handprop's pixel
  convention (pixel centres at integers) is ``((S - 1) / 2, (S - 1) / 2)``. For crops centred on
  the principal point the two coincide; for off-centre crops the regressed offset stays an image
  quantity (where the hand is in the picture), which is what the network can see.
  *Unit of d_f*: the network outputs d_f in units of ``ModelConfig.root_depth_unit`` metres per
  pixel (default 1e-3, i.e. millimetres per pixel), ``Z = f · unit · raw + z_off``. This is only a
  choice of unit (the parametrisation is the baseline's), but it matters for optimisation: in
  metres per pixel the target is ~1e-3 and Adam moves every weight of the output layer by ~lr per
  step, so one step moves the depth by ``f · lr · Σ|h|`` — metres for f of a few hundred pixels
  and lr 1e-3 — and stage 1 diverges. With millimetres the target is O(1) and a step moves the
  depth by millimetres.
- π^θ (:class:`PoseShapeRegressor`): z^θ (B, 512) → Dense 512 → ReLU → Dense 512 → ReLU →
  Dense 28 = 3 root axis-angle + ``ncomps`` (15) PCA coefficients + 10 β. The PCA coefficients
  are mapped to the full 48-d axis-angle pose through the MANO basis and mean
  (:func:`pca_pose_to_full`, i.e. manopth's ``flat_hand_mean=False`` semantics, which is how the
  baseline used MANO), so that γ^reg uses handprop's γ convention (pose includes hands_mean).

The last Dense of each head is initialised to **zero**: the untrained predictor outputs the
MANO mean hand with no global rotation at depth ``z_off`` in front of the crop centre, instead of
a random pose metres away (``f · d_f`` multiplies the raw output by the focal length, hundreds of
pixels, so a random init would start the root metres off and blow up the first gradients).

Pose Alignment (Eqs. 2–4, Fig. 3, Sec. IV):

- φ^r (:class:`RootAligner`): input ``[r_b (3, metres); z^r_a − z^r_b (512)]`` → Dense 128 →
  ReLU → ``root_aligner_blocks`` residual blocks → Dense 3 = Δr (metres).
- φ^θ (:class:`PoseAligner`): input ``[θ_b (48, radians, full axis-angle); z^θ_a − z^θ_b]`` →
  Dense 512 → ReLU → ``pose_aligner_blocks`` residual blocks → Dense 48 → Tanh, scaled by
  ``pose_aligner_scale`` radians = Δθ. *Output scaling*: Tanh bounds every component of Δθ to
  (−scale, scale); we use scale = π (``ModelConfig.pose_aligner_scale``) so that the offset can
  express any change of a single axis-angle component up to a half turn (the largest angle of
  an axis-angle rotation) while the Tanh still keeps the update bounded.
- Residual block (both aligners): ``h ← ReLU(h + Dense(ReLU(Dense(h))))`` at the hidden width;
  default **2 blocks** each (``ModelConfig.root_aligner_blocks`` / ``pose_aligner_blocks``), i.e.
  5 Dense layers per aligner including input and output layers.
- The output Dense of each aligner is zero-initialised, so an untrained aligner is the identity
  propagation γ_a = γ_b (a sensible prior for nearby frames), and β_a = β_b always (Eq. 2).

All modules take and return float32 arrays with a leading batch axis and no Python loop over it.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

import mano_jax
from handprop_jax.camera import backproject, project

ROOT_OUT = 3  # (d_f, t_u, t_v)
N_BETAS = 10
POSE_DIM = 48


class RootRegressor(nn.Module):
    """π^r: z^r (B, F) → raw (B, 3) = (d_f [m/pixel], t_u [pixels], t_v [pixels])."""

    hidden: int = 256

    @nn.compact
    def __call__(self, z_r: jnp.ndarray) -> jnp.ndarray:
        h = nn.relu(nn.Dense(self.hidden, name="fc1")(z_r))
        return nn.Dense(ROOT_OUT, kernel_init=nn.initializers.zeros, name="out")(h)


ROTATION_DIMS = {"axis_angle": 3, "6d": 6}
#: the 6-D representation of the identity (:func:`mano_jax.rotation_6d_to_matrix`): added to π^θ's 6-D
#: output so that the zero-initialised head starts at the identity rotation, like the axis-angle head
IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class PoseShapeRegressor(nn.Module):
    """π^θ: z^θ (B, F) → raw (B, R + ncomps + 10) = global rotation (R = 3 axis-angle, or R = 6 for
    the 6-D representation, as an offset from the identity), PCA coefficients, β."""

    ncomps: int = 15
    hidden: int = 512
    rotation_dim: int = 3

    @nn.compact
    def __call__(self, z_theta: jnp.ndarray) -> jnp.ndarray:
        h = nn.relu(nn.Dense(self.hidden, name="fc1")(z_theta))
        h = nn.relu(nn.Dense(self.hidden, name="fc2")(h))
        return nn.Dense(self.rotation_dim + self.ncomps + N_BETAS, kernel_init=nn.initializers.zeros,
                        name="out")(h)


def global_rotation_matrix(raw_rotation: jnp.ndarray) -> jnp.ndarray:
    """π^θ's global-rotation output → (B, 3, 3) rotation matrices: (B, 3) axis-angle (Rodrigues) or
    (B, 6) offsets from :data:`IDENTITY_6D` (Gram–Schmidt, :func:`mano_jax.rotation_6d_to_matrix`)."""
    if raw_rotation.shape[-1] == 3:
        return mano_jax.rodrigues(raw_rotation)
    return mano_jax.rotation_6d_to_matrix(raw_rotation + jnp.asarray(IDENTITY_6D, raw_rotation.dtype))


class ResidualBlock(nn.Module):
    """h (B, W) → ReLU(h + Dense_W(ReLU(Dense_W(h))))."""

    width: int

    @nn.compact
    def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
        y = nn.relu(nn.Dense(self.width, name="fc1")(h))
        y = nn.Dense(self.width, name="fc2")(y)
        return nn.relu(h + y)


class _Aligner(nn.Module):
    """Shared body of φ^r and φ^θ: [x_b; Δz] → hidden → residual blocks → Dense(out_dim)."""

    out_dim: int
    hidden: int
    blocks: int

    @nn.compact
    def __call__(self, x_b: jnp.ndarray, dz: jnp.ndarray) -> jnp.ndarray:
        h = nn.relu(nn.Dense(self.hidden, name="fc_in")(jnp.concatenate([x_b, dz], axis=-1)))
        for i in range(self.blocks):
            h = ResidualBlock(self.hidden, name=f"block{i}")(h)
        return nn.Dense(self.out_dim, kernel_init=nn.initializers.zeros, name="out")(h)


class RootAligner(nn.Module):
    """φ^r (Eq. 3): (r_b (B, 3) metres, z^r_a − z^r_b (B, F)) → Δr (B, 3) metres."""

    hidden: int = 128
    blocks: int = 2

    @nn.compact
    def __call__(self, r_b: jnp.ndarray, dz_r: jnp.ndarray) -> jnp.ndarray:
        return _Aligner(3, self.hidden, self.blocks, name="net")(r_b, dz_r)


class PoseAligner(nn.Module):
    """φ^θ (Eq. 4): (θ_b (B, 48) radians, z^θ_a − z^θ_b (B, F)) → Δθ (B, 48) radians, |Δθ| < scale."""

    hidden: int = 512
    blocks: int = 2
    scale: float = math.pi

    @nn.compact
    def __call__(self, theta_b: jnp.ndarray, dz_theta: jnp.ndarray) -> jnp.ndarray:
        out = _Aligner(POSE_DIM, self.hidden, self.blocks, name="net")(theta_b, dz_theta)
        return self.scale * jnp.tanh(out)


def recover_root(raw: jnp.ndarray, K: jnp.ndarray, image_size: int, z_off: float,
                 depth_unit: float = 1e-3) -> jnp.ndarray:
    """Root (wrist) location from π^r's output (baseline parametrisation, see module docstring).

    Args:
      raw: (B, 3) = (d_f [depth_unit metres per pixel of focal length], t_u, t_v [pixels from the
        crop centre]).
      K: (B, 3, 3) crop intrinsics, pixels.
      image_size: S, side of the square crop in pixels.
      z_off: metres, depth offset.
      depth_unit: metres per pixel represented by one unit of d_f.
    Returns:
      (B, 3) root in the camera frame, metres: Z = fx·d_f·depth_unit + z_off, (X, Y) back-projected.
    """
    centre = (image_size - 1) / 2.0
    depth = K[..., 0, 0] * (raw[..., 0] * depth_unit) + z_off
    uv = raw[..., 1:3] + centre
    return backproject(uv, depth, K)


def root_to_raw(root: jnp.ndarray, K: jnp.ndarray, image_size: int, z_off: float,
                depth_unit: float = 1e-3) -> jnp.ndarray:
    """Inverse of :func:`recover_root`: (B, 3) camera-frame root (metres) → (d_f, t_u, t_v)."""
    uv = project(root[..., None, :], K)[..., 0, :]
    centre = (image_size - 1) / 2.0
    d_f = (root[..., 2] - z_off) / (K[..., 0, 0] * depth_unit)
    return jnp.concatenate([d_f[..., None], uv - centre], axis=-1)


def pca_pose_to_full(model: mano_jax.ManoModel, pose_pca: jnp.ndarray) -> jnp.ndarray:
    """(B, 3 + ncomps) root axis-angle + PCA coefficients → (B, 48) full axis-angle with hands_mean.

    ``full[:, 3:] = hands_mean + coeffs @ hands_components[:ncomps]`` (manopth, flat_hand_mean=False).
    """
    fingers = mano_jax.pca_to_axis_angle(model, pose_pca[..., 3:], flat_hand_mean=False)
    return jnp.concatenate([pose_pca[..., :3], fingers], axis=-1)
