"""The training loop: phases in order, resumable, data parallel, logged, checkpointed.

``train(config, workdir, stages=None)`` runs the phases of ``train.phases`` in the order of
:mod:`handprop_jax.training.registry` (docs/design.md, "Training order"), e.g.::

    stage1   (init → L_pred, stage1_steps)
    baseline (from stage1's final state: L_pred for stage2_steps + stage3_steps more steps)
    stage2   (from stage1's final state: aligners only, L_align, stage2_steps)
    align    (from stage2's final state: everything, L_pred + λ_align L_align, stage3_steps)

Each phase checkpoints to ``workdir/checkpoints/<phase>/`` every ``checkpoint_every`` steps and
at its end; re-running ``train`` skips finished phases and resumes an interrupted one from its
latest checkpoint (train state *and* data-iterator state, so the resumed run computes exactly
the same parameters as an uninterrupted one). ``workdir/config.json`` records the resolved
config; resuming with a different config raises a ValueError naming the differing keys.

Host/device overlap: the step is dispatched asynchronously; the host only waits for the device
every ``log_every`` steps (metrics, non-finite check), at validation and at checkpoints.

Robustness: one process per run folder (``training.runlock``: a second is refused with "workdir ...
in use by PID ..."); a checkpoint that cannot be read back is named, set aside and the phase resumes
from the previous kept step (a damaged final checkpoint of a finished phase makes that phase redo its
last steps); a kill at any point (mid-step, mid-checkpoint-write) resumes to exactly the parameters
of an uninterrupted run (``tests/test_training_kill.py``); Ctrl-C raises ``InterruptedRun`` ("interrupted
at step N ..."), a full disk ``DiskFull``, both naming phase and step; resuming an interrupted phase
with another ``data.num_workers`` is refused naming the value to use (it decides the batch order).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from handprop_jax import config as config_lib
from handprop_jax.config import Config
from handprop_jax.data.sources import data_source
from handprop_jax.errors import InterruptedRun, UserError, disk_full, writable_dir
from handprop_jax.model.api import HandPropModel
from handprop_jax.training import checkpoint as ckpt_lib
from handprop_jax.training import parallel, registry, steps
from handprop_jax.training.logs import RunLogger
from handprop_jax.training.runlock import WorkdirLock

STAGE_ALIASES = {"1": "stage1", "2": "stage2", "3": "align", "stage3": "align"}

# A source of batches: (config, phase, split, shard_index, shard_count) → for split "train" an
# endless iterator of process-local numpy batches in the phase's format with get_state() /
# set_state(); for split "val" a finite iterable of labelled frame batches (pair batches
# {"s", "u"} for phase stage2), or None for no validation.
SourceFactory = Callable[[Config, str, str, int, int], Any]


class NonFiniteLossError(FloatingPointError):
    """A train step produced a NaN/inf loss or gradient; the message names phase, stage and step."""


class DiskFull(UserError):
    """No space left while writing a run's files; the message names the file, phase and step."""


class _DamagedFinal(Exception):
    """The final checkpoint of a finished phase could not be read back (it was set aside)."""

    def __init__(self, phase: str):
        super().__init__(phase)
        self.phase = phase


def resolve_phases(stages: Iterable[str | int] | None, config: Config | None = None) -> tuple[str, ...]:
    """``None`` → the config's ``train.phases`` (without a config: the default ``train.phases``, the
    paper's phases); else stage numbers (1, 2, 3) / phase names, in training order."""
    if stages is None:
        return registry.order(config if config is not None else Config())
    chosen = set()
    for s in stages:
        key = str(s).strip().lower()
        key = STAGE_ALIASES.get(key, key)
        if key not in registry.names():
            raise ValueError(f"stage {s!r}: expected 1, 2, 3 or one of {registry.names()}")
        chosen.add(key)
    return tuple(p for p in registry.names() if p in chosen)


def default_sources(config: Config, phase: str, split: str, shard_index: int, shard_count: int):
    """The phase's own batches (``Phase.batches``: process-local share of the global batch)."""
    return registry.get(phase).batches(config, split, shard_index, shard_count)


def _check_data(config: Config) -> None:
    """The default sources' data set exists and matches the config (FileNotFoundError / ValueError
    naming it and the command that builds it)."""
    data_source(config.data, "train")


# ``train`` asks a source factory that has a ``check(config)`` to check its data before it writes
default_sources.check = _check_data


def _check_config(workdir: Path, config: Config) -> None:
    path = workdir / "config.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError as e:
            raise UserError(f"{path} is not valid JSON ({e}); use a new --workdir") from None
        new = json.loads(json.dumps(config_lib.to_dict(config)))
        # a section the recorded config lacks was added to the code after the run started (e.g. a
        # comparison method's): it cannot have shaped the phases trained so far; a field added to a
        # section after the run started counts as its default
        defaults = json.loads(json.dumps(config_lib.to_dict(Config())))
        free = {"eval"} | _untouched_sections(workdir)
        diffs = [f"{sec}.{k}" for sec in new if isinstance(new[sec], dict) and sec not in free and sec in old
                 for k in new[sec] if old.get(sec, {}).get(k, defaults.get(sec, {}).get(k)) != new[sec][k]
                 and k not in _RESUME_FREE.get(sec, ())]
        diffs += [k for k in new if not isinstance(new[k], dict) and old.get(k) != new[k]
                  and k not in _RESUME_FREE_TOP]
        if diffs:
            raise UserError(f"{path} records a different config ({', '.join(diffs)}); use a new "
                             "--workdir or the same config to resume")
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        config_lib.save_json(config, path)


# Fields that may change between an interrupted run and its resumption (bookkeeping, paths,
# parallelism); the eval section never matters for training.
_RESUME_FREE = {"train": ("phases", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                          "distributed", "coordinator_address", "num_processes", "process_id", "val_batches"),
                "data": ("data_dir", "num_workers", "on_bad_input")}
# the config's name (e.g. synthetic_compare resuming a synthetic run to add the comparison phases)
_RESUME_FREE_TOP = ("name",)


def _untouched_sections(workdir: Path) -> set[str]:
    """Config sections that shape their own phases only (``Phase.config_section``, a comparison
    method's) and that none of those phases has used yet (no checkpoint in ``workdir``): such a section
    may differ from the recorded one (synthetic_compare sizes Hasson's ramp, resuming a plain demo's run)."""
    shaping: dict[str, list[str]] = {}
    for phase in registry.phases().values():
        if phase.config_section is not None:
            shaping.setdefault(phase.config_section, []).append(phase.name)
    return {sec for sec, names in shaping.items() if not any(_has_checkpoint(workdir, n) for n in names)}


def _has_checkpoint(workdir: Path, phase: str) -> bool:
    d = ckpt_lib.phase_dir(workdir, phase)
    return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())


def _load_final_variables(workdir: Path, phase: str, config: Config) -> dict:
    ck = ckpt_lib.PhaseCheckpoints(workdir, phase)
    try:
        step = ck.latest_step()
        total = steps.phase_steps(config, phase)
        if step != total:
            raise FileNotFoundError(f"phase {phase!r} is not finished in {ck.directory} (latest step "
                                    f"{step}, needs {total}); train it first (handprop train --stage ...)")
        try:
            state, _ = ck.restore(step)
        except ckpt_lib.DamagedCheckpoint as e:
            dest = ck.set_aside(step)
            print(f"warning: {str(e).split('; ')[0]}; moved to {dest}; phase {phase!r} redoes its last "
                  f"steps from step {ck.latest_step() or 0}", file=sys.stderr, flush=True)
            raise _DamagedFinal(phase) from e
    finally:
        ck.close()
    return {"params": state["params"], "batch_stats": state["batch_stats"]}


def _mean_metrics(history: list[dict]) -> dict[str, float]:
    fetched = jax.device_get(history)
    return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def _local_variables(state) -> dict:
    """This process's copy of the (replicated) variables of a train state, as numpy."""
    local = lambda x: np.asarray(x.addressable_shards[0].data) if hasattr(x, "addressable_shards") \
        else np.asarray(x)  # noqa: E731
    return jax.tree.map(local, {"params": state.params, "batch_stats": state.batch_stats})


def _diagnostics(spec, config: Config, state, logger, step: int, summary: dict, main: bool) -> None:
    """The phase's ``diagnostics`` numbers (Phase record) for the current variables, logged at ``step``."""
    if spec.diagnostics is None or not main:
        return
    values = spec.diagnostics(config, HandPropModel.create(config), _local_variables(state))
    if values:
        logger.log(step, values)
        summary.update(values)


def _validate(eval_fn, state, source, mesh, max_batches: int) -> dict[str, float]:
    """Validation metrics (:func:`steps.validation_metrics`) on up to ``max_batches`` batches of
    ``source``; {} without a source."""
    if source is None:
        return {}
    outputs = []  # device arrays, fetched once at the end (no host sync per batch)
    for i, batch in enumerate(source):
        if i >= max_batches:
            break
        batch = parallel.global_batch(steps.numeric_batch(batch), mesh)
        outputs.append(eval_fn(state.params, state.batch_stats, batch))
    return steps.validation_metrics(jax.device_get(outputs))


@functools.lru_cache(maxsize=16)
def _compiled_step(config: Config, phase: str, mesh):
    """Jitted train step of a phase, cached so that repeated ``train`` calls in one process
    (resume, demo) reuse the compiled executable."""
    return steps.jit_train_step(steps.make_train_step(config, phase), mesh)


@functools.lru_cache(maxsize=16)
def _compiled_eval(config: Config, kind: str):
    """Jitted validation function: kind "pairs" (the aligner's propagation error) or "frames"."""
    return jax.jit(steps.make_eval_fn(config, "stage2" if kind == "pairs" else "stage1"))


def _data_workers(meta: dict) -> int | None:
    """``data.num_workers`` an interrupted phase was checkpointed with (meta, else grain's state)."""
    if "num_workers" in meta:
        return int(meta["num_workers"])
    try:
        state = json.loads(ckpt_lib.decode_data_state(meta["data_state"]))
        return int(state["worker_count"])
    except (KeyError, TypeError, ValueError):
        return None


@dataclasses.dataclass
class _Progress:
    """How far a phase got, kept up to date by :func:`_run_phase` for :func:`run_phase`'s message when
    it stops (Ctrl-C, a full disk): ``step`` the steps done (None: before its first), ``saved`` the
    last checkpoint written (None: none yet), ``checkpoints`` the phase's open checkpoints (closed
    on Ctrl-C, so that one being written finishes)."""

    step: int | None = None
    saved: int | None = None
    checkpoints: ckpt_lib.PhaseCheckpoints | None = None


def run_phase(config: Config, workdir: Path, phase: str, sources: SourceFactory, mesh,
              progress: bool = True) -> dict:
    """Train one phase to completion (resuming if possible). Returns its final summary dict.

    Raises ``InterruptedRun`` on Ctrl-C and ``DiskFull`` when the disk fills up, both naming the
    phase, the step reached and the last checkpoint."""
    at = _Progress()
    try:
        return _run_phase(config, workdir, phase, sources, mesh, progress, at)
    except KeyboardInterrupt as e:
        if isinstance(e, InterruptedRun):
            raise
        if at.checkpoints is not None:
            try:  # let a checkpoint being written finish, so that the message is true
                at.checkpoints.close()
            except Exception:
                at.saved = at.checkpoints.latest_step()
        raise InterruptedRun(_stopped("interrupted", phase, at)) from e
    except Exception as e:
        full = disk_full(e)
        if full is None:
            raise
        if at.checkpoints is not None:  # the save that failed is no checkpoint
            at.saved = max(at.checkpoints.saved_steps(), default=None)
        where_ = "" if full.filename or str(workdir) in str(full) else f", writing in {workdir}"
        raise DiskFull(_stopped(f"disk full ({full}{where_})", phase, at)) from e


def _abstract_state(config: Config, phase: str, mesh) -> steps.TrainState:
    """The phase's TrainState as shapes, dtypes and the replicated sharding only (``jax.eval_shape``:
    nothing is compiled or computed) — the target a checkpoint is restored into."""
    model = HandPropModel.create(config)
    s = config.data.image_size

    spec = registry.get(phase)

    def fresh(key):
        variables = dict(model.module.init(key, jnp.zeros((2, s, s, 3), jnp.uint8), False))
        phase_key = steps.phase_key(config, phase)
        if spec.extend_params is not None:  # the parameter groups the phase adds (as in _initial_state)
            variables = spec.extend_params(config, variables, jax.random.fold_in(phase_key, 11))
        return steps.init_state(config, phase, variables, phase_key)

    abstract = jax.eval_shape(fresh, jax.random.PRNGKey(config.train.seed))
    sharding = parallel.replicated(mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract)


def _stopped(what: str, phase: str, at: _Progress) -> str:
    where = f"at step {at.step}" if at.step is not None else "before its first step"
    saved = (f"the last checkpoint is step {at.saved}" if at.saved is not None
             else "no checkpoint of it yet")
    return f"{what} {where} of phase {phase!r} ({saved}); re-run the same command to resume"


def _run_phase(config: Config, workdir: Path, phase: str, sources: SourceFactory, mesh, progress: bool,
               at: _Progress) -> dict:
    """:func:`run_phase`'s work: the phase's state (restored, or initialised), then its steps; ``at``
    follows the step reached and the last checkpoint."""
    t = config.train
    total = steps.phase_steps(config, phase)
    parallel.local_batch_size(t.batch_size, mesh)  # clear error before any work when it does not divide
    ck = at.checkpoints = ckpt_lib.PhaseCheckpoints(workdir, phase, keep=t.keep_checkpoints)
    latest = at.saved = at.step = ck.latest_step()
    if latest is not None and latest >= total:  # finished: its final checkpoint must read back
        if _reads_back(ck, latest):              # (later phases start from it)
            ck.close()
            return {"phase": phase, "step": latest, "skipped": True}
        latest, _, _ = ck.restore_latest_good()  # names it, sets it aside: redo the last steps
        at.saved = at.step = latest
    restored = _restored_state(config, phase, ck, latest, mesh, at) if latest is not None else None
    train_source = sources(config, phase, "train", jax.process_index(), jax.process_count())
    if restored is not None:
        state = parallel.replicate(restored[0], mesh)
        train_source.set_state(ckpt_lib.decode_data_state(restored[1]["data_state"]))
    else:
        state = parallel.replicate(_initial_state(config, workdir, phase), mesh)
    return _train_steps(config, workdir, phase, state, train_source, sources, mesh, ck, progress, at)


def _reads_back(ck: ckpt_lib.PhaseCheckpoints, step: int) -> bool:
    """Whether checkpoint ``step`` can be restored (False: it is damaged)."""
    try:
        ck.restore(step)
    except ckpt_lib.DamagedCheckpoint:
        return False
    return True


def _initial_state(config: Config, workdir: Path, phase: str) -> steps.TrainState:
    """A phase's first state: from the end of the phase it starts from (``Phase.init_from``), else
    freshly initialised, plus the parameter groups it adds (``Phase.extend_params``)."""
    spec = registry.get(phase)
    if spec.init_from is None:
        variables = HandPropModel.create(config).init(jax.random.PRNGKey(config.train.seed))
    else:
        variables = _load_final_variables(workdir, spec.init_from, config)
    key = steps.phase_key(config, phase)
    if spec.extend_params is not None:  # parameter groups the phase adds to the ones it starts from
        variables = spec.extend_params(config, variables, jax.random.fold_in(key, 11))
    return steps.init_state(config, phase, variables, key)


def _restored_state(config: Config, phase: str, ck: ckpt_lib.PhaseCheckpoints, latest: int, mesh,
                    at: _Progress) -> tuple[Any, dict]:
    """(the train state, its checkpoint's meta, holding the data iterator's state) of an interrupted
    phase's latest good checkpoint at or before ``latest``; UserError, before any work, when it was
    checkpointed with another ``data.num_workers``."""
    try:
        workers = _data_workers(ck.read_meta(latest))
    except Exception:  # a damaged step: restore_latest_good below names it
        workers = None
    if workers is not None and workers != config.data.num_workers:
        ck.close()
        raise UserError(f"phase {phase!r} was checkpointed at step {latest} with data.num_workers="
                        f"{workers}; resume it with --set data.num_workers={workers} (the worker count "
                        "decides the batch order; it may change once this phase has finished)")
    # only the state's structure is needed to restore into: no initialisation to compile and run
    latest, restored, meta = ck.restore_latest_good(_abstract_state(config, phase, mesh))
    at.saved = at.step = latest
    return restored, meta


def _train_steps(config: Config, workdir: Path, phase: str, state, train_source, sources: SourceFactory,
                 mesh, ck: ckpt_lib.PhaseCheckpoints, progress: bool, at: _Progress) -> dict:
    """The phase's steps from ``state``'s step to its last: each dispatched asynchronously; every
    ``log_every`` steps the mean metrics (after a finiteness check), every ``eval_every`` the
    validation, every ``checkpoint_every`` a checkpoint, and all three at the last step. Returns
    the summary (the last logged numbers, "phase" and "step")."""
    t, spec = config.train, registry.get(phase)
    total = steps.phase_steps(config, phase)
    main = jax.process_index() == 0
    start = at.step = int(jax.device_get(state.step))
    # phases with the same step (stage1, baseline) and the same validation share the compilations
    step_fn = _compiled_step(config, spec.shares_step_with or phase, mesh)
    eval_fn = _compiled_eval(config, spec.validation)
    base_key = np.asarray(jax.device_get(state.rng))  # the state (and its rng) is donated each step
    logger = RunLogger(workdir, phase, spec.stage, is_main=main, resume_step=start)
    bar = _progress_bar(phase, spec.stage, start, total, logger) if progress and main else None
    history: list[dict] = []
    summary: dict = {"phase": phase}
    if start == 0 and start < total:
        _diagnostics(spec, config, state, logger, 0, summary, main)
    rate = _Rate(t.batch_size * spec.images_per_sample)
    for step in range(start, total):
        batch = parallel.global_batch(steps.numeric_batch(next(train_source)), mesh)
        state, metrics = step_fn(state, batch, jax.random.fold_in(base_key, step))
        history.append(metrics)
        done = at.step = step + 1
        is_last = done == total
        if done % t.log_every == 0 or is_last:
            _check_finite(state, phase, total, done, ck, logger)
            mean = {**_mean_metrics(history), "images_per_s": rate.per_second(len(history))}
            history = []
            if bar is not None:
                bar.set_postfix(loss=f"{mean['loss']:.4g}", img_s=f"{mean['images_per_s']:.0f}")
            logger.log(done, mean)
            summary.update(mean)
        if bar is not None:
            bar.update(1)
        val = None
        if done % t.eval_every == 0 or is_last:
            val = _validate(eval_fn, state, sources(config, phase, "val", jax.process_index(),
                                                    jax.process_count()), mesh, t.val_batches)
            if val:
                logger.log(done, val)
                summary.update(val)
            val = val.get(ckpt_lib.VAL_KEY)
        if done % t.checkpoint_every == 0 or is_last:
            _check_finite(state, phase, total, done, ck, logger)
            meta = {"phase": phase, "stage": spec.stage, "step": done, "total_steps": total,
                    "config_name": config.name, "num_workers": config.data.num_workers,
                    "data_state": ckpt_lib.encode_data_state(train_source.get_state())}
            ck.save(done, state, meta, val)
            at.saved = done
        if is_last:
            _diagnostics(spec, config, state, logger, done, summary, main)
    if bar is not None:
        bar.close()
    ck.close()
    logger.close()
    summary["step"] = total
    return summary


class _Rate:
    """Images per second since the previous call (wall clock), for the logged ``images_per_s``."""

    def __init__(self, images_per_step: int):
        self.images_per_step = images_per_step
        self.last = time.perf_counter()

    def per_second(self, num_steps: int) -> float:
        now = time.perf_counter()
        rate = num_steps * self.images_per_step / max(now - self.last, 1e-9)
        self.last = now
        return rate


def _progress_bar(phase: str, stage: int, start: int, total: int, logger: RunLogger):
    """A tqdm bar for the phase's steps; the logger's lines are written above it."""
    bar = tqdm(total=total, initial=start, desc=f"{phase} (stage {stage})", unit="step",
               dynamic_ncols=True, leave=True)
    logger.write = bar.write
    return bar


def _check_finite(state, phase: str, total: int, at_step: int, ck: ckpt_lib.PhaseCheckpoints,
                  logger: RunLogger) -> None:
    """NonFiniteLossError naming the first step (the state's ``bad_step``) whose loss or gradient was
    not finite, and the last good checkpoint (the checkpoints and the logger are closed first)."""
    bad = int(jax.device_get(state.bad_step))
    if bad >= 0:
        good = ck.latest_step()
        where = f"step {good} in {ck.directory}" if good is not None else "none saved yet"
        ck.close()
        logger.close()
        raise NonFiniteLossError(
            f"non-finite loss or gradient in phase {phase!r} (stage {registry.get(phase).stage}) at step "
            f"{bad + 1} of {total} (detected by step {at_step}); parameters were not "
            f"updated by that step; last good checkpoint: {where}. Lower train.lr or check the data.")


def train(config: Config, workdir: str | Path, stages: Iterable[str | int] | None = None, *,
          sources: SourceFactory | None = None, progress: bool = True) -> dict[str, dict]:
    """Train ``stages`` (None = ``train.phases``) into ``workdir``; resumable.

    Args:
      config: the resolved config. workdir: run folder (created).
      stages: phase names or stage numbers (1 → stage1, 2 → stage2, 3 → align).
      sources: batch source factory (default: :func:`default_sources`, the grain pipeline; tests
        stop a run abruptly, as a kill would, with a source that raises KeyboardInterrupt).
      progress: tqdm bar per phase (stdout lines instead when False).
    Returns:
      {phase: summary dict with the last logged metrics, "val_mpjpe_mm" and "step"}.
    Raises:
      NonFiniteLossError naming phase, stage and step on a NaN/inf loss (checkpoints intact);
      ``runlock.WorkdirInUse`` when another process trains in ``workdir``; ``InterruptedRun`` (Ctrl-C)
      and ``DiskFull`` naming the phase and step; ``UserError`` for a workdir that is a file.
    """
    parallel.maybe_initialize_distributed(config.train)
    workdir = Path(workdir)
    writable_dir(workdir, "--workdir")
    sources = default_sources if sources is None else sources
    if hasattr(sources, "check"):  # before anything is written (no lock, no config.json)
        sources.check(config)
    lock = WorkdirLock(workdir) if jax.process_index() == 0 else None
    if lock is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        lock.acquire()  # WorkdirInUse when another live process trains here
    try:
        _check_config(workdir, config)
        mesh = parallel.make_mesh()
        out = {}
        for phase in resolve_phases(stages, config):
            for _ in range(len(registry.names()) + 1):
                try:
                    out[phase] = run_phase(config, workdir, phase, sources, mesh, progress=progress)
                    break
                except _DamagedFinal as e:  # the previous phase's end is damaged: redo its last steps
                    run_phase(config, workdir, e.phase, sources, mesh, progress=progress)
        return out
    finally:
        if lock is not None:
            lock.release()
