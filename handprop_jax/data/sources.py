"""Random access to a built data set: the tfds data source of a split (array_record, no TensorFlow)
and :class:`Split` (its video table, labelled set and frames by position or (video, frame)).

- ``open_split(data_config, split) -> Split``: ``.table`` (:class:`~handprop_jax.data.videos.VideoTable`),
  ``.labelled`` (every K-th frame of each video, first and last included; where only some frames
  carry a label, ``handprop_jax.data.sparse.select_labelled``), ``.evaluated`` (frames the evaluation
  scores), ``.nearest``, ``.frames(positions, with_labels)``, ``.frame(video, frame)``, ``.video(video)``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from handprop_jax.config import DataConfig
from handprop_jax.data.build import make_builder
from handprop_jax.data.features import HAS_LABEL, LABEL_KEYS
from handprop_jax.data.videos import VideoTable, video_table

FRAME_KEYS = ("image", "K", "video_id", "frame_index")


def data_source(data_config: DataConfig, split: str, decoders: dict | None = None):
    """``tfds`` random-access source of a split (array_record, no TensorFlow) for ``data_config``
    (builder and builder config via ``handprop_jax.data.build.make_builder``)."""
    builder = make_builder(data_config.name, data_config.data_dir, data_config.builder_config, data_config)
    if not builder.is_prepared():
        cfg = builder.builder_config.name if builder.builder_config else None
        raise FileNotFoundError(
            f"data set {data_config.name!r} (config {cfg}) is not prepared in {data_config.data_dir!r}: "
            f"run `handprop data build {data_config.name} --data-dir {data_config.data_dir} ...` first")
    stale = builder.stale_reason() if hasattr(builder, "stale_reason") else None
    if stale:
        raise ValueError(f"data set {data_config.name!r} in {data_config.data_dir!r} does not match the "
                         f"config: {stale}; rebuild it with `handprop data build`")
    if split not in builder.info.splits:
        raise ValueError(f"data set {data_config.name!r} in {data_config.data_dir!r} has no split {split!r}; "
                         f"splits: {list(builder.info.splits)}")
    return builder.as_data_source(split=split, decoders=decoders)


class Split:
    """One split: video table, labelled set and random access to frames.

    Attributes: ``table`` (VideoTable), ``stride`` (K), ``labelled`` (N,) bool over positions (S_V),
    ``evaluated`` (N,) bool (a label but not in S_V: scored by the evaluation), ``nearest`` (N,)
    position of N(u), ``labelled_positions`` (L,) ascending, ``video_labelled[v]`` S_V of table row v
    (frame indices).
    """

    def __init__(self, data_config: DataConfig, split: str, source=None):
        self.data_config = data_config
        self.split = split
        self.source = data_source(data_config, split) if source is None else source
        self.table = _cached_table(data_config, split) if source is None else video_table(source, split)
        self.stride = int(data_config.label_stride)
        self.labelled = self.table.labelled_mask(self.stride)
        self.evaluated = self.table.evaluated_mask(self.stride)
        self.nearest = self.table.nearest_labelled(self.stride)
        self.labelled_positions = np.nonzero(self.labelled)[0]
        starts = self.table.starts
        self.video_labelled = [self.table.frame[p] for p in
                               np.split(self.labelled_positions, np.searchsorted(self.labelled_positions,
                                                                                 starts[1:]))]

    def __len__(self) -> int:
        return self.table.num_frames

    def read(self, positions: Sequence[int]) -> list[dict]:
        """Decoded records at ``positions``."""
        idx = [int(self.table.record[p]) for p in positions]
        return list(self.source.__getitems__(idx)) if hasattr(self.source, "__getitems__") \
            else [self.source[i] for i in idx]

    def example(self, record: dict, with_labels: bool) -> dict[str, np.ndarray]:
        """One frame dict (design.md) from a decoded record; label keys only if ``with_labels``."""
        keys = FRAME_KEYS + (LABEL_KEYS if with_labels else ())
        out = {k: np.asarray(record[k]) for k in keys}
        out["video_id"] = out["video_id"].astype(np.int32)
        out["frame_index"] = out["frame_index"].astype(np.int32)
        return out

    def frames(self, positions: Sequence[int], with_labels: bool = True) -> dict[str, np.ndarray]:
        """A frame batch (leading axis = len(positions)). ``with_labels=False`` omits label keys;
        with labels it may contain unlabelled frames' labels: for evaluation only."""
        return _stack([self.example(r, with_labels) for r in self.read(positions)])

    def frame(self, video: int, frame: int, with_labels: bool = True) -> dict[str, np.ndarray]:
        """One frame by (table row, frame index)."""
        return self.example(self.read([int(self.table.position(video, frame))])[0], with_labels)

    def video(self, video: int, with_labels: bool = True) -> dict[str, np.ndarray]:
        """All frames of one video (table row) in frame order, as a frame batch, plus ``frame_time``
        (T,): the frames' source times (``handprop_jax.data.sparse``), and ``has_label`` (T,) bool
        (which frames carry a label; with labels, the others' label keys are NaN)."""
        s, n = int(self.table.starts[video]), int(self.table.lengths[video])
        out = self.frames(range(s, s + n), with_labels)
        out["frame_time"] = self.table.times(video).astype(np.int32)
        flags = self.table.video_has_label(video)
        out[HAS_LABEL] = np.ones(n, bool) if flags is None else np.array(flags)
        return out


@functools.lru_cache(maxsize=16)
def _cached_table(data_config: DataConfig, split: str) -> VideoTable:
    source = data_source(data_config, split, decoders={"image": tfds.decode.SkipDecoding()})
    return video_table(source, where=f"{data_config.name} {split} in {data_config.data_dir}")


def open_split(data_config: DataConfig, split: str) -> Split:
    """The ``Split`` of ``data_config`` (the table is cached per process)."""
    return Split(data_config, split)


def _stack(examples: list[dict]) -> dict:
    first = examples[0]
    return {k: (_stack([e[k] for e in examples]) if isinstance(first[k], dict)
                else np.stack([e[k] for e in examples])) for k in first}
