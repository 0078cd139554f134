"""The whole method on the embedded synthetic default, end to end (what `make demo` runs).

Phases: build the rendered synthetic hand-video data set → train stage 1, the baseline control,
stage 2 and stage 3 → evaluate (Table I on the unlabelled frames of the train and the unseen test
videos, with the mean-pose and copy-propagation reference rows) → report (overlay grid, training
curves, error vs frame gap). Prints Table I, the time of each phase, and as its last line the path
of ``table1.json``.

``--compare`` runs the config ``synthetic_compare`` instead: the same, plus the comparison methods'
phases (e.g. Hasson et al.'s photometric consistency), into the same run folder — after ``make demo``
the finished phases are skipped and only the comparison phases, the evaluation and the report run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HELP = "build data, train, evaluate and report on the synthetic default"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="runs/demo", help="run folder (default: runs/demo)")
    parser.add_argument("--config", default=None,
                        help="config name in experiments/configs or a path (default: synthetic, or "
                             "synthetic_compare with --compare)")
    parser.add_argument("--compare", action="store_true",
                        help="also train and evaluate the comparison methods (config synthetic_compare; "
                             "resumes the run folder of a plain demo)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set train.stage1_steps=200 (repeatable)")
    parser.add_argument("--skip-report", action="store_true", help="skip the plots and overlay grid")


def run(args: argparse.Namespace) -> int:
    from handprop_jax import config as config_lib

    if args.compare and args.config is not None:
        print("handprop demo: --compare selects the config synthetic_compare; give either --compare or "
              "--config", file=sys.stderr)
        return 2
    name = args.config or ("synthetic_compare" if args.compare else "synthetic")
    config = config_lib.load(name, args.overrides)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    def phase(name: str):
        print(f"\n=== {name} ===", flush=True)
        return time.perf_counter()

    t = phase("data: synthetic_hand_video")
    from handprop_jax.data.build import build

    build(config.data.name, config.data.data_dir, builder_config=config.data.builder_config,
          data_config=config.data)
    times["data"] = time.perf_counter() - t

    from handprop_jax.training import registry, train

    t = phase("train: " + ", ".join(registry.order(config)))

    train(config, workdir)
    times["train"] = time.perf_counter() - t

    t = phase("evaluate: Table I")
    from handprop_jax.evaluation.runner import evaluate

    rows = evaluate(workdir, config, protocol=None)  # both protocols (paper, user crops)
    times["evaluate"] = time.perf_counter() - t

    if not args.skip_report:
        t = phase("report: overlays, curves")
        from handprop_jax.visualize import visualize

        visualize(workdir, config)
        times["report"] = time.perf_counter() - t

    table_path = workdir / "eval" / "table1.json"
    summary = {"phases_s": {k: round(v, 1) for k, v in times.items()},
               "total_s": round(sum(times.values()), 1), "rows": len(rows)}
    (workdir / "demo_timing.json").write_text(json.dumps(summary, indent=2))
    print("\nTime per phase: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items())
          + f" | total {sum(times.values()) / 60:.1f} min")
    print(f"Table I: {table_path.resolve()}")
    return 0
