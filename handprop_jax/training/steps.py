"""Train state and the pure, jit-compiled train steps of the three stages (and the baseline).

Phases (each is one orbax checkpoint folder ``checkpoints/<phase>``) are
:class:`~handprop_jax.training.phases.Phase` records of :mod:`handprop_jax.training.registry`: a
phase gives the loss (the paper's are in :mod:`handprop_jax.training.objectives`), the trainable
parameter groups and, optionally, extra state with its own update (``aux``).

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
and the previous Adam state; the step then also keeps the previous BatchNorm statistics (and the
phase's previous ``aux``) and records the step number in ``state.bad_step`` (−1 while all steps
were finite). A phase's ``aux_step`` that yields a non-finite ``aux`` (a diverged discriminator) is
rejected the same way: the previous ``aux`` is kept and the step recorded in ``bad_step``. The loop
checks it (one scalar, at log/checkpoint time, so no per-step host sync) and stops with a message
naming the phase and step before saving anything.

A phase's ``aux_step`` runs after the main update; the loss may hand it values computed in the
main pass (e.g. the predicted motions a discriminator learns from, so they are not computed twice)
as ``metrics[AUX_INPUT]``, which the step removes from the metrics and passes as
``batch[AUX_INPUT]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

import mano_jax
from handprop_jax import metrics as metrics_lib
from handprop_jax.batching import numeric_batch
from handprop_jax.config import Config
from handprop_jax.data.augment import augment
from handprop_jax.gamma import Gamma
from handprop_jax.model import handprop as hp
from handprop_jax.model.api import HandPropModel
from handprop_jax.training import parallel, registry
from handprop_jax.training.objectives import pair_predictions
from handprop_jax.training.phases import AUX_INPUT

# a run stops at its first non-finite step; the guard must never give up and apply one
_NEVER_GIVE_UP = 2 ** 30


@flax.struct.dataclass
class TrainState:
    """Everything a step changes. ``params``/``batch_stats``: the HandProp variables;
    ``opt_state``: the state of :func:`optimizer` (``apply_if_finite`` around the partitioned Adam);
    ``step``: int32 (), steps done in this phase; ``rng``: uint32 (2,) the phase's base key (step keys
    are ``fold_in(rng, step)``); ``bad_step``: int32 (), first step whose loss/gradient was
    non-finite, −1 if none; ``aux``: the phase's own extra state (``Phase.init_aux``, e.g. a
    discriminator and its optimizer state; {} for the paper's phases)."""

    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jnp.ndarray
    bad_step: jnp.ndarray
    aux: Any = flax.struct.field(default_factory=dict)


def phase_steps(config: Config, phase: str) -> int:
    return int(registry.get(phase).steps(config))


def param_labels(params: dict, phase: str) -> dict:
    """"train" / "frozen" for each top-level parameter group of ``params`` in ``phase``."""
    trainable = registry.get(phase).trainable
    return {k: "train" if k in trainable else "frozen" for k in params}


def optimizer(config: Config, phase: str) -> optax.GradientTransformation:
    """Adam on the phase's trainable groups, zero updates for the frozen ones, no update at all on a
    step with a non-finite gradient (module docstring)."""
    inner = optax.partition({"train": optax.adam(config.train.lr), "frozen": optax.set_to_zero()},
                            lambda params: param_labels(params, phase))
    return optax.apply_if_finite(inner, max_consecutive_errors=_NEVER_GIVE_UP)


def init_state(config: Config, phase: str, variables: dict, rng: jax.Array) -> TrainState:
    """Phase start: given variables, a fresh optimizer state for the phase."""
    params = variables["params"]
    spec = registry.get(phase)
    aux = {} if spec.init_aux is None else spec.init_aux(config, jax.random.fold_in(rng, 7))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=optimizer(config, phase).init(params),
                      rng=jnp.asarray(rng, jnp.uint32), bad_step=jnp.full((), -1, jnp.int32), aux=aux)


def phase_key(config: Config, phase: str) -> jax.Array:
    """Deterministic base key of a phase (raw uint32 (2,))."""
    return jax.random.fold_in(jax.random.PRNGKey(config.train.seed), registry.names().index(phase) + 1)


# ----------------------------------------------------------------------------- the step


def augment_fn(config: Config, padding_masks: bool = False) -> Callable[[dict, jax.Array], dict]:
    """The batch augmentation applied inside the step (identity when ``data.augment`` is False; frames
    then have no padding, and no ``inside`` mask)."""
    if not config.data.augment:
        return lambda batch, key: batch

    return lambda batch, key: augment(batch, key, config.data, padding_masks=padding_masks)


def make_train_step(config: Config, phase: str, mano: mano_jax.ManoModel | None = None,
                    augment: Callable[[dict, jax.Array], dict] | None = None,
                    module: hp.HandProp | None = None):
    """The pure ``train_step(state, batch, key) -> (state, metrics)`` of ``phase`` (not jitted;
    see :func:`jit_train_step`). ``mano``/``augment``/``module`` default to the config's."""
    spec = registry.get(phase)
    if config.model.dtype == "bfloat16" and jax.default_backend() == "cpu":
        warnings.warn("model.dtype=bfloat16 on CPU is slower than float32: XLA:CPU runs bf16 convolutions "
                      "in float32 and adds conversions (benchmarks/profile_step.py shows where); use it on "
                      "GPU/TPU, or model.conv_impl=bf16_cols on a CPU", stacklevel=2)
    model = HandPropModel.create(config, mano, module)
    loss_fn = spec.loss
    tx = optimizer(config, phase)
    augment = augment_fn(config, spec.padding_masks) if augment is None else augment

    def train_step(state: TrainState, batch: dict, key: jax.Array) -> tuple[TrainState, dict]:
        batch = augment(numeric_batch(batch), key)
        (loss, (new_stats, metrics)), grads = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)(
            model, state.params, state.batch_stats, state.aux, batch)
        metrics = dict(metrics)
        aux_input = metrics.pop(AUX_INPUT, None)  # for aux_step only, never logged
        # a non-finite loss counts as a non-finite gradient, whatever autodiff made of it
        grads = jax.tree.map(lambda g: jnp.where(jnp.isfinite(loss), g, jnp.nan), grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        ok = opt_state.last_finite
        params = optax.apply_updates(state.params, updates)
        aux = state.aux
        bad = ~ok
        if spec.aux_step is not None:
            aux_batch = batch if aux_input is None else {**batch, AUX_INPUT: aux_input}
            aux, aux_metrics = spec.aux_step(model, params, state.batch_stats, aux, aux_batch,
                                             jax.random.fold_in(key, 1))
            # a non-finite extra state (e.g. a diverged discriminator) is rejected and stops the run
            aux_ok = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(aux)] or [True]))
            aux = jax.tree.map(lambda n, o: jnp.where(ok & aux_ok, n, o), aux, state.aux)
            metrics = {**metrics, **aux_metrics}
            bad = bad | ~aux_ok
        new_state = state.replace(
            step=state.step + 1,
            params=params, aux=aux,
            batch_stats=jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_stats, state.batch_stats),
            opt_state=opt_state,
            bad_step=jnp.where((state.bad_step < 0) & bad, state.step, state.bad_step))
        return new_state, {**metrics, "grad_norm": optax.tree.norm(grads)}

    return train_step


def jit_train_step(train_step, mesh=None, donate: bool = True):
    """jit with the data-parallel shardings: state replicated, batch sharded on ``data``.

    With ``donate`` the input state's buffers are reused for the output state (do not use the
    input state after the call)."""
    kwargs = {"donate_argnums": (0,)} if donate else {}
    if mesh is None:
        return jax.jit(train_step, **kwargs)
    rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    return jax.jit(train_step, in_shardings=(rep, shard, rep), out_shardings=(rep, rep), **kwargs)


# ----------------------------------------------------------------------------- validation


def make_eval_fn(config: Config, phase: str, mano: mano_jax.ManoModel | None = None,
                 module: hp.HandProp | None = None):
    """Pure ``eval_fn(params, batch_stats, batch) -> dict`` of per-sample arrays: ``pred`` and ``gt``
    joints (B, 21, 3) metres, ``rotation_deg`` (B,) the global rotation's geodesic error in degrees,
    ``mask`` (B,) bool (False for padded rows, from ``batch["mask"]`` when present). The metrics
    (MPJPE, MPJPE (T), MPJPE (P), median rotation error) are computed from them on the host
    (:func:`validation_metrics`).

    For a phase validated on "pairs" (stage2, which trains only the aligners) on ``{"s", "u"}`` pair
    batches: the propagation γ*_s → u (scenario 2 path); otherwise on frame batches: the predictor."""
    model = HandPropModel.create(config, mano, module)
    pairs = registry.get(phase).validation == "pairs"

    def eval_fn(params, batch_stats, batch):
        batch = numeric_batch(batch)
        variables = {"params": params, "batch_stats": batch_stats}
        if pairs:
            frame_s, frame_u, _, _, _ = pair_predictions(model, variables, batch, train=False)
            g, target = model.align(params, Gamma.of(batch["s"]), frame_u, frame_s), batch["u"]
        else:
            _, g, _ = model.predict(variables, batch["image"], batch["K"], train=False)
            target = batch
        (j,) = model.joints(g)
        rotation = lambda pose: mano_jax.rodrigues(pose[:, :3])
        angle = mano_jax.geodesic_angle(rotation(g.pose), rotation(target["pose"]))
        mask = batch.get("mask", jnp.ones(angle.shape, bool))
        return {"pred": j, "gt": target["joints3d"], "rotation_deg": jnp.degrees(angle), "mask": mask}

    return eval_fn


def validation_metrics(outputs: list[dict]) -> dict[str, float]:
    """The validation metrics of :func:`make_eval_fn`'s outputs (host arrays of several batches):
    ``val_mpjpe_mm``, ``val_mpjpe_t_mm`` (root joint aligned), ``val_mpjpe_p_mm`` (Procrustes aligned)
    and ``val_rotation_deg`` (median global-rotation error); {} when no row is valid."""
    cat = {k: np.concatenate([np.asarray(o[k]) for o in outputs]) for k in outputs[0]} if outputs else {}
    if not outputs or not cat["mask"].any():
        return {}
    keep = cat["mask"].astype(bool)
    pred, gt = cat["pred"][keep], cat["gt"][keep]
    mm = lambda p: float(1000.0 * metrics_lib.point_error(p, gt).mean())
    return {"val_mpjpe_mm": mm(pred), "val_mpjpe_t_mm": mm(metrics_lib.align_root(pred, gt)),
            "val_mpjpe_p_mm": mm(metrics_lib.align_procrustes(pred, gt)),
            "val_rotation_deg": float(np.median(cat["rotation_deg"][keep]))}

