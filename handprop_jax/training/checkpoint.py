"""Orbax checkpoints of one phase: ``workdir/checkpoints/<phase>/<step>/``.

Each checkpoint holds two items:

- ``state``: the :class:`~handprop_jax.training.steps.TrainState` as a dict ``{step, params,
  batch_stats, opt_state, rng, bad_step}``, plus ``aux`` for a phase with its own state
  (``Phase.init_aux``) (orbax ``StandardSave``);
- ``meta``: JSON ``{phase, stage, step, total_steps, data_state, val_mpjpe_mm, config_name}``;
  ``data_state`` is the data iterator's state (``get_state()``, bytes stored as latin-1 text).

:func:`load_run` reads a run back as (config, variables) for inference.

Preservation: the last ``keep`` checkpoints **and** the best one on validation (lowest
``val_mpjpe_mm``; checkpoints saved without a validation value never count as best). The final
step of a phase is always saved, so a phase is complete when ``latest_step() == total_steps``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

VAL_KEY = "val_mpjpe_mm"
#: the TrainState fields a checkpoint holds (``aux``: the phase's extra state, see ``Phase.init_aux``)
STATE_FIELDS = ("step", "params", "batch_stats", "opt_state", "rng", "bad_step", "aux")


def phase_dir(workdir: str | Path, phase: str) -> Path:
    return Path(workdir).resolve() / "checkpoints" / phase


def _val_metric(metrics: dict) -> float:
    return -float(metrics[VAL_KEY])  # BestN keeps the largest


class PhaseCheckpoints:
    """Save/restore the checkpoints of one phase (see module docstring)."""

    def __init__(self, workdir: str | Path, phase: str, keep: int = 3, read_only: bool = False):
        self.directory = phase_dir(workdir, phase)
        policy = pp.AnyPreservationPolicy([
            pp.LatestN(n=max(int(keep), 1)),
            pp.BestN(get_metric_fn=_val_metric, n=1, keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=not read_only,
                                               read_only=read_only, enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict, val_mpjpe_mm: float | None = None) -> None:
        """Save asynchronously (call :meth:`wait` before relying on it on disk)."""
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
            val = self.read_meta(step).get(VAL_KEY)
            if val is not None and (best_val is None or val < best_val):
                best, best_val = step, val
        return best

    def restore(self, step: int, target: Any | None = None) -> tuple[Any, dict]:
        """Restore (state, meta) of ``step``. With ``target`` (a TrainState with the right structure,
        shapes and shardings) the state is restored into that structure; without it, as nested
        dicts of arrays."""
        if target is None:
            state_args = ocp.args.StandardRestore()
        else:
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _as_dict(target))
            state_args = ocp.args.StandardRestore(abstract)
        out = self.manager.restore(step, args=ocp.args.Composite(state=state_args,
                                                                 meta=ocp.args.JsonRestore()))
        state = out["state"]
        if target is not None:
            state = type(target)(**state)
        return state, out["meta"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


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


def load_run(workdir: str | Path, model: str = "align", which: str = "latest") -> tuple[Any, dict]:
    """Config and variables of a trained run.

    Args:
      workdir: the run folder (has ``config.json`` and ``checkpoints/<model>/``).
      model: the phase whose checkpoint is read (a name of :mod:`handprop_jax.training.registry`, e.g.
        "align", "baseline", "stage1", "stage2").
      which: "latest" (the last saved step, the end of the phase when it finished) or "best"
        (lowest validation error among the kept checkpoints; falls back to latest).
    Returns:
      (config, {"params", "batch_stats"}) with numpy/jax arrays.
    Raises:
      FileNotFoundError naming the missing file/folder; ValueError for a bad ``model``/``which``.
    """
    from handprop_jax import config as config_lib
    from handprop_jax.training import registry

    registry.get(model)  # ValueError naming the known phases
    if which not in ("latest", "best"):
        raise ValueError(f"load_run: which {which!r} must be 'latest' or 'best'")
    workdir = Path(workdir)
    cfg_path = workdir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"load_run: {cfg_path} not found (is {workdir} a handprop run folder?)")
    config = config_lib.load_json(cfg_path)
    directory = phase_dir(workdir, model)
    if not directory.is_dir():
        raise FileNotFoundError(f"load_run: no checkpoints for model {model!r} in {directory}; "
                                f"train it first (handprop train --workdir {workdir})")
    ckpt = PhaseCheckpoints(workdir, model, read_only=True)
    step = ckpt.best_step() if which == "best" else None
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"load_run: {directory} holds no finished checkpoint")
    state, _ = ckpt.restore(step)
    ckpt.close()
    return config, {"params": state["params"], "batch_stats": state["batch_stats"]}
