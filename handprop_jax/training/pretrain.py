"""Pretrain the single-frame predictor on a densely labelled source set; store its weights.

The stand-in for the paper's ImageNet initialisation on the synthetic default: stage 1 (the
predictor, L_pred) trained on every frame of many short synthetic videos in the *source* style
(config ``synthetic_source``: other skins, backgrounds, lighting and cameras than the target
videos, from random streams no target video uses), then the predictor's weights written to a
``.npz`` that a run's ``model.init_checkpoint`` starts from (:mod:`handprop_jax.model.pretrained`).

Examples:
  handprop pretrain          # config synthetic_source → pretrained/synthetic_source.npz
  handprop pretrain --set train.stage1_steps=500 --out /tmp/p.npz

Steps: build the source data (``data.data_dir`` of the config; skipped when built), train phase
stage1 into ``--workdir`` (resumable like ``handprop train``), export the final step's predictor
(float16 parameters, float32 BatchNorm statistics) with the config, step and validation metrics in
its metadata, and print the file's SHA-256. With ``--set model.init_checkpoint=FILE`` the training
continues from FILE's predictor (a fresh optimizer) and the metadata names FILE and its SHA-256.
The demo config reads ``pretrained/synthetic_source.npz``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "pretrain the predictor on the synthetic source set and store its weights (.npz)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="synthetic_source",
                        help="config name or .py path (default: synthetic_source)")
    parser.add_argument("--workdir", default="runs/pretrain", help="run folder (default: runs/pretrain)")
    parser.add_argument("--out", default="pretrained/synthetic_source.npz",
                        help="the predictor weights to write (default: pretrained/synthetic_source.npz)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field, e.g. --set train.stage1_steps=500 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="plain log lines instead of tqdm bars")


def pretrain(config, workdir: str | Path, out: str | Path, progress: bool = True) -> tuple[Path, str]:
    """Build the config's data, train its stage 1 into ``workdir`` and export the predictor to ``out``.
    Returns (out, SHA-256 of the file)."""
    from handprop_jax.data.build import build
    from handprop_jax.model import pretrained
    from handprop_jax.training import checkpoint, loop

    build(config.data.name, config.data.data_dir, builder_config=config.data.builder_config,
          data_config=config.data)
    summary = loop.train(config, workdir, ("stage1",), progress=progress)
    run_config, variables = checkpoint.load_run(workdir, "stage1")
    digest = pretrained.export_predictor(variables, run_config, out,
                                         source=provenance(config, summary.get("stage1", {})))
    return Path(out), digest


def provenance(config, stats: dict) -> str:
    """The ``source`` line of an exported predictor: the command and config, the last step, the
    source set's size and the validation metrics of ``stats`` (a phase summary of
    :func:`loop.train`); for a continuation (``model.init_checkpoint`` set) also the file it started
    from and that file's SHA-256, so that a chain of pretraining runs can be traced."""
    from handprop_jax.model import pretrained

    source = (f"handprop pretrain --config {config.name}: stage1 step {stats.get('step', '?')}, "
              f"{config.data.synth_videos[0]} source videos x {config.data.synth_frames} frames; "
              + ", ".join(f"{k} {v:.2f}" for k, v in stats.items() if k.startswith("val_")))
    start = config.model.init_checkpoint
    if start:
        source += f"; started from {Path(start).name} (sha256 {pretrained.sha256(pretrained.resolve(start))})"
    return source


def run(args: argparse.Namespace) -> int:
    from handprop_jax import config as config_lib

    config = config_lib.load(args.config, args.set)
    if tuple(config.train.phases) != ("stage1",):
        print(f"handprop pretrain: config {config.name} trains {config.train.phases}; pretraining trains "
              "stage1 alone (train.phases=('stage1',))", file=sys.stderr)
        return 2
    path, digest = pretrain(config, args.workdir, args.out, progress=not args.no_progress)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB), sha256 {digest}")
    return 0
