"""The paper's objectives (Eqs. 5–9): which frame feeds which term is decided here.

Loss functions of the phases (signature :data:`handprop_jax.training.phases.LossFn`):

- :func:`pred_phase_loss` — stage1 / baseline: L_pred on labelled frames;
- :func:`stage2_loss` — stage2: L_align on labelled pairs, predictor frozen and in inference mode;
- :func:`stage3_loss` — align (stage 3): L_pred + λ_align L_align (Eq. 9).

Helpers shared with other phases: :func:`pair_predictions` (s and u through the predictor as one
batch), :func:`prediction_loss` (L_pred of a labelled frame), :func:`alignment_terms` (L_align),
:func:`mpjpe_mm` / :func:`per_sample_mpjpe_mm`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import mano_jax
from handprop_jax import losses
from handprop_jax.gamma import Gamma
from handprop_jax.model.api import Frame, HandPropModel


def per_sample_mpjpe_mm(j_a: jnp.ndarray, j_b: jnp.ndarray) -> jnp.ndarray:
    """Mean per-joint position error in mm of each sample, (B,)."""
    return 1000.0 * jnp.mean(jnp.linalg.norm(j_a - j_b, axis=-1), axis=-1)


def mpjpe_mm(j_a: jnp.ndarray, j_b: jnp.ndarray) -> jnp.ndarray:
    """Mean per-joint position error in mm, averaged over (B, 21)."""
    return jnp.mean(per_sample_mpjpe_mm(j_a, j_b))


def pair_predictions(model: HandPropModel, variables: dict, batch: dict, train: bool):
    """The s and u images of a pair batch through the predictor as ONE batch of 2B images →
    (Frame s, Frame u, γ^reg_s, γ^reg_u, batch_stats)."""
    s, u = batch["s"], batch["u"]
    b = s["image"].shape[0]
    features, g, stats = model.predict(variables, jnp.concatenate([s["image"], u["image"]]),
                                       jnp.concatenate([s["K"], u["K"]]), train=train)
    half = lambda tree, part: jax.tree.map(lambda x: x[:b] if part == 0 else x[b:], tree)
    frame_s, frame_u = Frame(half(features, 0), s["K"]), Frame(half(features, 1), u["K"])
    return frame_s, frame_u, half(g, 0), half(g, 1), stats


def prediction_loss(model: HandPropModel, g_reg_s: Gamma, j_reg_s: jnp.ndarray, s: dict,
                    local_from_joints: bool = False):
    """L_pred of the predictor's output on the labelled frame s against its ground truth:
    ``train.pred_objective`` "paper" is Eqs. 5–6, "decoupled" :func:`losses.decoupled_pred_loss`
    (which needs the label's root, pose and betas besides its joints).

    The decoupled objective needs the predicted hand's joints without root and global rotation,
    J⁰ (B, 21, 3): by a second MANO pass (default), or, with ``local_from_joints``, from
    ``j_reg_s`` itself as (J − r) R (J = J⁰ Rᵀ + r, R the global rotation matrix): equal up to
    float rounding, without the MANO pass (for callers scoring many rows of which few have labels)."""
    t = model.config.train
    if t.pred_objective == "paper":
        return losses.pred_loss(s["joints3d"], j_reg_s, g_reg_s.pose, g_reg_s.betas, model.mano.hands_mean,
                                t.lambda_j, t.lambda_theta, t.lambda_beta)
    ncomps = model.config.model.ncomps
    if local_from_joints:
        j_local = (j_reg_s - g_reg_s.root[:, None, :]) @ mano_jax.rodrigues(g_reg_s.pose[:, :3])
    else:
        no_rotation = jnp.concatenate([jnp.zeros_like(g_reg_s.pose[:, :3]), g_reg_s.pose[:, 3:]], -1)
        (j_local,) = model.joints(Gamma(jnp.zeros_like(g_reg_s.root), no_rotation, g_reg_s.betas))

    def parts(g: Gamma, joints_local):
        return losses.HandParts(g.root, mano_jax.rodrigues(g.pose[:, :3]), joints_local,
                                mano_jax.axis_angle_to_pca(model.mano, g.pose[:, 3:], ncomps=ncomps), g.betas)

    weights = {f"lambda_{k}": getattr(t, f"lambda_{k}")
               for k in ("j", "articulation", "rotation", "params", "theta", "beta")}
    return losses.decoupled_pred_loss(parts(g_reg_s, j_local), parts(Gamma.of(s), None), s["joints3d"],
                                      g_reg_s.pose, model.mano.hands_mean, weights)


def alignment_terms(model: HandPropModel, params: dict, frame_s: Frame, frame_u: Frame, g_reg_u: Gamma,
                    s: dict, extra: tuple[Gamma, ...] = ()):
    """L_align (Eqs. 7–8) of a pair (labelled s, partner u): the forward alignment u → s starts from
    the predictor's γ^reg_u and is compared with s's ground-truth joints; the backward alignment
    s → u starts from the ground truth γ*_s (the propagation path) and is compared with the
    predictor's joints on u. The joints of every γ (and of ``extra``) come from one MANO call.
    Returns (loss, terms, J^align_u, [joints of extra])."""
    t = model.config.train
    g_align_s = model.align(params, g_reg_u, frame_s, frame_u)
    g_align_u = model.align(params, Gamma.of(s), frame_u, frame_s)
    j_reg_u, j_align_s, j_align_u, *j_extra = model.joints(g_reg_u, g_align_s, g_align_u, *extra)
    loss, terms = losses.align_loss(s["joints3d"], j_align_s, j_reg_u, j_align_u, g_align_s.pose,
                                    g_align_u.pose, model.mano.hands_mean, t.lambda_j, t.lambda_theta)
    return loss, terms, j_align_u, j_extra


def pred_phase_loss(model: HandPropModel, params, batch_stats, aux, batch):
    """stage1 / baseline: L_pred on labelled frames (predictor in training mode)."""
    _, g, new_stats = model.predict({"params": params, "batch_stats": batch_stats}, batch["image"],
                                    batch["K"], train=True)
    (j_reg,) = model.joints(g)
    loss, terms = prediction_loss(model, g, j_reg, batch)
    metrics = {"loss": loss, "l_pred": loss, **{f"pred_{k}": v for k, v in terms.items()},
               "mpjpe_mm": mpjpe_mm(j_reg, batch["joints3d"])}
    return loss, (new_stats, metrics)


def stage2_loss(model: HandPropModel, params, batch_stats, aux, batch):
    """stage2: L_align on labelled pairs; the predictor runs in inference mode and is not
    differentiated (its outputs are constants of the loss; the optimizer freezes its parameters)."""
    frame_s, frame_u, _, g_reg_u, _ = jax.lax.stop_gradient(
        pair_predictions(model, {"params": params, "batch_stats": batch_stats}, batch, train=False))
    loss, terms, j_align_u, _ = alignment_terms(model, params, frame_s, frame_u, g_reg_u, batch["s"])
    metrics = {"loss": loss, "l_align": loss, **{f"align_{k}": v for k, v in terms.items()},
               "prop_mpjpe_mm": mpjpe_mm(j_align_u, batch["u"]["joints3d"])}
    return loss, (batch_stats, metrics)


def stage3_loss(model: HandPropModel, params, batch_stats, aux, batch):
    """align (stage 3): L_total = L_pred on s + λ_align L_align on (s, u) (Eq. 9)."""
    s = batch["s"]
    frame_s, frame_u, g_reg_s, g_reg_u, new_stats = pair_predictions(
        model, {"params": params, "batch_stats": batch_stats}, batch, train=True)
    l_align, a_terms, _, (j_reg_s,) = alignment_terms(model, params, frame_s, frame_u, g_reg_u, s, (g_reg_s,))
    l_pred, p_terms = prediction_loss(model, g_reg_s, j_reg_s, s)
    loss = losses.total_loss(l_pred, l_align, model.config.train.lambda_align)
    metrics = {"loss": loss, "l_pred": l_pred, "l_align": l_align,
               **{f"pred_{k}": v for k, v in p_terms.items()},
               **{f"align_{k}": v for k, v in a_terms.items()},
               "mpjpe_mm": mpjpe_mm(j_reg_s, s["joints3d"])}
    return loss, (new_stats, metrics)
