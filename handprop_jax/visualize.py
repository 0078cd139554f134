"""Visual report of a run: ``workdir/report/overlays.png`` and ``workdir/report/curves.png``.

    handprop visualize --workdir RUN_DIR [--frames 6] [--split test]

- overlays.png: a grid, one row per unlabelled frame of the chosen split (by default the frame with
  the largest gap |u − N(u)| in each of the first videos; with partial labels, ``hand_videos``, a
  held-back labelled frame), columns: the input crop, the ground-truth
  mesh, Baseline (scenario 1), Baseline + Align (scenario 1) and Propagation (both sides) (scenario 2,
  the default propagation from the ground truth of both labelled neighbours), each rendered over the
  image with the project renderer (``handprop_jax.render``); each prediction cell is titled with
  its MPJPE in mm.
- curves.png: the training curves of each phase from
  ``workdir/logs/metrics.jsonl``, every logged quantity against the step, log scale where positive.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from handprop_jax.data.crop import Box, crop_image, crop_intrinsics
from handprop_jax.data.sparse import label_sets, neighbours
from handprop_jax.errors import UserError
from handprop_jax.evaluation import rows as rows_lib
from handprop_jax.evaluation import runner
from handprop_jax.evaluation.data import iter_videos
from handprop_jax.gamma import concatenate
from handprop_jax.hand import default_mano, hand_mesh
from handprop_jax.metrics import point_error
from handprop_jax.propagation.core import Propagator
from handprop_jax.propagation.overlays import render_overlays
from handprop_jax.training.checkpoint import bound_from_run, run_config

HELP = "overlay grids and training curves for a run"

#: the Table I rows drawn as columns (handprop_jax.evaluation.rows)
COLUMN_ROWS = ("Baseline", "Baseline + Align", "Propagation (both sides)")
COLUMNS = ("Input", "Ground truth", *COLUMN_ROWS)
COLORS = {"Ground truth": (0.35, 0.85, 0.4), "Baseline": (0.9, 0.45, 0.35),
          "Baseline + Align": (0.95, 0.75, 0.3), "Propagation (both sides)": (0.35, 0.6, 0.95)}
DISPLAY = 192  # rendered cell size, pixels (crops are upsampled so the mesh is legible)


def pick_frames(videos, stride: int, count: int) -> list[tuple[dict, int]]:
    """(video, u) pairs: in each video the unlabelled frame farthest from its labelled frames, taken
    from successive videos (then the next-farthest frames again from the first videos) until
    ``count``."""
    per_video = []
    for video in videos:
        T = video["image"].shape[0]
        times = video.get("frame_time")
        lab, scored = label_sets(T, stride, video.get("has_label"), times)
        if not len(lab):
            continue
        gap = neighbours(T, lab, times)["gap"]
        order = [int(u) for u in np.argsort(-gap, kind="stable") if gap[u] > 0 and u in scored]
        if order:
            per_video.append((video, order))
        if len(per_video) >= count:
            break
    picks, rank = [], 0
    while len(picks) < count and any(rank < len(o) for _, o in per_video):
        for video, order in per_video:
            if rank < len(order) and len(picks) < count:
                picks.append((video, order[rank]))
        rank += 1
    return picks


def frame_predictions(picks, stride: int, models: dict, propagators: dict | None = None) -> dict:
    """γ of every column for the picked frames: {column: Gamma (N, ...)}, plus "K" (N,3,3) and
    "image" (N,S,S,3).

    The prediction columns are the evaluation's rows (``evaluation.runner.video_predictions``, run
    once per picked video), so the grid shows exactly what Table I scores."""
    wanted = rows_lib.by_name(COLUMN_ROWS)
    rows_of = {}  # id(video) -> video_predictions
    cells = []
    for video, u in picks:
        if id(video) not in rows_of:
            rows_of[id(video)] = runner.video_predictions(video, stride, models, propagators=propagators,
                                                          table_rows=wanted)
        pred = rows_of[id(video)]
        cells.append((pred, int(np.searchsorted(pred["frames"], u))))

    def column(get):  # one row per pick, taken from that pick's video
        return concatenate([get(p).take([i]) for p, i in cells])

    out = {"image": np.stack([np.asarray(v["image"])[u] for (v, u) in picks]),
           "K": np.stack([np.asarray(v["K"], np.float32)[u] for (v, u) in picks]),
           "Ground truth": column(lambda p: p["gt"])}
    for name in COLUMN_ROWS:
        if name in cells[0][0]["rows"]:
            out[name] = column(lambda p, name=name: p["rows"][name])
    return out


def overlay_grid(preds: dict, mano, path: str | Path, title: str = "", display: int = DISPLAY) -> None:
    """Render every column over the crops (upsampled to ``display`` pixels) and save the grid PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, K = preds["image"], preds["K"]
    N, S = images.shape[0], images.shape[1]
    box = Box((S - 1) / 2, (S - 1) / 2, float(S))
    big = np.stack([crop_image(im, box, display) for im in images])
    K_big = np.stack([crop_intrinsics(k, box, display) for k in K]).astype(np.float32)
    gt_mesh = hand_mesh(mano, preds["Ground truth"])
    gt_joints = gt_mesh[1]
    cols = [c for c in COLUMNS if c == "Input" or c in preds]
    fig, axes = plt.subplots(N, len(cols), figsize=(2.2 * len(cols), 2.3 * N), squeeze=False)
    for j, col in enumerate(cols):
        if col == "Input":
            cells, errs = big, None
        else:
            verts, joints = gt_mesh if col == "Ground truth" else hand_mesh(mano, preds[col])
            cells = render_overlays(big, verts, K_big, mano.faces, color=COLORS[col], batch_size=8)
            errs = 1000 * point_error(joints, gt_joints)
        for i in range(N):
            ax = axes[i, j]
            ax.imshow(cells[i])
            ax.set_xticks([])
            ax.set_yticks([])
            label = col if i == 0 else ""
            if errs is not None and col != "Ground truth":
                label = (label + "\n" if label else "") + f"MPJPE {errs[i]:.1f} mm"
            ax.set_title(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_metrics(path: str | Path) -> list[dict]:
    """Records of ``logs/metrics.jsonl`` (malformed lines are skipped with a count on stderr)."""
    records, bad = [], 0
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    if bad:
        print(f"visualize: skipped {bad} malformed line(s) in {path}", file=sys.stderr)
    return records


SKIP_CURVES = ("phase", "stage", "step", "images_per_s", "time", "wall_time")


def plot_curves(records: list[dict], path: str | Path) -> list[str]:
    """Per phase (key "phase", else "stage") two panels against "step": the losses and other
    unitless quantities (top, log scale where positive, else symmetric log) and the errors in mm
    (keys ending in "_mm", bottom). Throughput/time keys are left out. Returns the phases drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def phase_of(r):
        return str(r.get("phase", f"stage {r.get('stage', '?')}"))

    def is_num(v):
        return isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)

    phases = list(dict.fromkeys(phase_of(r) for r in records)) or ["(no logs)"]
    fig, axes = plt.subplots(2, len(phases), figsize=(5 * len(phases), 6.5), squeeze=False)
    for col, phase in enumerate(phases):
        rs = [r for r in records if phase_of(r) == phase and "step" in r]
        keys = [k for k in dict.fromkeys(k for r in rs for k in r)
                if k not in SKIP_CURVES and any(is_num(r.get(k)) for r in rs)]
        groups = ([k for k in keys if not k.endswith("_mm")], [k for k in keys if k.endswith("_mm")])
        for row, (group, ylabel) in enumerate(zip(groups, ("loss / value", "error (mm)"), strict=True)):
            ax = axes[row, col]
            lows = []
            for k in group:
                pts = [(r["step"], r[k]) for r in rs if is_num(r.get(k))]
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, label=k, marker="." if len(pts) < 30 else None)
                lows.append(min(y))
            if lows:
                if min(lows) > 0:
                    ax.set_yscale("log")
                else:
                    ax.set_yscale("symlog", linthresh=1e-3)
                ax.legend(fontsize=7)
            ax.set_title(phase if row == 0 else "")
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return phases


def visualize(workdir: str | Path, config=None, *, num_frames: int = 6, split: str = "test",
              display: int = DISPLAY, predictors: dict | None = None, videos=None) -> dict[str, Path]:
    """Write report/overlays.png and report/curves.png for a run; returns their paths.

    ``predictors`` ({phase: BoundModel}) and ``videos`` (an iterable of whole-video dicts)
    replace the checkpoints and the dataset (tests)."""
    workdir = Path(workdir)
    config = config or run_config(workdir)  # RunNotFound (one line, exit code 2) for a missing run
    out = workdir / "report"
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    if predictors is None:
        predictors = {}

        for m in rows_lib.phases_needed(rows_lib.by_name(COLUMN_ROWS)):
            try:
                predictors[m] = bound_from_run(workdir, m, config.eval.batch_size)[1]
            except FileNotFoundError as e:
                print(f"visualize: no {m!r} checkpoint, its columns are left out ({e})", file=sys.stderr)
    videos = iter_videos(config, split) if videos is None else videos
    picks = pick_frames(videos, config.data.label_stride, num_frames)
    if picks:
        preds = frame_predictions(picks, config.data.label_stride, predictors,
                                  {"photometric": Propagator.from_config(config, "photometric")})
        paths["overlays"] = out / "overlays.png"
        overlay_grid(preds, default_mano(config), paths["overlays"],
                     title=f"{config.name}: unlabelled {split} frames (largest gap per video), K = "
                           f"{config.data.label_stride}", display=display)
    log = workdir / "logs" / "metrics.jsonl"
    if log.is_file():
        paths["curves"] = out / "curves.png"
        plot_curves(read_metrics(log), paths["curves"])
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="run folder")
    parser.add_argument("--frames", type=int, default=6, help="rows of the overlay grid (default 6)")
    parser.add_argument("--split", default="test", help="split to draw frames from (default test)")


def run(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise UserError(f"--frames {args.frames}: the number of rows of the overlay grid must be at least 1")
    paths = visualize(args.workdir, num_frames=args.frames, split=args.split)
    for name, p in paths.items():
        print(f"{name}: {p.resolve()}")
    if "overlays" not in paths:
        print("no unlabelled frame to draw in split", args.split)
    return 0
