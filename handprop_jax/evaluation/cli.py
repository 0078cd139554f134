"""Evaluate a trained run: Table I on the unlabelled frames of its splits.

    handprop evaluate --workdir RUN_DIR [--splits train test] [--max-frames N] [--set eval.batch_size=32]

Rows per split (``handprop_jax.evaluation.rows``; ``--set 'eval.rows=["Baseline", ...]'`` picks
some): scenario 1, a predictor on each unlabelled frame — Baseline, Baseline + Align (trained with
propagated pseudo-labels), Baseline + Align (paper) and the comparison methods' rows; scenario 2,
the labelled frames' ground truth moved to each unlabelled frame — Propagation and Propagation (both
sides) (photometric refinement, ``propagation.*``) and the paper's Pose Alignment network
(Propagation (paper), ...); references: Copy, Interpolation (plain and crop-aware) and Mean pose (one
constant hand, the mean of the labelled training frames). Rows whose phase has no checkpoint are left
out. Columns: F@5, F@15 (fractions), MPVPE, MPVPE (P), MPJPE, MPJPE (T),
MPJPE (SD), MPJPE (P) in mm (definitions: ``handprop_jax.metrics``).

``--protocol paper|user|both`` (default: both on the synthetic data, else paper): the scenario-2 and
reference rows also on the crops ``handprop propagate`` would cut from the labels alone (split
"<split> (user crops)"; ``handprop_jax.evaluation.protocol``).

Writes RUN_DIR/eval/table1.{md,csv,json}, the error vs frame gap RUN_DIR/eval/gap.{csv,md,png} and
RUN_DIR/eval/checkpoints.json (the step of each phase's checkpoint that was read, of how many, and
whether its phase had finished: an unfinished phase is evaluated as it is, with a warning), and prints
the Markdown table. A run without a checkpoint of any phase the rows need is refused (exit code 2).
"""

from __future__ import annotations

import argparse

HELP = "write Table I (Markdown, CSV, JSON) for a run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="run folder (config.json, checkpoints/)")
    parser.add_argument("--splits", nargs="+", default=None, help="splits to evaluate (default: eval.splits)")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="cap on unlabelled frames per split, for a quick look")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the run's config, e.g. --set eval.batch_size=32")
    parser.add_argument("--protocol", choices=("paper", "user", "both"), default=None,
                        help="crops of the unlabelled frames: the stored ground-truth-centred ones (paper), "
                             "the ones handprop propagate would cut (user: boxes interpolated between the "
                             "labels, synthetic data only), or both (default: both where available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check(config) -> None:
    """The rows and splits asked for exist (UserError naming the value and what is allowed), before
    any checkpoint is read."""
    from handprop_jax.data.sources import data_source
    from handprop_jax.errors import UserError
    from handprop_jax.evaluation import rows as rows_lib

    try:
        rows_lib.by_name(config.eval.rows)
    except ValueError as e:
        raise UserError(f"eval.rows: {e}") from None
    for split in config.eval.splits:
        try:
            data_source(config.data, split)
        except FileNotFoundError:
            pass  # a data set that is not built: said after the checkpoints are looked for
        except ValueError as e:
            raise UserError(f"--splits {split}: {e}") from None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from handprop_jax import config as config_lib
    from handprop_jax.evaluation.runner import evaluate
    from handprop_jax.training.checkpoint import run_config

    config = run_config(args.workdir)  # RunNotFound: one line, exit code 2
    extra = list(args.overrides)
    if args.splits:
        extra.append(f"eval.splits={tuple(args.splits)!r}")
    if args.max_frames is not None:
        extra.append(f"eval.max_frames={args.max_frames}")
    config = config_lib.override(config, extra)
    _check(config)
    try:
        evaluate(args.workdir, config, progress=not args.no_progress, protocol=args.protocol)
    except FileNotFoundError as e:  # e.g. the run's data set is not built (data_source names it)
        from handprop_jax.errors import UserError

        raise UserError(str(e)) from None
    print(f"\nwritten: {(Path(args.workdir) / 'eval').resolve()}/table1.{{md,csv,json}}, gap.{{csv,md,png}}")
    return 0
