"""Comparison method 1 — Hasson et al. (CVPR 2020), photometric consistency over time — as the
training phase ``photometric``.

From the ``stage1`` checkpoint, for as many steps as the ``baseline`` control (``stage2_steps +
stage3_steps``), the predictor (encoder, π^r, π^θ) is trained on one batch of labelled frames plus one
batch of pairs (u, s = N(u)) per step — u any training frame (labelled or not, read without its
labels), s its nearest labelled frame (:func:`handprop_jax.data.train_batches.labelled_and_pairs`):

    L = λ_d (L_pred(labelled) + L_reg(u)) + λ_c L_photo(u, s),
    λ_c = hasson.lambda_consist · min(t / hasson.ramp_steps, 1),  λ_d = hasson.lambda_data − λ_c

(t = steps done in the phase; defaults 1e-3, 0.999, 1000: the official code's ``WarpRegNet``). L_pred is
Eq. 6 of the paper (:func:`handprop_jax.training.objectives.prediction_loss`; Hasson's hand terms have
the same weights), L_reg(u) = λ_θ L_θ + λ_β L_β of the prediction on u.

**L_photo** (Hasson's Eq. 1, forward direction only as the official recipe): for every pixel p of the
silhouette of s's ground-truth mesh V*_s (rasterised under stop-gradient: face ids and
perspective-correct barycentrics), the per-vertex flow ``π(V̂_u, K_u) − π(V*_s, K_s)`` interpolated
over V*_s's visible faces moves p to q(p) in frame u (:func:`handprop_jax.photometric.flow_warp`);
``|I_u(q(p)) − I_s(p)|`` (bilinear, RGB in [0, 1], mean over RGB) is averaged over the masked pixels
of each pair, then over the pairs (a pair with no pixel left counts 0, as the official
``batch_masked_mean_loss``). The mask keeps p when

- p is in the silhouette and not on the wrist cap (:func:`handprop_jax.photometric.wrist_cap`);
- q(p) is in the image, and neither p nor the four pixels around q(p) come from the augmentation's
  reflected border (``inside`` masks of :mod:`handprop_jax.data.augment`);
- the forward–backward check passes within ``hasson.cycle_threshold`` pixels
  (:func:`handprop_jax.photometric.cycle_check`: q(p) must land on V̂_u's silhouette at a face whose
  backward flow returns to p).

Gradients reach the predicted mesh V̂_u only through the flow values: the reference mesh, face ids,
barycentrics and the mask are constants of the loss.

BatchNorm and the optimizer are those of the baseline control (BatchNorm in training mode unless
``model.freeze_batchnorm``, Adam at ``train.lr``), so ``baseline`` is this phase's same-budget control.
The labelled frames and the u frames go through the encoder as one batch of 2B images; s is not
encoded (its ground truth is the reference).

Deviations from the official code (docs/comparison.md): the flow is interpolated by our rasteriser's
barycentrics instead of Neural Renderer's soft rendering (the same gradient path); L_reg is applied
to u's prediction only (the official code also regularises the prediction on the reference frame);
no object branch.

:func:`diagnostics` (logged at the phase's first and last step) is the loss of the ground-truth mesh of
u, of the copied mesh V*_s and of the current prediction on validation pairs: a check that the loss
prefers the right mesh on this data.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from handprop_jax import losses
from handprop_jax import photometric as P
from handprop_jax.batching import numeric_batch
from handprop_jax.config import Config
from handprop_jax.data.eval_batches import eval_batches
from handprop_jax.data.train_batches import labelled_and_pairs, val_batches
from handprop_jax.gamma import Gamma, concatenate
from handprop_jax.model import handprop as hp
from handprop_jax.model.api import HandPropModel
from handprop_jax.render import SPLAT_WINDOWS
from handprop_jax.training import objectives
from handprop_jax.training.phases import Phase

NAME = "photometric"
#: metres: a candidate mesh with a vertex closer to the camera plane than this gives its pair no loss
MIN_DEPTH = 0.01


def splat_window(config: Config) -> int | None:
    """The rasteriser's window (``hasson.splat_window``; None: the dense rasteriser)."""
    w = config.hasson.splat_window
    if w is None:
        need = -(-config.data.image_size // 4)
        return next((x for x in SPLAT_WINDOWS if x >= need), None)
    return None if w == 0 else int(w)


def hand_faces(mano) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(faces (F', 3) int32, wrist cap (F',) bool) of the model's mesh, its wrist closed
    (:func:`handprop_jax.photometric.wrist_cap`)."""
    faces, cap = P.wrist_cap(np.asarray(mano.v_template), np.asarray(mano.faces),
                             np.asarray(mano.J_regressor))
    return jnp.asarray(faces), jnp.asarray(cap)


def consist_weight(config: Config, step) -> jnp.ndarray:
    """λ_c at the phase's step ``step`` (steps done before this one)."""
    h = config.hasson
    if h.ramp_steps == 0:
        return jnp.asarray(h.lambda_consist, jnp.float32)
    return h.lambda_consist * jnp.minimum(jnp.asarray(step, jnp.float32) / h.ramp_steps, 1.0)


def pair_loss(verts_u, verts_s, K_u, K_s, image_u, image_s, inside_u, inside_s, faces, cap, window,
              threshold: float):
    """L_photo of one pair (module docstring) → (loss, pixels used, silhouette pixels of s).

    verts_u: (V, 3) candidate mesh of u (differentiated); verts_s: (V, 3) the reference mesh of s;
    K_u, K_s: (3, 3); image_u, image_s: (S, S, 3) float in [0, 1]; inside_u, inside_s: (S, S) bool
    (pixels not from augmentation padding); faces (F, 3), cap (F,) bool; window: static."""
    H, W = image_s.shape[:2]
    # a candidate mesh reaching behind the camera (z < MIN_DEPTH) has no flow: the pair is left out,
    # with the reference mesh in its place so that no division by ~0 reaches the gradient
    front = jnp.all(verts_u[:, 2] > MIN_DEPTH)
    verts_u = jnp.where(front, verts_u, jax.lax.stop_gradient(verts_s))
    ref = P.sample_reference(verts_s, faces, K_s, image_s, H * W, jax.random.PRNGKey(0), (0.0,), window,
                             exclude_faces=cap)
    q = P.flow_warp(ref, verts_u, K_u, verts_s, K_s)
    ok = P.cycle_check(ref, q, verts_u, K_u, verts_s, K_s, faces, (H, W), window, threshold, cap)
    pix = ref.pixel.astype(jnp.int32)
    ok = ok & inside_s[pix[:, 1], pix[:, 0]]
    around_q = P.bilinear(inside_u[..., None].astype(image_u.dtype), jax.lax.stop_gradient(q))[:, 0]
    ok = ok & (around_q > 1 - 1e-4)  # the 4 pixels around q are not padding
    ok = ok & front
    err, used = P.error(ref, image_u, q, ok)
    return err, used, jnp.sum(ref.valid)


def batch_pair_loss(config: Config, mano, verts_u, verts_s, s: dict, u: dict):
    """:func:`pair_loss` over a batch of pairs (B, ...) → (per-pair loss (B,), used (B,), silhouette (B,)).
    ``s``/``u``: frame dicts (``image`` uint8, ``K``, optional ``inside``)."""
    faces, cap = hand_faces(mano)
    window = splat_window(config)

    def image(frame):
        return frame["image"].astype(jnp.float32) / 255.0

    def mask(frame):
        return frame.get("inside", jnp.ones(frame["image"].shape[:3], bool))

    fn = functools.partial(pair_loss, faces=faces, cap=cap, window=window,
                           threshold=float(config.hasson.cycle_threshold))
    return jax.vmap(fn)(verts_u, jax.lax.stop_gradient(verts_s), u["K"], s["K"], image(u), image(s),
                        mask(u), mask(s))


def photometric_loss(model, params, batch_stats, aux, batch):
    """The phase's loss (module docstring); signature of :data:`handprop_jax.training.phases.LossFn`."""
    config = model.config
    t = config.train
    lab, s, u = batch["labelled"], batch["s"], batch["u"]
    B = lab["image"].shape[0]
    _, g, new_stats = model.predict({"params": params, "batch_stats": batch_stats},
                                    jnp.concatenate([lab["image"], u["image"]]),
                                    jnp.concatenate([lab["K"], u["K"]]), train=True)
    g_lab, g_u = g.take(slice(0, B)), g.take(slice(B, 2 * B))
    verts, joints = model.hand(concatenate([g_lab, g_u, Gamma.of(s)]))
    j_lab, verts_u, verts_s = joints[:B], verts[B:2 * B], verts[2 * B:]
    l_pred, p_terms = objectives.prediction_loss(model, g_lab, j_lab, lab)
    l_reg = (t.lambda_theta * losses.pose_reg(g_u.pose, model.mano.hands_mean)
             + t.lambda_beta * losses.shape_reg(g_u.betas))
    photo, used, sil = batch_pair_loss(config, model.mano, verts_u, verts_s, s, u)
    l_photo = jnp.mean(photo)
    lam_c = consist_weight(config, aux["step"])
    lam_d = config.hasson.lambda_data - lam_c
    loss = lam_d * (l_pred + l_reg) + lam_c * l_photo
    metrics = {"loss": loss, "l_pred": l_pred, "l_reg_u": l_reg, "l_photo": l_photo, "lambda_consist": lam_c,
               **{f"pred_{k}": v for k, v in p_terms.items()},
               "photo_pixels": jnp.mean(used.astype(jnp.float32)),
               "photo_kept": jnp.sum(used) / jnp.maximum(jnp.sum(sil), 1),
               "mpjpe_mm": objectives.mpjpe_mm(j_lab, lab["joints3d"])}
    return loss, (new_stats, metrics)


def init_aux(config: Config, key) -> dict:
    """The phase's own state: the step counter of the λ_c ramp (checkpointed with the train state)."""
    return {"step": jnp.zeros((), jnp.int32)}


def aux_step(model, params, batch_stats, aux, batch, key):
    return {"step": aux["step"] + 1}, {}


def batches(config: Config, split: str, shard_index: int, shard_count: int):
    """Train: ``{"labelled", "s", "u"}`` batches (:func:`handprop_jax.data.train_batches.labelled_and_pairs`);
    val: labelled val frames (the predictor's MPJPE, as the baseline's validation)."""
    if split == "train":
        return labelled_and_pairs(config, shard_index, shard_count)
    return val_batches(config, 1, shard_index=shard_index, shard_count=shard_count)


# ----------------------------------------------------------------------------- diagnostics


@functools.lru_cache(maxsize=4)
def _pair_losses_fn(config: Config):
    """jit: (variables, pair batch) → per-pair L_photo of u's ground truth, of the copied mesh (s's
    ground truth) and of the prediction on u, and the pixels each used (the config's model)."""
    model = HandPropModel.create(config)

    def fn(variables, batch):
        s, u = batch["s"], batch["u"]
        _, g_pred, _ = model.predict(variables, u["image"], u["K"], train=False)
        g_s = Gamma.of(s)
        verts, _ = model.hand(concatenate([Gamma.of(u), g_s, g_pred]))
        B = u["image"].shape[0]
        out = {}
        verts_s = verts[B:2 * B]
        for i, name in enumerate(("gt", "copy", "pred")):
            loss, used, _ = batch_pair_loss(config, model.mano, verts[i * B:(i + 1) * B], verts_s, s, u)
            out[name], out[f"{name}_pixels"] = loss, used
        return out

    return jax.jit(fn)


def pair_losses(config: Config, variables: dict, split: str = "val", max_pairs: int | None = None
                ) -> dict[str, np.ndarray]:
    """Per-pair L_photo of (u, N(u)) over the unlabelled frames u of ``split`` (the evaluation's
    scenario-2 pairs, evenly spaced subset of ``max_pairs``; no augmentation; the config's model):
    {"gt", "copy", "pred", "<name>_pixels", "gap"} arrays (P,)."""
    fn = _pair_losses_fn(config)
    parts: dict[str, list] = {}
    for batch in eval_batches(config.data, split, 2, config.train.batch_size, max_items=max_pairs):
        mask = np.asarray(batch["mask"])
        out = jax.device_get(fn(variables, numeric_batch(batch)))
        for k, v in {**out, "gap": batch["gap"]}.items():
            parts.setdefault(k, []).append(np.asarray(v)[mask])
    return {k: np.concatenate(v) for k, v in parts.items()}


def diagnostics(config: Config, model, variables: dict) -> dict[str, float]:
    """Logged at the phase's first and last step: mean L_photo on validation pairs of u's ground-truth
    mesh, of the copied mesh (s's ground truth) and of the current prediction, and the fraction of
    pairs where the ground truth scores below the copy (``train.val_batches`` batches of pairs; the
    config's MANO model)."""
    n = max(1, config.train.val_batches) * config.train.batch_size
    r = pair_losses(config, variables, "val", max_pairs=n)
    return {"val_photo_gt": float(r["gt"].mean()), "val_photo_copy": float(r["copy"].mean()),
            "val_photo_pred": float(r["pred"].mean()),
            "val_photo_gt_below_copy": float(np.mean(r["gt"] < r["copy"])),
            "val_photo_pairs": float(len(r["gt"]))}


PHASE = Phase(NAME, 3, "stage1", hp.PREDICTOR_KEYS,
              lambda c: c.train.stage2_steps + c.train.stage3_steps, photometric_loss, batches,
              images_per_sample=2, init_aux=init_aux, aux_step=aux_step, padding_masks=True,
              diagnostics=diagnostics, config_section="hasson")
