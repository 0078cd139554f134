"""Random-access training batches (grain) and evaluation batches over the tfds array_record data.

Batch formats are those of docs/design.md ("Batches"). Entry points:

- (random access to a split, its video table and labelled set: :mod:`handprop_jax.data.sources`)
- ``train_iterator(config, stage, shard_index=None, shard_count=None)``: an endless, shuffled,
  deterministic iterator of **process-local** batches for stage 1, 2 or 3 (global batch
  ``config.train.batch_size`` split evenly over ``shard_count`` processes; default: JAX processes).
  Checkpointing: ``state = it.get_state()`` (bytes) after consuming batch n; a new iterator built with
  the same config (same ``data.num_workers``) and ``it.set_state(state)`` yields exactly batch n+1,
  n+2, ... (the order depends only on the seed and the record index). The state is small JSON text
  (grain's), e.g. for ``handprop_jax.training.checkpoint.encode_data_state``.
- ``neighbour_pairs(config, ...)``: endless (u, s = N(u)) pair batches anchored on EVERY frame of the
  split (u without label keys, labelled or not; s its nearest labelled frame, with labels) — Hasson
  et al.'s consistency pairs; ``labelled_and_pairs(config, ...)`` zips them with the stage-1 batches
  into ``{"labelled": frame batch, "s", "u"}`` (one state for both, resumable like the others).
- ``val_batches(config, stage, ...)``: one deterministic pass over the val split's labelled anchors in
  the stage's format (anchors repeated cyclically to fill the last batch).
- ``eval_batches(data_config, split, scenario, batch_size, ...)``: scenario 1 (every unlabelled
  frame, with labels) or 2 (every (unlabelled u, N(u)) pair), in video/frame order, last batch
  padded (``mask`` False on padded rows).
- ``clip_iterator(config, length, clips, ...)``: the comparison methods' unlabelled video: endless,
  shuffled batches of ``clips`` clips of ``length`` consecutive training frames each (every start
  position of every video equally likely), **without labels** (``with_labelled_labels=True`` adds
  the labels of the clip's *labelled* frames only, zeros elsewhere, and a ``labelled`` mask);
  sharded and resumable like ``train_iterator``. ``motion_iterator(bank, length, sequences, ...)``:
  the same for windows of a :class:`MotionBank` (joint sequences without images). ``JointIterator``
  zips named iterators into one batch dict with one resumable state.

Labels of unlabelled frames never enter a training batch: stage 1 reads only labelled frames, stage 2
only labelled pairs, and stage 3's partner ``u`` is read without its label keys. Where only some
frames carry a label (the ``has_label`` feature of ``hand_videos``), the labelled frames S_V are
``sparse.select_labelled`` of those (``Split.video_labelled``), the samplers get S_V explicitly, and
the evaluation batches hold the frames with a label outside S_V (``Split.evaluated``).

Sampling (``handprop_jax.data.sparse``): one epoch = every labelled frame of the split once as the
anchor s (shuffled); stage 2 partner: uniformly among the ``data.nearest_labelled`` nearest labelled
frames of the same video (s included); stage 3 partner: with probability ``data.unlabelled_fraction``
an unlabelled frame with |u - s| < ``data.max_gap``, else as in stage 2. Distances, the labelled set
and N(u) are on the frames' source times (``frame_time``), so frames missing from a video shift
nothing. grain derives each record's
random generator from (``data.seed``, record index), so everything is deterministic given the seed.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import grain.python as grain
import numpy as np
import tensorflow_datasets as tfds

from handprop_jax.config import Config, DataConfig
from handprop_jax.data import sparse
from handprop_jax.data.sources import Split, _stack, open_split

STAGES = (1, 2, 3)


# ------------------------------------------------------------------------------------ training

class _Anchors(grain.RandomAccessDataSource):
    """Positions of the anchor frames (the labelled frames); grain shuffles and shards these."""

    def __init__(self, positions: np.ndarray):
        self._positions = np.asarray(positions, np.int64)

    def __len__(self) -> int:
        return len(self._positions)

    def __getitem__(self, index: int) -> int:
        return int(self._positions[index])

    def __repr__(self) -> str:  # stored in the iterator state: must not depend on the process
        import zlib

        return f"_Anchors(n={len(self._positions)}, crc32={zlib.crc32(self._positions.tobytes())})"


class _MakeExample(grain.RandomMapTransform):
    """Anchor position -> stage 1 frame / stage 2 pair / stage 3 pair (design.md batch formats)."""

    def __init__(self, split: Split, stage: int):
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.split, self.stage = split, stage
        dc = split.data_config
        self.max_gap, self.nearest, self.fraction = dc.max_gap, dc.nearest_labelled, dc.unlabelled_fraction

    def random_map(self, position: int, rng: np.random.Generator) -> dict:
        sp, table = self.split, self.split.table
        if not sp.labelled[position]:  # never happens by construction; guards the label contract
            raise AssertionError(f"anchor position {position} is not a labelled frame")
        if self.stage == 1:
            return sp.example(sp.read([position])[0], with_labels=True)
        v, f = int(table.video[position]), int(table.frame[position])
        length, times = int(table.lengths[v]), table.times(v)
        lab = sp.video_labelled[v]
        if self.stage == 2:
            u, u_lab = sparse.sample_labelled_partner(rng, f, length, sp.stride, self.nearest, lab,
                                                      times), True
        else:
            u, u_lab = sparse.sample_stage3_partner(rng, f, length, sp.stride, self.max_gap, self.nearest,
                                                    self.fraction, lab, times)
        pu = int(table.position(v, u))
        rs, ru = sp.read([position, pu])
        if self.stage == 2:
            return {"s": sp.example(rs, True), "u": sp.example(ru, True)}
        return {"s": sp.example(rs, True), "u": sp.example(ru, False), "u_labelled": np.bool_(u_lab)}


class _MakeNeighbourPair(grain.MapTransform):
    """Any frame position u -> {"s": N(u) with labels, "u": u without label keys} (N(u) = u when u is
    labelled)."""

    def __init__(self, split: Split):
        self.split = split

    def map(self, position: int) -> dict:
        sp = self.split
        rs, ru = sp.read([int(sp.nearest[position]), position])
        return {"s": sp.example(rs, True), "u": sp.example(ru, False)}


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    if shard_index is None or shard_count is None:
        import jax

        return jax.process_index(), jax.process_count()
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} must be in [0, {shard_count})")
    return shard_index, shard_count


def local_batch_size(global_batch: int, shard_count: int) -> int:
    """Per-process batch size; the global batch must divide evenly over the processes."""
    if global_batch % shard_count:
        raise ValueError(f"train.batch_size {global_batch} is not divisible by the {shard_count} processes")
    return global_batch // shard_count


def make_loader(data_config: DataConfig, split: str, stage: int | str, batch_size: int, *, seed: int,
                shuffle: bool = True, num_epochs: int | None = None, shard_index: int = 0,
                shard_count: int = 1, worker_count: int | None = None,
                split_data: Split | None = None,
                example: grain.RandomMapTransform | None = None) -> grain.DataLoader:
    """grain DataLoader of ``stage`` batches of ``batch_size`` (process-local) examples.

    Anchors = labelled frames of ``split`` (stage 1, 2, 3) or every frame (stage "neighbours":
    :class:`_MakeNeighbourPair`), sharded (``ShardOptions(shard_index, shard_count)``, remainder
    dropped) and shuffled per epoch with ``seed``; ``num_epochs=None`` repeats forever.
    ``example`` (anchor position -> example) replaces the stage's own (e.g. the pseudo-label phase,
    :mod:`handprop_jax.training.pseudo`)."""
    sp = split_data or open_split(data_config, split)
    if len(sp.labelled_positions) == 0:
        raise ValueError(f"split {split!r} of {data_config.name!r} has no labelled frame")
    if stage == "neighbours":
        anchors, make = np.arange(len(sp), dtype=np.int64), _MakeNeighbourPair(sp)
    else:
        anchors, make = sp.labelled_positions, example or _MakeExample(sp, stage)
    sampler = grain.IndexSampler(
        num_records=len(anchors),
        shard_options=grain.ShardOptions(shard_index=shard_index, shard_count=shard_count,
                                         drop_remainder=True),
        shuffle=shuffle, num_epochs=num_epochs, seed=seed)
    workers = data_config.num_workers if worker_count is None else worker_count
    if workers > 0:  # grain's worker processes read absl flags, which a plain script never parsed
        from absl import flags

        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
    return grain.DataLoader(
        data_source=_Anchors(anchors), sampler=sampler,
        operations=[make, grain.Batch(batch_size, drop_remainder=True)],
        worker_count=workers, read_options=grain.ReadOptions(num_threads=1, prefetch_buffer_size=64))


class TrainIterator:
    """Endless iterator of process-local training batches with ``get_state``/``set_state``.

    The state (bytes, JSON-able via latin-1 as ``handprop_jax.training`` does) records how many
    records were consumed; restoring it into an iterator built with the same config and shard
    resumes with exactly the next batch. With ``prefetch`` > 0 a background thread prepares the next
    batches while the caller computes (useful with ``worker_count=0``); ``get_state`` still refers to
    the last batch *returned*, not to the prefetched ones. Call ``set_state`` before the first batch.
    """

    def __init__(self, loader: grain.DataLoader, prefetch: int = 2):
        self._loader = loader
        self._it = iter(loader)
        self._prefetch = prefetch
        self._queue = None
        self._state = self._it.get_state()

    def __iter__(self) -> Iterator[dict]:
        return self

    def _start(self) -> None:
        import queue
        import threading

        self._queue = queue.Queue(maxsize=self._prefetch)

        def work():
            while True:
                try:
                    batch = next(self._it)
                    item = (batch, self._it.get_state(), None)
                except BaseException as e:  # handed to the consumer
                    item = (None, None, e)
                self._queue.put(item)
                if item[2] is not None:
                    return

        threading.Thread(target=work, daemon=True, name="handprop-prefetch").start()

    def __next__(self) -> dict:
        if self._prefetch <= 0:
            batch = next(self._it)
            self._state = self._it.get_state()
            return batch
        if self._queue is None:
            self._start()
        batch, state, error = self._queue.get()
        if error is not None:
            raise error
        self._state = state
        return batch

    def get_state(self) -> bytes:
        return self._state

    def set_state(self, state: bytes) -> None:
        if self._queue is not None:
            raise RuntimeError("TrainIterator.set_state must be called before the first batch")
        self._it.set_state(state)
        self._state = state


def train_iterator(config: Config, stage: int, shard_index: int | None = None, shard_count: int | None = None,
                   split: str = "train", worker_count: int | None = None, prefetch: int = 2) -> TrainIterator:
    """Training batches of ``stage`` (1, 2 or 3) from ``split`` for this process (see module doc);
    ``prefetch`` batches are prepared in a background thread."""
    index, count = _shard(shard_index, shard_count)
    loader = make_loader(config.data, split, int(stage), local_batch_size(config.train.batch_size, count),
                         seed=config.data.seed + 1000 * int(stage), shard_index=index, shard_count=count,
                         worker_count=worker_count)
    return TrainIterator(loader, prefetch=prefetch)


def neighbour_pairs(config: Config, shard_index: int | None = None, shard_count: int | None = None,
                    split: str = "train", worker_count: int | None = None, prefetch: int = 2) -> TrainIterator:
    """Endless (u, s = N(u)) pair batches over every frame u of ``split`` (module doc), process-local
    share of ``train.batch_size`` pairs."""
    index, count = _shard(shard_index, shard_count)
    loader = make_loader(config.data, split, "neighbours", local_batch_size(config.train.batch_size, count),
                         seed=config.data.seed + 4000, shard_index=index, shard_count=count,
                         worker_count=worker_count)
    return TrainIterator(loader, prefetch=prefetch)


class ZipIterator:
    """Several training iterators as one: each batch holds every iterator's batch under its name, or,
    for the names in ``merged`` (dict batches), its keys; ``get_state``/``set_state`` carry every
    iterator's state (a JSON-able dict {name: latin-1 text})."""

    def __init__(self, iterators: dict, merged: Sequence[str] = ()):
        self._its = dict(iterators)
        self._merged = frozenset(merged)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        out: dict = {}
        for name, it in self._its.items():
            batch = next(it)
            if name in self._merged:
                out.update(batch)
            else:
                out[name] = batch
        return out

    def get_state(self) -> dict:
        return {name: it.get_state().decode("latin-1") for name, it in self._its.items()}

    def set_state(self, state: dict) -> None:
        for name, it in self._its.items():
            it.set_state(state[name].encode("latin-1"))


def labelled_and_pairs(config: Config, shard_index: int | None = None, shard_count: int | None = None,
                       split: str = "train", worker_count: int | None = None) -> ZipIterator:
    """``{"labelled": stage-1 batch, "s": N(u) with labels, "u": any frame without labels}`` per step:
    the batches of a consistency phase (Hasson et al.: one labelled batch plus one pair batch)."""
    return ZipIterator({"labelled": train_iterator(config, 1, shard_index, shard_count, split, worker_count),
                        "pairs": neighbour_pairs(config, shard_index, shard_count, split, worker_count)},
                       merged=("pairs",))


def val_batches(config: Config, stage: int, shard_index: int | None = None, shard_count: int | None = None,
                split: str = "val") -> Iterator[dict]:
    """One deterministic pass over the labelled anchors of ``split`` in ``stage``'s format: every
    anchor at least once, cyclically repeated to fill the last batch (fixed partners, no shuffle)."""
    index, count = _shard(shard_index, shard_count)
    sp = open_split(config.data, split)
    n_local = max(1, len(sp.labelled_positions) // count)
    batch = local_batch_size(config.train.batch_size, count)
    n_batches = -(-n_local // batch)
    loader = make_loader(config.data, split, int(stage), batch, seed=config.data.seed, shuffle=False,
                         num_epochs=None, shard_index=index, shard_count=count, worker_count=0, split_data=sp)
    return itertools.islice(iter(loader), n_batches)


# ----------------------------------------------------------------------------------- evaluation

def eval_items(sp: Split, scenario: int, max_items: int | None = None) -> dict[str, np.ndarray]:
    """Positions evaluated in a scenario, in video/frame order: {"u": (M,)} (scenario 1) or
    {"u", "s", "gap"} (scenario 2). ``max_items`` keeps an evenly spaced subset. u = every frame
    with a label outside S_V (``Split.evaluated``: every unlabelled frame of the dense data sets)."""
    u = np.nonzero(sp.evaluated)[0]
    if max_items is not None and len(u) > max_items:
        u = u[np.linspace(0, len(u) - 1, max_items).round().astype(int)]
    if scenario == 1:
        return {"u": u}
    if scenario == 2:
        s = sp.nearest[u]
        return {"u": u, "s": s, "gap": np.abs(sp.table.time[u] - sp.table.time[s])}
    raise ValueError(f"scenario must be 1 or 2, got {scenario!r}")


def eval_batches(data_config: DataConfig, split: str, scenario: int, batch_size: int,
                 max_items: int | None = None, split_data: Split | None = None) -> Iterator[dict[str, Any]]:
    """Evaluation batches (design.md), no shuffling, last batch padded (``mask`` False on padding).

    Scenario 1: frame dicts of every unlabelled frame, with labels, plus ``mask`` (B,).
    Scenario 2: {"s": N(u) with labels, "u": unlabelled u with labels, "gap" (B,), "mask" (B,)}."""
    sp = split_data or open_split(data_config, split)
    items = eval_items(sp, scenario, max_items)
    n = len(items["u"])
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        mask = idx < n
        idx = np.where(mask, idx, max(n - 1, 0))
        if scenario == 1:
            batch = sp.frames(items["u"][idx], with_labels=True)
        else:
            batch = {"s": sp.frames(items["s"][idx]), "u": sp.frames(items["u"][idx]),
                     "gap": items["gap"][idx].astype(np.int32)}
        batch["mask"] = mask
        yield batch


# ------------------------------------------------------------- clips and motions (comparison methods)

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
                  seed_offset: int = 5000, worker_count: int | None = None, prefetch: int = 2) -> TrainIterator:
    """Endless batches of ``clips`` (global, split over the processes) clips of ``length``
    consecutive frames of ``split`` (see the module docstring): each start position of each video is
    drawn once per epoch, shuffled with ``data.seed + seed_offset``. Batch: {image (B, n, S, S, 3),
    K (B, n, 3, 3), video_id (B, n), frame_index (B, n), angle (B,)} (+ labels of labelled frames,
    ``labelled`` (B, n), with ``with_labelled_labels``)."""
    index, count = _shard(shard_index, shard_count)
    sp = open_split(config.data, split)
    starts = window_starts(sp.table.starts, sp.table.lengths, length)
    if len(starts) == 0:
        raise ValueError(f"split {split!r} of {config.data.name!r} has no video of {length} frames or more "
                         f"(clips of {length} consecutive frames were asked for)")
    sampler = grain.IndexSampler(
        num_records=len(starts), shard_options=grain.ShardOptions(shard_index=index, shard_count=count,
                                                                  drop_remainder=True),
        shuffle=True, num_epochs=None, seed=config.data.seed + seed_offset)
    workers = config.data.num_workers if worker_count is None else worker_count
    loader = grain.DataLoader(
        data_source=_Anchors(starts), sampler=sampler,
        operations=[_MakeClip(sp, length, with_labelled_labels),
                    grain.Batch(local_batch_size(clips, count), drop_remainder=True)],
        worker_count=workers, read_options=grain.ReadOptions(num_threads=1, prefetch_buffer_size=8))
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


class _Windows(_Anchors):
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
    index, count = _shard(shard_index, shard_count)
    starts = window_starts(bank.starts, bank.lengths, length)
    if len(starts) == 0:
        raise ValueError(f"motion bank {bank.name!r} has no sequence of {length} frames or more")
    sampler = grain.IndexSampler(
        num_records=len(starts), shard_options=grain.ShardOptions(shard_index=index, shard_count=count,
                                                                  drop_remainder=True),
        shuffle=True, num_epochs=None, seed=seed)
    loader = grain.DataLoader(
        data_source=_Windows(starts, bank.name), sampler=sampler,
        operations=[_MakeWindow(bank, length), grain.Batch(local_batch_size(sequences, count),
                                                           drop_remainder=True)],
        worker_count=0, read_options=grain.ReadOptions(num_threads=1, prefetch_buffer_size=8))
    return TrainIterator(loader, prefetch=prefetch)


class JointIterator:
    """Named iterators advanced together: each batch is {name: that iterator's batch}; the state
    (bytes) holds every part's state, so that a restored ``JointIterator`` built the same way yields
    exactly the batches that followed."""

    def __init__(self, parts: dict[str, Any]):
        self.parts = dict(parts)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        return {name: next(it) for name, it in self.parts.items()}

    def get_state(self) -> bytes:
        import json

        def text(state):
            return state.decode("latin-1") if isinstance(state, bytes) else state

        return json.dumps({name: text(it.get_state()) for name, it in self.parts.items()}).encode("latin-1")

    def set_state(self, state: bytes) -> None:
        import json

        states = json.loads(state.decode("latin-1") if isinstance(state, bytes) else state)
        if set(states) != set(self.parts):
            raise ValueError(f"JointIterator.set_state: state of parts {sorted(states)}, iterator of "
                             f"{sorted(self.parts)}")
        for name, it in self.parts.items():
            st = states[name]
            it.set_state(st.encode("latin-1") if isinstance(st, str) else st)
