"""Sparse labels within a video and the frame-pair sampling rules of the paper (section IV).

All functions work on the frames *of one video as stored* (0-based positions ``0 <= f < length``,
in time order) and are vectorised numpy; the training batches (``handprop_jax.data.train_batches``) maps them
to record indices. Every rule is defined on **source time**: ``times`` (length,) are the frames'
numbers in the source video (the stored ``frame_time``; strictly increasing), so frames missing from
the stored video (skipped as bad input, or never annotated) leave a hole in time instead of shifting
the frames after them. ``times=None`` means ``arange(length)`` (a video without holes).

- Labelled frames S_V: the frames at source times t_0, t_0 + K, t_0 + 2K, ... (t_0 = the first
  stored frame), the first and the last stored frame included. A grid time whose frame is missing
  gets no label (no other frame is promoted): its neighbours are propagated from the grid frames on
  either side. When only some frames carry a label (``has_label``, the ``hand_videos`` builder: a
  user's own sparse labels), :func:`select_labelled` generalises the rule: keep the first labelled
  frame, then each labelled frame at least K source frames after the last kept one, and the last
  labelled frame (with every frame labelled this is the every-K-th rule above; with K = 1 it keeps
  every label). The labelled frames it does not keep are *held back*: never in a training batch with
  their label, evaluated.
- Nearest labelled frame N(u) = argmin_{s in S_V} |t_s - t_u| (ties go to the earlier frame).
- Stage 2 partner of a labelled s: uniformly one of the n nearest labelled frames in time (s itself
  included).
- Stage 3 partner of a labelled s: with probability ``unlabelled_fraction`` an unlabelled frame u with
  |t_u - t_s| < max_gap (uniform), otherwise as in stage 2.
- Evaluation (scenario 2): every unlabelled u with s = N(u) and gap = |t_u - t_s|.
"""

from __future__ import annotations

import numpy as np


def _check(length: int, stride: int) -> None:
    if length < 1:
        raise ValueError(f"video length must be >= 1, got {length}")
    if stride < 1:
        raise ValueError(f"label stride K must be >= 1, got {stride}")


def frame_times(length: int, times: np.ndarray | None = None) -> np.ndarray:
    """(length,) int64 source times of a video's frames (``arange(length)`` when ``times`` is None);
    raises ValueError unless they are strictly increasing."""
    if times is None:
        return np.arange(length, dtype=np.int64)
    t = np.asarray(times, np.int64)
    if t.shape != (length,):
        raise ValueError(f"times: expected shape ({length},), got {t.shape}")
    if length > 1 and np.any(np.diff(t) <= 0):
        raise ValueError(f"times must be strictly increasing, got {t[:8].tolist()}...")
    return t


def labelled_frames(length: int, stride: int, times: np.ndarray | None = None) -> np.ndarray:
    """Labelled frames of a video: those at source times t_0 + jK, plus the last frame.
    Returns (L,) int64 positions, sorted."""
    _check(length, stride)
    t = frame_times(length, times)
    idx = np.nonzero((t - t[0]) % stride == 0)[0]
    if idx[-1] != length - 1:
        idx = np.append(idx, length - 1)
    return idx.astype(np.int64)


def select_labelled(has_label: np.ndarray, stride: int, times: np.ndarray | None = None) -> np.ndarray:
    """S_V of a video whose frames ``has_label`` (T,) bool carry a label: the first labelled frame,
    then each labelled frame >= ``stride`` source frames (``times``) after the last kept one, and the
    last labelled frame. Returns (L,) int64 sorted positions (empty when no frame has a label). Equals
    ``labelled_frames(T, stride, times)`` when every frame has a label."""
    has_label = np.asarray(has_label, bool)
    _check(max(len(has_label), 1), stride)
    if len(has_label) and has_label.all():
        return labelled_frames(len(has_label), stride, times)
    t = frame_times(len(has_label), times)
    cand = np.nonzero(has_label)[0].astype(np.int64)
    if len(cand) == 0 or stride == 1:
        return cand
    kept = [int(cand[0])]
    for f in cand[1:]:
        if t[f] - t[kept[-1]] >= stride:
            kept.append(int(f))
    if kept[-1] != cand[-1]:
        kept.append(int(cand[-1]))
    return np.asarray(kept, np.int64)


def label_sets(length: int, stride: int, has_label: np.ndarray | None = None,
               times: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(S_V (L,), evaluated (M,)) of a video: the labelled frames and the frames scored by the
    evaluation (frames with a label outside S_V). ``has_label=None``: every frame has one (the data
    sets with dense ground truth), so the evaluated frames are all the unlabelled ones. ``times``:
    the frames' source times (None: 0..length-1)."""
    if has_label is None:
        lab = labelled_frames(length, stride, times)
        return lab, np.setdiff1d(np.arange(length), lab)
    has_label = np.asarray(has_label, bool)
    if has_label.shape != (length,):
        raise ValueError(f"has_label has shape {has_label.shape}, expected ({length},)")
    lab = select_labelled(has_label, stride, times)
    return lab, np.setdiff1d(np.nonzero(has_label)[0], lab)


def labelled_mask(length: int, stride: int, times: np.ndarray | None = None) -> np.ndarray:
    """(length,) bool, True on labelled frames."""
    mask = np.zeros(length, bool)
    mask[labelled_frames(length, stride, times)] = True
    return mask


def neighbours(length: int, labelled: np.ndarray, times: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Labelled neighbours of every frame of a video.

    Args:
      length: number of frames T.
      labelled: (L,) sorted, unique labelled positions in [0, T), L >= 1.
      times: (T,) source times (None: 0..T-1).
    Returns:
      dict of (T,) int64 arrays: ``left`` (largest labelled <= u, -1 if none), ``right`` (smallest
      labelled >= u, -1 if none), ``nearest`` (N(u), nearest in time, ties to the earlier frame),
      ``gap`` |t_u - t_N(u)|, and ``weight`` (T,) float64: the both-sides weight on ``right``
      ((t_u - t_l) / (t_r - t_l); 0 when only the left exists or u is labelled, 1 when only the right
      exists).
    """
    labelled = np.asarray(labelled, np.int64)
    t = frame_times(length, times)
    u = np.arange(length)
    pos_r = np.searchsorted(labelled, u, side="left")
    pos_l = np.searchsorted(labelled, u, side="right") - 1
    right = np.where(pos_r < len(labelled), labelled[np.minimum(pos_r, len(labelled) - 1)], -1)
    left = np.where(pos_l >= 0, labelled[np.maximum(pos_l, 0)], -1)
    dl = np.where(left >= 0, t - t[np.maximum(left, 0)], np.iinfo(np.int64).max)
    dr = np.where(right >= 0, t[np.maximum(right, 0)] - t, np.iinfo(np.int64).max)
    nearest = np.where(dl <= dr, left, right)
    both = (left >= 0) & (right >= 0) & (right > left)
    span = np.where(both, t[np.maximum(right, 0)] - t[np.maximum(left, 0)], 1)
    weight = np.where(both, (t - t[np.maximum(left, 0)]) / span, np.where(left >= 0, 0.0, 1.0))
    return {"left": left, "right": right, "nearest": nearest, "gap": np.abs(t - t[nearest]),
            "weight": weight}


def nearest_labelled(length: int, stride: int, times: np.ndarray | None = None) -> np.ndarray:
    """N(u) for every frame u: (length,) int64 positions (N(s) = s for labelled s; ties -> earlier)."""
    return neighbours(length, labelled_frames(length, stride, times), times)["nearest"]


def _labelled(length: int, stride: int, labelled: np.ndarray | None, t: np.ndarray) -> np.ndarray:
    return labelled_frames(length, stride, t) if labelled is None else np.asarray(labelled, np.int64)


def n_nearest_labelled(length: int, stride: int, n: int, rows: np.ndarray | None = None,
                       labelled: np.ndarray | None = None, times: np.ndarray | None = None) -> np.ndarray:
    """For each labelled frame (in ``labelled_frames`` order; only ``rows`` of that order if given)
    its ``n`` nearest labelled frames in time, itself first, then by distance (ties -> earlier).

    ``labelled``: S_V (sorted positions) when it is not every ``stride``-th frame (here and in
    the samplers below; e.g. from :func:`select_labelled`); ``times``: the frames' source times.

    Returns (L or len(rows), min(n, L)) int64 positions. O(rows * n): the n nearest of the
    labelled frame of rank r have ranks in [r - n + 1, r + n - 1]."""
    t = frame_times(length, times)
    lab = _labelled(length, stride, labelled, t)
    n = min(n, len(lab))
    rows = np.arange(len(lab)) if rows is None else np.asarray(rows, np.int64)
    cand = rows[:, None] + np.arange(-(n - 1), n)[None, :]  # (R, 2n - 1) candidate ranks
    valid = (cand >= 0) & (cand < len(lab))
    frames = lab[np.clip(cand, 0, len(lab) - 1)]
    dist = np.where(valid, np.abs(t[frames] - t[lab[rows]][:, None]), np.iinfo(np.int64).max)
    order = np.lexsort((frames, dist), axis=1)[:, :n]  # by distance, then the earlier frame
    return np.take_along_axis(frames, order, axis=1)


def unlabelled_window(frame: int, length: int, stride: int, max_gap: int,
                      labelled: np.ndarray | None = None, times: np.ndarray | None = None) -> np.ndarray:
    """Unlabelled frames u of a video with |t_u - t_frame| < max_gap. Returns (M,) int64 positions
    (may be empty)."""
    t = frame_times(length, times)
    lo = int(np.searchsorted(t, t[frame] - max_gap, side="right"))
    hi = int(np.searchsorted(t, t[frame] + max_gap, side="left"))
    cand = np.arange(lo, hi)
    return cand[~np.isin(cand, _labelled(length, stride, labelled, t))]


def sample_stage3_partner(rng: np.random.Generator, frame: int, length: int, stride: int, max_gap: int,
                          nearest: int, unlabelled_fraction: float, labelled: np.ndarray | None = None,
                          times: np.ndarray | None = None
                          ) -> tuple[int, bool]:
    """Partner u of the labelled frame ``frame`` for stage 3. Returns (u, u_is_labelled).

    Falls back to a labelled partner when the window holds no unlabelled frame (e.g. K = 1)."""
    if rng.random() < unlabelled_fraction:
        cand = unlabelled_window(frame, length, stride, max_gap, labelled, times)
        if len(cand):
            return int(cand[rng.integers(len(cand))]), False
    return sample_labelled_partner(rng, frame, length, stride, nearest, labelled, times), True


def sample_labelled_partner(rng: np.random.Generator, frame: int, length: int, stride: int,
                            nearest: int, labelled: np.ndarray | None = None,
                            times: np.ndarray | None = None) -> int:
    """Stage 2: uniformly one of the ``nearest`` nearest labelled frames of the labelled ``frame``."""
    t = frame_times(length, times)
    lab = _labelled(length, stride, labelled, t)
    row = int(np.searchsorted(lab, frame))
    if row >= len(lab) or lab[row] != frame:
        raise ValueError(f"frame {frame} is not labelled (length {length}, K {stride})")
    choices = n_nearest_labelled(length, stride, nearest, rows=np.array([row]), labelled=lab, times=t)[0]
    return int(choices[rng.integers(len(choices))])


def eval_pairs(length: int, stride: int, times: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scenario 2 pairs of a video: every unlabelled u with s = N(u).

    Returns (u (M,), s (M,), gap (M,) = |t_u - t_s|) int64, u ascending."""
    t = frame_times(length, times)
    mask = labelled_mask(length, stride, t)
    u = np.nonzero(~mask)[0]
    s = nearest_labelled(length, stride, t)[u]
    return u, s, np.abs(t[u] - t[s])
