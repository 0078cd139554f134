"""Whole videos of a split for the evaluation (records are stored grouped by video, in frame order;
docs/design.md), and the labels of the labelled training frames for the mean-pose row."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

KEYS = ("image", "K", "root", "pose", "betas", "joints3d", "video_id", "frame_index")


def open_source(config, split: str):
    """Random-access records of a split (``tfds.data_source``; no TensorFlow)."""
    import tensorflow_datasets as tfds

    name = config.data.name
    if config.data.builder_config:
        name = f"{name}/{config.data.builder_config}"
    try:
        return tfds.data_source(name, split=split, data_dir=config.data.data_dir)
    except Exception as e:  # tfds raises several types for a missing dataset
        raise FileNotFoundError(f"evaluation: cannot open split {split!r} of dataset {name!r} in "
                                f"{config.data.data_dir!r} (build it with `handprop data`): {e}") from e


def _stack(records: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(r[k]) for r in records]) for k in KEYS}


def iter_videos(config, split: str, source=None) -> Iterator[dict[str, np.ndarray]]:
    """Yield one dict per video: {image uint8 (T,S,S,3), K (T,3,3), root (T,3), pose (T,48),
    betas (T,10), joints3d (T,21,3), video_id (T,), frame_index (T,)} in frame order.

    Raises ValueError if a video's frame indices are not 0..T-1 in order (the storage contract)."""
    source = open_source(config, split) if source is None else source
    current, vid = [], None
    for i in range(len(source)):
        rec = source[i]
        v = int(rec["video_id"])
        if current and v != vid:
            yield _checked(_stack(current), split)
            current = []
        vid = v
        current.append(rec)
    if current:
        yield _checked(_stack(current), split)


def _checked(video: dict, split: str) -> dict:
    T = len(video["frame_index"])
    if not np.array_equal(video["frame_index"], np.arange(T)):
        raise ValueError(f"split {split!r}, video {int(video['video_id'][0])}: frames are not stored in "
                         f"order 0..{T - 1} (got {video['frame_index'][:8].tolist()}...)")
    return video


def labelled_gammas(config, split: str = "train", source=None) -> dict[str, np.ndarray]:
    """γ* {root (L,3), pose (L,48), betas (L,10)} of the labelled frames (every K-th, first and last)
    of every video of ``split``."""
    from handprop_jax.data.sparse import labelled_frames

    parts = {k: [] for k in ("root", "pose", "betas")}
    for video in iter_videos(config, split, source):
        lab = labelled_frames(len(video["frame_index"]), config.data.label_stride)
        for k in parts:
            parts[k].append(video[k][lab])
    if not parts["root"]:
        raise ValueError(f"split {split!r} has no frames")
    return {k: np.concatenate(v).astype(np.float32) for k, v in parts.items()}
