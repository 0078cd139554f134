"""The video table of a split: where each frame of each video is stored and at which source time
(records of a split are grouped by video, in frame order; docs/design.md, "Stored dataset features"),
and which frames carry a label (the optional ``has_label`` feature; every frame when a data set does
not store it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from handprop_jax.data import sparse
from handprop_jax.data.features import HAS_LABEL


@dataclasses.dataclass(frozen=True)
class VideoTable:
    """Where each frame of a split is stored.

    Positions p = 0..N-1 enumerate the frames grouped by video (table order) and in frame order;
    ``record[p]`` is the index of that frame in the data source.
    """

    video_ids: np.ndarray  # (V,) stored video_id of each table row
    names: tuple[str, ...]  # (V,)
    lengths: np.ndarray  # (V,) frames per video
    starts: np.ndarray  # (V,) first position of each video
    record: np.ndarray  # (N,) data-source index of each position
    video: np.ndarray  # (N,) table row of each position
    frame: np.ndarray  # (N,) frame index of each position (0..length-1 within its video)
    time: np.ndarray  # (N,) source frame number (``frame_time``) of each position, increasing per video
    has_label: np.ndarray | None = None  # (N,) bool: the frame carries a label; None = every frame

    @property
    def num_videos(self) -> int:
        return len(self.lengths)

    @property
    def num_frames(self) -> int:
        return len(self.record)

    def position(self, video: np.ndarray | int, frame: np.ndarray | int) -> np.ndarray:
        """Position of (table row, frame index); vectorised."""
        return self.starts[video] + frame

    def times(self, video: int) -> np.ndarray:
        """(length,) source times of the frames of table row ``video``."""
        s = int(self.starts[video])
        return self.time[s:s + int(self.lengths[video])]

    @property
    def partial_labels(self) -> bool:
        """Whether some frames carry no label (``has_label`` stored and not all True)."""
        return self.has_label is not None and not bool(np.all(self.has_label))

    def video_has_label(self, video: int) -> np.ndarray | None:
        """(T,) bool of one video (table row), or None when every frame has a label."""
        if not self.partial_labels:
            return None
        s = int(self.starts[video])
        return self.has_label[s:s + int(self.lengths[video])]

    def video_labelled(self, video: int, stride: int) -> np.ndarray:
        """S_V of one video (table row): (L,) sorted frame indices (``sparse.label_sets``, on the
        frames' source times)."""
        return sparse.label_sets(int(self.lengths[video]), stride, self.video_has_label(video),
                                 self.times(video))[0]

    def labelled_mask(self, stride: int) -> np.ndarray:
        """(N,) bool: labelled positions (every ``stride``-th frame of each video in source time,
        first and last; with partial labels the ``sparse.select_labelled`` rule over the frames that
        have one; ``handprop_jax.data.sparse``)."""
        if not self.partial_labels:
            return np.concatenate([sparse.labelled_mask(int(n), stride, self.times(v))
                                   for v, n in enumerate(self.lengths)]) \
                if self.num_videos else np.zeros(0, bool)
        mask = np.zeros(self.num_frames, bool)
        for v in range(self.num_videos):
            mask[self.starts[v] + self.video_labelled(v, stride)] = True
        return mask

    def evaluated_mask(self, stride: int) -> np.ndarray:
        """(N,) bool: the positions the evaluation scores (a label, not in S_V)."""
        held = ~self.labelled_mask(stride)
        return held if self.has_label is None else held & self.has_label

    def nearest_labelled(self, stride: int) -> np.ndarray:
        """(N,) position of N(u) (nearest in source time) for every position u (-1 in a video without
        any labelled frame)."""
        if not self.num_videos:
            return np.zeros(0, np.int64)
        if not self.partial_labels:
            return np.concatenate([s + sparse.nearest_labelled(int(n), stride, self.times(v))
                                   for v, (s, n) in enumerate(zip(self.starts, self.lengths, strict=True))])
        out = []
        for v, (s, n) in enumerate(zip(self.starts, self.lengths, strict=True)):
            lab = self.video_labelled(v, stride)
            out.append(s + sparse.neighbours(int(n), lab, self.times(v))["nearest"] if len(lab)
                       else np.full(int(n), -1, np.int64))
        return np.concatenate(out)


def video_table(source: Sequence[dict], where: str = "data source", chunk: int = 1024) -> VideoTable:
    """Scan ``video_id``/``frame_index``/``frame_time``/``video_length``/``video_name`` of every record
    and build the table (records need not be sorted). Data sets built before ``frame_time`` existed
    read as ``frame_time = frame_index``. Raises ValueError naming the video when its frames are not
    exactly 0..video_length-1 or their times do not increase with the frame index."""
    n = len(source)
    vid = np.empty(n, np.int64)
    fr = np.empty(n, np.int64)
    length = np.empty(n, np.int64)
    tm = np.empty(n, np.int64)
    has_label = np.ones(n, bool)
    stored_flag = False
    names: dict[int, str] = {}
    for start in range(0, n, chunk):
        idx = list(range(start, min(n, start + chunk)))
        recs = source.__getitems__(idx) if hasattr(source, "__getitems__") else [source[i] for i in idx]
        for i, r in zip(idx, recs, strict=True):
            vid[i], fr[i], length[i] = int(r["video_id"]), int(r["frame_index"]), int(r["video_length"])
            t = r.get("frame_time")  # absent, or None when the stored spec predates the feature
            tm[i] = fr[i] if t is None else int(t)
            if HAS_LABEL in r:
                has_label[i], stored_flag = bool(r[HAS_LABEL]), True
            if vid[i] not in names:
                name = r.get("video_name", str(vid[i]))
                names[int(vid[i])] = name.decode() if isinstance(name, bytes) else str(name)
    order = np.lexsort((fr, vid))
    vid_s, fr_s, tm_s = vid[order], fr[order], tm[order]
    ids, starts, lengths = np.unique(vid_s, return_index=True, return_counts=True)
    for v, s, L in zip(ids, starts, lengths, strict=True):
        frames = fr_s[s:s + L]
        stored = length[order[s]]
        if not np.array_equal(frames, np.arange(L)) or stored != L:
            raise ValueError(f"{where}: video_id {v} ({names[int(v)]!r}) has frame indices "
                             f"{frames[:6].tolist()}... ({L} records, video_length {stored}); expected "
                             f"0..video_length-1 exactly once each")
        if L > 1 and np.any(np.diff(tm_s[s:s + L]) <= 0):
            raise ValueError(f"{where}: video_id {v} ({names[int(v)]!r}) has frame times "
                             f"{tm_s[s:s + 6].tolist()}... that do not increase with the frame index")
    video = np.repeat(np.arange(len(ids)), lengths)
    return VideoTable(video_ids=ids, names=tuple(names[int(v)] for v in ids), lengths=lengths,
                      starts=starts, record=order, video=video, frame=fr_s, time=tm_s,
                      has_label=has_label[order] if stored_flag else None)
