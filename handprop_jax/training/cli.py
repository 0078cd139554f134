"""Train HandProp: stage 1 (predictor), the baseline control, stage 2 (aligners), stage 3 (all).

Examples:
  handprop train --config synthetic --workdir runs/demo
  handprop train --config synthetic --workdir runs/demo --stage photometric   # Hasson et al.
  handprop train --config tiny --workdir /tmp/run --stage 1 --set train.lr=1e-4
  handprop train --config experiments/configs/mini_ho3d.py --workdir runs/ho3d --stage 3

Re-running the same command resumes: finished phases are skipped and an interrupted phase
continues from its latest checkpoint (workdir/checkpoints/<phase>). Logs go to stdout,
workdir/logs/metrics.jsonl and workdir/logs/tb (TensorBoard).

Ctrl-C stops the run with one line naming the step to resume from (exit code 130); one that arrives
while XLA compiles takes effect when the compilation ends.
"""

from __future__ import annotations

import argparse
import sys

from handprop_jax.errors import Interrupts, watch_interrupts

HELP = "train the three stages and the baseline control"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="config name in experiments/configs (synthetic, tiny, ...) or a .py path")
    parser.add_argument("--workdir", required=True, help="run folder (created; resumed if it exists)")
    parser.add_argument("--stage", action="append", default=None, metavar="N",
                        help="train only this phase (repeatable): stage1 (or 1), baseline, stage2 (or 2), "
                             "align (or 3), pseudo, or a comparison phase: photometric (Hasson et al.), "
                             "adversarial_motion, adversarial_motion_labels (Spurr et al.), "
                             "temporal_consistency (Chen et al.); default: the config's train.phases")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field, e.g. --set train.lr=1e-4 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="plain log lines instead of tqdm bars")


def run(args: argparse.Namespace) -> int:
    with watch_interrupts() as interrupts:
        return _run(args, interrupts)


def _checked(sources, interrupts: Interrupts):
    """The source factory ``sources`` with a Ctrl-C check before each phase's sources and each batch:
    a SIGINT that a JAX callback swallowed, or that arrived while XLA compiled (both only counted,
    :class:`~handprop_jax.errors.Interrupts`), stops the phase there as a KeyboardInterrupt, which
    ``loop.run_phase`` turns into the line naming the phase and step."""

    def stop_if_interrupted() -> None:
        if interrupts.count:
            raise KeyboardInterrupt

    class Checked:
        def __init__(self, source):
            self._source = source

        def __next__(self):
            stop_if_interrupted()
            return next(self._source)

        def __iter__(self):
            for batch in self._source:
                stop_if_interrupted()
                yield batch

        def __getattr__(self, name):  # get_state, set_state
            return getattr(self._source, name)

    def factory(config, phase, split, shard_index, shard_count):
        stop_if_interrupted()
        source = sources(config, phase, split, shard_index, shard_count)
        return None if source is None else Checked(source)

    if hasattr(sources, "check"):
        factory.check = sources.check
    return factory


def _run(args: argparse.Namespace, interrupts: Interrupts) -> int:
    from handprop_jax import config as config_lib
    from handprop_jax.training import parallel

    try:
        config = config_lib.load(args.config, args.set)
    except (ValueError, FileNotFoundError) as e:
        print(f"handprop train: {e}", file=sys.stderr)
        return 2
    # multi-host: before importing modules that touch a JAX backend at import time
    parallel.maybe_initialize_distributed(config.train)
    from handprop_jax.training import loop

    try:
        phases = loop.resolve_phases(args.stage, config)
    except ValueError as e:
        print(f"handprop train: {e}", file=sys.stderr)
        return 2
    try:
        summary = loop.train(config, args.workdir, phases, progress=not args.no_progress,
                             sources=_checked(loop.default_sources, interrupts))
    except loop.NonFiniteLossError as e:
        print(f"handprop train: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as e:
        print(f"handprop train: {e}", file=sys.stderr)
        return 2
    # a Ctrl-C counted during the last compilation (no batch came after it)
    interrupts.check("interrupted as training finished; the run is complete")
    for phase, s in summary.items():
        if s.get("skipped"):
            print(f"{phase}: already finished (step {s['step']})")
        else:
            val = s.get("val_mpjpe_mm")
            print(f"{phase}: step {s['step']}, loss {s.get('loss', float('nan')):.4g}"
                  + (f", val MPJPE {val:.1f} mm" if val is not None else ""))
    return 0
