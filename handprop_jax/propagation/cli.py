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
labelled frame the square around its label's projected MANO mesh (side = ``--crop-scale`` x its
extent, 1.2 and at least 0.15 m at the wrist's depth: the rule of the synthetic training crops and
of the builders), else linear interpolation between the nearest frames with a box. With the default
photometric method and no box file, the interpolated crops are then re-cropped around each frame's
propagated hand and refined again (:mod:`handprop_jax.propagation.recrop`; ``box_source``
"propagated").
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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from handprop_jax import config as config_lib
from handprop_jax.camera import project
from handprop_jax.data import annotation_files
from handprop_jax.data.boxes import (
    FROM_LABEL,
    INTERPOLATED,
    VERTEX_SCALE,
    BoxError,
    check_box,
    label_geometry,
    read_boxes,
    video_boxes,
)
from handprop_jax.data.crop import Box, crop_intrinsics
from handprop_jax.errors import Interrupts, UserError, watch_interrupts, writable_dir
from handprop_jax.hand import default_mano, hand_mesh
from handprop_jax.model.api import BoundModel
from handprop_jax.propagation import overlays, swap
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
from handprop_jax.propagation.recrop import FROM_PROPAGATION, frame_cropper, propagate_recrop
from handprop_jax.training.checkpoint import bound_from_run, describe, run_config

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


@dataclasses.dataclass(frozen=True)
class PropagateOptions:
    """How ``handprop propagate`` propagates: its options (module docstring; ``add_arguments``).

    ``method``: one of :data:`CLI_METHODS`. ``both_sides``: blend the labels on both sides (else the
    nearest). ``model``: the checkpoint whose aligner ``paper`` uses. ``intrinsics``: ``fx,fy,cx,cy``
    text or a file (pixels), a (3, 3) / (T, 3, 3) array, or None (the labels' ``K``). ``crop``: one
    box (cx, cy, side px) for every frame; ``boxes``: a per-frame box file; ``crop_scale``: box side /
    extent of a label's projected mesh vertices (None: VERTEX_SCALE, the training crops' rule).
    ``labels_by``: "index" (label keys are frame indices) or
    "name" (frame file names). ``force``: labels at an implausible depth are warned about instead of
    refused. ``overlays``: also write overlays/. ``overwrite``: replace the outputs of an earlier run
    in OUT (else a non-empty OUT is refused)."""

    method: str = "photometric"
    both_sides: bool = True
    model: str = "align"
    intrinsics: str | np.ndarray | None = None
    crop: Sequence[float] | None = None
    boxes: str | Path | None = None
    crop_scale: float | None = None
    labels_by: str = "index"
    force: bool = False
    overlays: bool = False
    overwrite: bool = False


def propagate_files(frames: str | Path, labels: str | Path, out: str | Path,
                    options: PropagateOptions = PropagateOptions(), *, checkpoint: str | Path | None = None,
                    config: Any = None, bound: tuple[Any, BoundModel] | None = None) -> dict[str, np.ndarray]:
    """Everything ``handprop propagate`` does; returns the arrays written to annotations.npz.

    ``checkpoint``: a run folder (needed by ``--method paper``; for the other methods it only supplies
    the config) or None. ``config``: the Config used without a checkpoint (default: ``synthetic``).
    ``bound`` = (config, BoundModel) replaces loading ``checkpoint`` (tests).
    Three steps: the inputs are read and checked (:func:`read_inputs`, then ``out``: every check comes
    before the model runs), propagated (:func:`propagate_inputs`), written (:func:`write_results`: to a
    folder inside ``out``, swapped in at the end, :mod:`handprop_jax.propagation.swap`, so a failure,
    Ctrl-C or a kill leaves ``out`` with either the old results or the new ones, complete). Ctrl-C is
    noticed even when a JAX callback swallows its KeyboardInterrupt
    (:class:`handprop_jax.errors.Interrupts`): nothing is written then."""
    with watch_interrupts() as interrupts:
        inputs = read_inputs(frames, labels, options)
        out = check_out(out, options.overwrite)
        asked = options.method  # recorded as given: interpolate runs as crop with both sides
        if options.method == "interpolate":
            options = dataclasses.replace(options, method="crop", both_sides=True)
        config, net, used = _model(checkpoint, config, bound, options)
        result = propagate_inputs(inputs, config, net, options, interrupts)
        _check_finite(result, inputs.names, asked, out)
        meta = {"checkpoint": None if checkpoint is None else str(checkpoint), "method": asked,
                "model": options.model if options.method == "paper" else None, "checkpoint_used": used}
        write_results(out, result, inputs, options, meta, interrupts)
        return result.arrays


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What ``handprop propagate`` was given, read and checked (:func:`read_inputs`).

    ``names`` (T,) frame names in order; ``frame_indices`` (L,) sorted labelled frames and
    ``gamma_star`` (L, ...) their labels; ``K`` (T, 3, 3) intrinsics in pixels of the original frames;
    ``size`` (H, W) of the frames; ``box``: the one ``--crop`` box or None; ``file_boxes``: the
    ``--boxes`` file's boxes (T, 3) / NaN rows where none, or None."""

    frames: str | Path
    labels: str | Path
    names: list[str]
    frame_indices: np.ndarray
    gamma_star: Any
    K: np.ndarray
    size: tuple[int, int]
    box: Box | None
    file_boxes: np.ndarray | None


def read_inputs(frames: str | Path, labels: str | Path, options: PropagateOptions) -> Inputs:
    """Read and check the frames' names and size, the labels, intrinsics and boxes, cheap checks first
    (bad labels or intrinsics fail before frames are decoded); PropagationInputError naming the file,
    frame and key."""
    if options.crop is not None and options.boxes is not None:
        raise PropagationInputError("--crop (one box for every frame) and --boxes exclude each other")
    if options.crop_scale is not None and not options.crop_scale > 0:
        raise PropagationInputError(f"--crop-scale: must be positive, got {options.crop_scale}")
    if options.labels_by not in ("index", "name"):
        raise PropagationInputError(f"--labels-by {options.labels_by!r}: expected index or name")
    by_name = options.labels_by == "name"
    names = list_frames(frames)
    lab, gamma_star, K_labels = load_labels(labels, len(names), names if by_name else None)
    if label_side(labels) != "right":
        raise PropagationInputError(f"{labels}: labels of a left hand ('side': 'left'); the networks are "
                                    "trained on right hands: mirror the video and its labels first")
    check_labels(labels, lab, gamma_star, names if Path(frames).is_dir() else None, by_name,
                 force=options.force)
    intrinsics = options.intrinsics
    if intrinsics is None and K_labels is None:
        raise PropagationInputError("missing intrinsics: pass --intrinsics fx,fy,cx,cy (or a file), or put "
                                    "'K' in the labels file")
    size = frame_size(frames)
    where = "--intrinsics" if intrinsics is not None else f"{labels}: 'K'"
    K = (parse_intrinsics(intrinsics, size) if isinstance(intrinsics, str)
         else intrinsics if intrinsics is not None else K_labels)
    K = np.broadcast_to(check_intrinsics(K, where, len(names), size), (len(names), 3, 3))
    crop, boxes = options.crop, options.boxes
    try:  # one rule for both: handprop_jax.data.boxes.check_box
        box = check_box(list(crop), "--crop " + " ".join(f"{float(v):g}" for v in crop), size) \
            if crop is not None else None
        file_boxes = read_boxes(boxes, len(names), size) if boxes is not None else None
    except BoxError as e:
        raise PropagationInputError(f"--boxes {e}" if crop is None else str(e)) from e
    if options.method not in CLI_METHODS:
        raise PropagationInputError(f"--method {options.method!r}: expected one of {CLI_METHODS}")
    return Inputs(frames, labels, names, lab, gamma_star, K, size, box, file_boxes)


def _model(checkpoint: str | Path | None, config: Any, bound: tuple[Any, BoundModel] | None,
           options: PropagateOptions) -> tuple[Any, BoundModel | None, dict | None]:
    """(config, the network or None, what ``paper`` read of the checkpoint or None): ``bound`` as given,
    else the run's config (and for ``paper`` its network), else ``config`` (default ``synthetic``)."""
    if bound is not None:
        return bound[0], bound[1], None
    if checkpoint is not None:
        if not Path(checkpoint).is_dir():
            raise PropagationInputError(f"--checkpoint {checkpoint}: no such run folder")
        if options.method == "paper":
            config, net = bound_from_run(checkpoint, options.model)  # warns when the phase is unfinished
            return config, net, describe(checkpoint, options.model)
        return run_config(checkpoint), None, None
    if options.method == "paper":
        raise PropagationInputError("--method paper needs --checkpoint RUN_DIR (a trained run)")
    return (config_lib.load("synthetic") if config is None else config), None, None


@dataclasses.dataclass(frozen=True)
class Result:
    """A propagation (:func:`propagate_inputs`): ``arrays`` as written to annotations.npz (module
    docstring), ``boxes`` (T, 3) float64 each frame's box (cx, cy, side px of the original frames),
    ``box_source`` (T,) where it came from, ``crops`` (T, S, S, 3) uint8,
    ``K_crop`` (T, 3, 3) the crops' intrinsics, ``verts`` (T, 778, 3) metres, ``faces`` (F, 3) and
    the crop side S."""

    arrays: dict[str, np.ndarray]
    boxes: np.ndarray
    box_source: np.ndarray
    crops: np.ndarray
    K_crop: np.ndarray
    verts: np.ndarray
    faces: np.ndarray
    image_size: int


def propagate_inputs(inputs: Inputs, config: Any, net: BoundModel | None, options: PropagateOptions,
                     interrupts: Interrupts) -> Result:
    """Crop the frames around the hand, propagate the labels (``options.method``, not
    ``interpolate``), and the MANO joints in 3D and in the original frames' pixels (not checked for
    NaN/inf here: :func:`_check_finite`)."""
    S = config.data.image_size
    mano = default_mano(config)
    K, T = inputs.K, len(inputs.names)
    frame_boxes, box_source = _frame_boxes(inputs, mano, options.crop_scale)
    _, crops, _, _ = load_frames(inputs.frames, S, boxes=frame_boxes)
    K_crop = np.stack([crop_intrinsics(k, Box(*b), S) for k, b in zip(K, frame_boxes, strict=True)]
                      ).astype(np.float32)

    propagator = Propagator.from_config(config, options.method, model=net)
    if options.method == "photometric" and np.all(np.isin(box_source, (FROM_LABEL, INTERPOLATED))) \
            and np.any(box_source == INTERPOLATED):
        # the unlabelled frames' crops do not follow the hand: propagate, re-crop each frame around
        # its propagated hand, refine again (handprop_jax.propagation.recrop)
        crop = frame_cropper(inputs.frames, S, K)
        result, frame_boxes = propagate_recrop(propagator, crop, frame_boxes, K, inputs.frame_indices,
                                               inputs.gamma_star, both_sides=options.both_sides, images=crops,
                                               K=K_crop)
        box_source = np.where(result.labelled, box_source, FROM_PROPAGATION)
        crops, K_crop = crop(frame_boxes)  # the crops the result was refined on (overlays)
        K_crop = np.asarray(K_crop, np.float32)
    else:
        result = propagate_video(propagator, crops, K_crop, inputs.frame_indices, inputs.gamma_star,
                                 both_sides=options.both_sides)
    interrupts.check()  # a Ctrl-C whose KeyboardInterrupt a JAX callback swallowed
    verts, joints = hand_mesh(mano, result.gamma)
    joints2d = np.asarray(project(jnp.asarray(joints), jnp.asarray(K, jnp.float32)))
    arrays = {
        "frame_index": np.arange(T), "labelled": result.labelled, "source": result.source,
        "weight": result.weight, **result.gamma.as_dict(), "joints3d": joints.astype(np.float32),
        "joints2d": joints2d.astype(np.float32), "K": K.astype(np.float32),
        "box": np.asarray(frame_boxes, np.float32),
    }
    return Result(arrays, frame_boxes, box_source, crops, K_crop, verts, mano.faces, S)


def _check_finite(result: Result, names: list[str], method: str, out: Path) -> None:
    """UserError naming the first frame whose result holds NaN or inf (nothing is written then)."""
    arrays = result.arrays
    T = len(arrays["frame_index"])
    finite = np.all([np.isfinite(arrays[k]).reshape(T, -1).all(-1)
                     for k in ("root", "pose", "betas", "joints3d", "joints2d")], axis=0)
    if not finite.all():
        bad = np.nonzero(~finite)[0]
        raise UserError(f"the propagation (method {method}) gave NaN or inf for {len(bad)} frame(s) (first: "
                        f"{names[bad[0]]}, index {bad[0]}); nothing was written to {out}")


def _frame_boxes(inputs: Inputs, mano, crop_scale: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's box (T, 3) cx, cy, side px of the original frames and where it came from (T,):
    the ``--crop`` box, else the hand_videos builder's rule (:func:`handprop_jax.data.boxes.video_boxes`)."""
    T = len(inputs.names)
    if inputs.box is not None:
        box = inputs.box
        return np.tile([box.cx, box.cy, box.side], (T, 1)), np.full(T, "fixed")
    height, width = inputs.size
    try:
        joints, vertices = label_geometry(mano, inputs.gamma_star)
        return video_boxes(T, height, width, inputs.K, inputs.frame_indices, joints, inputs.file_boxes,
                           crop_scale, vertices3d=vertices)
    except BoxError as e:
        raise PropagationInputError(f"{inputs.frames}: {e}") from e


def annotations_json(result: Result, inputs: Inputs, options: PropagateOptions, meta: dict) -> str:
    """annotations.json's text: the run's metadata (``meta``: checkpoint, method, model,
    checkpoint_used; then the inputs and options) and one entry per frame (module docstring);
    never NaN or Infinity (not JSON)."""
    arrays, T = result.arrays, len(inputs.names)
    entries = []
    for i in range(T):
        valid = arrays["source"][i] >= 0
        entries.append(annotation_files.frame_entry(
            i, inputs.names[i], arrays["labelled"][i], arrays["K"][i], arrays,
            sources=arrays["source"][i][valid].tolist(), box=[float(v) for v in result.boxes[i]],
            box_source=str(result.box_source[i]),
            weights=[round(float(w), 6) for w in arrays["weight"][i][valid]]))
    box, boxes, crop_scale = inputs.box, options.boxes, options.crop_scale
    meta = {**meta, "frames": str(inputs.frames), "labels": str(inputs.labels),
            "labels_by": options.labels_by, "both_sides": options.both_sides,
            "boxes": ({"fixed": dataclasses.asdict(box)} if box is not None else
                      {"file": str(boxes) if boxes is not None else None, "crop_scale": crop_scale}),
            "image_size": result.image_size, "num_frames": T, "num_labelled": int(len(inputs.frame_indices)),
            "units": annotation_files.UNITS}
    return json.dumps({**meta, "frames_out": entries}, allow_nan=False)


def write_results(out: Path, result: Result, inputs: Inputs, options: PropagateOptions, meta: dict,
                  interrupts: Interrupts) -> None:
    """annotations.npz, annotations.json and (``options.overlays``) overlays/ into ``out``, swapped in
    as a whole (:func:`handprop_jax.propagation.swap.replace_results`); a folder ``out`` this call
    created is removed again when nothing was written."""
    doc = annotations_json(result, inputs, options, meta)

    def write(folder: Path) -> None:
        np.savez(folder / "annotations.npz", **result.arrays)
        (folder / "annotations.json").write_text(doc)
        if options.overlays:
            overlays.write_overlays(folder / "overlays", result.crops, result.verts, result.K_crop,
                                    result.faces, inputs.names)
        interrupts.check()

    interrupts.check()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        swap.replace_results(out, OUTPUTS, write, interrupts)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


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
    parser.add_argument("--crop-scale", type=float, default=None,
                        help=f"box side / extent of a label's projected mesh vertices (default "
                             f"{VERTEX_SCALE}, the training crops' rule; at least 0.15 m at the wrist)")


def run(args: argparse.Namespace) -> int:
    """Errors (PropagationInputError, the run's RunNotFound, a bad --set) are UserError/ConfigError:
    ``handprop_jax.cli.main`` reports them in one line, exit code 2."""
    if args.checkpoint is not None and (args.config is not None or args.overrides):
        raise UserError("--config/--set apply without --checkpoint only (a run's config is the one it was "
                        "trained with)")
    try:
        config = (config_lib.load(args.config or "synthetic", args.overrides)
                  if args.checkpoint is None else None)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    options = PropagateOptions(
        method=args.method, both_sides=args.both_sides, model=args.model, intrinsics=args.intrinsics,
        crop=args.crop, boxes=args.boxes, crop_scale=args.crop_scale, labels_by=args.labels_by,
        force=args.force, overlays=args.overlays, overwrite=args.overwrite)
    arrays = propagate_files(args.frames, args.labels, args.out, options, checkpoint=args.checkpoint,
                             config=config)
    n, nl = len(arrays["frame_index"]), int(arrays["labelled"].sum())
    print(f"propagated {nl} labelled frame(s) to {n - nl} unlabelled frame(s) → {Path(args.out).resolve()}"
          f"/annotations.{{json,npz}}")
    return 0
