"""Comparison method 2: Spurr et al.'s adversarial motion prior ("Adversarial Motion Modelling helps
Semi-supervised Hand Pose Estimation"), as two training phases from ``stage1``.

The single-frame predictor M (ours: γ^reg through MANO) is trained on the labelled frames with
L_pred (Kaviani's Eq. 6, in place of Spurr's L_J2D + λ_z L_zr) and, on clips of ``clip_length``
consecutive unlabelled training frames, to make its per-frame predictions M(I^1..I^S) — a motion —
indistinguishable from real hand motion for a discriminator D (LSGAN):

- Eq. 4  ``L_D  = E_real[(1 − D(J))²] + E_pred[D(Ĵ)²]``   (D's update, :func:`d_loss`);
- Eq. 5  ``L_MM = E[(1 − D(M(I^{1:S})))²]``                (:func:`mm_loss`);
- Eq. 6  ``L    = L_pred + λ_MM L_MM``                      (:func:`loss`).

Pieces (the paper's design choices, its Table 1, and ours where it is silent, marked [choice]):

- D's input is the **2.5D** representation of each frame's 21 joints (the paper's better one):
  ``((π(J, K_t) − (S − 1)/2) / S, (z − z_root) / 0.1 m)`` — crop pixels normalised by the crop size
  S and the root-relative depth in decimetres [choice: the scales] (:func:`to_2p5d`).
- D (:class:`MotionDiscriminator`): 1-D convolutions over time (kernel 3, 63 input channels): an
  encoding convolution to ``d_width`` channels, ``d_blocks`` residual blocks (conv-ReLU-conv + skip,
  ReLU), a decoding layer (mean over time, Dense(1), sigmoid) → D ∈ [0, 1]. No spectral norm (the
  paper found none better).
- D augmentation (:func:`rotate_motion`): one rotation per sequence about the camera axis, around
  the root of the sequence's first skeleton, applied to every frame of it (so the motion between
  frames is unchanged); angle ~ U[−``d_rotation``, ``d_rotation``] [choice: the full circle],
  on real and predicted motions alike, for D's and M's losses.
- Alternating updates in one jitted step: M's Adam step on L (D fixed: D's parameters live in the
  phase's ``aux``, which is not differentiated), then D's own Adam step (``d_lr``) on L_D with the
  step's predicted motions under ``stop_gradient`` (handed over from the loss as ``aux_input``, so
  the clips are encoded once). D and its Adam state are checkpointed with the train state (``aux``).
- BatchNorm: the labelled frames run as in the baseline control (batch statistics, running
  averages updated), the clips with the running statistics — Spurr reports that M diverges in the
  adversarial step on batch statistics, and the clips then see the network exactly as at inference.
- GAN failure modes: a non-finite L, or a non-finite D after its update, rejects the step and stops
  the run naming it (``training.steps``); D's loss and its mean outputs on real and predicted motions
  (``d_loss``, ``d_real``, ``d_fake``) and ``l_mm`` are logged (stdout, JSONL, TensorBoard), so a
  collapsed (D → 1/0) or saturated D is visible in the curves.

Real motions (:mod:`handprop_jax.data.motion`), one phase (and one Table I row) each:
``adversarial_motion`` — (a) unpaired synthetic motion, never rendered; ``adversarial_motion_labels``
— (b) the labelled keyframes interpolated (the strict label budget; its bias is stated there).

Not as in the paper: no 2.5D heat-map network and no root-depth refinement (MANO regresses the
root); the supervised loss is 3D (L_pred); FPHAB's motion source does not exist here.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from handprop_jax.camera import project
from handprop_jax.config import Config
from handprop_jax.data import motion
from handprop_jax.data.clips import clip_iterator, motion_iterator
from handprop_jax.data.iterators import CombinedIterator
from handprop_jax.data.train_batches import train_iterator, val_batches
from handprop_jax.model import handprop as hp
from handprop_jax.training import objectives
from handprop_jax.training.phases import AUX_INPUT, Phase

#: metres: the unit of D's root-relative depth channel
DEPTH_UNIT = 0.1
UNPAIRED, LABELS = "adversarial_motion", "adversarial_motion_labels"


# ----------------------------------------------------------------------------- the discriminator


class MotionDiscriminator(nn.Module):
    """D: motions (B, S, 63) (2.5D joints per frame) → (B,) in [0, 1] (module docstring)."""

    width: int = 256
    blocks: int = 2
    kernel: int = 3

    @nn.compact
    def __call__(self, motion: jnp.ndarray) -> jnp.ndarray:
        conv = lambda name: nn.Conv(self.width, (self.kernel,), padding="SAME", name=name)  # noqa: E731
        x = nn.relu(conv("encode")(motion))
        for i in range(self.blocks):
            y = conv(f"block{i}_conv1")(x)
            y = conv(f"block{i}_conv2")(nn.relu(y))
            x = nn.relu(x + y)
        logit = nn.Dense(1, name="decode")(jnp.mean(x, axis=1))
        return jax.nn.sigmoid(logit[:, 0])


def discriminator(config: Config) -> MotionDiscriminator:
    a = config.adversarial
    return MotionDiscriminator(width=a.d_width, blocks=a.d_blocks)


def d_optimizer(config: Config) -> optax.GradientTransformation:
    return optax.adam(config.adversarial.d_lr)


def init_aux(config: Config, key: jax.Array) -> dict:
    """D's parameters and its Adam state: {"params", "opt_state"}."""
    n = config.adversarial.clip_length
    params = discriminator(config).init(key, jnp.zeros((1, n, 63), jnp.float32))["params"]
    return {"params": params, "opt_state": d_optimizer(config).init(params)}


# ----------------------------------------------------------------------------- motions and losses


def to_2p5d(joints: jnp.ndarray, K: jnp.ndarray, image_size: int) -> jnp.ndarray:
    """Joints (B, S, 21, 3) camera frame, metres, and crop intrinsics K (B, S, 3, 3) → (B, S, 21, 3):
    (u, v) in crop pixels centred and divided by ``image_size``, and (z − z_root) / DEPTH_UNIT."""
    uv = (project(joints, K) - (image_size - 1) / 2.0) / image_size
    z = (joints[..., 2:] - joints[..., :1, 2:]) / DEPTH_UNIT
    return jnp.concatenate([uv, z], axis=-1)


def rotate_motion(motion: jnp.ndarray, angle: jnp.ndarray) -> jnp.ndarray:
    """Rotate 2.5D motions (B, S, 21, 3) by ``angle`` (B,) radians about the camera axis around the
    root of each sequence's first skeleton: (u, v) of every frame rotate about (u, v) of joint 0 of
    frame 0; the root-relative depth is unchanged."""
    c, s = jnp.cos(angle)[:, None, None], jnp.sin(angle)[:, None, None]
    centre = motion[:, :1, :1, :2]
    d = motion[..., :2] - centre
    u = c * d[..., 0] - s * d[..., 1]
    v = s * d[..., 0] + c * d[..., 1]
    return jnp.concatenate([jnp.stack([u, v], -1) + centre, motion[..., 2:]], axis=-1)


def flat(motion: jnp.ndarray) -> jnp.ndarray:
    """(B, S, 21, 3) → D's input (B, S, 63)."""
    return motion.reshape(motion.shape[:2] + (-1,))


def d_loss(d_real: jnp.ndarray, d_fake: jnp.ndarray) -> jnp.ndarray:
    """Eq. 4 (LSGAN): mean (1 − D(real))² + mean D(fake)², D outputs in [0, 1]."""
    return jnp.mean(jnp.square(1.0 - d_real)) + jnp.mean(jnp.square(d_fake))


def mm_loss(d_fake: jnp.ndarray) -> jnp.ndarray:
    """Eq. 5: mean (1 − D(M(I)))² over the predicted motions."""
    return jnp.mean(jnp.square(1.0 - d_fake))


def _labelled_term(model, params, batch_stats, frames):
    """L_pred on the labelled frames, BatchNorm as in the baseline control."""
    _, g, new_stats = model.predict({"params": params, "batch_stats": batch_stats}, frames["image"],
                                    frames["K"], train=True)
    (j,) = model.joints(g)
    l_pred, terms = objectives.prediction_loss(model, g, j, frames)
    return l_pred, terms, j, new_stats


def predicted_motion(model, params, batch_stats, clips: dict) -> jnp.ndarray:
    """M on every frame of the clips (BatchNorm on running statistics) → 2.5D motions (B, S, 21, 3)."""
    b, n = clips["image"].shape[:2]
    images = clips["image"].reshape((b * n,) + clips["image"].shape[2:])
    K = clips["K"].reshape(b * n, 3, 3)
    _, g, _ = model.predict({"params": params, "batch_stats": batch_stats}, images, K, train=False)
    (j,) = model.joints(g)
    return to_2p5d(j.reshape(b, n, 21, 3), clips["K"], model.config.data.image_size)


def loss(model, params, batch_stats, aux, batch):
    """Eq. 6: L_pred on ``batch["frames"]`` + λ_MM L_MM on ``batch["clips"]`` (D = ``aux``, fixed)."""
    cfg = model.config.adversarial
    l_pred, terms, j, new_stats = _labelled_term(model, params, batch_stats, batch["frames"])
    fake = predicted_motion(model, params, batch_stats, batch["clips"])
    angle = batch["clips"]["angle"] * (cfg.d_rotation / jnp.pi)
    d_fake = discriminator(model.config).apply({"params": aux["params"]}, flat(rotate_motion(fake, angle)))
    l_mm = mm_loss(d_fake)
    total = l_pred + cfg.lambda_mm * l_mm
    metrics = {"loss": total, "l_pred": l_pred, "l_mm": l_mm, **{f"pred_{k}": v for k, v in terms.items()},
               "mpjpe_mm": objectives.mpjpe_mm(j, batch["frames"]["joints3d"]),
               AUX_INPUT: jax.lax.stop_gradient(fake)}
    return total, (new_stats, metrics)


def aux_step(model, params, batch_stats, aux, batch, key):
    """D's update (Eq. 4) on the step's real motions and predicted motions (``aux_input``), each
    rotated by a fresh angle per sequence."""
    cfg = model.config.adversarial
    fake = jax.lax.stop_gradient(batch[AUX_INPUT])
    motion = batch["motion"]
    real = to_2p5d(motion["joints3d"], motion["K"], model.config.data.image_size)
    k_real, k_fake = jax.random.split(key)
    rot = lambda x, k: rotate_motion(x, jax.random.uniform(  # noqa: E731
        k, (x.shape[0],), minval=-cfg.d_rotation, maxval=cfg.d_rotation))
    real, fake = flat(rot(real, k_real)), flat(rot(fake, k_fake))
    d = discriminator(model.config)

    def objective(d_params):
        d_real = d.apply({"params": d_params}, real)
        d_fake = d.apply({"params": d_params}, fake)
        return d_loss(d_real, d_fake), (jnp.mean(d_real), jnp.mean(d_fake))

    (l_d, (m_real, m_fake)), grads = jax.value_and_grad(objective, has_aux=True)(aux["params"])
    updates, opt_state = d_optimizer(model.config).update(grads, aux["opt_state"], aux["params"])
    new = {"params": optax.apply_updates(aux["params"], updates), "opt_state": opt_state}
    return new, {"d_loss": l_d, "d_real": m_real, "d_fake": m_fake}


# ----------------------------------------------------------------------------- batches and phases


def _batches(source: str):
    """Phase batches: train = {"frames": the stage-1 labelled batch (the baseline's stream), "clips":
    unlabelled clips, "motion": real motions of ``source``}; val = labelled val frames."""

    def batches(config: Config, split: str, shard_index: int, shard_count: int):
        if split != "train":
            return val_batches(config, 1, shard_index=shard_index, shard_count=shard_count)
        a = config.adversarial
        if source == "unpaired":
            bank = motion.unpaired_synthetic(config.data, a.motion_videos, a.motion_seed)
        else:
            bank = motion.interpolated_labels(config, "train")
        return CombinedIterator({
            "frames": train_iterator(config, 1, shard_index=shard_index, shard_count=shard_count),
            "clips": clip_iterator(config, a.clip_length, a.clips, shard_index, shard_count),
            "motion": motion_iterator(bank, a.clip_length, a.clips, config.data.seed + 6000,
                                      shard_index, shard_count)})

    return batches


def _steps(config: Config) -> int:
    return config.train.stage2_steps + config.train.stage3_steps  # = the baseline control's


def _phase(name: str, source: str) -> Phase:
    return Phase(name, 3, "stage1", hp.PREDICTOR_KEYS, _steps, loss, _batches(source),
                 images_per_sample=2, init_aux=init_aux, aux_step=aux_step,
                 shares_step_with=None if name == UNPAIRED else UNPAIRED, config_section="adversarial")


PHASES = (_phase(UNPAIRED, "unpaired"), _phase(LABELS, "labels"))
