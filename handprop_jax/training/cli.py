"""Train HandProp: stage 1 (predictor), the baseline control, stage 2 (aligners), stage 3 (all).

Examples:
  handprop train --config synthetic --workdir runs/demo
  handprop train --config synthetic --workdir runs/demo --stage photometric   # Hasson et al.
  handprop train --config tiny --workdir /tmp/run --stage 1 --set train.lr=1e-4
  handprop train --config experiments/configs/mini_ho3d.py --workdir runs/ho3d --stage 3

Re-running the same command resumes: finished phases are skipped and an interrupted phase
continues from its latest checkpoint (workdir/checkpoints/<phase>). Logs go to stdout,
workdir/logs/metrics.jsonl and workdir/logs/tb (TensorBoard).
"""

from __future__ import annotations

import argparse
import sys

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
        summary = loop.train(config, args.workdir, phases, progress=not args.no_progress)
    except loop.NonFiniteLossError as e:
        print(f"handprop train: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as e:
        print(f"handprop train: {e}", file=sys.stderr)
        return 2
    for phase, s in summary.items():
        if s.get("skipped"):
            print(f"{phase}: already finished (step {s['step']})")
        else:
            val = s.get("val_mpjpe_mm")
            print(f"{phase}: step {s['step']}, loss {s.get('loss', float('nan')):.4g}"
                  + (f", val MPJPE {val:.1f} mm" if val is not None else ""))
    return 0
