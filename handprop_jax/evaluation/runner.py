"""Table I of a run (paper section V-C) on the unlabelled frames of each split, one row per
:class:`~handprop_jax.evaluation.rows.Row` (:data:`~handprop_jax.evaluation.rows.ROWS`).

For every video of a split, with its labelled frames S_V = every K-th frame in source time (the stored
``frame_time``), first and last included
(``handprop_jax.data.sparse``), and every unlabelled frame u, each row gives an annotation γ̃_u:
a phase's single-frame predictor (scenario 1; or, for a predictor with a temporal input, its
recurrent prediction over the whole video from frame 0), a propagation method moving the labelled frames'
ground truth to u from the nearest labelled frame or from both neighbours
(:func:`handprop_jax.propagation.core.propagate_video`; scenario 2, and the trivial references Copy /
Interpolation, plain and crop-aware), or the mean pose (reference): one constant annotation, the mean
over the labelled frames of the **train** split of root (arithmetic mean, metres), betas (arithmetic
mean) and each of the 16 joint rotations of the pose (chordal L2 mean,
``mano_jax.chordal_mean_axis_angle``).
A video whose ``has_label`` (T,) marks only some frames as labelled (the ``hand_videos`` builder's own
videos) takes S_V from those frames (``sparse.select_labelled``) and scores only the frames u that
have a label outside S_V, the held-back labels (``sparse.label_sets``).

Each annotation γ becomes joints and vertices with ``handprop_jax.hand.hand_in_camera`` and the run's
MANO model; the ground truth is the stored ``joints3d`` and the vertices of the stored γ*_u; metrics
are ``handprop_jax.metrics`` (mm, F-score fractions), averaged over all unlabelled frames of the split.
Frames are processed one whole video at a time (features of each frame computed once per
checkpoint).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from handprop_jax import metrics
from handprop_jax.batching import batched, rows
from handprop_jax.config import load_json
from handprop_jax.data.sparse import label_sets, neighbours
from handprop_jax.evaluation import data as eval_data
from handprop_jax.evaluation import gap as gap_lib
from handprop_jax.evaluation import protocol as protocol_lib
from handprop_jax.evaluation import table as table_lib
from handprop_jax.evaluation.rows import (
    ALIGN,
    BASELINE,
    BOTH_SIDES,
    COPY,
    MEAN_POSE,
    MODEL_ROWS,
    PROPAGATION,
    ROWS,
    Row,
    by_name,
    phases_needed,
)
from handprop_jax.gamma import Gamma, broadcast
from handprop_jax.hand import default_mano, hand_mesh
from handprop_jax.model.api import BoundModel
from handprop_jax.propagation.core import Propagator, propagate_video
from handprop_jax.propagation.recrop import propagate_recrop
from handprop_jax.training import checkpoint as ckpt_lib
from mano_jax import chordal_mean_axis_angle

__all__ = ["ALIGN", "BASELINE", "BOTH_SIDES", "COPY", "MEAN_POSE", "MODEL_ROWS", "PROPAGATION", "evaluate",
           "evaluate_video", "mean_gamma", "video_predictions"]


def mean_gamma(gammas: Gamma) -> Gamma:
    """The mean annotation of a set (see the module docstring: chordal mean of each joint rotation).

    Args:
      gammas: γ (L, ...), L >= 1 (or a dict with those keys).
    Returns:
      γ of one annotation: root (3,), pose (48,), betas (10,), float32.
    """
    g = Gamma.of(gammas)
    pose = np.asarray(g.pose, np.float32)
    if pose.ndim != 2 or pose.shape[0] == 0:
        raise ValueError(f"mean_gamma: need at least one annotation, got pose shape {pose.shape}")
    mean_pose = np.asarray(chordal_mean_axis_angle(pose.reshape(-1, 16, 3)), np.float32).reshape(48)
    return Gamma(root=np.asarray(g.root, np.float64).mean(0).astype(np.float32), pose=mean_pose,
                 betas=np.asarray(g.betas, np.float64).mean(0).astype(np.float32))


def video_predictions(video: dict, stride: int, models: dict[str, BoundModel], mean: Gamma | None = None,
                      both_sides: bool = True, propagators: dict[str, Propagator] | None = None,
                      table_rows: tuple[Row, ...] = ROWS) -> dict:
    """Every Table I row's annotation for the unlabelled frames of one video.

    Args:
      video: {image uint8 (T, S, S, 3), K (T, 3, 3), root (T, 3), pose (T, 48), betas (T, 10),
        joints3d (T, 21, 3), optional frame_time (T,) source times, ...} for every frame of the video
        in frame order (all labels present).
      stride: label stride K.
      models: {phase: the checkpoint's inference functions}; rows whose phase is missing are skipped.
      mean: the mean-pose annotation (None: row skipped).
      both_sides: also the rows that blend both neighbours.
      propagators: {method: Propagator} for the propagation rows that need no checkpoint ("copy" and
        "crop" default to plain ones of the video's crop size; rows of a method missing here skipped).
      table_rows: the rows wanted.
    Returns:
      {"frames" (M,) unlabelled frame indices, "gap" (M,) |t_u - t_N(u)| in source frames, "gt" γ*_u (M, ...),
       "gt_joints" (M, 21, 3), "rows": {row name: γ (M, ...)}} — empty M when every frame is labelled.
    """
    T, S = video["image"].shape[:2]
    times = video.get("frame_time")  # source times: holes in a video shift nothing (data.sparse)
    lab, unl = label_sets(T, stride, video.get("has_label"), times)
    gt_all = Gamma.of(video).numpy()
    out = {"frames": unl, "gt": gt_all.take(unl),
           "gt_joints": np.asarray(video["joints3d"], np.float32)[unl], "rows": {}}
    nb = neighbours(T, lab, times)
    out["gap"] = nb["gap"][unl]
    if len(unl) == 0:
        return out
    K = np.asarray(video["K"], np.float32)
    propagators = {"copy": Propagator("copy", image_size=S), "crop": Propagator("crop", image_size=S),
                   **(propagators or {})}
    wanted = [r for r in table_rows if both_sides or not r.both_sides]
    features = {}  # per phase, every frame's features, computed once

    def feats(phase):
        if phase not in features:
            m = models[phase]
            features[phase] = batched(m.features, video["image"], batch_size=m.batch_size)
        return features[phase]

    done: dict = {}  # (method, phase) → VideoPropagation with both sides and nearest
    for row in wanted:
        if row.phase is not None and row.phase not in models:
            continue
        if row.kind == "predict":
            m = models[row.phase]
            out["rows"][row.name] = batched(m.regress, rows(feats(row.phase), unl), K[unl],
                                            batch_size=m.batch_size)
        elif row.kind == "recurrent":
            m = models[row.phase]
            if m.sequence is not None:
                out["rows"][row.name] = Gamma.of(m.sequence(video["image"], K)).numpy().take(unl)
        elif row.kind == "mean":
            if mean is not None:
                out["rows"][row.name] = broadcast(mean, len(unl))
        else:
            key = (row.method, row.phase)
            if row.method == "paper":
                prop = models[row.phase]
            elif row.method in propagators:
                prop = propagators[row.method]
            else:
                continue
            if key not in done:
                need_both = any(r.both_sides for r in wanted if (r.method, r.phase) == key)
                need_near = any(not r.both_sides for r in wanted if (r.method, r.phase) == key)
                done[key] = _propagate(prop, video, K, lab, gt_all.take(lab), need_both, need_near,
                                       feats(row.phase) if row.method == "paper" else None, times)
            res = done[key]
            gamma = res.gamma if row.both_sides or res.nearest is None else res.nearest
            out["rows"][row.name] = gamma.take(unl)
    return out


def _propagate(prop: Propagator, video: dict, K: np.ndarray, lab: np.ndarray, labels: Gamma, need_both: bool,
               need_near: bool, features, times):
    """One method's VideoPropagation of a video: ``propagate_video``, or for the photometric method on
    crops that do not follow the hand (a video of the user protocol, with ``recrop``) the re-cropping
    propagation (:mod:`handprop_jax.propagation.recrop`)."""
    if isinstance(prop, Propagator) and prop.method == "photometric" and video.get("recrop") is not None:
        res, _ = propagate_recrop(prop, video["crop"], video["box"], video["K_full"], lab, labels,
                                  both_sides=need_both, with_nearest=need_near, times=times,
                                  recrop=video["recrop"], images=video["image"], K=K)
        return res
    return propagate_video(prop, video["image"], K, lab, labels, both_sides=need_both, features=features,
                           with_nearest=need_near, times=times)


def score(mano, predictions: dict) -> dict[str, dict[str, np.ndarray]]:
    """Per-frame metrics of every row of ``video_predictions``' output: {row: {column: (M,)}}
    (:func:`handprop_jax.metrics.per_frame_with_rotation`)."""
    gt_joints = predictions["gt_joints"]
    gt_verts, _ = hand_mesh(mano, predictions["gt"])
    out = {}
    for name, gamma in predictions["rows"].items():
        verts, joints = hand_mesh(mano, gamma)
        out[name] = metrics.per_frame_with_rotation(joints, gt_joints, verts, gt_verts, gamma.pose,
                                                    predictions["gt"].pose)
    return out


def evaluate_video(mano, video: dict, stride: int, models: dict[str, BoundModel], mean: Gamma | None = None,
                   both_sides: bool = True, propagators: dict[str, Propagator] | None = None,
                   table_rows: tuple[Row, ...] = ROWS) -> tuple[dict, np.ndarray]:
    """Per-frame metrics of one video: ({row: {column: (M,)}}, gap (M,)) (see :func:`video_predictions`)."""
    pred = video_predictions(video, stride, models, mean, both_sides, propagators, table_rows)
    if len(pred["frames"]) == 0:
        return {}, pred["gap"]
    return score(mano, pred), pred["gap"]


def _truncate(video: dict, budget: int, stride: int) -> dict:
    """Cut a video so that it has at most ``budget`` unlabelled frames (its last frame is then
    labelled, as in a shorter video)."""
    T = video["image"].shape[0]
    unl_cum = np.cumsum(np.isin(np.arange(T), label_sets(T, stride, video.get("has_label"),
                                                         video.get("frame_time"))[1]))
    cut = int(np.searchsorted(unl_cum, budget, side="left")) + 2  # keep one more frame, labelled
    return {k: (v[:cut] if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == T else v)
            for k, v in video.items()}


def evaluate_split(config, split: str, videos: Iterable[dict], mano, models: dict[str, BoundModel], mean,
                   progress: bool = True, total: int | None = None, propagators: dict | None = None,
                   table_rows: tuple[Row, ...] = ROWS) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray]:
    """Per-frame metrics of every row over a split: ({row: {column: (N,)}}, gap (N,)).
    ``total``: unlabelled frames expected (progress bar length)."""
    stride = config.data.label_stride
    cap = config.eval.max_frames
    per_row: dict[str, list] = {}
    gaps = []
    seen = 0
    if total is not None and cap is not None:
        total = min(total, cap)
    bar = tqdm(desc=f"evaluate {split}", unit="frame", total=total, disable=not progress, file=sys.stderr)
    for video in videos:
        if cap is not None and seen >= cap:
            break
        T = video["image"].shape[0]
        n_unl = len(label_sets(T, stride, video.get("has_label"), video.get("frame_time"))[1])
        if cap is not None and seen + n_unl > cap:
            video = _truncate(video, cap - seen, stride)
        frames, gap = evaluate_video(mano, video, stride, models, mean, config.eval.both_sides, propagators,
                                     table_rows)
        for name, cols in frames.items():
            per_row.setdefault(name, []).append(cols)
        gaps.append(gap)
        seen += len(gap)
        bar.update(len(gap))
    bar.close()
    merged = {name: {c: np.concatenate([p[c] for p in parts]) for c in (*metrics.COLUMNS, metrics.ROTATION)}
              for name, parts in per_row.items()}
    return merged, (np.concatenate(gaps) if gaps else np.zeros(0, np.int64))


def table_rows(results: dict[str, tuple[dict, np.ndarray]]) -> list[dict]:
    """Table I rows from ``{split: evaluate_split(...)}``: [{"split", "model", "scenario", "frames",
    <column>: mean}] in MODEL_ROWS order per split."""
    rows = []
    for split, (per_row, _) in results.items():
        for name, scenario in MODEL_ROWS.items():
            if name not in per_row:
                continue
            n = len(per_row[name][metrics.COLUMNS[0]])
            rows.append({"split": split, "model": name, "scenario": scenario, "frames": n,
                         **metrics.summarize(per_row[name]),
                         metrics.ROTATION: float(np.median(per_row[name][metrics.ROTATION])) if n else None})
    return rows


def evaluate(workdir: str | Path, config=None, *, predictors: dict[str, BoundModel] | None = None,
             videos: Callable[[str], Iterator[dict]] | None = None, labelled_train: Gamma | None = None,
             progress: bool = True, write: bool = True, protocol: str | None = "paper") -> list[dict]:
    """Table I of a run: writes ``workdir/eval/table1.{md,csv,json}``, ``gap.{csv,png}`` and, for the
    checkpoints read from ``workdir``, ``checkpoints.json`` ({phase: the step read, total_steps,
    finished, ...}: :func:`handprop_jax.training.checkpoint.describe`); prints the Markdown table,
    returns the rows (a list of {"split", "model", "scenario", "frames", <column>}). Raises
    ``RunNotFound`` when ``workdir`` has no checkpoint of any phase the rows need.

    Args:
      workdir: run folder (checkpoints under workdir/checkpoints, config in workdir/config.json).
      config: the run's Config (default: workdir/config.json).
      predictors: {phase: BoundModel} instead of the checkpoints (tests).
      videos: split → iterator of whole-video dicts instead of the dataset (tests).
      labelled_train: γ* of the train split's labelled frames for the mean-pose row (default: read).
      protocol: "paper" (the stored crops), "user" (the scenario-2 and reference rows on the crops
        ``handprop propagate`` would cut: :mod:`handprop_jax.evaluation.protocol`; their split is
        labelled ``"<split> (user crops)"``), "both", or None (both where available: the synthetic
        data set, videos not given).
    """
    workdir = Path(workdir)
    if config is None:
        config = load_json(workdir / "config.json")
    wanted = by_name(config.eval.rows)
    protocols = protocol_lib.resolve(protocol, config, injected_videos=videos is not None)
    used = None  # {phase: the checkpoint read (training.checkpoint.describe)}, for eval/checkpoints.json
    if predictors is None:
        predictors, used, missing = {}, {}, []
        needed = phases_needed(wanted)
        for phase in needed:
            try:
                _, predictors[phase] = ckpt_lib.bound_from_run(workdir, phase, config.eval.batch_size,
                                                               config.eval.checkpoint)
            except FileNotFoundError as e:  # e.g. only some phases trained: leave those rows out
                missing.append(f"evaluate: no {phase!r} checkpoint, its rows are left out ({e})")
                continue
            used[phase] = ckpt_lib.describe(workdir, phase, config.eval.checkpoint)
        if needed and not predictors:
            raise ckpt_lib.RunNotFound(f"{workdir} has no checkpoint of {', '.join(needed)} (the phases "
                                       f"the rows need); train it first: handprop train --workdir {workdir}")
        for line in missing:
            print(line, file=sys.stderr)
    propagators = {m: Propagator.from_config(config, method=m) for m in ("photometric", "crop", "copy")}
    totals = {}
    if videos is None:
        videos = lambda split: eval_data.iter_videos(config, split)  # noqa: E731
        totals = {split: eval_data.count_unlabelled(config, split) for split in config.eval.splits}
    if labelled_train is None:
        labelled_train = eval_data.labelled_gammas(config, "train")
    mean = mean_gamma(labelled_train)
    mano = default_mano(config)
    results = {}
    for split in config.eval.splits:
        if "paper" in protocols:
            results[split] = evaluate_split(config, split, videos(split), mano, predictors, mean, progress,
                                            totals.get(split), propagators, wanted)
        if "user" in protocols and protocol_lib.user_rows(wanted):
            results[protocol_lib.user_split(split)] = evaluate_split(
                config, split, protocol_lib.user_videos(config, split, videos(split), mano), mano, predictors,
                mean, progress, totals.get(split), propagators, protocol_lib.user_rows(wanted))
    rows = table_rows(results)
    if write:
        out = workdir / "eval"
        table_lib.write(rows, out)
        gap_lib.write(results, out)
        if used is not None:
            (out / "checkpoints.json").write_text(json.dumps(used, indent=2))
        print(table_lib.markdown(rows, title=f"Table I — {config.name}, {config.data.name}, "
                                               f"K = {config.data.label_stride}"))
    return rows
