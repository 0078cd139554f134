"""Per-frame hand boxes of a sparsely labelled video: one rule for the ``hand_videos`` builder and
``handprop propagate``, so that the tool crops every frame as the training data was cropped.

The rule (:func:`video_boxes`), for each frame t of a video of T frames:

1. a box given for t in the user's **box file** (:func:`read_boxes`) is used as it is;
2. otherwise, on a **labelled** frame, the square box around the label's hand — given its mesh
   vertices (``vertices3d``), the synthetic renderer's rule, i.e. the training crops of the demo and
   of the pretrained predictor (:func:`square_boxes`: centre of the projected vertices' bounding box,
   side = VERTEX_SCALE x its larger extent, at least MIN_SIDE_M metres at the wrist's depth); given
   only its 21 joints, the HO-3D/InterHand builders' crop (``handprop_jax.data.crop.hand_box``: the
   projected joints' box, side = ``scale`` x its larger extent) — unless the hand is behind the
   camera, fewer than ``min_visible`` of its joints project inside the frame, or the box is over 4x
   the frame: then the frame gets no box from its label;
3. every other frame: the boxes of the nearest frames before and after it that have one (from 1 or
   2) interpolated linearly in time (centre and side); before the first / after the last such frame,
   that frame's box. A video where no frame has a box is an error.

Boxes are square, (cx, cy, side) in pixels of the original frames (pixel centre (row i, column j) =
(u = j, v = i)), the convention of ``--crop`` and ``handprop_jax.data.crop.Box``; a box may reach
outside the frame (black padding). Numpy only, plus one MANO forward pass for the labels' joints.

Box file (``boxes.json``): ``{"boxes": {"<frame index>": [cx, cy, side], ...}}`` (a top-level
``{"<frame index>": [cx, cy, side]}`` is accepted too), any subset of the frames; or ``.npy`` /
``.txt`` with a (T, 3) array, rows of NaN for frames without a box.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from handprop_jax.data.crop import Box, hand_box, visible_fraction
from handprop_jax.errors import UserError, numbers
from handprop_jax.gamma import Gamma
from handprop_jax.hand import hand_in_camera_jit

#: box side / extent of the projected joints, and the fraction of joints that must be inside the
#: frame: the defaults of every builder (handprop_jax.data.builder_support.make_example callers)
CROP_SCALE = 1.5
MIN_VISIBLE = 0.5
#: the synthetic renderer's crop (the training crops of the demo and the pretrained predictor): the
#: square around the projected mesh **vertices**, side = VERTEX_SCALE x their larger extent but at
#: least MIN_SIDE_M metres at the root's depth (``fx * MIN_SIDE_M / z_root`` pixels)
VERTEX_SCALE = 1.2
MIN_SIDE_M = 0.15
#: where each frame's box came from (``video_boxes``' second output)
FROM_FILE, FROM_LABEL, INTERPOLATED = "file", "label", "interpolated"


class BoxError(UserError, ValueError):
    """A box file that cannot be used, or a video without any box (the message names the file)."""


#: a box's side may be at most this many times the frame's larger side (the label rule's limit)
MAX_SIDE = 4.0


def check_box(value, where: str, size: tuple[int, int] | None = None) -> Box:
    """The one check of a user's box (a box file's entry, ``--crop``): three numbers cx, cy, side (not
    booleans or strings), finite, side > 0 and, with the frames' ``size`` (H, W), at most
    :data:`MAX_SIDE` x max(H, W) and overlapping the frame. Returns the Box; BoxError naming
    ``where`` and what is allowed."""
    box = numbers(value, where, BoxError, depth=1)
    if box.shape != (3,):
        raise BoxError(f"{where}: expected [cx, cy, side], got shape {box.shape}")
    if not np.all(np.isfinite(box)) or box[2] <= 0:
        raise BoxError(f"{where}: box {box.tolist()} must be finite with side > 0")
    b = Box(*map(float, box))
    if size is not None:
        height, width = size
        if b.side > MAX_SIDE * max(height, width):
            raise BoxError(f"{where}: side {b.side:g} is over {MAX_SIDE:g} x the {width}x{height} frames "
                           f"(at most {MAX_SIDE * max(height, width):g} px)")
        if (b.cx + b.side / 2 <= 0 or b.cx - b.side / 2 >= width
                or b.cy + b.side / 2 <= 0 or b.cy - b.side / 2 >= height):
            raise BoxError(f"{where}: the box lies outside the {width}x{height} frames (cx, cy: its centre "
                           "in pixels, side: its side; it must overlap the frame)")
    return b


def read_boxes(path: str | Path, num_frames: int | None = None, size: tuple[int, int] | None = None
               ) -> dict[int, Box]:
    """Boxes of a box file (module docstring): {frame index: Box}. Raises BoxError naming the file,
    the frame and what is wrong (malformed, not 3 numbers, NaN in a JSON entry, a frame index
    outside 0..num_frames-1, and what :func:`check_box` refuses, with the frames' ``size`` (H, W)
    when given)."""
    path = Path(path)
    if not path.is_file():
        raise BoxError(f"{path}: no such boxes file")
    entries: dict[int, object] = {}
    suffix = path.suffix.lower()
    if suffix in (".npy", ".txt"):
        try:
            array = np.load(path) if suffix == ".npy" else np.loadtxt(path, ndmin=2)
        except (ValueError, OSError) as e:
            raise BoxError(f"{path}: not a readable (T, 3) array ({e})") from e
            array = numbers(np.asarray(array), str(path), BoxError)
        if array.ndim != 2 or array.shape[1] != 3:
            raise BoxError(f"{path}: expected a (T, 3) array of cx, cy, side, got shape {array.shape}")
        if num_frames is not None and len(array) != num_frames:
            raise BoxError(f"{path}: {len(array)} rows for {num_frames} frames")
        entries = {i: row for i, row in enumerate(array) if not np.all(np.isnan(row))}
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BoxError(f"{path}: malformed JSON ({e})") from e
        except RecursionError as e:
            raise BoxError(f"{path}: JSON nested too deeply to read") from e
        data = data.get("boxes", data) if isinstance(data, dict) else data
        if not isinstance(data, dict):
            raise BoxError(f"{path}: expected {{\"boxes\": {{frame index: [cx, cy, side]}}}}")
        for key, value in data.items():
            try:
                if not key.strip().lstrip("+-").isdigit():
                    raise ValueError(key)
                entries[int(key)] = value
            except ValueError as e:
                raise BoxError(f"{path}: box key {key!r} is not a frame index") from e
    else:
        raise BoxError(f"{path}: boxes must be a .json, .npy or .txt file")
    out = {}
    for frame, value in sorted(entries.items()):
        if num_frames is not None and not 0 <= frame < num_frames:
            raise BoxError(f"{path}: frame {frame}: outside the video (frames 0..{num_frames - 1})")
        out[frame] = check_box(value, f"{path}: frame {frame}", size)
    return out


def square_boxes(uv: np.ndarray, scale: float, min_side) -> tuple[np.ndarray, np.ndarray]:
    """The vertex rule's squares (the synthetic renderer calls this too): points uv (..., N, 2)
    pixels, ``min_side`` (...) pixels -> (centre (..., 2) of their bounding box, side (...) =
    max(scale x its larger extent, min_side)). Keeps the input dtype."""
    lo, hi = uv.min(-2), uv.max(-2)
    return (lo + hi) / 2, np.maximum(scale * np.max(hi - lo, axis=-1), min_side)


def vertex_boxes(vertices3d: np.ndarray, wrist_depth, K: np.ndarray, scale: float = VERTEX_SCALE,
                 min_side: float = MIN_SIDE_M) -> tuple[np.ndarray, np.ndarray]:
    """The vertex rule (module docstring, rule 2), vectorised over hands.

    Args:
      vertices3d: (..., V, 3) the hands' mesh vertices, camera frame, metres.
      wrist_depth: (...) the wrists' (joint 0's) depth z, metres.
      K: (..., 3, 3) intrinsics of the frames, pixels.
      scale: side / larger extent of the projected vertices; min_side: least side, metres at the
        wrist's depth (``fx * min_side / wrist_depth`` pixels).
    Returns:
      (centre (..., 2), side (...)) float64 pixels (:func:`square_boxes`).
    """
    K = np.asarray(K, np.float64)
    uvw = np.asarray(vertices3d, np.float64) @ np.swapaxes(K, -1, -2)
    return square_boxes(uvw[..., :2] / uvw[..., 2:3], scale, K[..., 0, 0] * min_side / wrist_depth)


def _project(points3d: np.ndarray, K: np.ndarray) -> np.ndarray:
    uvw = points3d @ np.asarray(K, np.float64).T
    return uvw[:, :2] / uvw[:, 2:3]


def label_box(joints3d: np.ndarray, K: np.ndarray, height: int, width: int, scale: float | None = None,
              min_visible: float = MIN_VISIBLE, vertices3d: np.ndarray | None = None) -> Box | None:
    """The box of one labelled frame from its (21, 3) camera-frame joints and (3, 3) K, or None when
    the hand is behind the camera, less than ``min_visible`` of its joints inside the frame, or its
    box is over 4x the frame (rule 2 of the module docstring; the checks of ``crop.crop_frame``).

    Without ``vertices3d``: the square around the projected joints, side = ``scale`` (default
    CROP_SCALE) x their larger extent. With the label's (V, 3) mesh ``vertices3d`` (camera frame,
    metres): the synthetic renderer's rule — the square around the projected vertices, side =
    ``scale`` (default VERTEX_SCALE) x their larger extent, at least MIN_SIDE_M metres at the wrist's
    depth (:func:`square_boxes`)."""
    joints3d = np.asarray(joints3d, np.float64)
    if not np.all(np.isfinite(joints3d)) or np.any(joints3d[:, 2] <= 0):
        return None
    uv = _project(joints3d, K)
    if visible_fraction(uv, height, width) < min_visible:
        return None
    if vertices3d is None:
        box = hand_box(uv, scale=CROP_SCALE if scale is None else scale)
    else:
        vertices3d = np.asarray(vertices3d, np.float64)
        if not np.all(np.isfinite(vertices3d)) or np.any(vertices3d[:, 2] <= 0):
            return None
        centre, side = vertex_boxes(vertices3d, joints3d[0, 2], K, VERTEX_SCALE if scale is None else scale)
        box = Box(float(centre[0]), float(centre[1]), float(side))
    return None if box.side > 4 * max(height, width) else box


def interpolate(num_frames: int, anchors: dict[int, Box]) -> np.ndarray:
    """(T, 3) boxes (cx, cy, side): the anchors' boxes on their frames, linear in time in between,
    the first / last anchor's box before / after them (rule 3)."""
    if not anchors:
        raise BoxError("no frame has a box")
    frames = np.array(sorted(anchors), np.float64)
    values = np.array([[anchors[f].cx, anchors[f].cy, anchors[f].side] for f in sorted(anchors)])
    t = np.arange(num_frames, dtype=np.float64)
    out = np.stack([np.interp(t, frames, values[:, i]) for i in range(3)], -1)
    for f, v in zip(frames.astype(int), values, strict=True):  # exact on the anchors
        out[f] = v
    return out


def video_boxes(num_frames: int, height: int, width: int, K: np.ndarray, labelled: np.ndarray,
                joints3d: np.ndarray, file_boxes: dict[int, Box] | None = None,
                scale: float | None = None, min_visible: float = MIN_VISIBLE,
                vertices3d: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every frame's box by the module's rule.

    Args:
      num_frames: T; height, width: of the original frames, pixels.
      K: (3, 3) or (T, 3, 3) intrinsics of the original frames.
      labelled: (L,) frame indices with labels; joints3d: (L, 21, 3) their joints, camera frame,
        metres (:func:`label_geometry`).
      file_boxes: {frame: Box} from the user's box file (None: no file).
      scale, min_visible: :func:`label_box`'s.
      vertices3d: (L, V, 3) the labels' mesh vertices (:func:`label_geometry`): the labelled frames'
        boxes by the vertex rule (:func:`label_box`); None: by the joints.
    Returns:
      (boxes (T, 3) float64 cx, cy, side; source (T,) str: FROM_FILE, FROM_LABEL or INTERPOLATED).
    Raises:
      BoxError when no frame gets a box from the file or a label.
    """
    K = np.broadcast_to(np.asarray(K, np.float64), (num_frames, 3, 3))
    anchors = dict(file_boxes or {})
    source = np.full(num_frames, INTERPOLATED, dtype=object)
    source[list(anchors)] = FROM_FILE
    labelled = np.asarray(labelled, np.int64)
    verts = [None] * len(labelled) if vertices3d is None else np.asarray(vertices3d)
    for f, joints, v in zip(labelled, np.asarray(joints3d), verts, strict=True):
        if int(f) in anchors:
            continue
        box = label_box(joints, K[f], height, width, scale, min_visible, v)
        if box is not None:
            anchors[int(f)] = box
            source[f] = FROM_LABEL
    if not anchors:
        raise BoxError("no frame has a hand box: no labelled frame's hand is inside the frame "
                       f"(>= {min_visible:.0%} of its joints, in front of the camera) and no boxes file")
    return interpolate(num_frames, anchors), source.astype(str)


def label_geometry(mano, gamma) -> tuple[np.ndarray, np.ndarray]:
    """((L, 21, 3) joints, (L, V, 3) vertices) in the camera frame (metres) of labels γ (L, ...)."""
    import jax.numpy as jnp

    g = Gamma.of(gamma).numpy()
    if len(g.root) == 0:
        return np.zeros((0, 21, 3), np.float32), np.zeros((0, 0, 3), np.float32)
    verts, joints = hand_in_camera_jit(mano, *(jnp.asarray(x, jnp.float32) for x in g))
    return np.asarray(joints, np.float32), np.asarray(verts, np.float32)
