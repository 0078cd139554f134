"""Phase ``pseudo``: the single-frame predictor trained on the labelled frames and on the propagated
labels of the other frames of the train videos — the default "Baseline + Align" of Table I.

The propagation is the run's ``propagation.method`` (default: the photometric refinement of
crop-aware interpolation, :mod:`handprop_jax.propagation.refine`), from both neighbouring labelled
frames. It needs no trained network, so the pseudo-labels of a split are computed once, before the
phase, and cached next to the data set (``<data_dir>/propagated/<...>.npz``, keyed by the data and
propagation settings). The phase starts from ``stage1`` and trains for as many steps as the baseline
control (``stage2_steps + stage3_steps``), with the same loss (L_pred) and augmentation, so the two
rows differ only in the labels seen. Each training example is, with probability
``train.pseudo_fraction``, an unlabelled frame of the anchor's video with its pseudo-label, else the
labelled anchor itself.

The ground truth of unlabelled frames is never read: they are read without label keys, and the
propagation sees only the labelled frames' labels.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import grain.python as grain
import jax.numpy as jnp
import numpy as np

from handprop_jax import config as config_lib
from handprop_jax.camera import project
from handprop_jax.config import Config
from handprop_jax.data.features import LABEL_KEYS
from handprop_jax.data.iterators import TrainIterator, local_batch_size
from handprop_jax.data.sources import Split, open_split
from handprop_jax.data.train_batches import make_loader, val_batches
from handprop_jax.gamma import Gamma
from handprop_jax.hand import default_mano
from handprop_jax.model import handprop as hp
from handprop_jax.propagation.core import Propagator, hand_mesh, propagate_video
from handprop_jax.training import objectives
from handprop_jax.training.phases import Phase


def cache_path(config: Config, split: str = "train") -> Path:
    """Where the pseudo-labels of ``split`` are cached: a name that changes with the data set, the
    label stride, the MANO model and every propagation setting."""
    d = config_lib.to_dict(config)
    key = json.dumps({"data": {k: v for k, v in d["data"].items() if k not in ("num_workers", "data_dir")},
                      "propagation": d["propagation"], "mano": d["model"]["mano_model"], "split": split},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    name = f"{config.data.name}_{split}_K{config.data.label_stride}_{config.propagation.method}_{digest}.npz"
    return Path(config.data.data_dir) / "propagated" / name


def pseudo_labels(config: Config, split: str = "train", progress: bool = True,
                  split_data: Split | None = None) -> dict[str, np.ndarray]:
    """The propagated labels of every unlabelled frame of ``split`` (cached, :func:`cache_path`).

    Returns {"positions": (M,) int64 split positions (ascending), "root" (M, 3) m, "pose" (M, 48) rad,
    "betas" (M, 10), "joints3d" (M, 21, 3) m camera frame, "joints2d" (M, 21, 2) px of the crop}."""
    path = cache_path(config, split)
    if path.is_file():
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    from tqdm import tqdm

    sp = split_data or open_split(config.data, split)
    table = sp.table
    mano = default_mano(config)
    propagator = Propagator.from_config(config, mano=mano)
    if propagator.method == "paper":
        raise ValueError("train.phases 'pseudo': propagation.method 'paper' needs a trained aligner; use "
                         "'photometric', 'crop' or 'copy'")
    parts = []
    bar = tqdm(desc=f"pseudo-labels {split} ({propagator.method})", unit="frame",
               total=int((~sp.labelled).sum()), disable=not progress, file=sys.stderr)
    for v in range(len(table.lengths)):
        start, length = int(table.starts[v]), int(table.lengths[v])
        positions = np.arange(start, start + length)
        lab_pos = positions[sp.labelled[positions]]
        if len(lab_pos) == length:
            continue
        video = sp.frames(positions, with_labels=False)  # no unlabelled ground truth is read
        labels = sp.frames(lab_pos, with_labels=True)
        res = propagate_video(propagator, video["image"], video["K"], lab_pos - start,
                              Gamma(labels["root"], labels["pose"], labels["betas"]), both_sides=True,
                              times=table.times(v))  # weights in source time (frame_time)
        u = np.nonzero(~res.labelled)[0]
        g = res.gamma.take(u)
        _, joints = hand_mesh(mano, g)
        uv = np.asarray(project(jnp.asarray(joints), jnp.asarray(video["K"][u])))
        parts.append({"positions": positions[u], **g.as_dict(), "joints3d": joints, "joints2d": uv})
        bar.update(len(u))
    bar.close()
    if not parts:
        raise ValueError(f"train.phases 'pseudo': split {split!r} has no unlabelled frame to propagate to")
    out = {k: np.concatenate([p[k] for p in parts]).astype(np.int64 if k == "positions" else np.float32)
           for k in parts[0]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out


class PseudoExample(grain.RandomMapTransform):
    """Anchor position (a labelled frame) -> with probability ``fraction`` a uniformly drawn unlabelled
    frame of the same video with its pseudo-label, else the anchor with its label (the keys of a
    stage-1 frame either way)."""

    def __init__(self, split: Split, labels: dict[str, np.ndarray], fraction: float):
        self.split, self.fraction = split, float(fraction)
        self.labels = {k: labels[k] for k in LABEL_KEYS}
        pos = labels["positions"]
        row_of = np.full(len(split), -1, np.int64)
        row_of[pos] = np.arange(len(pos))
        if np.any(row_of[~split.labelled] < 0):
            raise ValueError("pseudo-labels do not cover every unlabelled frame of the split "
                             "(a stale cache? delete the data set's propagated/ folder)")
        self.row_of = row_of

    def random_map(self, position: int, rng: np.random.Generator) -> dict:
        sp = self.split
        if rng.random() < self.fraction:
            v = int(sp.table.video[position])
            start, length = int(sp.table.starts[v]), int(sp.table.lengths[v])
            candidates = np.nonzero(~sp.labelled[start:start + length])[0]
            if len(candidates):
                p = start + int(candidates[rng.integers(len(candidates))])
                example = sp.example(sp.read([p])[0], with_labels=False)
                row = self.row_of[p]
                return {**example, **{k: v[row] for k, v in self.labels.items()}}
        return sp.example(sp.read([position])[0], with_labels=True)


def batches(config: Config, split: str, shard_index: int, shard_count: int):
    if split != "train":
        return val_batches(config, 1, shard_index=shard_index, shard_count=shard_count)
    sp = open_split(config.data, "train")
    example = PseudoExample(sp, pseudo_labels(config, "train", split_data=sp), config.train.pseudo_fraction)
    loader = make_loader(config.data, "train", 1, local_batch_size(config.train.batch_size, shard_count),
                         seed=config.data.seed + 4000, shard_index=shard_index, shard_count=shard_count,
                         split_data=sp, example=example)
    return TrainIterator(loader)


PHASE = Phase("pseudo", 3, "stage1", hp.PREDICTOR_KEYS,
              lambda c: c.train.stage2_steps + c.train.stage3_steps, objectives.pred_phase_loss, batches,
              shares_step_with="stage1")
