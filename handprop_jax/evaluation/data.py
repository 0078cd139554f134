"""Whole videos of a split for the evaluation, and the labels of the labelled training frames for the
mean-pose row, read through the data sets' random access (``handprop_jax.data.sources.open_split``)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from handprop_jax.data.sources import open_split
from handprop_jax.gamma import Gamma, concatenate


def iter_videos(config, split: str) -> Iterator[dict[str, np.ndarray]]:
    """Yield one dict per video of ``split`` in table order: the pipeline's frame batch of every frame
    WITH labels (evaluation only): {image uint8 (T,S,S,3), K (T,3,3), root (T,3), pose (T,48),
    betas (T,10), joints3d (T,21,3), joints2d (T,21,2), video_id (T,), frame_index (T,) = 0..T-1,
    frame_time (T,) the source frame numbers (``handprop_jax.data.sparse``: K, N(u) and gaps use them),
    has_label (T,) bool (frames without a label have NaN labels)}."""
    sp = open_split(config.data, split)
    for v in range(sp.table.num_videos):
        yield sp.video(v, with_labels=True)


def count_unlabelled(config, split: str) -> int:
    """Number of frames of ``split`` the evaluation scores (every unlabelled frame; with partial labels
    the held-back ones), from the pipeline's cached video table."""
    return int(open_split(config.data, split).evaluated.sum())


def labelled_gammas(config, split: str = "train", chunk: int = 256) -> Gamma:
    """γ* (L, ...) of the labelled frames of ``split`` (every K-th frame of each video, first and
    last included)."""
    sp = open_split(config.data, split)
    pos = sp.labelled_positions
    if len(pos) == 0:
        raise ValueError(f"split {split!r} of {config.data.name!r} has no labelled frame")
    return concatenate([Gamma.of(sp.frames(pos[start:start + chunk], with_labels=True)).numpy()
                        for start in range(0, len(pos), chunk)])
