"""Orbax checkpoints of one phase: ``workdir/checkpoints/<phase>/<step>/``.

Each checkpoint holds two items:

- ``state``: the :class:`~handprop_jax.training.steps.TrainState` as a dict ``{step, params,
  batch_stats, opt_state, rng, bad_step}``, plus ``aux`` for a phase with its own state
  (``Phase.init_aux``) (orbax ``StandardSave``);
- ``meta``: JSON ``{phase, stage, step, total_steps, data_state, val_mpjpe_mm, config_name}``;
  ``data_state`` is the data iterator's state (``get_state()``, bytes stored as latin-1 text).

:func:`load_run` reads a run back as (config, variables) for inference; :func:`bound_from_run` as
(config, :class:`~handprop_jax.model.api.BoundModel`), the jitted inference functions.

Preservation: the last ``keep`` checkpoints **and** the best one on validation (lowest
``val_mpjpe_mm``; checkpoints saved without a validation value never count as best). The final
step of a phase is always saved, so a phase is complete when ``latest_step() == total_steps``.

Damage: a step whose files cannot be read back (truncated, deleted, a write killed half-way) is a
:class:`DamagedCheckpoint`. Training (:meth:`PhaseCheckpoints.restore_latest_good`) names it, moves
it to ``checkpoints/<phase>.damaged/`` and resumes from the previous kept step; inference
(:func:`load_run`) refuses it in one line naming the step and the previous one.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from handprop_jax import config as config_lib
from handprop_jax.errors import UserError, disk_full
from handprop_jax.model.api import BoundModel, HandPropModel
from handprop_jax.training import registry

VAL_KEY = "val_mpjpe_mm"
#: the TrainState fields a checkpoint holds (``aux``: the phase's extra state, see ``Phase.init_aux``)
STATE_FIELDS = ("step", "params", "batch_stats", "opt_state", "rng", "bad_step", "aux")


def phase_dir(workdir: str | Path, phase: str) -> Path:
    return Path(workdir).resolve() / "checkpoints" / phase


def _val_metric(metrics: dict) -> float:
    return -float(metrics[VAL_KEY])  # BestN keeps the largest


class DamagedCheckpoint(UserError):
    """A checkpoint step that cannot be read back; ``directory`` is its folder, ``step`` its step."""

    def __init__(self, message: str, directory: Path, step: int):
        super().__init__(message)
        self.directory, self.step = directory, step


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


class PhaseCheckpoints:
    """Save/restore the checkpoints of one phase (see module docstring)."""

    def __init__(self, workdir: str | Path, phase: str, keep: int = 3, read_only: bool = False):
        self.directory = phase_dir(workdir, phase)
        self.phase, self._keep, self._read_only = phase, keep, read_only
        self.manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        policy = pp.AnyPreservationPolicy([
            pp.LatestN(n=max(int(self._keep), 1)),
            pp.BestN(get_metric_fn=_val_metric, n=1, keep_checkpoints_without_metrics=False),
        ])
        # a writer also removes the temporary folders of writes that a kill cut short (the run folder's
        # lock, training.runlock, guarantees that no other process is writing them)
        options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=not self._read_only,
                                               read_only=self._read_only, enable_async_checkpointing=True,
                                               cleanup_tmp_directories=not self._read_only)
        return ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict, val_mpjpe_mm: float | None = None) -> None:
        """Save asynchronously (call :meth:`wait` before relying on it on disk). A write that fails
        (e.g. a full disk) raises here at the next save or at :meth:`wait` / :meth:`close`; orbax's
        own reports of it are kept quiet (:func:`_quiet_orbax_leftovers`)."""
        _quiet_orbax_leftovers()
        meta = {**meta, VAL_KEY: val_mpjpe_mm}
        metrics = None if val_mpjpe_mm is None else {VAL_KEY: float(val_mpjpe_mm)}
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_as_dict(state)),
                                                        meta=ocp.args.JsonSave(meta)),
                          metrics=metrics, force=True)

    def read_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def best_step(self) -> int | None:
        """Kept step with the lowest validation error (None when none has one)."""
        best, best_val = None, None
        for step in self.all_steps():
            try:
                val = self.read_meta(step).get(VAL_KEY)
            except Exception:  # a damaged step is never the best one (restore names it)
                continue
            if val is not None and (best_val is None or val < best_val):
                best, best_val = step, val
        return best

    def restore(self, step: int, target: Any | None = None) -> tuple[Any, dict]:
        """Restore (state, meta) of ``step``. With ``target`` (a TrainState with the right structure,
        shapes and shardings) the state is restored into that structure; without it, as nested
        dicts of arrays. Raises :class:`DamagedCheckpoint` naming the step's folder when its files
        cannot be read back."""
        if target is None:
            state_args = ocp.args.StandardRestore()
        else:
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _as_dict(target))
            state_args = ocp.args.StandardRestore(abstract)
        error = None
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(state=state_args,
                                                                     meta=ocp.args.JsonRestore()))
            state, meta = out["state"], out["meta"]
            if not isinstance(meta, dict) or meta.get("step", step) != step:
                raise ValueError(f"its meta is {meta!r:.80}, not that of step {step}")
        except Exception as e:  # orbax/tensorstore raise many types for missing or truncated files
            error = _first_line(e)
            _quiet_orbax_leftovers()
        if error is not None:
            gc.collect()  # the failed restore's abandoned reads are garbage now (reported quietly)
            earlier = [s for s in self.all_steps() if s < step]
            raise DamagedCheckpoint(
                f"checkpoint {self.step_dir(step)} is incomplete or damaged ({error}); "
                + (f"the previous kept step is {max(earlier)}" if earlier else "no earlier step is kept"),
                self.step_dir(step), step)
        if target is not None:
            state = type(target)(**state)
        return state, meta

    def set_aside(self, step: int) -> Path:
        """Move a damaged step out of the phase's folder (to ``<phase>.damaged/<step>-<time>``) so that
        orbax no longer lists it; returns where it went."""
        self.manager.close()
        dest = self.directory.parent / f"{self.directory.name}.damaged" / f"{step}-{int(time.time())}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.step_dir(step).rename(dest)
        self.manager = self._open()
        return dest

    def restore_latest_good(self, target: Any | None = None, say=None) -> tuple[int | None, Any, dict | None]:
        """(step, state, meta) of the latest step that reads back; damaged later steps are named
        (``say``, default stderr), set aside and skipped. (None, None, None) when no step is left."""
        say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        while (step := self.latest_step()) is not None:
            try:
                state, meta = self.restore(step, target)
                return step, state, meta
            except DamagedCheckpoint as e:
                dest = self.set_aside(step)
                previous = self.latest_step()
                say(f"warning: {e.args[0].split('; ')[0]}; moved to {dest}; "
                    + (f"resuming phase {self.phase!r} from step {previous}" if previous is not None
                       else f"no earlier checkpoint: phase {self.phase!r} restarts from step 0"))
        return None, None, None

    def saved_steps(self) -> list[int]:
        """The steps whose checkpoint is complete on disk (a write under way or one that failed, still
        in its ``<step>.orbax-checkpoint-tmp`` folder, is not one), in order."""
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit() and p.is_dir())

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _from_orbax(exc: BaseException | None) -> bool:
    """An error raised by an abandoned orbax/tensorstore read (see :func:`_quiet_orbax_leftovers`)."""
    if exc is None:
        return False
    text = "".join(traceback.format_exception(exc))
    return any(w in text for w in ("orbax", "tensorstore", "TensorStore", "OCDBT", '"zarr" driver')) or (
        isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc))


class _DropOrbaxLeftovers(logging.Filter):
    """asyncio's "Task/Future exception was never retrieved" for an abandoned orbax read or write."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else record.__dict__.get("exception")
        if exc is None and isinstance(record.args, dict):
            exc = record.args.get("exception")
        return not (_from_orbax(exc) or ("never retrieved" in record.getMessage()
                                         and _from_orbax(ValueError(record.getMessage()))))


class _DropDiskFullLog(logging.Filter):
    """orbax's error log (absl, with a traceback) of a background write that failed on a full disk:
    the save raises the same error again, which training reports in one line (``loop.DiskFull``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return disk_full(record.exc_info[1] if record.exc_info else None) is None


_quiet_installed = False


def _quiet_orbax_leftovers() -> None:
    """When one array of a checkpoint cannot be read or written (a truncated file, a full disk), orbax
    raises and abandons the other reads or writes; Python reports each abandoned coroutine, task or
    future as an "Exception ignored in ..." or "... exception was never retrieved" traceback (dozens
    for one file, up to "Event loop is closed") whenever it is collected, up to the end of the process,
    and orbax logs a failed background write with its traceback. From the first failed restore, or the
    first save, those reports of orbax's errors are dropped, and orbax's logs of a full disk (the
    DamagedCheckpoint, or the error the save raises again, names the failure); every other report goes
    through as usual."""
    global _quiet_installed
    if _quiet_installed:
        return
    _quiet_installed = True
    hook = sys.unraisablehook

    def quiet(unraisable) -> None:
        if not _from_orbax(unraisable.exc_value):
            hook(unraisable)

    sys.unraisablehook = quiet
    logging.getLogger("asyncio").addFilter(_DropOrbaxLeftovers())
    logging.getLogger("absl").addFilter(_DropDiskFullLog())


def _as_dict(state: Any) -> dict:
    if isinstance(state, dict):
        return state
    out = {f: getattr(state, f) for f in ("step", "params", "batch_stats", "opt_state", "rng", "bad_step")}
    if getattr(state, "aux", None):  # a phase's own state (Phase.init_aux), when it has one
        out["aux"] = state.aux
    return out


def encode_data_state(state: Any) -> Any:
    """Iterator state → JSON-able (bytes become {"bytes": latin-1 text})."""
    if isinstance(state, bytes):
        return {"bytes": state.decode("latin-1")}
    json.dumps(state)  # raises early with a clear error when not JSON-able
    return state


def decode_data_state(state: Any) -> Any:
    if isinstance(state, dict) and set(state) == {"bytes"}:
        return state["bytes"].encode("latin-1")
    return state


class RunNotFound(UserError, FileNotFoundError):
    """No run folder, no ``config.json`` or no checkpoint of the requested phase (a user error, and a
    FileNotFoundError for callers that skip a missing phase)."""


def _chosen_step(ckpt: PhaseCheckpoints, which: str) -> int | None:
    step = ckpt.best_step() if which == "best" else None
    return ckpt.latest_step() if step is None else step


def run_config(workdir: str | Path) -> Any:
    """The Config of a run folder (its ``config.json``); RunNotFound naming the folder when there is
    none, ConfigError when it is not a valid config."""
    cfg_path = Path(workdir) / "config.json"
    if not cfg_path.is_file():
        raise RunNotFound(f"{cfg_path} not found (is {workdir} a handprop run folder?)")
    return config_lib.load_json(cfg_path)


def _open_run(workdir: str | Path, model: str, which: str) -> tuple[Any, PhaseCheckpoints]:
    registry.get(model)  # ValueError naming the known phases
    if which not in ("latest", "best"):
        raise ValueError(f"load_run: which {which!r} must be 'latest' or 'best'")
    workdir = Path(workdir)
    config = run_config(workdir)
    directory = phase_dir(workdir, model)
    if not directory.is_dir():
        raise RunNotFound(f"no checkpoints for phase {model!r} in {directory}; train it first "
                          f"(handprop train --workdir {workdir})")
    return config, PhaseCheckpoints(workdir, model, read_only=True)


def _steps(ckpt, which: str) -> tuple[int, int]:
    """(the step ``which`` picks, the latest step) of an open run's phase; RunNotFound when none."""
    step = _chosen_step(ckpt, which)
    if step is None:
        raise RunNotFound(f"{ckpt.directory} holds no finished checkpoint")
    return step, ckpt.latest_step()


def describe(workdir: str | Path, model: str = "align", which: str = "latest") -> dict:
    """Which checkpoint :func:`load_run` reads: {"phase", "step", "total_steps", "finished" (the
    phase reached its last step), "which"}; what the evaluation and ``handprop propagate`` record in
    their outputs."""
    _, ckpt = _open_run(workdir, model, which)
    try:
        step, latest = _steps(ckpt, which)
        try:
            total = ckpt.read_meta(latest).get("total_steps")
        except Exception:
            total = None
    finally:
        ckpt.close()
    return {"phase": model, "step": int(step), "total_steps": total,
            "finished": total is not None and latest >= total, "which": which}


def load_run(workdir: str | Path, model: str = "align", which: str = "latest") -> tuple[Any, dict]:
    """Config and variables of a trained run.

    Args:
      workdir: the run folder (has ``config.json`` and ``checkpoints/<model>/``).
      model: the phase whose checkpoint is read (a name of :mod:`handprop_jax.training.registry`, e.g.
        "align", "baseline", "stage1", "stage2").
      which: "latest" (the last saved step, the end of the phase when it finished) or "best"
        (lowest validation error among the kept checkpoints; falls back to latest).
    Returns:
      (config, {"params", "batch_stats"}) with numpy/jax arrays. A phase that has not reached its
      last step is used as it is, with a warning on stderr naming the step (:func:`describe` says
      which step was read, for the outputs).
    Raises:
      RunNotFound (a FileNotFoundError) naming the missing file/folder; DamagedCheckpoint naming a
      step that cannot be read back (and the previous kept one); ConfigError for a bad config.json;
      ValueError for a bad ``model``/``which``.
    """
    config, ckpt = _open_run(workdir, model, which)
    try:
        step, latest = _steps(ckpt, which)
        state, meta = ckpt.restore(step)
    except DamagedCheckpoint as e:
        raise DamagedCheckpoint(f"{e}; re-run `handprop train --workdir {workdir}` to redo the phase from "
                                "it", e.directory, e.step) from None
    finally:
        ckpt.close()
    total = meta.get("total_steps")
    if total is not None and latest < total:
        print(f"warning: phase {model!r} of {workdir} is unfinished (step {latest} of {total}); "
              f"using its step-{step} checkpoint", file=sys.stderr, flush=True)
    return config, {"params": state["params"], "batch_stats": state["batch_stats"]}


def bound_from_run(workdir: str | Path, phase: str = "align", batch_size: int | None = None,
                   which: str = "latest") -> tuple[Any, BoundModel]:
    """The inference functions of a trained run's checkpoint ``phase`` (``stage1``, ``baseline``,
    ``stage2`` or ``align``; ``which``: ``latest`` or ``best``; :func:`load_run`). Returns
    (config, BoundModel)."""
    config, variables = load_run(workdir, phase, which)
    return config, HandPropModel.create(config).bind(variables, batch_size)
