"""Propagate sparse 3D hand annotations to every frame of a video.

    handprop propagate --frames FRAMES_DIR_OR_VIDEO --labels LABELS.json --intrinsics fx,fy,cx,cy \\
        --out OUT/ [--method photometric|interpolate|crop|copy|paper] [--checkpoint RUN_DIR] \\
        [--boxes BOXES.json | --crop CX CY SIDE] [--nearest-only] [--overlays] [--labels-by name] \\
        [--overwrite] [--force]

Every unlabelled frame u gets an annotation from the labelled frames around it. By default the two
labelled frames l < u < r are both propagated to u and blended by temporal distance, weight
(u - l) / (r - l) on r (root and betas linearly, every joint rotation of the 48-d pose by spherical
linear interpolation on SO(3)); ``--nearest-only`` uses the nearest labelled frame s = N(u) alone
(ties go to the earlier frame). Frames before the first / after the last label use their only
neighbour. How a label moves to u (``--method``):

- ``photometric`` (default, the best on our benchmark, README): the crop-aware transfer below,
  refined by analysis-by-synthesis so that the hand mesh, textured from the labelled frame(s),
  explains frame u's pixels (``handprop_jax.propagation.refine``). Needs no trained network; the
  ``propagation`` config section holds its settings (``--set propagation.steps=120``).
- ``interpolate``: crop-aware interpolation (the same as ``crop`` with both sides) — the strongest
  trivial reference.
- ``crop``: the label carried over with its root kept at the same place in the crop (the root's
  pixel position and crop-relative depth move with the crop's intrinsics); no image evidence.
- ``copy``: the label copied unchanged (both sides: slerp interpolation of the two labels).
- ``paper``: the paper's Pose Alignment network, ``γ̃_u = φ(γ*_s, z_u - z_s) + γ*_s``, of a trained
  run (``--checkpoint``, the ``align`` checkpoint; ``--model`` picks another).

The crop size, MANO model and settings come from the run's config with ``--checkpoint``, otherwise
from ``--config`` (default: ``synthetic``) with ``--set`` overrides (e.g.
``--set model.mano_model=MANO_RIGHT.pkl --set data.image_size=128``).

(The propagation itself is :func:`handprop_jax.propagation.core.propagate_video`; the readers of the
inputs below are :mod:`handprop_jax.propagation.inputs`.)

Frames (``--frames``): a folder of images (png, jpg, jpeg, bmp, gif, tif, tiff, webp; sorted by name,
numbers compared numerically, so frame_2 < frame_10), or one multi-frame file that Pillow reads
(animated GIF / PNG / WebP, multi-page TIFF); other video formats (mp4, avi, ...) are read only when
the optional package ``imageio`` (with its ffmpeg plug-in) is installed. Frame index i is the i-th
frame in that order (0-based). All frames must have the same size.

Crops: the network was trained on square crops centred on the hand (the run's ``data.image_size``),
so every frame is cropped around the hand, as the training data was, resized to that size, with K
mapped to the crop exactly (``handprop_jax.data.crop``). Each frame's box follows the rule of the
``hand_videos`` builder (:mod:`handprop_jax.data.boxes`): the box given for it in ``--boxes FILE``
(``{"boxes": {"<frame>": [cx, cy, side]}}``, any subset of frames; or a (T, 3) .npy/.txt), else on a
labelled frame the square around its label's projected MANO joints (side = ``--crop-scale`` x their
extent, 1.5 as the builders), else linear interpolation between the nearest frames with a box.
``--crop CX CY SIDE`` uses one fixed box for every frame instead. Boxes are pixels of the original
frames. Outputs are in the original frame: 3D in the camera frame (metres, OpenCV axes, unaffected by
cropping) and 2D joints in the original frame's pixels.

Labels (``--labels``), frame index → γ = (root (3,) metres: the wrist in the camera frame; pose
(48,) full MANO axis-angle, radians, global rotation in the camera frame first, hands_mean included;
betas (10,)), see docs/design.md. JSON::

    {"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],          # optional (else --intrinsics)
     "labels": {"0":  {"root": [x, y, z], "pose": [48 numbers], "betas": [10 numbers]},
                "64": {...}}}

(a top-level ``{"0": {...}, ...}`` without "labels" is accepted too) or NPZ with arrays ``frames``
(L,) int, ``root`` (L, 3), ``pose`` (L, 48), ``betas`` (L, 10) and optionally ``K``. With
``--labels-by name`` the keys (NPZ: ``frames`` as strings) are frame file names instead, with or
without the suffix ("frame_0016.png" or "frame_0016"), so that a frame missing from the folder
cannot shift the labels onto the next file; keyed by index, labelled frames whose file name carries
another number than their index are named in a warning. Refused (exit code 2, one line naming the
file, frame and key): a frame labelled twice, a wrong shape, NaN/inf, booleans or strings for
numbers, a root with z <= 0 or outside 0.05..20 m (``--force``: used with a warning); warned about:
a pose component over 2π (degrees?). Intrinsics need focal lengths within 0.02..100 x the frame size
and the principal point within 20 frame sizes of the frame's centre; a box (``--crop`` or a box
file, one rule) must overlap the frames and be at most 4 x their size (docs/propagate.md, "Input
limits").

Intrinsics (``--intrinsics``): ``fx,fy,cx,cy`` in pixels of the original frames, or a .json /
.npy / .txt file holding a 3x3 matrix (JSON: a 3x3 list or {"K": ...} or {"fx","fy","cx","cy"});
.json/.npy (and the labels' ``K``) may also hold one matrix per frame, (T, 3, 3), e.g. for frames
that are already per-frame hand crops.

Labels of a left hand (``"side": "left"`` in the labels file) are refused: the networks are trained on
right hands (mirror the video and its labels first).

Outputs in OUT/: ``annotations.json`` (run metadata, with ``checkpoint_used``: the phase, step and
total steps of the checkpoint ``--method paper`` read, and whether its phase had finished; then one
entry per frame: index, file, labelled, sources, weights, K, box, box_source, root, pose, betas,
joints3d, joints2d) and ``annotations.npz`` (the same as arrays with a leading frame axis:
frame_index (T,), labelled (T,), source (T, 2) with -1 for none, weight (T, 2), root (T, 3), pose
(T, 48), betas (T, 10), joints3d (T, 21, 3), joints2d (T, 21, 2), K (T, 3, 3), box (T, 3) cx, cy,
side); with ``--overlays`` also ``overlays/<index>.png``: the propagated mesh rendered over each crop.
OUT must be absent or empty (``--overwrite`` replaces an earlier run's outputs there) and writable,
checked before the model runs; the outputs are written to a folder inside OUT and moved into place
when all are written (a failure or Ctrl-C leaves OUT as it was), never with NaN or inf.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from handprop_jax import config as config_lib
from handprop_jax.data.boxes import CROP_SCALE
from handprop_jax.hand import hand_mesh
from handprop_jax.model.api import BoundModel
from handprop_jax.propagation.core import Propagator, propagate_video
from handprop_jax.propagation.inputs import (
    PropagationInputError,
    check_intrinsics,
    check_labels,
    frame_size,
    label_side,
    list_frames,
    load_frames,
    load_labels,
    parse_intrinsics,
)
from handprop_jax.training.checkpoint import bound_from_run

HELP = "propagate sparse labels to every frame of a video"
CLI_METHODS = ("photometric", "interpolate", "crop", "copy", "paper")


#: what propagate writes in OUT/ (replaced as a whole by --overwrite)
OUTPUTS = ("annotations.json", "annotations.npz", "overlays")


def check_out(out: str | Path, overwrite: bool = False, say=None) -> Path:
    """``--out``, checked before any work: a folder that can be created or written (else
    ``UserError``: a file, under a file, not writable) and, unless ``overwrite``, empty or absent (a
    folder holding anything is refused: results are never mixed with older ones). A replacement of
    the results there that was cut short (a killed run) is first finished or undone, and said so
    (``say``, default stderr; :func:`handprop_jax.propagation.swap.recover`)."""
    import sys

    from handprop_jax.errors import UserError, writable_dir
    from handprop_jax.propagation import swap

    out = writable_dir(out, "--out")
    try:
        swap.recover(out, OUTPUTS, say or (lambda line: print(f"propagate: {line}", file=sys.stderr)))
    except FileExistsError as e:
        raise UserError(f"--out {e}") from None
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not overwrite:
        raise UserError(f"--out {out}: the folder is not empty ({', '.join(held[:3])}"
                        f"{', ...' if len(held) > 3 else ''}); pass --overwrite to replace "
                        f"{'/'.join(OUTPUTS)} there, or choose another folder")
    return out


def propagate_files(checkpoint: str | Path, frames: str | Path, labels: str | Path, out: str | Path,
                    intrinsics: str | np.ndarray | None = None, both_sides: bool = True,
                    overlays: bool = False, model: str = "align", crop: Sequence[float] | None = None,
                    bound: tuple[Any, BoundModel] | None = None, boxes: str | Path | None = None,
                    crop_scale: float = CROP_SCALE, method: str = "photometric",
                    config: Any = None, overwrite: bool = False, labels_by: str = "index",
                    force: bool = False) -> dict[str, np.ndarray]:
    """Everything ``handprop propagate`` does; returns the arrays written to annotations.npz.

    ``method``: one of :data:`CLI_METHODS` (module docstring). ``checkpoint``: a run folder (needed by
    ``paper``; for the other methods it only supplies the config) or None. ``config``: the Config used
    without a checkpoint (default: ``synthetic``). ``bound`` = (config, BoundModel) replaces loading
    ``checkpoint`` (tests). ``overwrite``: replace the outputs of an earlier run in ``out`` (else a
    non-empty ``out`` is refused). ``labels_by``: "index" (label keys are frame indices) or "name"
    (frame file names). ``force``: labels at an implausible depth are warned about instead of refused.
    Every check of the inputs and of ``out`` comes before the model runs; the outputs are written
    to a folder inside ``out`` and swapped in at the end (:mod:`handprop_jax.propagation.swap`), so
    a failure, Ctrl-C or a kill leaves ``out`` with either the old results or the new ones, complete.
    Ctrl-C is noticed even when a JAX callback swallows its KeyboardInterrupt
    (:class:`handprop_jax.errors.Interrupts`): nothing is written then."""
    from handprop_jax.errors import watch_interrupts

    with watch_interrupts() as interrupts:
        return _propagate_files(checkpoint, frames, labels, out, intrinsics, both_sides, overlays, model,
                                crop, bound, boxes, crop_scale, method, config, overwrite, labels_by,
                                force, interrupts)


def _propagate_files(checkpoint, frames, labels, out, intrinsics, both_sides, overlays, model, crop, bound,
                     boxes, crop_scale, method, config, overwrite, labels_by, force, interrupts
                     ) -> dict[str, np.ndarray]:
    from handprop_jax.camera import project
    from handprop_jax.data.boxes import BoxError, check_box, label_joints, read_boxes, video_boxes
    from handprop_jax.data.crop import Box, crop_intrinsics
    from handprop_jax.errors import UserError
    from handprop_jax.hand import default_mano
    from handprop_jax.propagation import swap

    if crop is not None and boxes is not None:
        raise PropagationInputError("--crop (one box for every frame) and --boxes exclude each other")
    if not crop_scale > 0:
        raise PropagationInputError(f"--crop-scale: must be positive, got {crop_scale}")
    if labels_by not in ("index", "name"):
        raise PropagationInputError(f"--labels-by {labels_by!r}: expected index or name")
    # cheap checks first: bad labels, intrinsics or --out fail before a checkpoint is loaded or frames decoded
    names = list_frames(frames)
    lab, gamma_star, K_labels = load_labels(labels, len(names), names if labels_by == "name" else None)
    if label_side(labels) != "right":
        raise PropagationInputError(f"{labels}: labels of a left hand ('side': 'left'); the networks are "
                                    "trained on right hands: mirror the video and its labels first")
    check_labels(labels, lab, gamma_star, names if Path(frames).is_dir() else None, labels_by == "name",
                 force=force)
    if intrinsics is None and K_labels is None:
        raise PropagationInputError("missing intrinsics: pass --intrinsics fx,fy,cx,cy (or a file), or put "
                                    "'K' in the labels file")
    size = frame_size(frames)
    height, width = size
    where = "--intrinsics" if intrinsics is not None else f"{labels}: 'K'"
    K = (parse_intrinsics(intrinsics, size) if isinstance(intrinsics, str)
         else intrinsics if intrinsics is not None else K_labels)
    K = np.broadcast_to(check_intrinsics(K, where, len(names), size), (len(names), 3, 3))
    try:  # one rule for both: handprop_jax.data.boxes.check_box
        box = check_box(list(crop), "--crop " + " ".join(f"{float(v):g}" for v in crop), size) \
            if crop is not None else None
        file_boxes = read_boxes(boxes, len(names), size) if boxes is not None else None
    except BoxError as e:
        raise PropagationInputError(f"--boxes {e}" if crop is None else str(e)) from e
    if method not in CLI_METHODS:
        raise PropagationInputError(f"--method {method!r}: expected one of {CLI_METHODS}")
    out = check_out(out, overwrite)
    if method == "interpolate":
        method, both_sides = "crop", True
    net, used = None, None
    if bound is not None:
        config, net = bound
    elif checkpoint is not None:
        if not Path(checkpoint).is_dir():
            raise PropagationInputError(f"--checkpoint {checkpoint}: no such run folder")
        from handprop_jax.training.checkpoint import describe, run_config

        if method == "paper":
            config, net = bound_from_run(checkpoint, model)  # warns when the phase is unfinished
            used = describe(checkpoint, model)
        else:
            config = run_config(checkpoint)
    elif method == "paper":
        raise PropagationInputError("--method paper needs --checkpoint RUN_DIR (a trained run)")
    elif config is None:
        config = config_lib.load("synthetic")
    S = config.data.image_size
    mano = default_mano(config)
    T = len(names)
    if box is not None:
        frame_boxes = np.tile([box.cx, box.cy, box.side], (T, 1))
        box_source = np.full(T, "fixed")
    else:  # the hand_videos builder's rule (handprop_jax.data.boxes)
        try:
            frame_boxes, box_source = video_boxes(T, height, width, K, lab, label_joints(mano, gamma_star),
                                                  file_boxes, crop_scale)
        except BoxError as e:
            raise PropagationInputError(f"{frames}: {e}") from e
    names, crops, _, _ = load_frames(frames, S, boxes=frame_boxes)
    K_crop = np.stack([crop_intrinsics(k, Box(*b), S) for k, b in zip(K, frame_boxes, strict=True)]
                      ).astype(np.float32)

    propagator = Propagator.from_config(config, method, model=net)
    result = propagate_video(propagator, crops, K_crop, lab, gamma_star, both_sides=both_sides)
    interrupts.check()  # a Ctrl-C whose KeyboardInterrupt a JAX callback swallowed
    verts, joints = hand_mesh(mano, result.gamma)
    joints2d = np.asarray(project(jnp.asarray(joints), jnp.asarray(K, jnp.float32)))
    arrays = {
        "frame_index": np.arange(T), "labelled": result.labelled, "source": result.source,
        "weight": result.weight, **result.gamma.as_dict(), "joints3d": joints.astype(np.float32),
        "joints2d": joints2d.astype(np.float32), "K": K.astype(np.float32),
        "box": np.asarray(frame_boxes, np.float32),
    }
    finite = np.all([np.isfinite(arrays[k]).reshape(T, -1).all(-1)
                     for k in ("root", "pose", "betas", "joints3d", "joints2d")], axis=0)
    if not finite.all():
        bad = np.nonzero(~finite)[0]
        raise UserError(f"the propagation (method {method}) gave NaN or inf for {len(bad)} frame(s) (first: "
                        f"{names[bad[0]]}, index {bad[0]}); nothing was written to {out}")
    entries = []
    for i in range(T):
        valid = arrays["source"][i] >= 0
        entries.append({
            "index": i, "file": names[i], "labelled": bool(arrays["labelled"][i]),
            "sources": arrays["source"][i][valid].tolist(), "K": arrays["K"][i].tolist(),
            "box": [float(v) for v in frame_boxes[i]], "box_source": str(box_source[i]),
            "weights": [round(float(w), 6) for w in arrays["weight"][i][valid]],
            **{k: np.round(arrays[k][i].astype(np.float64), 7).tolist()
               for k in ("root", "pose", "betas", "joints3d", "joints2d")},
        })
    meta = {"checkpoint": None if checkpoint is None else str(checkpoint), "method": method,
            "model": model if method == "paper" else None, "checkpoint_used": used,
            "frames": str(frames), "labels": str(labels), "labels_by": labels_by, "both_sides": both_sides,
            "boxes": ({"fixed": dataclasses.asdict(box)} if box is not None else
                      {"file": str(boxes) if boxes is not None else None, "crop_scale": crop_scale}),
            "image_size": S, "num_frames": T, "num_labelled": int(len(lab)),
            "units": {"root": "m", "joints3d": "m (camera frame, OpenCV)", "pose": "rad, axis-angle",
                      "joints2d": "px of the original frames"}}
    doc = json.dumps({**meta, "frames_out": entries}, allow_nan=False)  # never NaN/Infinity (not JSON)

    def write(folder: Path) -> None:
        np.savez(folder / "annotations.npz", **arrays)
        (folder / "annotations.json").write_text(doc)
        if overlays:
            from handprop_jax.propagation.overlays import write_overlays

            write_overlays(folder / "overlays", crops, verts, K_crop, mano.faces, names)
        interrupts.check()

    interrupts.check()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        swap.replace_results(out, OUTPUTS, write, interrupts)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
    return arrays


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="photometric", choices=CLI_METHODS,
                        help="how labels move to the other frames (default: photometric; see above)")
    parser.add_argument("--checkpoint", default=None,
                        help="run folder (workdir) of a trained run: needed by --method paper; for the "
                             "other methods it supplies the config")
    parser.add_argument("--model", default="align", choices=("align", "stage2"),
                        help="--method paper: the checkpoint whose aligner is used (default: align)")
    parser.add_argument("--config", default=None,
                        help="config name or file when there is no --checkpoint (default: synthetic)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field (repeatable), e.g. propagation.steps=120")
    parser.add_argument("--frames", required=True, help="folder of frame images, or a video file")
    parser.add_argument("--labels", required=True, help="sparse labels, .json or .npz (schema above)")
    parser.add_argument("--intrinsics", default=None,
                        help="fx,fy,cx,cy in pixels of the original frames, or a .json/.npy/.txt 3x3 file "
                             "(else 'K' in the labels file)")
    parser.add_argument("--out", required=True,
                        help="output folder (absent or empty, else refused unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the annotations.json/.npz and overlays/ of an earlier run in --out")
    parser.add_argument("--force", action="store_true",
                        help="use labels whose root depth is implausible (outside 0.05..20 m) with a "
                             "warning instead of refusing them")
    parser.add_argument("--labels-by", choices=("index", "name"), default="index",
                        help="label keys are frame indices (default; position in the sorted files, from 0) "
                             "or frame file names (e.g. \"frame_0016.png\" or \"frame_0016\")")
    sides = parser.add_mutually_exclusive_group()
    sides.add_argument("--both-sides", dest="both_sides", action="store_true", default=True,
                       help="blend the propagations from the labelled frames on both sides (default)")
    sides.add_argument("--nearest-only", dest="both_sides", action="store_false",
                       help="propagate from the nearest labelled frame alone")
    parser.add_argument("--overlays", action="store_true", help="also write overlays/<index>.png")
    parser.add_argument("--boxes", default=None, metavar="FILE",
                        help="per-frame hand boxes, .json {\"boxes\": {frame: [cx, cy, side]}} or (T, 3) "
                             ".npy/.txt (frames without one: from the labels / interpolated)")
    parser.add_argument("--crop", type=float, nargs=3, metavar=("CX", "CY", "SIDE"), default=None,
                        help="one square crop box (pixels of the original frames) for every frame "
                             "instead of per-frame hand boxes")
    parser.add_argument("--crop-scale", type=float, default=CROP_SCALE,
                        help=f"box side / extent of a label's projected joints (default {CROP_SCALE}, "
                             "as the data set builders)")


def run(args: argparse.Namespace) -> int:
    """Errors (PropagationInputError, the run's RunNotFound, a bad --set) are UserError/ConfigError:
    ``handprop_jax.cli.main`` reports them in one line, exit code 2."""
    from handprop_jax.errors import UserError

    if args.checkpoint is not None and (args.config is not None or args.overrides):
        raise UserError("--config/--set apply without --checkpoint only (a run's config is the one it was "
                        "trained with)")
    try:
        config = (config_lib.load(args.config or "synthetic", args.overrides)
                  if args.checkpoint is None else None)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    arrays = propagate_files(args.checkpoint, args.frames, args.labels, args.out, args.intrinsics,
                             both_sides=args.both_sides, overlays=args.overlays, model=args.model,
                             crop=args.crop, boxes=args.boxes, crop_scale=args.crop_scale,
                             method=args.method, config=config, overwrite=args.overwrite,
                             labels_by=args.labels_by, force=args.force)
    n, nl = len(arrays["frame_index"]), int(arrays["labelled"].sum())
    print(f"propagated {nl} labelled frame(s) to {n - nl} unlabelled frame(s) → {Path(args.out).resolve()}"
          f"/annotations.{{json,npz}}")
    return 0
