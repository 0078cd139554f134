"""Score propagated annotations against ground-truth annotations: Table I's metrics per frame and by
the gap to the nearest labelled frame.

    handprop score --pred OUT1 [OUT2 ...] --truth TRUTH1 [TRUTH2 ...] [--out SCORES/] [--all-frames] \\
        [--name NAME] [--config synthetic] [--set model.mano_model=MANO_RIGHT.pkl]

``--pred``: folders that ``handprop propagate --out`` wrote; ``--truth``: folders of ground truth in
the same format (``annotations.json``: ``frames_out``, one entry per frame with ``index``, ``root``
(3,) m, ``pose`` (48,) rad, ``betas`` (10,), optionally ``file``, ``labelled`` and ``joints3d``
(21, 3) m), paired in order: the i-th --pred folder is scored against the i-th --truth folder (e.g.
``video_0000/truth`` of ``handprop data synth-videos``). Each pair must hold the same number of
frames, and the same file names where both name them.

Only the **unlabelled** frames are scored by default (the frames the propagation filled in; its
labelled frames, ``labelled`` in --pred, keep their labels exactly); ``--all-frames`` scores every
frame (the labelled ones at gap 0). Meshes and joints come from each frame's root, pose and betas
through the MANO model of ``--config``/``--set`` (default: the embedded synthetic hand; pass your
MANO file with ``--set model.mano_model=...``); a ``joints3d`` stored in an annotation that is more
than 1 mm from that model's joints is refused (the annotations were made with another model).

Columns (``handprop_jax.metrics``, millimetres; F-scores fractions): F@5, F@15, MPVPE, MPVPE (P),
MPJPE, MPJPE (T), MPJPE (SD), MPJPE (P), and Rot. (°) the global rotation's error (its median over
frames in the summary). Gap = |u − N(u)| in frames to the nearest labelled frame of --pred, grouped
1, 2–3, 4–7, 8–15, ... (``handprop_jax.evaluation.gap``).

Prints the table (every scored frame, then per gap bucket); with ``--out``: ``frames.csv`` (one row
per frame of every video, scored or not), ``gap.csv``, ``summary.json`` (all, per gap bucket, per
video) and ``score.md``. Bad input (a missing folder or file, a missing key, a wrong length, NaN,
different frame counts) is one line naming the file, frame and key, exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from handprop_jax import config as config_lib
from handprop_jax import metrics
from handprop_jax.data.sparse import neighbours
from handprop_jax.errors import UserError, numbers, writable_dir
from handprop_jax.evaluation.gap import gap_bins
from handprop_jax.evaluation.table import format_value
from handprop_jax.gamma import Gamma
from handprop_jax.hand import default_mano, hand_mesh

HELP = "score propagated annotations against ground-truth annotations (Table I metrics, by gap)"
ANNOTATIONS = "annotations.json"
#: per-frame keys and their shapes
SHAPES = {"root": (3,), "pose": (48,), "betas": (10,), "joints3d": (21, 3)}
REQUIRED = ("root", "pose", "betas")
#: stored joints3d farther than this (metres) from the model's joints of the frame's γ are refused
JOINTS_TOLERANCE_M = 1e-3
#: the score's columns: Table I's and the rotation error
COLUMNS = (*metrics.COLUMNS, metrics.ROTATION)


class ScoreInputError(UserError, ValueError):
    """Bad input to ``handprop score``: the message names the file, frame and key."""


@dataclasses.dataclass(frozen=True)
class Annotations:
    """One folder's annotations. ``path``: its annotations.json; ``files`` (T,) frame file names or
    None where not given; ``labelled`` (T,) bool; ``root`` (T, 3) m, ``pose`` (T, 48) rad,
    ``betas`` (T, 10); ``joints3d`` (T, 21, 3) m or None; ``method``: the propagation's method as its
    metadata records it (propagate's ``--method``; " (nearest)" added where ``both_sides`` is false) or
    None."""

    path: Path
    files: list[str | None]
    labelled: np.ndarray
    root: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    joints3d: np.ndarray | None
    method: str | None


def _entry_array(entry: dict, key: str, where: str) -> np.ndarray:
    value = numbers(entry[key], f"{where}: '{key}'", ScoreInputError)
    if value.shape != SHAPES[key]:
        raise ScoreInputError(f"{where}: '{key}' has shape {value.shape}, expected {SHAPES[key]}")
    if not np.all(np.isfinite(value)):
        raise ScoreInputError(f"{where}: '{key}' holds NaN or inf")
    return value


def read_annotations(folder: str | Path, what: str) -> Annotations:
    """The annotations in ``folder``/annotations.json (``what``: the option it came from, for the
    messages). ScoreInputError naming the file, frame and key on anything missing or malformed."""
    folder = Path(folder)
    path = folder / ANNOTATIONS
    if not folder.is_dir():
        raise ScoreInputError(f"{what} {folder}: no such folder")
    if not path.is_file():
        raise ScoreInputError(f"{what} {folder}: no {ANNOTATIONS} (expected a folder written by handprop "
                              "propagate --out, or the truth/ folder of handprop data synth-videos)")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ScoreInputError(f"{path}: not readable JSON ({str(e).splitlines()[0]})") from None
    entries = doc.get("frames_out") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ScoreInputError(f"{path}: missing key 'frames_out' (a list with one entry per frame)")
    cols: dict[str, list] = {k: [] for k in SHAPES}
    files, labelled = [], []
    stored = all(isinstance(e, dict) and "joints3d" in e for e in entries)
    for i, entry in enumerate(entries):
        where = f"{path}: frame {i}"
        if not isinstance(entry, dict):
            raise ScoreInputError(f"{where}: expected an object with {', '.join(REQUIRED)}")
        if entry.get("index", i) != i:
            raise ScoreInputError(f"{where}: 'index' is {entry.get('index')!r}, expected {i} (one entry per "
                                  "frame, in frame order)")
        for key in (*REQUIRED, *(("joints3d",) if stored else ())):
            if key not in entry:
                raise ScoreInputError(f"{where}: missing key '{key}'")
            cols[key].append(_entry_array(entry, key, where))
        labelled.append(bool(entry.get("labelled", False)))
        files.append(str(entry["file"]) if "file" in entry else None)
    method = doc.get("method")  # as handprop propagate --method was given
    if isinstance(method, str) and doc.get("both_sides") is False:
        method += " (nearest)"
    return Annotations(path, files, np.array(labelled), np.stack(cols["root"]), np.stack(cols["pose"]),
                       np.stack(cols["betas"]), np.stack(cols["joints3d"]) if stored else None,
                       method if isinstance(method, str) else None)


def check_pair(pred: Annotations, truth: Annotations) -> None:
    """ScoreInputError when ``pred`` and ``truth`` cannot be the same video: other frame counts, or a
    frame whose file name differs (where both name it)."""
    if len(pred.root) != len(truth.root):
        raise ScoreInputError(f"{pred.path} has {len(pred.root)} frames but {truth.path} has "
                              f"{len(truth.root)} frames: not the same video (pair --pred and --truth in the "
                              "same order)")
    for i, (a, b) in enumerate(zip(pred.files, truth.files, strict=True)):
        if a is not None and b is not None and a != b:
            raise ScoreInputError(f"frame {i} is {a} in {pred.path} but {b} in {truth.path}: not the same "
                                  "video (pair --pred and --truth in the same order)")
    if not pred.labelled.any():
        raise ScoreInputError(f"{pred.path}: no frame is 'labelled': the gap to the nearest labelled frame "
                              "is undefined")


def geometry(mano, ann: Annotations) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (T, 778, 3) and joints (T, 21, 3) metres of ``ann``'s γ through ``mano``;
    ScoreInputError when stored joints3d disagree with them by more than JOINTS_TOLERANCE_M."""
    verts, joints = hand_mesh(mano, Gamma(ann.root.astype(np.float32), ann.pose.astype(np.float32),
                                          ann.betas.astype(np.float32)))
    if ann.joints3d is not None:
        off = np.linalg.norm(ann.joints3d - joints, axis=-1).max(-1)
        if off.max() > JOINTS_TOLERANCE_M:
            i = int(off.argmax())
            raise ScoreInputError(f"{ann.path}: frame {i}: 'joints3d' is {1000 * off[i]:.1f} mm from the "
                                  "MANO joints of its root/pose/betas: score with the MANO model the "
                                  "annotations were made with (--set model.mano_model=PATH, or None for "
                                  "the synthetic hand)")
    return np.asarray(verts, np.float64), np.asarray(joints, np.float64)


def score_video(mano, pred: Annotations, truth: Annotations) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-frame metrics of every frame ({column: (T,)}, :data:`COLUMNS`) and the gap (T,) to the
    nearest labelled frame of ``pred`` (0 on labelled frames)."""
    check_pair(pred, truth)
    pv, pj = geometry(mano, pred)
    tv, tj = geometry(mano, truth)
    per = metrics.per_frame_with_rotation(pj, tj, pv, tv, pred.pose, truth.pose)  # as handprop evaluate
    gap = neighbours(len(pred.root), np.nonzero(pred.labelled)[0])["gap"]
    return per, gap


def summary(per: dict[str, np.ndarray], gap: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """{"frames", <column>: mean over the frames of ``mask`` (Rot. (°): median)} (NaN when none)."""
    out: dict[str, float] = {"frames": int(mask.sum()), "gap_mean": float(gap[mask].mean()) if mask.any()
                             else float("nan")}
    out.update(metrics.summarize(per, mask))
    rot = np.asarray(per[metrics.ROTATION])[mask]
    out[metrics.ROTATION] = float(np.median(rot)) if rot.size else float("nan")
    return out


def gap_table(per: dict[str, np.ndarray], gap: np.ndarray, scored: np.ndarray) -> list[dict]:
    """Rows {"gap", "gap_lo", "gap_hi", **summary} for the labelled frames (gap 0, when scored) and each
    bucket of :func:`handprop_jax.evaluation.gap.gap_bins` holding scored frames."""
    rows = []
    bins = [(0, 0)] + gap_bins(int(gap[scored].max()) if scored.any() else 1)
    for lo, hi in bins:
        sel = scored & (gap >= lo) & (gap <= hi)
        if sel.any():
            label = "0 (labelled)" if hi == 0 else str(lo) if lo == hi else f"{lo}–{hi}"
            rows.append({"gap": label, "gap_lo": lo, "gap_hi": hi, **summary(per, gap, sel)})
    return rows


SHOWN = ("frames", "MPJPE", "MPVPE", "MPJPE (P)", "MPVPE (P)", "MPJPE (T)", "MPJPE (SD)", "F@5", "F@15",
         metrics.ROTATION)


def markdown(title: str, rows: list[dict]) -> str:
    """A Markdown table of summary rows (first column ``gap``)."""
    lines = [f"**{title}**", "", "| gap | " + " | ".join(SHOWN) + " |", "|---|" + "---:|" * len(SHOWN)]
    for r in rows:
        cells = [str(r["frames"])] + [format_value(c, r[c]) for c in SHOWN[1:]]
        lines.append(f"| {r['gap']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def score(pred_dirs: list[str | Path], truth_dirs: list[str | Path], mano, all_frames: bool = False,
          progress: bool = True) -> dict:
    """Score every --pred folder against its --truth folder. Returns {"videos": [names], "frames":
    per-frame rows, "overall": summary, "by_gap": gap rows, "by_video": {name: summary}, "scored":
    "all frames"|"unlabelled frames", "method"}; every input is read and checked before any MANO work."""
    if len(pred_dirs) != len(truth_dirs):
        raise ScoreInputError(f"{len(pred_dirs)} --pred folder(s) but {len(truth_dirs)} --truth folder(s): "
                              "give one truth folder per propagated folder, in the same order")
    pairs = [(read_annotations(p, "--pred"), read_annotations(t, "--truth"))
             for p, t in zip(pred_dirs, truth_dirs, strict=True)]
    for pred, truth in pairs:
        check_pair(pred, truth)
    names = _names(pred_dirs)
    rows, pers, gaps, scored_all, by_video = [], [], [], [], {}
    for name, (pred, truth) in tqdm(list(zip(names, pairs, strict=True)), desc="score", unit="video",
                                    disable=not progress or len(pairs) < 2, leave=False, file=sys.stderr):
        per, gap = score_video(mano, pred, truth)
        scored = np.ones(len(gap), bool) if all_frames else ~pred.labelled
        by_video[name] = summary(per, gap, scored)
        for i in range(len(gap)):
            rows.append({"video": name, "index": i, "file": pred.files[i] or "",
                         "labelled": bool(pred.labelled[i]), "scored": bool(scored[i]), "gap": int(gap[i]),
                         **{c: float(per[c][i]) for c in COLUMNS}})
        pers.append(per)
        gaps.append(gap)
        scored_all.append(scored)
    per = {c: np.concatenate([p[c] for p in pers]) for c in COLUMNS}
    gap, scored = np.concatenate(gaps), np.concatenate(scored_all)
    methods = {p.method for p, _ in pairs}
    return {"videos": names, "frames": rows, "overall": {"gap": "all", **summary(per, gap, scored)},
            "by_gap": gap_table(per, gap, scored), "by_video": by_video,
            "scored": "all frames" if all_frames else "unlabelled frames",
            "method": methods.pop() if len(methods) == 1 else None}


def _names(folders: list[str | Path]) -> list[str]:
    """A name per folder: its last path part, made unique with the parent's where needed."""
    paths = [Path(f).resolve() for f in folders]
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.name}" for p in paths]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def write(result: dict, out: str | Path, text: str) -> None:
    """frames.csv, gap.csv, summary.json and score.md into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "frames.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(result["frames"][0]))
        w.writeheader()
        w.writerows(result["frames"])
    with (out / "gap.csv").open("w", newline="") as f:
        rows = [result["overall"], *result["by_gap"]]
        w = csv.DictWriter(f, fieldnames=["gap", "gap_lo", "gap_hi", "frames", "gap_mean", *COLUMNS],
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    doc = {k: v for k, v in result.items() if k != "frames"}
    (out / "summary.json").write_text(json.dumps(_no_nan(doc), indent=1, allow_nan=False))
    (out / "score.md").write_text(text)


def _no_nan(value):
    """``value`` (nested dicts/lists) with NaN floats as None (JSON has no NaN): a summary of no frames."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and np.isnan(value) else value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", nargs="+", required=True, metavar="DIR",
                        help="folders written by handprop propagate --out (annotations.json)")
    parser.add_argument("--truth", nargs="+", required=True, metavar="DIR",
                        help="ground-truth folders in the same format, one per --pred folder, same order")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="also write frames.csv, gap.csv, summary.json, score.md there")
    parser.add_argument("--all-frames", action="store_true",
                        help="score the labelled frames too (default: only the unlabelled frames)")
    parser.add_argument("--name", default=None, help="what to call the scored annotations in the table "
                                                      "(default: their method)")
    parser.add_argument("--config", default=None, help="config whose MANO model builds the meshes (default: "
                                                       "synthetic, the embedded synthetic hand)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="config override, e.g. model.mano_model=mano/MANO_RIGHT.pkl")


def run(args: argparse.Namespace) -> int:
    """Errors (ScoreInputError, a bad --set or --out) are one line from ``handprop_jax.cli.main``."""
    if args.out is not None:
        writable_dir(args.out, "--out")
    try:
        config = config_lib.load(args.config or "synthetic", args.overrides)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    result = score(args.pred, args.truth, default_mano(config), args.all_frames)
    name = args.name or result["method"] or "annotations"
    n_videos = len(result["videos"])
    title = (f"{name}: {result['scored']} of {n_videos} video(s) against the truth — mm (F: fractions; "
             f"Rot.: median degrees)")
    text = markdown(title, [result["overall"], *result["by_gap"]])
    if result["overall"]["frames"] == 0:
        text += "\n(no frame to score: every frame is labelled; --all-frames scores them)\n"
    print(text)
    if args.out is not None:
        write({**result, "name": name}, args.out, text)
        print(f"wrote {Path(args.out).resolve()}/{{frames.csv,gap.csv,summary.json,score.md}}")
    return 0
