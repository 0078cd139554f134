"""Clips and motion windows: the comparison methods' unlabelled video and real hand motions.

- ``clip_iterator(config, length, clips, ...)``: endless, shuffled batches of ``clips`` clips of
  ``length`` consecutive training frames each (every start position of every video equally likely),
  **without labels** (``with_labelled_labels=True`` adds the labels of the clip's *labelled* frames
  only, zeros elsewhere, and a ``labelled`` mask); sharded and resumable like
  :func:`handprop_jax.data.train_batches.train_iterator`.
- ``motion_iterator(bank, length, sequences, ...)``: the same for windows of a :class:`MotionBank`
  (joint sequences without images; its sources: :mod:`handprop_jax.data.motion`).

Each clip or window carries one uniform angle (``angle``) drawn from the record's generator, for
sequence-level rotation augmentations; everything is deterministic given the seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import grain.python as grain
import numpy as np

from handprop_jax.config import Config
from handprop_jax.data.iterators import Positions, TrainIterator, local_batch_size, make_grain_loader, shard
from handprop_jax.data.sources import Split, _stack, open_split

#: shapes of the label keys of one frame (docs/design.md, "Stored dataset features")
LABEL_SHAPES = {"root": (3,), "pose": (48,), "betas": (10,), "joints3d": (21, 3), "joints2d": (21, 2)}


def window_starts(starts: np.ndarray, lengths: np.ndarray, length: int) -> np.ndarray:
    """Every position p such that p .. p + length - 1 lie in one sequence (sequence v occupies
    positions starts[v] .. starts[v] + lengths[v] - 1), ascending. Sequences shorter than ``length``
    contribute none."""
    if length < 1:
        raise ValueError(f"clip length must be >= 1, got {length}")
    parts = [s + np.arange(n - length + 1) for s, n in zip(starts, lengths, strict=True) if n >= length]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _angle(rng: np.random.Generator) -> np.float32:
    """A uniform angle in [-pi, pi): one per clip/motion, for sequence-level rotation augmentations
    (e.g. the motion discriminator's), drawn from the record's generator (deterministic)."""
    return np.float32(rng.uniform(-np.pi, np.pi))


class _MakeClip(grain.RandomMapTransform):
    """Clip start position -> {image (n, S, S, 3), K (n, 3, 3), video_id (n,), frame_index (n,),
    angle ()} of n consecutive frames; with ``labelled_labels`` also the label keys of the labelled
    frames of the clip (zeros on the others, whose labels are never copied) and ``labelled`` (n,)."""

    def __init__(self, split: Split, length: int, labelled_labels: bool):
        self.split, self.length, self.labelled_labels = split, int(length), bool(labelled_labels)

    def random_map(self, start: int, rng: np.random.Generator) -> dict:
        sp = self.split
        positions = np.arange(start, start + self.length)
        if len(np.unique(sp.table.video[positions])) != 1:  # guards the window construction
            raise AssertionError(f"clip at position {start} crosses a video boundary")
        records = sp.read(positions)
        clip = _stack([sp.example(r, with_labels=False) for r in records])
        if self.labelled_labels:
            lab = sp.labelled[positions]
            for k, shape in LABEL_SHAPES.items():
                clip[k] = np.stack([np.asarray(r[k], np.float32) if is_lab else np.zeros(shape, np.float32)
                                    for r, is_lab in zip(records, lab, strict=True)])
            clip["labelled"] = lab
        clip["angle"] = _angle(rng)
        return clip


def clip_iterator(config: Config, length: int, clips: int, shard_index: int | None = None,
                  shard_count: int | None = None, split: str = "train", with_labelled_labels: bool = False,
                  seed_offset: int = 5000, worker_count: int | None = None,
                  prefetch: int = 2) -> TrainIterator:
    """Endless batches of ``clips`` (global, split over the processes) clips of ``length``
    consecutive frames of ``split`` (see the module docstring): each start position of each video is
    drawn once per epoch, shuffled with ``data.seed + seed_offset``. Batch: {image (B, n, S, S, 3),
    K (B, n, 3, 3), video_id (B, n), frame_index (B, n), angle (B,)} (+ labels of labelled frames,
    ``labelled`` (B, n), with ``with_labelled_labels``)."""
    index, count = shard(shard_index, shard_count)
    sp = open_split(config.data, split)
    starts = window_starts(sp.table.starts, sp.table.lengths, length)
    if len(starts) == 0:
        raise ValueError(f"split {split!r} of {config.data.name!r} has no video of {length} frames or more "
                         f"(clips of {length} consecutive frames were asked for)")
    loader = make_grain_loader(Positions(starts), _MakeClip(sp, length, with_labelled_labels),
                               local_batch_size(clips, count), seed=config.data.seed + seed_offset,
                               shard_index=index, shard_count=count,
                               worker_count=config.data.num_workers if worker_count is None else worker_count)
    return TrainIterator(loader, prefetch=prefetch)


@dataclasses.dataclass(frozen=True)
class MotionBank:
    """Hand motions without images: sequence v is ``joints3d[starts[v]:starts[v] + lengths[v]]``
    (camera frame, metres) with the crop intrinsics ``K`` of each of its frames. ``name`` says where
    the motions come from (it enters the sampler's state, so it must not depend on the process)."""

    joints3d: np.ndarray  # (N, 21, 3) float32
    K: np.ndarray  # (N, 3, 3) float32
    starts: np.ndarray  # (V,)
    lengths: np.ndarray  # (V,)
    name: str

    @classmethod
    def of(cls, sequences: Sequence[dict], name: str) -> MotionBank:
        """From per-sequence dicts {joints3d (T, 21, 3), K (T, 3, 3)}."""
        lengths = np.array([len(q["joints3d"]) for q in sequences], np.int64)
        return cls(joints3d=np.concatenate([q["joints3d"] for q in sequences]).astype(np.float32),
                   K=np.concatenate([q["K"] for q in sequences]).astype(np.float32),
                   starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64), lengths=lengths,
                   name=name)


class _MakeWindow(grain.RandomMapTransform):
    """Window start -> {joints3d (n, 21, 3), K (n, 3, 3), angle ()}."""

    def __init__(self, bank: MotionBank, length: int):
        self.bank, self.length = bank, int(length)

    def random_map(self, start: int, rng: np.random.Generator) -> dict:
        sl = slice(start, start + self.length)
        return {"joints3d": self.bank.joints3d[sl], "K": self.bank.K[sl], "angle": _angle(rng)}


class _Windows(Positions):
    def __init__(self, positions: np.ndarray, name: str):
        super().__init__(positions)
        self._name = name

    def __repr__(self) -> str:
        return f"_Windows({self._name}, {super().__repr__()})"


def motion_iterator(bank: MotionBank, length: int, sequences: int, seed: int, shard_index: int | None = None,
                    shard_count: int | None = None, prefetch: int = 0) -> TrainIterator:
    """Endless batches of ``sequences`` (global) windows of ``length`` consecutive frames of the
    bank's sequences, every window once per epoch, shuffled with ``seed``; sharded and resumable like
    the other samplers. Batch: {joints3d (B, n, 21, 3), K (B, n, 3, 3), angle (B,)}."""
    index, count = shard(shard_index, shard_count)
    starts = window_starts(bank.starts, bank.lengths, length)
    if len(starts) == 0:
        raise ValueError(f"motion bank {bank.name!r} has no sequence of {length} frames or more")
    loader = make_grain_loader(_Windows(starts, bank.name), _MakeWindow(bank, length),
                               local_batch_size(sequences, count), seed=seed, shard_index=index,
                               shard_count=count)
    return TrainIterator(loader, prefetch=prefetch)
