"""Train state and the pure, jit-compiled train steps of the three stages (and the baseline).

Phases (each is one orbax checkpoint folder ``checkpoints/<phase>``, see docs/design.md):

=========  =====  ===================================  =============================  ==========
phase      stage  trainable parameters                 loss                           batch
=========  =====  ===================================  =============================  ==========
stage1     1      predictor (encoder, π^r, π^θ)        L_pred on s                    frame
baseline   1      predictor                            L_pred (control, same steps)   frame
stage2     2      aligners (φ^r, φ^θ) only             L_align on labelled pairs      {s, u}
align      3      everything                           L_pred + λ_align L_align       {s, u}
=========  =====  ===================================  =============================  ==========

``train_step(state, batch, key) -> (state, metrics)`` is a pure function: ``key`` drives the
augmentation (``handprop_jax.data.augment.augment``, applied inside the step), ``metrics`` is a
dict of scalar arrays (no host transfer inside the step). The model is the facade
:class:`handprop_jax.model.api.HandPropModel`.

The optimizer (:func:`optimizer`) is composed from optax parts: ``optax.partition`` gives the
phase's trainable top-level parameter groups Adam (``optax.adam(lr)``, one state per phase, started
afresh at the beginning of every phase; no Adam state for the others) and the frozen groups
``optax.set_to_zero`` — their update is exactly zero, so stage 2 leaves every predictor parameter
bit-identical and stage 1 / baseline leave the aligners bit-identical — and
``optax.apply_if_finite`` wraps both.

BatchNorm: in stages 1 and 3 (and baseline) the encoder runs in training mode (batch statistics,
running averages updated — unless ``ModelConfig.freeze_batchnorm``); in stage 2 the frozen
encoder runs in inference mode (running statistics, no update), so the features the aligner is
trained on are the ones it receives at inference and the statistics stay bit-identical. In
stage 3 the s and u images go through the encoder as one batch of 2B images.

Non-finite guard: ``optax.apply_if_finite`` rejects a step whose gradient has a NaN/inf (a
non-finite loss is made to count as one: its gradient is replaced by NaNs), returning zero updates
and the previous Adam state; the step then also keeps the previous BatchNorm statistics and records
the step number in ``state.bad_step`` (−1 while all steps were finite). The loop checks it (one
scalar, at log/checkpoint time, so no per-step host sync) and stops with a message naming the phase
and step before saving anything.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

import mano_jax
from handprop_jax import losses
from handprop_jax.config import Config
from handprop_jax.gamma import Gamma
from handprop_jax.model import handprop as hp
from handprop_jax.model.api import Frame, HandPropModel
from handprop_jax.training.checkpoint import PHASES

PHASE_STAGE = {"stage1": 1, "baseline": 1, "stage2": 2, "align": 3}
PHASE_TRAINABLE = {"stage1": hp.PREDICTOR_KEYS, "baseline": hp.PREDICTOR_KEYS,
                   "stage2": hp.ALIGNER_KEYS, "align": hp.PREDICTOR_KEYS + hp.ALIGNER_KEYS}
# a run stops at its first non-finite step; the guard must never give up and apply one
_NEVER_GIVE_UP = 2 ** 30


@flax.struct.dataclass
class TrainState:
    """Everything a step changes. ``params``/``batch_stats``: the HandProp variables;
    ``opt_state``: the state of :func:`optimizer` (``apply_if_finite`` around the partitioned Adam);
    ``step``: int32 (), steps done in this phase; ``rng``: uint32 (2,) the phase's base key (step keys
    are ``fold_in(rng, step)``); ``bad_step``: int32 (), first step whose loss/gradient was
    non-finite, −1 if none."""

    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jnp.ndarray
    bad_step: jnp.ndarray


def phase_steps(config: Config, phase: str) -> int:
    t = config.train
    return {"stage1": t.stage1_steps, "baseline": t.stage2_steps + t.stage3_steps,
            "stage2": t.stage2_steps, "align": t.stage3_steps}[phase]


def param_labels(params: dict, phase: str) -> dict:
    """"train" / "frozen" for each top-level parameter group of ``params`` in ``phase``."""
    return {k: "train" if k in PHASE_TRAINABLE[phase] else "frozen" for k in params}


def optimizer(config: Config, phase: str) -> optax.GradientTransformation:
    """Adam on the phase's trainable groups, zero updates for the frozen ones, no update at all on a
    step with a non-finite gradient (module docstring)."""
    inner = optax.partition({"train": optax.adam(config.train.lr), "frozen": optax.set_to_zero()},
                            lambda params: param_labels(params, phase))
    return optax.apply_if_finite(inner, max_consecutive_errors=_NEVER_GIVE_UP)


def init_state(config: Config, phase: str, variables: dict, rng: jax.Array) -> TrainState:
    """Phase start: given variables, a fresh optimizer state for the phase."""
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=optimizer(config, phase).init(params),
                      rng=jnp.asarray(rng, jnp.uint32), bad_step=jnp.full((), -1, jnp.int32))


def phase_key(config: Config, phase: str) -> jax.Array:
    """Deterministic base key of a phase (raw uint32 (2,))."""
    return jax.random.fold_in(jax.random.PRNGKey(config.train.seed), PHASES.index(phase) + 1)


def per_sample_mpjpe_mm(j_a: jnp.ndarray, j_b: jnp.ndarray) -> jnp.ndarray:
    """Mean per-joint position error in mm of each sample, (B,)."""
    return 1000.0 * jnp.mean(jnp.linalg.norm(j_a - j_b, axis=-1), axis=-1)


def mpjpe_mm(j_a: jnp.ndarray, j_b: jnp.ndarray) -> jnp.ndarray:
    """Mean per-joint position error in mm, averaged over (B, 21)."""
    return jnp.mean(per_sample_mpjpe_mm(j_a, j_b))


# ----------------------------------------------------------------------------- losses per phase
# Which frame feeds which term of the paper's losses is decided here (docs/design.md, "Equations").


def _pair(model: HandPropModel, variables: dict, batch: dict, train: bool):
    """The s and u images of a pair batch through the predictor as ONE batch of 2B images →
    (Frame s, Frame u, γ^reg_s, γ^reg_u, batch_stats)."""
    s, u = batch["s"], batch["u"]
    b = s["image"].shape[0]
    features, g, stats = model.predict(variables, jnp.concatenate([s["image"], u["image"]]),
                                       jnp.concatenate([s["K"], u["K"]]), train=train)
    half = lambda tree, part: jax.tree.map(lambda x: x[:b] if part == 0 else x[b:], tree)
    frame_s, frame_u = Frame(half(features, 0), s["K"]), Frame(half(features, 1), u["K"])
    return frame_s, frame_u, half(g, 0), half(g, 1), stats


def prediction_loss(model: HandPropModel, g_reg_s: Gamma, j_reg_s: jnp.ndarray, s: dict):
    """L_pred (Eqs. 5–6) of the predictor's output on the labelled frame s against its ground truth."""
    t = model.config.train
    return losses.pred_loss(s["joints3d"], j_reg_s, g_reg_s.pose, g_reg_s.betas, model.mano.hands_mean,
                            t.lambda_j, t.lambda_theta, t.lambda_beta)


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


def _pred_phase_loss(model: HandPropModel, params, batch_stats, batch):
    """stage1 / baseline: L_pred on labelled frames (predictor in training mode)."""
    _, g, new_stats = model.predict({"params": params, "batch_stats": batch_stats}, batch["image"],
                                    batch["K"], train=True)
    (j_reg,) = model.joints(g)
    loss, terms = prediction_loss(model, g, j_reg, batch)
    metrics = {"loss": loss, "l_pred": loss, **{f"pred_{k}": v for k, v in terms.items()},
               "mpjpe_mm": mpjpe_mm(j_reg, batch["joints3d"])}
    return loss, (new_stats, metrics)


def _stage2_loss(model: HandPropModel, params, batch_stats, batch):
    """stage2: L_align on labelled pairs; the predictor runs in inference mode and is not
    differentiated (its outputs are constants of the loss; the optimizer freezes its parameters)."""
    frame_s, frame_u, _, g_reg_u, _ = jax.lax.stop_gradient(
        _pair(model, {"params": params, "batch_stats": batch_stats}, batch, train=False))
    loss, terms, j_align_u, _ = alignment_terms(model, params, frame_s, frame_u, g_reg_u, batch["s"])
    metrics = {"loss": loss, "l_align": loss, **{f"align_{k}": v for k, v in terms.items()},
               "prop_mpjpe_mm": mpjpe_mm(j_align_u, batch["u"]["joints3d"])}
    return loss, (batch_stats, metrics)


def _stage3_loss(model: HandPropModel, params, batch_stats, batch):
    """align (stage 3): L_total = L_pred on s + λ_align L_align on (s, u) (Eq. 9)."""
    s = batch["s"]
    frame_s, frame_u, g_reg_s, g_reg_u, new_stats = _pair(
        model, {"params": params, "batch_stats": batch_stats}, batch, train=True)
    l_align, a_terms, _, (j_reg_s,) = alignment_terms(model, params, frame_s, frame_u, g_reg_u, s, (g_reg_s,))
    l_pred, p_terms = prediction_loss(model, g_reg_s, j_reg_s, s)
    loss = losses.total_loss(l_pred, l_align, model.config.train.lambda_align)
    metrics = {"loss": loss, "l_pred": l_pred, "l_align": l_align,
               **{f"pred_{k}": v for k, v in p_terms.items()},
               **{f"align_{k}": v for k, v in a_terms.items()},
               "mpjpe_mm": mpjpe_mm(j_reg_s, s["joints3d"])}
    return loss, (new_stats, metrics)


_PHASE_LOSS = {"stage1": _pred_phase_loss, "baseline": _pred_phase_loss, "stage2": _stage2_loss,
               "align": _stage3_loss}


# ----------------------------------------------------------------------------- the step


def numeric_batch(batch: dict) -> dict:
    """Keep the array entries a step uses (drops text such as video_name)."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out[k] = numeric_batch(v)
        elif hasattr(v, "dtype") and getattr(v.dtype, "kind", "O") in "biuf":
            out[k] = v
    return out


def augment_fn(config: Config) -> Callable[[dict, jax.Array], dict]:
    """The batch augmentation applied inside the step (identity when ``data.augment`` is False)."""
    if not config.data.augment:
        return lambda batch, key: batch
    from handprop_jax.data.augment import augment

    return lambda batch, key: augment(batch, key, config.data)


def make_train_step(config: Config, phase: str, mano: mano_jax.ManoModel | None = None,
                    augment: Callable[[dict, jax.Array], dict] | None = None,
                    module: hp.HandProp | None = None):
    """The pure ``train_step(state, batch, key) -> (state, metrics)`` of ``phase`` (not jitted;
    see :func:`jit_train_step`). ``mano``/``augment``/``module`` default to the config's."""
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r}: expected one of {PHASES}")
    if config.model.dtype == "bfloat16" and jax.default_backend() == "cpu":
        warnings.warn("model.dtype=bfloat16 on CPU is slower than float32: XLA:CPU runs bf16 convolutions "
                      "in float32 and adds conversions (benchmarks/profile_step.py shows where); use it on "
                      "GPU/TPU, or model.conv_impl=bf16_cols on a CPU", stacklevel=2)
    model = HandPropModel.create(config, mano, module)
    loss_fn = _PHASE_LOSS[phase]
    tx = optimizer(config, phase)
    augment = augment_fn(config) if augment is None else augment

    def train_step(state: TrainState, batch: dict, key: jax.Array) -> tuple[TrainState, dict]:
        batch = augment(numeric_batch(batch), key)
        (loss, (new_stats, metrics)), grads = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)(
            model, state.params, state.batch_stats, batch)
        # a non-finite loss counts as a non-finite gradient, whatever autodiff made of it
        grads = jax.tree.map(lambda g: jnp.where(jnp.isfinite(loss), g, jnp.nan), grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        ok = opt_state.last_finite
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_stats, state.batch_stats),
            opt_state=opt_state,
            bad_step=jnp.where((state.bad_step < 0) & ~ok, state.step, state.bad_step))
        return new_state, {**metrics, "grad_norm": optax.tree.norm(grads)}

    return train_step


def jit_train_step(train_step, mesh=None, donate: bool = True):
    """jit with the data-parallel shardings: state replicated, batch sharded on ``data``.

    With ``donate`` the input state's buffers are reused for the output state (do not use the
    input state after the call)."""
    from handprop_jax.training import parallel

    kwargs = {"donate_argnums": (0,)} if donate else {}
    if mesh is None:
        return jax.jit(train_step, **kwargs)
    rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    return jax.jit(train_step, in_shardings=(rep, shard, rep), out_shardings=(rep, rep), **kwargs)


# ----------------------------------------------------------------------------- validation


def make_eval_fn(config: Config, phase: str, mano: mano_jax.ManoModel | None = None,
                 module: hp.HandProp | None = None):
    """Pure ``eval_fn(params, batch_stats, batch) -> (sum of per-sample MPJPE mm, count)``.

    For stage2 (the phase that trains only the aligners) on ``{"s", "u"}`` pair batches: the
    propagation error of γ*_s → u (scenario 2 path); otherwise on frame batches: the predictor's
    error. ``batch["mask"]`` (B,) bool, when present, excludes padded rows."""
    model = HandPropModel.create(config, mano, module)

    def eval_fn(params, batch_stats, batch):
        batch = numeric_batch(batch)
        variables = {"params": params, "batch_stats": batch_stats}
        if phase == "stage2":
            frame_s, frame_u, _, _, _ = _pair(model, variables, batch, train=False)
            g, target = model.align(params, Gamma.of(batch["s"]), frame_u, frame_s), batch["u"]
        else:
            _, g, _ = model.predict(variables, batch["image"], batch["K"], train=False)
            target = batch
        (j,) = model.joints(g)
        err = per_sample_mpjpe_mm(j, target["joints3d"])
        mask = batch.get("mask", jnp.ones(err.shape, bool))
        return jnp.sum(jnp.where(mask, err, 0.0)), jnp.sum(mask)

    return eval_fn

