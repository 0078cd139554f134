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
- ``val_batches(config, stage, ...)``: one deterministic pass over the val split's labelled anchors in
  the stage's format (anchors repeated cyclically to fill the last batch).
- ``eval_batches(data_config, split, scenario, batch_size, ...)``: scenario 1 (every unlabelled
  frame, with labels) or 2 (every (unlabelled u, N(u)) pair), in video/frame order, last batch
  padded (``mask`` False on padded rows).

Labels of unlabelled frames never enter a training batch: stage 1 reads only labelled frames, stage 2
only labelled pairs, and stage 3's partner ``u`` is read without its label keys.

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
from handprop_jax.data.sources import Split, open_split

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
        if self.stage == 2:
            u, u_lab = sparse.sample_labelled_partner(rng, f, length, sp.stride, self.nearest, times), True
        else:
            u, u_lab = sparse.sample_stage3_partner(rng, f, length, sp.stride, self.max_gap, self.nearest,
                                                    self.fraction, times)
        pu = int(table.position(v, u))
        rs, ru = sp.read([position, pu])
        if self.stage == 2:
            return {"s": sp.example(rs, True), "u": sp.example(ru, True)}
        return {"s": sp.example(rs, True), "u": sp.example(ru, False), "u_labelled": np.bool_(u_lab)}


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


def make_loader(data_config: DataConfig, split: str, stage: int, batch_size: int, *, seed: int,
                shuffle: bool = True, num_epochs: int | None = None, shard_index: int = 0,
                shard_count: int = 1, worker_count: int | None = None,
                split_data: Split | None = None) -> grain.DataLoader:
    """grain DataLoader of ``stage`` batches of ``batch_size`` (process-local) examples.

    Anchors = labelled frames of ``split``, sharded (``ShardOptions(shard_index, shard_count)``,
    remainder dropped) and shuffled per epoch with ``seed``; ``num_epochs=None`` repeats forever."""
    sp = split_data or open_split(data_config, split)
    if len(sp.labelled_positions) == 0:
        raise ValueError(f"split {split!r} of {data_config.name!r} has no labelled frame")
    sampler = grain.IndexSampler(
        num_records=len(sp.labelled_positions),
        shard_options=grain.ShardOptions(shard_index=shard_index, shard_count=shard_count,
                                         drop_remainder=True),
        shuffle=shuffle, num_epochs=num_epochs, seed=seed)
    workers = data_config.num_workers if worker_count is None else worker_count
    if workers > 0:  # grain's worker processes read absl flags, which a plain script never parsed
        from absl import flags

        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
    return grain.DataLoader(
        data_source=_Anchors(sp.labelled_positions), sampler=sampler,
        operations=[_MakeExample(sp, stage), grain.Batch(batch_size, drop_remainder=True)],
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
    {"u", "s", "gap"} (scenario 2). ``max_items`` keeps an evenly spaced subset."""
    u = np.nonzero(~sp.labelled)[0]
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
