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
dict of scalar arrays (no host transfer inside the step). Only the trainable subset of
``params`` is differentiated and given to Adam (``optax.adam(lr)``, one optimizer state per
phase, started afresh at the beginning of every phase); the other parameters pass through
untouched, so stage 2 leaves every predictor parameter bit-identical and stage 1 / baseline leave
the aligners bit-identical.

BatchNorm: in stages 1 and 3 (and baseline) the encoder runs in training mode (batch statistics,
running averages updated — unless ``ModelConfig.freeze_batchnorm``); in stage 2 the frozen
encoder runs in inference mode (running statistics, no update), so the features the aligner is
trained on are the ones it receives at inference and the statistics stay bit-identical. In
stage 3 the s and u images go through the encoder as one batch of 2B images.

Non-finite guard: if the loss or a gradient is NaN/inf, the step keeps the previous parameters,
optimizer state and statistics and records the step number in ``state.bad_step`` (−1 while all
steps were finite). The loop checks it (one scalar, at log/checkpoint time, so no per-step host
sync) and stops with a message naming the phase and step before saving anything.
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
from handprop_jax.hand import default_mano, hand_in_camera
from handprop_jax.model import handprop as hp

PHASES = ("stage1", "baseline", "stage2", "align")
PHASE_STAGE = {"stage1": 1, "baseline": 1, "stage2": 2, "align": 3}
PHASE_TRAINABLE = {"stage1": hp.PREDICTOR_KEYS, "baseline": hp.PREDICTOR_KEYS,
                   "stage2": hp.ALIGNER_KEYS, "align": hp.PREDICTOR_KEYS + hp.ALIGNER_KEYS}


@flax.struct.dataclass
class TrainState:
    """Everything a step changes. ``params``/``batch_stats``: the HandProp variables;
    ``opt_state``: Adam state of the phase's trainable subset; ``step``: int32 (), steps done in
    this phase; ``rng``: uint32 (2,) the phase's base key (step keys are ``fold_in(rng, step)``);
    ``bad_step``: int32 (), first step whose loss/gradient was non-finite, −1 if none."""

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


def optimizer(config: Config) -> optax.GradientTransformation:
    return optax.adam(config.train.lr)


def trainable_subset(params: dict, phase: str) -> dict:
    return {k: params[k] for k in PHASE_TRAINABLE[phase]}


def init_variables(config: Config, key: jax.Array, module: hp.HandProp | None = None) -> dict:
    """Fresh HandProp variables ({'params', 'batch_stats'}) for the config's image size; the
    encoder starts from ``model.torchvision_checkpoint`` (a torchvision ResNet-18 ``.pth``) when set."""
    module = hp.from_config(config) if module is None else module
    s = config.data.image_size
    images = jnp.zeros((2, s, s, 3), jnp.uint8)
    variables = dict(jax.jit(lambda k: module.init(k, images, False))(key))  # one compilation
    if config.model.torchvision_checkpoint:
        from handprop_jax.model.torchvision_import import load_torchvision_resnet18

        variables = dict(load_torchvision_resnet18(config.model.torchvision_checkpoint, variables,
                                                   scope="encoder"))
    return variables


def init_state(config: Config, phase: str, variables: dict, rng: jax.Array) -> TrainState:
    """Phase start: given variables, fresh Adam state over the phase's trainable parameters."""
    params = variables["params"]
    opt_state = optimizer(config).init(trainable_subset(params, phase))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=opt_state,
                      rng=jnp.asarray(rng, jnp.uint32), bad_step=jnp.full((), -1, jnp.int32))


def phase_key(config: Config, phase: str) -> jax.Array:
    """Deterministic base key of a phase (raw uint32 (2,))."""
    return jax.random.fold_in(jax.random.PRNGKey(config.train.seed), PHASES.index(phase) + 1)


# ----------------------------------------------------------------------------- model pieces


class Model:
    """The pure functions a step needs, bound to one config (static) and MANO model (constants)."""

    def __init__(self, config: Config, mano: mano_jax.ManoModel | None = None,
                 module: hp.HandProp | None = None):
        self.config = config
        self.module = hp.from_config(config) if module is None else module
        self.mano = default_mano(config) if mano is None else mano

    def predict(self, params, batch_stats, images, K, train: bool):
        """images uint8 (B,S,S,3), K (B,3,3) → (z_r, z_theta, γ^reg dict, new batch_stats)."""
        variables = {"params": params, "batch_stats": batch_stats}
        if train:
            out, mutated = self.module.apply(variables, images, True, mutable=["batch_stats"])
            new_stats = mutated.get("batch_stats", batch_stats)
        else:
            out = self.module.apply(variables, images, False)
            new_stats = batch_stats
        z_r, z_theta, raw_root, raw_pose = out
        m, d = self.config.model, self.config.data
        gamma = hp.regress_gamma(self.mano, raw_root, raw_pose, K, images.shape[1], d.z_off, m.ncomps,
                                 m.root_depth_unit)
        return z_r, z_theta, gamma, new_stats

    def align(self, params, gamma_b: dict, z_a: tuple, z_b: tuple) -> dict:
        """γ_a = φ(γ_b, z_a − z_b) + γ_b with β copied (Eqs. 2–4)."""
        return hp.align(self.module, params, gamma_b, z_a, z_b)

    def joints(self, *gammas: dict) -> list[jnp.ndarray]:
        """Joints (B,21,3) of each γ, computed in ONE batched MANO call."""
        cat = {k: jnp.concatenate([g[k] for g in gammas]) for k in ("root", "pose", "betas")}
        j, _ = hand_in_camera(self.mano, cat["root"], cat["pose"], cat["betas"])
        return jnp.split(j, len(gammas))


def per_sample_mpjpe_mm(j_a: jnp.ndarray, j_b: jnp.ndarray) -> jnp.ndarray:
    """Mean per-joint position error in mm of each sample, (B,)."""
    return 1000.0 * jnp.mean(jnp.linalg.norm(j_a - j_b, axis=-1), axis=-1)


def mpjpe_mm(j_a: jnp.ndarray, j_b: jnp.ndarray) -> jnp.ndarray:
    """Mean per-joint position error in mm, averaged over (B, 21)."""
    return jnp.mean(per_sample_mpjpe_mm(j_a, j_b))


def gamma_of(frame: dict) -> dict:
    return {"root": frame["root"], "pose": frame["pose"], "betas": frame["betas"]}


# ----------------------------------------------------------------------------- losses per phase


def _pred_phase_loss(model: Model, trainable, frozen, batch_stats, batch):
    t = model.config.train
    params = {**frozen, **trainable}
    _, _, g, new_stats = model.predict(params, batch_stats, batch["image"], batch["K"], train=True)
    (j_reg,) = model.joints(g)
    loss, terms = losses.pred_loss(batch["joints3d"], j_reg, g["pose"], g["betas"], model.mano.hands_mean,
                                   t.lambda_j, t.lambda_theta, t.lambda_beta)
    metrics = {"loss": loss, "l_pred": loss, **{f"pred_{k}": v for k, v in terms.items()},
               "mpjpe_mm": mpjpe_mm(j_reg, batch["joints3d"])}
    return loss, (new_stats, metrics)


def _align_terms(model: Model, params, z_s, z_u, g_reg_u, s: dict, extra: tuple = ()):
    """Forward (u→s from γ^reg_u) and backward (s→u from γ*_s) alignment; joints in one MANO call."""
    t = model.config.train
    g_align_s = model.align(params, g_reg_u, z_s, z_u)
    g_align_u = model.align(params, gamma_of(s), z_u, z_s)
    j_reg_u, j_align_s, j_align_u, *j_extra = model.joints(g_reg_u, g_align_s, g_align_u, *extra)
    loss, terms = losses.align_loss(s["joints3d"], j_align_s, j_reg_u, j_align_u, g_align_s["pose"],
                                    g_align_u["pose"], model.mano.hands_mean, t.lambda_j, t.lambda_theta)
    return loss, terms, j_align_u, j_extra


def _stage2_loss(model: Model, trainable, frozen, batch_stats, batch):
    s, u = batch["s"], batch["u"]
    params = {**frozen, **trainable}
    b = s["image"].shape[0]
    images = jnp.concatenate([s["image"], u["image"]])
    K = jnp.concatenate([s["K"], u["K"]])
    # the predictor is in ``frozen`` (not differentiated); stop_gradient only makes that explicit
    z_r, z_t, g, _ = jax.lax.stop_gradient(model.predict(frozen, batch_stats, images, K, train=False))
    z_s, z_u = (z_r[:b], z_t[:b]), (z_r[b:], z_t[b:])
    g_reg_u = {k: v[b:] for k, v in g.items()}
    loss, terms, j_align_u, _ = _align_terms(model, params, z_s, z_u, g_reg_u, s)
    metrics = {"loss": loss, "l_align": loss, **{f"align_{k}": v for k, v in terms.items()},
               "prop_mpjpe_mm": mpjpe_mm(j_align_u, u["joints3d"])}
    return loss, (batch_stats, metrics)


def _stage3_loss(model: Model, trainable, frozen, batch_stats, batch):
    t = model.config.train
    s, u = batch["s"], batch["u"]
    params = {**frozen, **trainable}
    b = s["image"].shape[0]
    images = jnp.concatenate([s["image"], u["image"]])
    K = jnp.concatenate([s["K"], u["K"]])
    z_r, z_t, g, new_stats = model.predict(params, batch_stats, images, K, train=True)
    z_s, z_u = (z_r[:b], z_t[:b]), (z_r[b:], z_t[b:])
    g_reg_s = {k: v[:b] for k, v in g.items()}
    g_reg_u = {k: v[b:] for k, v in g.items()}
    l_align, a_terms, _, (j_reg_s,) = _align_terms(model, params, z_s, z_u, g_reg_u, s, (g_reg_s,))
    l_pred, p_terms = losses.pred_loss(s["joints3d"], j_reg_s, g_reg_s["pose"], g_reg_s["betas"],
                                       model.mano.hands_mean, t.lambda_j, t.lambda_theta, t.lambda_beta)
    loss = losses.total_loss(l_pred, l_align, t.lambda_align)
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
                      "in float32 and adds conversions (64 px stage-1 step: ~1.0 s vs ~0.75 s, "
                      "benchmarks/profile_step.py); use it on GPU/TPU", stacklevel=2)
    model = Model(config, mano, module)
    loss_fn = _PHASE_LOSS[phase]
    tx = optimizer(config)
    augment = augment_fn(config) if augment is None else augment
    keys = PHASE_TRAINABLE[phase]

    def train_step(state: TrainState, batch: dict, key: jax.Array) -> tuple[TrainState, dict]:
        batch = augment(numeric_batch(batch), key)
        trainable = {k: state.params[k] for k in keys}
        frozen = {k: v for k, v in state.params.items() if k not in keys}
        (loss, (new_stats, metrics)), grads = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)(
            model, trainable, frozen, state.batch_stats, batch)
        updates, opt_state = tx.update(grads, state.opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        grad_norm = optax.tree.norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
        new_state = state.replace(
            step=state.step + 1,
            params=keep({**frozen, **trainable}, state.params),
            batch_stats=keep(new_stats, state.batch_stats),
            opt_state=keep(opt_state, state.opt_state),
            bad_step=jnp.where((state.bad_step < 0) & ~ok, state.step, state.bad_step))
        metrics = {**metrics, "grad_norm": grad_norm}
        return new_state, metrics

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
    model = Model(config, mano, module)

    def eval_fn(params, batch_stats, batch):
        batch = numeric_batch(batch)
        if phase == "stage2":
            s, u = batch["s"], batch["u"]
            b = s["image"].shape[0]
            z_r, z_t, _, _ = model.predict(params, batch_stats, jnp.concatenate([s["image"], u["image"]]),
                                           jnp.concatenate([s["K"], u["K"]]), train=False)
            g, target = model.align(params, gamma_of(s), (z_r[b:], z_t[b:]), (z_r[:b], z_t[:b])), u
        else:
            _, _, g, _ = model.predict(params, batch_stats, batch["image"], batch["K"], train=False)
            target = batch
        (j,) = model.joints(g)
        err = per_sample_mpjpe_mm(j, target["joints3d"])
        mask = batch.get("mask", jnp.ones(err.shape, bool))
        return jnp.sum(jnp.where(mask, err, 0.0)), jnp.sum(mask)

    return eval_fn
