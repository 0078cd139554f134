"""HandProp losses (paper Eqs. 5–9), pure functions of arrays.

Notation: γ = (root r (B, 3) metres, pose θ (B, 48) radians, full axis-angle incl. hands_mean,
betas β (B, 10)); J (B, 21, 3) hand joints in the camera frame, metres (``hand_in_camera``).

Reductions (stated once, used everywhere):

- joint terms ``‖J_a − J_b‖²``: squared difference **averaged over batch, joints and xyz**
  (``mean((J_a − J_b)²)`` over (B, 21, 3); the baseline's ``mse_loss``), in m².
- pose regulariser ``‖θ‖²`` (:func:`pose_reg`): the 45 finger-joint components **relative to
  MANO's mean pose**, ``mean((θ[:, 3:] − hands_mean)²)`` over (B, 45). The root rotation is not
  regularised (as the baseline's ``pose[:, 3:]``). For a predictor output θ = mean + c·P with
  orthonormal PCA rows P this is ``‖c‖² / 45`` per sample, i.e. the baseline's penalty on the PCA
  coefficients, and the *same* function applies to the 48-d output of the aligner, so
  L_pred and L_align regularise the same quantity.
- shape regulariser ``‖β‖²``: ``mean(β²)`` over (B, 10).

Eq. 6  ``L_pred  = λ_J ‖J*_s − J^reg_s‖² + λ_θ ‖θ^reg_s‖² + λ_β ‖β^reg_s‖²``.

**Decoupled L_pred** (:func:`decoupled_pred_loss`, ``train.pred_objective="decoupled"``, the default;
not in the paper). Eq. 6 puts root, global rotation, articulation and shape into ONE joint error in
the camera frame, so a wrong rotation can be partly covered by bent fingers or an odd shape (issue 24:
after training, substituting any ground-truth part made the joints worse). Here each part gets its own
term, with J = J⁰(θ_f, β) R^T + r (J⁰: the wrist-centred joints with no global rotation, R the global
rotation, r the root = wrist):

- ``global`` λ_J ‖J* − (sg(J⁰) R^T + r)‖²: trains root and global rotation only (sg: stop-gradient);
- ``articulation`` λ_art ‖J* − (J⁰ R*^T + r*)‖²: trains fingers and shape only, in the true frame;
- ``rotation`` λ_rot · mean geodesic angle(R, R*) in radians (:func:`mano_jax.geodesic_angle`);
- ``params`` λ_params (‖c − c*‖² + ‖β − β*‖²): the PCA coefficients c (``ncomps``) and β against the
  label's (c* its finger pose's least-squares coefficients);
- the paper's priors λ_θ ‖θ‖² and λ_β ‖β‖² as in Eq. 6.

Eqs. 7–8  ``L_align = λ_J (‖J*_s − J^align_s‖² + ‖J^reg_u − J^align_u‖²)
+ λ_θ (‖θ^align_s‖² + ‖θ^align_u‖²)``.

Eq. 9  ``L_total = L_pred + λ_align L_align``.

**Reading of the forward/backward alignment (Sec. II-C, Fig. 1, footnote 1).** The aligner
φ(γ_b, z_a − z_b) maps annotations of frame b to frame a; footnote 1 says γ_b can be either the
predictor's output γ^reg_b or a ground truth γ*_b. In training:

- *forward* u → s (``L^align_{u→s}``): start from the **predictor's output on u**, γ^reg_u, and
  align it to s, ``γ^align_s = φ(γ^reg_u, z_s − z_u) + γ^reg_u``; compare its joints with the
  ground truth J*_s. This is the path of Fig. 1 (left) and of the introduction.
- *backward* s → u (``L^align_{u←s}``): start from the **ground truth of s**, γ*_s, and align it
  to u, ``γ^align_u = φ(γ*_s, z_u − z_s) + γ*_s`` — exactly the propagation path used at inference
  (scenario 2) — and compare its joints with the predictor's joints on u, J^reg_u (u has no
  label). This is the only term that trains the aligner on the propagation direction with a
  ground-truth input.

No stop-gradient anywhere: in stage 3 the backward term pulls the predictor's output on the
unlabelled frame towards the propagated annotation (the "regularisation" the paper describes) and
the forward term trains the predictor through its output on u; in stage 2 the predictor is frozen
by construction (only aligner parameters are differentiated). β^align is copied from γ_b (Eq. 2),
so it has no loss term of its own. The paper's L_θ in Eq. 7 regularises both aligned poses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

import mano_jax


def joints_sq_error(j_a: jnp.ndarray, j_b: jnp.ndarray) -> jnp.ndarray:
    """``‖J_a − J_b‖²`` for (B, 21, 3) joints in metres: mean over batch, joints, xyz (m²)."""
    return jnp.mean(jnp.square(j_a - j_b))


def pose_reg(pose: jnp.ndarray, hands_mean: jnp.ndarray) -> jnp.ndarray:
    """``‖θ‖²``: mean over (B, 45) of (θ[:, 3:] − hands_mean)², pose (B, 48) rad, hands_mean (45,)."""
    return jnp.mean(jnp.square(pose[:, 3:] - hands_mean))


def shape_reg(betas: jnp.ndarray) -> jnp.ndarray:
    """``‖β‖²``: mean over (B, 10) of β²."""
    return jnp.mean(jnp.square(betas))


def pred_loss(joints_gt_s: jnp.ndarray, joints_reg_s: jnp.ndarray, pose_reg_s: jnp.ndarray,
              betas_reg_s: jnp.ndarray, hands_mean: jnp.ndarray, lambda_j: float,
              lambda_theta: float, lambda_beta: float) -> tuple[jnp.ndarray, dict]:
    """Eq. 6. Returns (L_pred scalar, dict of the unweighted terms ``joints``, ``pose``, ``shape``)."""
    terms = {"joints": joints_sq_error(joints_gt_s, joints_reg_s),
             "pose": pose_reg(pose_reg_s, hands_mean),
             "shape": shape_reg(betas_reg_s)}
    loss = lambda_j * terms["joints"] + lambda_theta * terms["pose"] + lambda_beta * terms["shape"]
    return loss, terms


class HandParts(NamedTuple):
    """A hand split into the parts the decoupled L_pred trains separately (leading batch axis B):
    ``root`` (B, 3) the wrist, metres; ``rot`` (B, 3, 3) the global rotation; ``joints_local``
    (B, 21, 3) J⁰, the joints with the wrist at the origin and no global rotation, metres (used for
    the prediction); ``coeffs`` (B, n) the fingers' PCA coefficients; ``betas`` (B, 10)."""

    root: jnp.ndarray
    rot: jnp.ndarray
    joints_local: jnp.ndarray | None
    coeffs: jnp.ndarray
    betas: jnp.ndarray


def decoupled_pred_loss(pred: HandParts, gt: HandParts, joints_gt: jnp.ndarray, pose: jnp.ndarray,
                        hands_mean: jnp.ndarray, weights: Mapping[str, float]) -> tuple[jnp.ndarray, dict]:
    """The decoupled L_pred (module docstring): each part of γ gets the gradient of its own term.

    Args:
      pred: the predicted parts (``joints_local`` needed). gt: the label's (``joints_local`` unused).
      joints_gt: (B, 21, 3) J*, camera frame, metres.
      pose: (B, 48) predicted full pose, radians (for the paper's prior). hands_mean: (45,).
      weights: ``lambda_j``, ``lambda_articulation``, ``lambda_rotation``, ``lambda_params``,
        ``lambda_theta``, ``lambda_beta``.
    Returns:
      (loss scalar, dict of the unweighted terms ``global``, ``articulation``, ``rotation`` (mean
      radians), ``params``, ``pose``, ``shape``).
    """
    place = lambda j0, r, t: jnp.einsum("bij,bnj->bni", r, j0) + t[:, None, :]
    local = pred.joints_local
    terms = {"global": joints_sq_error(joints_gt, place(jax.lax.stop_gradient(local), pred.rot, pred.root)),
             "articulation": joints_sq_error(joints_gt, place(local, gt.rot, gt.root)),
             "rotation": jnp.mean(mano_jax.geodesic_angle(pred.rot, gt.rot)),
             "params": (jnp.mean(jnp.square(pred.coeffs - gt.coeffs))
                        + jnp.mean(jnp.square(pred.betas - gt.betas))),
             "pose": pose_reg(pose, hands_mean),
             "shape": shape_reg(pred.betas)}
    w = weights
    loss = (w["lambda_j"] * terms["global"] + w["lambda_articulation"] * terms["articulation"]
            + w["lambda_rotation"] * terms["rotation"] + w["lambda_params"] * terms["params"]
            + w["lambda_theta"] * terms["pose"] + w["lambda_beta"] * terms["shape"])
    return loss, terms


def align_loss(joints_gt_s: jnp.ndarray, joints_align_s: jnp.ndarray, joints_reg_u: jnp.ndarray,
               joints_align_u: jnp.ndarray, pose_align_s: jnp.ndarray, pose_align_u: jnp.ndarray,
               hands_mean: jnp.ndarray, lambda_j: float, lambda_theta: float) -> tuple[jnp.ndarray, dict]:
    """Eqs. 7–8. ``joints_align_s`` from the forward (u → s, from γ^reg_u) alignment,
    ``joints_align_u`` from the backward (s → u, from γ*_s) alignment.

    Returns (L_align scalar, dict of unweighted terms ``forward``, ``backward``, ``pose``).
    """
    terms = {"forward": joints_sq_error(joints_gt_s, joints_align_s),
             "backward": joints_sq_error(joints_reg_u, joints_align_u),
             "pose": pose_reg(pose_align_s, hands_mean) + pose_reg(pose_align_u, hands_mean)}
    loss = lambda_j * (terms["forward"] + terms["backward"]) + lambda_theta * terms["pose"]
    return loss, terms


def total_loss(l_pred: jnp.ndarray, l_align: jnp.ndarray, lambda_align: float) -> jnp.ndarray:
    """Eq. 9: L_total = L_pred + λ_align L_align."""
    return l_pred + lambda_align * l_align
