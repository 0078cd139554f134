"""Training and validation batches of the paper's stages (grain, random access to the tfds
array_record data): stage 1 frames, stage 2 labelled pairs, stage 3 (labelled s, partner u), and the
neighbour pairs (u, N(u)) of the consistency phases.

Batch formats are those of docs/design.md ("Batches"). Entry points:

- (random access to a split, its video table and labelled set: :mod:`handprop_jax.data.sources`)
- ``train_iterator(config, stage, shard_index=None, shard_count=None)``: an endless, shuffled,
  deterministic iterator of **process-local** batches for stage 1, 2 or 3 (global batch
  ``config.train.batch_size`` split evenly over ``shard_count`` processes; default: JAX processes).
  Checkpointing: ``state = it.get_state()`` (bytes) after consuming batch n; a new iterator built with
  the same config (same ``data.num_workers``) and ``it.set_state(state)`` yields exactly batch n+1,
  n+2, ... (the order depends only on the seed and the record index). The state is small JSON text
  (grain's), e.g. for ``handprop_jax.training.checkpoint.encode_data_state``
  (:class:`~handprop_jax.data.iterators.TrainIterator`).
- ``neighbour_pairs(config, ...)``: endless (u, s = N(u)) pair batches anchored on EVERY frame of the
  split (u without label keys, labelled or not; s its nearest labelled frame, with labels) — Hasson
  et al.'s consistency pairs; ``labelled_and_pairs(config, ...)`` combines them with the stage-1
  batches into ``{"labelled": frame batch, "s", "u"}`` (one state for both,
  :class:`~handprop_jax.data.iterators.CombinedIterator`).
- ``val_batches(config, stage, ...)``: one deterministic pass over the val split's labelled anchors in
  the stage's format (anchors repeated cyclically to fill the last batch).
- ``make_loader(...)``: the grain loader under all of these (a phase may pass its own ``example``).

Evaluation batches: :mod:`handprop_jax.data.eval_batches`; clips and motion windows of the comparison
methods: :mod:`handprop_jax.data.clips`.

Labels of unlabelled frames never enter a training batch: stage 1 reads only labelled frames, stage 2
only labelled pairs, and stage 3's partner ``u`` is read without its label keys. Where only some
frames carry a label (the ``has_label`` feature of ``hand_videos``), the labelled frames S_V are
``sparse.select_labelled`` of those (``Split.video_labelled``) and the samplers get S_V explicitly.

Sampling (``handprop_jax.data.sparse``): one epoch = every labelled frame of the split once as the
anchor s (shuffled); stage 2 partner: uniformly among the ``data.nearest_labelled`` nearest labelled
frames of the same video (s included); stage 3 partner: with probability ``data.unlabelled_fraction``
an unlabelled frame with |u - s| < ``data.max_gap``, else as in stage 2. Distances, the labelled set
and N(u) are on the frames' source times (``frame_time``), so frames missing from a video shift
nothing. grain derives each record's random generator from (``data.seed``, record index), so
everything is deterministic given the seed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import grain.python as grain
import numpy as np

from handprop_jax.config import Config, DataConfig
from handprop_jax.data import sparse
from handprop_jax.data.iterators import (
    CombinedIterator,
    Positions,
    TrainIterator,
    local_batch_size,
    make_grain_loader,
    shard,
)
from handprop_jax.data.sources import Split, open_split

STAGES = (1, 2, 3)


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
    return make_grain_loader(Positions(anchors), make, batch_size, seed=seed, shard_index=shard_index,
                             shard_count=shard_count, shuffle=shuffle, num_epochs=num_epochs,
                             worker_count=data_config.num_workers if worker_count is None else worker_count,
                             prefetch_buffer_size=64)


def train_iterator(config: Config, stage: int, shard_index: int | None = None, shard_count: int | None = None,
                   split: str = "train", worker_count: int | None = None, prefetch: int = 2) -> TrainIterator:
    """Training batches of ``stage`` (1, 2 or 3) from ``split`` for this process (see module doc);
    ``prefetch`` batches are prepared in a background thread."""
    index, count = shard(shard_index, shard_count)
    loader = make_loader(config.data, split, int(stage), local_batch_size(config.train.batch_size, count),
                         seed=config.data.seed + 1000 * int(stage), shard_index=index, shard_count=count,
                         worker_count=worker_count)
    return TrainIterator(loader, prefetch=prefetch)


def neighbour_pairs(config: Config, shard_index: int | None = None, shard_count: int | None = None,
                    split: str = "train", worker_count: int | None = None,
                    prefetch: int = 2) -> TrainIterator:
    """Endless (u, s = N(u)) pair batches over every frame u of ``split`` (module doc), process-local
    share of ``train.batch_size`` pairs."""
    index, count = shard(shard_index, shard_count)
    loader = make_loader(config.data, split, "neighbours", local_batch_size(config.train.batch_size, count),
                         seed=config.data.seed + 4000, shard_index=index, shard_count=count,
                         worker_count=worker_count)
    return TrainIterator(loader, prefetch=prefetch)


def labelled_and_pairs(config: Config, shard_index: int | None = None, shard_count: int | None = None,
                       split: str = "train", worker_count: int | None = None) -> CombinedIterator:
    """``{"labelled": stage-1 batch, "s": N(u) with labels, "u": any frame without labels}`` per step:
    the batches of a consistency phase (Hasson et al.: one labelled batch plus one pair batch)."""
    return CombinedIterator(
        {"labelled": train_iterator(config, 1, shard_index, shard_count, split, worker_count),
         "pairs": neighbour_pairs(config, shard_index, shard_count, split, worker_count)}, merged=("pairs",))


def val_batches(config: Config, stage: int, shard_index: int | None = None, shard_count: int | None = None,
                split: str = "val") -> Iterator[dict]:
    """One deterministic pass over the labelled anchors of ``split`` in ``stage``'s format: every
    anchor at least once, cyclically repeated to fill the last batch (fixed partners, no shuffle)."""
    index, count = shard(shard_index, shard_count)
    sp = open_split(config.data, split)
    n_local = max(1, len(sp.labelled_positions) // count)
    batch = local_batch_size(config.train.batch_size, count)
    n_batches = -(-n_local // batch)
    loader = make_loader(config.data, split, int(stage), batch, seed=config.data.seed, shuffle=False,
                         num_epochs=None, shard_index=index, shard_count=count, worker_count=0, split_data=sp)
    return itertools.islice(iter(loader), n_batches)
