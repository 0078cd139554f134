"""Comparison method 3: Chen et al.'s temporal-aware self-supervision (TASSN, "Temporal-Aware
Self-Supervised Learning for 3D Hand Pose and Mesh Estimation in Videos"), adapted to MANO: phase
``temporal_consistency``, from ``stage1``.

The predictor gets a temporal input (the previous frame and heat maps of its previous prediction,
:mod:`handprop_jax.model.temporal`; zero-initialised, so the phase starts exactly at the stage-1
predictor). Each clip of n consecutive unlabelled training frames is run **forward** (frame i gets
the input of frame i − 1) and **reversed** (frame i gets the input of frame i + 1: Chen's reversed
temporal measurement), and the two passes must agree on every frame (Eqs. 3–5):

- Eq. 3  ``L_c^p = (1/n) Σ_i ‖p_i − p̃_i‖²_F`` — the 21 MANO joints (m², summed over joints and xyz);
- Eq. 4  ``L_c^m = (1/n) Σ_i ‖m_i − m̃_i‖²_F`` — the 778 MANO vertices;
- Eq. 5  ``L_c = λ^m L_c^m + λ^p L_c^p`` with the paper's λ^p = λ^m = 10 (means over the clips).

Loss of the phase (:func:`loss`): ``L = L_pred(labelled frames) + L_pred(labelled frames of the
clips, both passes) + L_c``. The first term is the baseline control's (the same stage-1 batches,
batch statistics); the clips run with BatchNorm on the running statistics, as at test time, or on
their own batch statistics with ``temporal.clip_batch_stats`` (the running statistics are then still
updated from the labelled frames only). Both L_pred terms are the run's ``train.pred_objective``.

The recurrent input is under ``stop_gradient`` (Chen: H_t is an input, not a path for gradients).
That makes the gradient computable without back-propagating through the recursion: pass 1 runs the
recursion without gradients (:func:`handprop_jax.model.temporal.recurrence`, forward and reversed
clips as one batch) to get every frame's temporal input; pass 2 runs all 2n frames of every clip as
one batch with those inputs and differentiates. The values are the recursion's (same inputs,
inference-mode BatchNorm), the gradient is that of the recursion with stop-gradient on its input.

The trivial solution — a network that ignores its temporal input has p = p̃ and L_c = 0 — is where
the phase *starts* (zero weights): L_c alone has zero gradient there. What moves the temporal
weights is L_pred on the clips' labelled frames (seen with their temporal input); L_c then asks the
two directions to agree. How much the input is used is measured and logged: ``fwd_rev_mm`` (mean
joint distance between the two passes), ``stem_rms`` (RMS of the temporal channels' conv1 response)
and, at evaluation, the rows "Temporal consistency (Chen)" (recurrent) against "…, no temporal
input" (the same network on single frames).

Changes from the paper (and why): MANO (joints p and vertices m from γ) replaces the GCN mesh and
pose estimators (our predictor); the motion cue is the frame difference, not FlowNet2 (no flow
network here); TASSN's dense 2D heat-map loss L_h and GrabCut silhouette loss L_m are left out —
they need a 2D label or a mask on every frame, outside the label budget of the other rows — and the
sparse 3D labels (L_pred) anchor the outputs instead. n = ``temporal.clip_length`` (the paper gives
none), heat-map σ = ``temporal.heatmap_sigma``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from handprop_jax.config import Config
from handprop_jax.data.clips import clip_iterator
from handprop_jax.data.iterators import CombinedIterator
from handprop_jax.data.train_batches import train_iterator, val_batches
from handprop_jax.model import handprop as hp
from handprop_jax.model import temporal
from handprop_jax.training import objectives
from handprop_jax.training.phases import Phase

NAME = "temporal_consistency"


def extend_params(config: Config, variables: dict, key: jax.Array) -> dict:
    """Add the zero-initialised temporal input weights (``params["temporal"]``) to the stage-1
    variables (kept when already there)."""
    params = dict(variables["params"])
    params.setdefault(temporal.KEY, temporal.init_params(config))
    return {**variables, "params": params}


def consistency(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Eqs. 3–4: (1/n) Σ_i ‖a_i − b_i‖²_F for points a, b (B, n, P, 3), averaged over the B clips."""
    return jnp.mean(jnp.sum(jnp.square(a - b), axis=(-2, -1)))


def masked_prediction_loss(model, g, joints, labels: dict, mask):
    """L_pred (the run's ``train.pred_objective``: :func:`objectives.prediction_loss`) over the rows
    with ``mask`` (B,) True only, the mean over those rows (0 when there is none). Each row is scored
    as a batch of one, so the zero-filled labels of the other rows never enter a value or a gradient.
    The decoupled objective's rotation-free joints come from ``joints`` (no second MANO pass over
    the unlabelled rows: ``objectives.prediction_loss(local_from_joints=True)``).

    Args:
      g: predicted Gamma (B, ...); joints: its joints (B, 21, 3), metres.
      labels: ``joints3d`` (B, 21, 3), ``root`` (B, 3), ``pose`` (B, 48), ``betas`` (B, 10).
      mask: (B,) bool, the rows that have a label.
    Returns:
      (loss scalar, dict of the objective's unweighted terms, each the mean over the masked rows).
    """
    one = lambda x: x[None]  # noqa: E731

    def row(g_i, j_i, s_i):
        return objectives.prediction_loss(model, jax.tree.map(one, g_i), one(j_i), jax.tree.map(one, s_i),
                                          local_from_joints=True)

    per_row, terms = jax.vmap(row)(g, joints, labels)
    w = mask.astype(jnp.float32) / jnp.maximum(jnp.sum(mask), 1)
    return jnp.sum(w * per_row), {k: jnp.sum(w * v) for k, v in terms.items()}


def clip_passes(model, variables: dict, clips: dict, train: bool = False):
    """Forward and reversed passes over clips (image (B, n, S, S, 3), K (B, n, 3, 3)): pass 1 (no
    gradient) gives each frame's temporal input, pass 2 predicts all 2Bn frames at once.

    Returns (γ (2B·n, ...) in pass order — rows [0, Bn) forward, [Bn, 2Bn) reversed clips in
    reversed frame order — joints (2, B, n, 21, 3) and vertices (2, B, n, 778, 3) in frame order,
    stem (2B·n, S/2, S/2, width))."""
    b, n = clips["image"].shape[:2]
    rev = lambda x: jnp.flip(x, axis=1)  # noqa: E731
    images = jnp.concatenate([clips["image"], rev(clips["image"])])
    K = jnp.concatenate([clips["K"], rev(clips["K"])])
    frozen = jax.lax.stop_gradient(variables)
    prev_joints = jax.lax.stop_gradient(temporal.recurrence(model, frozen, images, K))
    prev_images = jnp.concatenate([images[:, :1], images[:, :-1]], axis=1)
    prev_joints = jnp.concatenate([jnp.zeros_like(prev_joints[:, :1]), prev_joints[:, :-1]], axis=1)
    valid = jnp.broadcast_to(jnp.arange(n) > 0, (2 * b, n))
    flat = lambda x: x.reshape((2 * b * n,) + x.shape[2:])  # noqa: E731
    gamma, _, offset = temporal.predict(model, variables, flat(images), flat(K), flat(prev_images),
                                        flat(prev_joints), flat(valid), train=train)
    verts, joints = model.hand(gamma)
    in_frame_order = lambda x: jnp.stack([x[:b], rev(x[b:])])  # noqa: E731
    joints = in_frame_order(joints.reshape(2 * b, n, 21, 3))
    verts = in_frame_order(verts.reshape((2 * b, n) + verts.shape[1:]))
    return gamma, joints, verts, offset


def loss(model, params, batch_stats, aux, batch):
    """L_pred(frames) + L_pred(labelled clip frames, both passes) + λ^p L_c^p + λ^m L_c^m."""
    cfg = model.config.temporal
    l_frames, (new_stats, metrics) = objectives.pred_phase_loss(model, params, batch_stats, aux,
                                                                batch["frames"])
    clips = batch["clips"]
    gamma, joints, verts, offset = clip_passes(model, {"params": params, "batch_stats": batch_stats}, clips,
                                               train=cfg.clip_batch_stats)
    l_cp = consistency(joints[0], joints[1])
    l_cm = consistency(verts[0], verts[1])
    b, n = clips["image"].shape[:2]
    rev = lambda x: jnp.flip(x, axis=1)  # noqa: E731
    pass_order = lambda x: jnp.concatenate([x, rev(x)]).reshape((2 * b * n,) + x.shape[2:])  # noqa: E731
    j_pass = jnp.concatenate([joints[0], rev(joints[1])]).reshape(2 * b * n, 21, 3)
    labels = {k: pass_order(clips[k]) for k in ("joints3d", "root", "pose", "betas")}
    l_clip, _ = masked_prediction_loss(model, gamma, j_pass, labels, pass_order(clips["labelled"]))
    total = l_frames + l_clip + cfg.lambda_pose * l_cp + cfg.lambda_mesh * l_cm
    metrics = {**metrics, "loss": total, "l_pred_clip": l_clip, "l_c_pose": l_cp, "l_c_mesh": l_cm,
               "fwd_rev_mm": objectives.mpjpe_mm(joints[0].reshape(-1, 21, 3), joints[1].reshape(-1, 21, 3)),
               "stem_rms": jnp.sqrt(jnp.mean(jnp.square(offset.astype(jnp.float32))))}
    return total, (new_stats, metrics)


def _batches(config: Config, split: str, shard_index: int, shard_count: int):
    """train: {"frames": the stage-1 labelled batch (the baseline's stream), "clips": clips of n
    frames with the labels of their labelled frames only}; val: labelled val frames."""
    if split != "train":
        return val_batches(config, 1, shard_index=shard_index, shard_count=shard_count)
    t = config.temporal
    return CombinedIterator({
        "frames": train_iterator(config, 1, shard_index=shard_index, shard_count=shard_count),
        "clips": clip_iterator(config, t.clip_length, t.clips, shard_index, shard_count,
                               with_labelled_labels=True, seed_offset=7000)})


PHASE = Phase(NAME, 3, "stage1", hp.PREDICTOR_KEYS + (temporal.KEY,),
              lambda c: c.train.stage2_steps + c.train.stage3_steps,  # = the baseline control's
              loss, _batches, images_per_sample=2, extend_params=extend_params, config_section="temporal")

