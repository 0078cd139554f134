"""Reading what ``handprop propagate`` is given: frames, intrinsics and sparse labels (writing a built
data set's video in those formats is :mod:`handprop_jax.data.export`).

The formats (frame folders and multi-frame files, the labels' JSON/NPZ schema, the intrinsics) are
described in the command's help, :mod:`handprop_jax.propagation.cli`, and in docs/propagate.md.
Every error is a :class:`PropagationInputError` naming the file, the frame and the key.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from handprop_jax.data.crop import Box, crop_image
from handprop_jax.errors import UserError, numbers
from handprop_jax.gamma import FIELD_SHAPES, Gamma

GAMMA_KEYS = Gamma._fields
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class PropagationInputError(UserError, ValueError):
    """Bad user input to the propagation tool (the message names the file, key or shape); ``handprop``
    reports it in one line, exit code 2."""


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def list_frames(source: str | Path) -> list[str]:
    """Names of the frames in order (file names for a folder, "<video>#i" for a video file)."""
    return [name for name, _ in _iter_frames(Path(source), names_only=True)]


def iter_frames(source: str | Path):
    """(name, uint8 (H, W, 3) frame) of a folder or video file, in order (frames are decoded one at
    a time). Raises PropagationInputError at the first unreadable frame."""
    for name, frame in _iter_frames(Path(source)):
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise PropagationInputError(f"{source}: frame {name} is not an RGB image (shape {frame.shape})")
        yield name, frame.astype(np.uint8)


def frame_size(source: str | Path) -> tuple[int, int]:
    """(H, W) of the first frame of a folder or video file."""
    for _, frame in iter_frames(source):
        return frame.shape[:2]
    raise PropagationInputError(f"{source}: no frames")


def _iter_frames(path: Path, names_only: bool = False):
    """(name, frame or None with ``names_only``) of a folder of images or a video file, in order."""
    if path.is_dir():
        yield from _iter_folder(path, names_only)
    else:
        yield from _iter_video(path, names_only)


def _iter_folder(path: Path, names_only: bool):
    from PIL import Image, UnidentifiedImageError

    files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
    for f in files:
        if not f.is_file():  # a broken symbolic link, or a folder named like an image
            what = (f"a broken symbolic link (to {os.readlink(f)})" if f.is_symlink() and not f.exists()
                    else "not a file")
            raise PropagationInputError(f"{f}: {what}; every image in the frames folder must be a "
                                        "readable frame (remove it or repair the link)")
    if not files:
        raise PropagationInputError(f"{path}: no frame images (expected files ending in "
                                    f"{', '.join(IMAGE_SUFFIXES)})")
    for f in files:
        if names_only:
            yield f.name, None
            continue
        try:
            with Image.open(f) as im:
                yield f.name, np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise PropagationInputError(f"{f}: unreadable frame ({e})") from e


def _iter_video(path: Path, names_only: bool):
    from PIL import Image, ImageSequence, UnidentifiedImageError

    if not path.exists():
        raise PropagationInputError(f"{path}: no such frames folder or video file")
    try:
        with Image.open(path) as im:
            n = getattr(im, "n_frames", 1)
            for i, frame in enumerate(ImageSequence.Iterator(im)):
                yield f"{path.name}#{i}", None if names_only else np.asarray(frame.convert("RGB"))
            if n < 1:
                raise PropagationInputError(f"{path}: the video has no frames")
        return
    except (UnidentifiedImageError, OSError) as pil_error:
        try:
            import imageio.v3 as iio
        except ImportError:
            raise PropagationInputError(
                f"{path}: unreadable video ({pil_error}); supported without extra packages: a folder "
                f"of images, or animated GIF/PNG/WebP and multi-page TIFF; install imageio[ffmpeg] for "
                f"mp4/avi/...") from pil_error
        try:
            for i, frame in enumerate(iio.imiter(path)):
                frame = np.asarray(frame)
                if frame.ndim == 2:
                    frame = np.repeat(frame[..., None], 3, -1)
                yield f"{path.name}#{i}", None if names_only else frame[..., :3].astype(np.uint8)
        except Exception as e:  # imageio raises many types
            raise PropagationInputError(f"{path}: unreadable video ({e})") from e


def centre_box(height: int, width: int) -> Box:
    """The largest centred square crop box of an image (``handprop_jax.data.crop.Box``)."""
    return Box(cx=(width - 1) / 2, cy=(height - 1) / 2, side=float(min(height, width)))


def load_frames(source: str | Path, image_size: int, box=None, boxes=None
                ) -> tuple[list[str], np.ndarray, tuple, Any]:
    """Read, crop and resize the frames of a folder or video file: every frame with the same ``box``
    (default: the largest centred square), or frame t with ``boxes[t]`` ((T, 3) cx, cy, side, e.g.
    from ``handprop_jax.data.boxes.video_boxes``).

    Returns (names (T,), crops uint8 (T, S, S, 3), (H, W) of the original frames, the Box used (the
    first frame's with ``boxes``))."""
    names, crops, hw = [], [], None
    for name, frame in iter_frames(source):
        if hw is None:
            hw = frame.shape[:2]
            box = box or centre_box(*hw)
        elif frame.shape[:2] != hw:
            raise PropagationInputError(f"{source}: frame {name} is {frame.shape[1]}x{frame.shape[0]} but "
                                        f"the first frame is {hw[1]}x{hw[0]}; all frames must have one size")
        this = box
        if boxes is not None:
            if len(names) >= len(boxes):
                raise PropagationInputError(f"{source}: more frames than the {len(boxes)} boxes")
            this = Box(*map(float, boxes[len(names)]))
            box = box if names else this
        names.append(name)
        crops.append(crop_image(frame, this, image_size))
    if not names:
        raise PropagationInputError(f"{source}: no frames")
    return names, np.stack(crops), hw, box


def read_json(path: Path, pairs_hook=None) -> Any:
    """A user's JSON file, decoded; PropagationInputError naming it when it is not JSON, not UTF-8, or
    nested too deep to read (thousands of levels: Python's recursion limit)."""
    try:
        return json.loads(path.read_text(), object_pairs_hook=pairs_hook)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PropagationInputError(f"{path}: malformed JSON ({e})") from e
    except RecursionError as e:
        raise PropagationInputError(f"{path}: JSON nested too deeply to read") from e


#: plausible intrinsics, as multiples of the frame size max(H, W): focal lengths from a 170° lens
#: (0.044) to a narrow crop of a telephoto frame; the principal point at most this many frame
#: sizes from the frame's centre (hand crops of a larger image may have theirs outside the crop)
FOCAL_RANGE = (0.02, 100.0)
CENTRE_RANGE = 20.0


def parse_intrinsics(text: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """``fx,fy,cx,cy`` or a .json/.npy/.txt file with a 3x3 matrix → (3, 3) float64."""
    path = Path(text)
    if path.suffix.lower() in (".json", ".npy", ".txt") or path.exists():
        if not path.is_file():
            raise PropagationInputError(f"--intrinsics {text}: no such file")
        try:
            if path.suffix.lower() == ".npy":
                K = np.load(path)
            elif path.suffix.lower() == ".json":
                data = read_json(path)
                if isinstance(data, dict) and "K" in data:
                    data = data["K"]
                if isinstance(data, dict):
                    f = {k: float(numbers(data[k], f"{path}: '{k}'", PropagationInputError, depth=0))
                         for k in ("fx", "fy", "cx", "cy")}
                    K = np.array([[f["fx"], 0, f["cx"]], [0, f["fy"], f["cy"]], [0, 0, 1]])
                else:
                    K = data
            else:
                K = np.loadtxt(path)
        except PropagationInputError:
            raise
        except (ValueError, KeyError, OSError) as e:
            raise PropagationInputError(f"--intrinsics {path}: cannot read a 3x3 matrix ({e!r})") from e
        return check_intrinsics(K, str(path), size=size)
    parts = text.replace(" ", "").split(",")
    try:
        fx, fy, cx, cy = (float(p) for p in parts)
    except ValueError as e:
        raise PropagationInputError(f"--intrinsics {text!r}: expected fx,fy,cx,cy (pixels) or a file "
                                    f"with a 3x3 matrix") from e
    return check_intrinsics(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), "--intrinsics", size=size)


def check_intrinsics(K, source: str, num_frames: int | None = None, size: tuple[int, int] | None = None
                     ) -> np.ndarray:
    """The one check of intrinsics (``--intrinsics`` text or file, the labels' ``K``): one (3, 3)
    matrix, or one per frame (T, 3, 3, T = ``num_frames`` when given), of numbers (not booleans or
    strings), finite, last row (0, 0, 1), focal lengths positive and, with the frames' ``size`` (H,
    W), within :data:`FOCAL_RANGE` x max(H, W) and the principal point within
    :data:`CENTRE_RANGE` x max(H, W) of the frame's centre. Returns float64; PropagationInputError
    naming ``source`` (and the frame) and what is allowed."""
    K = numbers(K, f"{source}: intrinsics", PropagationInputError)
    if K.shape[-2:] != (3, 3) or K.ndim not in (2, 3) or not np.all(np.isfinite(K)) \
            or np.any(K[..., 0, 0] <= 0) or np.any(K[..., 1, 1] <= 0):
        raise PropagationInputError(f"{source}: intrinsics must be a finite 3x3 matrix (or one per frame, "
                                    f"(T, 3, 3)) with positive focal lengths, got shape {K.shape}")
    if not np.allclose(K[..., 2, :], [0, 0, 1]):
        raise PropagationInputError(f"{source}: the last row of the intrinsics must be 0, 0, 1 (got "
                                    f"{K.reshape(-1, 3, 3)[0, 2].tolist()})")
    if K.ndim == 3 and num_frames is not None and K.shape[0] != num_frames:
        raise PropagationInputError(f"{source}: {K.shape[0]} per-frame intrinsics for {num_frames} frames")
    if size is not None:
        height, width = size
        scale, flat = max(height, width), K.reshape(-1, 3, 3)
        lo, hi = FOCAL_RANGE[0] * scale, FOCAL_RANGE[1] * scale
        for t, k in enumerate(flat):
            where = f"{source}" + (f" (frame {t})" if K.ndim == 3 else "")
            for name, f in (("fx", k[0, 0]), ("fy", k[1, 1])):
                if not lo <= f <= hi:
                    raise PropagationInputError(
                        f"{where}: {name} = {f:g} px is implausible for {width}x{height} frames (allowed: "
                        f"{lo:g} to {hi:g} px, {FOCAL_RANGE[0]:g} to {FOCAL_RANGE[1]:g} x the frame size)")
            for name, c, mid in (("cx", k[0, 2], (width - 1) / 2), ("cy", k[1, 2], (height - 1) / 2)):
                if not abs(c - mid) <= CENTRE_RANGE * scale:
                    raise PropagationInputError(
                        f"{where}: {name} = {c:g} px is implausible for {width}x{height} frames (allowed: "
                        f"within {CENTRE_RANGE * scale:g} px, {CENTRE_RANGE:g} x the frame size, of the "
                        f"frame's centre {mid:g})")
    return K


class _Object(dict):
    """A JSON object that remembers the keys given more than once (``json`` keeps only the last)."""

    duplicates: list[str]


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    seen: set[str] = set()
    obj.duplicates = [k for k, _ in pairs if k in seen or seen.add(k)]
    return obj


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz; PropagationInputError naming the file (and the array) when it cannot
    be read (not a zip, a damaged or truncated one, an object array)."""
    import zipfile
    import zlib

    unreadable = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)
    try:
        npz = np.load(path, allow_pickle=False)
    except unreadable as e:
        raise PropagationInputError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise PropagationInputError(f"{path}: not an .npz archive (a single array)")
    with npz:
        data = {}
        for key in npz.files:
            try:
                data[key] = npz[key]
            except unreadable as e:
                raise PropagationInputError(f"{path}: array {key!r} cannot be read ({type(e).__name__}: "
                                            f"{e})") from e
    return data


def frame_numbers(names: list[str]) -> list[int | None]:
    """The number each frame's file name carries (the last run of digits of its stem), else None."""
    out = []
    for name in names:
        digits = re.findall(r"\d+", Path(name).stem)
        out.append(int(digits[-1]) if digits else None)
    return out


def load_labels(path: str | Path, num_frames: int | None = None, names: list[str] | None = None
                ) -> tuple[np.ndarray, Gamma, np.ndarray | None]:
    """Read a labels file (schema in the module docstring).

    ``names``: the frames' file names, in order: the labels are keyed by file name (a frame's name,
    with or without its suffix) instead of by frame index. Returns (frames (L,) sorted int64 frame
    indices, γ* (L, ...) float32 in that order, K (3, 3) / (T, 3, 3) or None). Raises
    PropagationInputError naming the file, the frame and the key."""
    path = Path(path)
    if not path.is_file():
        raise PropagationInputError(f"{path}: no such labels file")
    if names is not None:
        num_frames = len(names)
    index = _label_index(path, names)
    if path.suffix.lower() == ".npz":
        keys, frames, gamma, K = _labels_from_npz(path, index, by_name=names is not None)
    elif path.suffix.lower() == ".json":
        keys, frames, gamma, K = _labels_from_json(path, index)
    else:
        raise PropagationInputError(f"{path}: labels must be a .json or .npz file")
    _check_label_set(path, keys, frames, gamma, num_frames)
    order = np.argsort(frames)
    return frames[order], Gamma.of(gamma).numpy().take(order), K


def _label_index(path: Path, names: list[str] | None) -> Callable[[Any], int]:
    """The frame index a label key names: the key as an integer, or with ``names`` (the frames' file
    names, in order) the frame whose file name is the key, with or without its suffix (a suffix-less
    name shared by two files does not count). PropagationInputError naming ``path`` and the key."""
    by_name = None
    if names is not None:
        stems = [Path(n).stem for n in names]
        once = Counter(stems)
        by_name = {st: i for i, st in enumerate(stems) if once[st] == 1} | {n: i for i, n in enumerate(names)}

    def index(key) -> int:
        if by_name is None:
            try:
                return int(key)
            except (ValueError, TypeError) as e:
                raise PropagationInputError(f"{path}: label key {key!r} is not a frame index") from e
        if str(key) not in by_name:
            raise PropagationInputError(f"{path}: label key {key!r} is not the name of a frame (the frames "
                                        f"are {names[0]} ... {names[-1]}; labels are keyed by file name)")
        return by_name[str(key)]

    return index


#: what a labels reader returns: (the keys as written (L,), frame indices (L,) int64 in the file's
#: order, γ* as {root (L, 3), pose (L, 48), betas (L, 10)} float64, K (3, 3) / (T, 3, 3) or None)
_Labels = tuple[list, np.ndarray, dict[str, np.ndarray], np.ndarray | None]


def _labels_from_npz(path: Path, index: Callable[[Any], int], by_name: bool) -> _Labels:
    """The arrays of a labels .npz (``frames`` integer indices, or file names when ``by_name``)."""
    data = _read_npz(path)
    missing = [k for k in ("frames", *GAMMA_KEYS) if k not in data]
    if missing:
        raise PropagationInputError(f"{path}: missing arrays {missing} (have {sorted(data)}); expected "
                                    f"frames (L,), root (L, 3), pose (L, 48), betas (L, 10)")
    keys = np.asarray(data["frames"])
    if by_name:
        if keys.ndim != 1 or keys.dtype.kind not in "UO":
            raise PropagationInputError(f"{path}: 'frames' must be a 1-D array of frame file names, got "
                                        f"{keys.dtype} {keys.shape}")
    elif keys.ndim != 1 or not np.issubdtype(keys.dtype, np.integer):
        raise PropagationInputError(f"{path}: 'frames' must be a 1-D integer array, got "
                                    f"{keys.dtype} {keys.shape}")
    keys = [str(k) for k in keys] if by_name else [int(k) for k in keys]
    frames = np.asarray([index(k) for k in keys], np.int64)
    gamma = {}
    for k in GAMMA_KEYS:
        a = np.asarray(data[k])
        if a.shape != (len(frames),) + FIELD_SHAPES[k] or a.dtype.kind not in "iuf":
            raise PropagationInputError(f"{path}: '{k}' has shape {a.shape} ({a.dtype}), expected "
                                        f"{(len(frames),) + FIELD_SHAPES[k]} numbers")
        gamma[k] = a.astype(np.float64)
    K = check_intrinsics(data["K"], f"{path}: 'K'") if "K" in data else None
    return keys, frames, gamma, K


def _labels_from_json(path: Path, index: Callable[[Any], int]) -> _Labels:
    """The entries of a labels .json (``{"K": ..., "labels": {key: {root, pose, betas}}}`` or the
    entries at the top level); a key given twice anywhere is refused (``json`` keeps the last)."""
    data = read_json(path, _object)
    if not isinstance(data, dict):
        raise PropagationInputError(f"{path}: expected a JSON object with 'labels'")
    if data.duplicates:
        raise PropagationInputError(f"{path}: key {data.duplicates[0]!r} appears twice")
    K = check_intrinsics(data["K"], f"{path}: 'K'") if "K" in data else None
    entries = data.get("labels", {k: v for k, v in data.items() if k not in ("K", "side")})
    if not isinstance(entries, dict):
        raise PropagationInputError(f"{path}: 'labels' must map frame index → {{root, pose, betas}}")
    if getattr(entries, "duplicates", None):
        raise PropagationInputError(f"{path}: frame {entries.duplicates[0]} is labelled twice (JSON "
                                    "would keep only the last one); remove one")
    keys, frames, gamma = [], [], {k: [] for k in GAMMA_KEYS}
    for key, entry in entries.items():
        keys.append(key)
        frames.append(index(key))
        if not isinstance(entry, dict):
            raise PropagationInputError(f"{path}: frame {key}: expected {{root, pose, betas}}")
        if entry.duplicates:
            raise PropagationInputError(f"{path}: frame {key}: key {entry.duplicates[0]!r} appears twice")
        for k in GAMMA_KEYS:
            if k not in entry:
                raise PropagationInputError(f"{path}: frame {key}: missing key {k!r}")
            a = numbers(entry[k], f"{path}: frame {key}: '{k}'", PropagationInputError)
            if a.shape != FIELD_SHAPES[k]:
                raise PropagationInputError(f"{path}: frame {key}: '{k}' has shape {a.shape}, "
                                            f"expected {FIELD_SHAPES[k]}")
            gamma[k].append(a)
    frames = np.asarray(frames, np.int64)
    return keys, frames, {k: np.asarray(v, np.float64).reshape((len(frames),) + FIELD_SHAPES[k])
                          for k, v in gamma.items()}, K


def _check_label_set(path: Path, keys: list, frames: np.ndarray, gamma: dict[str, np.ndarray],
                     num_frames: int | None) -> None:
    """At least one label, finite numbers, no frame labelled twice, every frame index inside the video
    (0..``num_frames`` - 1 when known); else PropagationInputError naming the file and the key."""
    if len(frames) == 0:
        raise PropagationInputError(f"{path}: no labelled frame at all; label at least one frame")
    for k in GAMMA_KEYS:
        bad = np.nonzero(~np.all(np.isfinite(gamma[k].reshape(len(frames), -1)), axis=1))[0]
        if len(bad):
            raise PropagationInputError(f"{path}: frame {keys[bad[0]]}: '{k}' contains NaN or inf")
    unique, counts = np.unique(frames, return_counts=True)
    if np.any(counts > 1):
        twice = [keys[i] for i in np.nonzero(frames == unique[counts > 1][0])[0]]
        raise PropagationInputError(f"{path}: frame {int(unique[counts > 1][0])} is labelled twice "
                                    f"(keys {', '.join(map(repr, twice))})")
    if num_frames is not None:
        bad = frames[(frames < 0) | (frames >= num_frames)]
        if len(bad):
            raise PropagationInputError(f"{path}: label frame index {int(bad[0])} is outside the video "
                                        f"(frames 0..{num_frames - 1})")


#: the plausible depth of a labelled root (metres, z in the camera frame): nearer than 5 cm or farther
#: than 20 m is refused (millimetres? centimetres?), or only warned about with ``force``; a pose
#: component larger than POSE_WARN_RAD (radians) looks like degrees: warned about, not refused
ROOT_DEPTH_M = (0.05, 20.0)
POSE_WARN_RAD = 2 * np.pi


def check_labels(path: str | Path, frames: np.ndarray, gamma: Gamma, names: list[str] | None = None,
                 by_name: bool = False, say=None, force: bool = False) -> None:
    """The one check of what labels hold beyond their format (``handprop propagate``): every root in
    front of the camera (z > 0, else PropagationInputError naming the file and the frame) at a
    plausible depth, :data:`ROOT_DEPTH_M` (else refused the same way, or, with ``force``, a warning
    naming the frame). Warns (``say``, default stderr), without refusing, on a pose component over
    2π (degrees?) and, for labels keyed by frame index, on frames whose file names carry another
    number than their index (a missing or extra file shifts every later label; key the labels by
    file name with ``--labels-by name``)."""
    import sys

    say = say or (lambda line: print(line, file=sys.stderr, flush=True))

    def frame(i: int) -> str:
        f = int(frames[i])
        return f"frame {f} ({names[f]})" if names is not None else f"frame {f}"

    root, pose = np.asarray(gamma.root, np.float64), np.asarray(gamma.pose, np.float64)
    behind = np.nonzero(root[:, 2] <= 0)[0]
    if len(behind):
        raise PropagationInputError(f"{path}: {frame(behind[0])}: root z = {root[behind[0], 2]:g} m, not "
                                    "in front of the camera (root is the wrist in the camera frame, OpenCV "
                                    "axes, metres, z > 0)")
    def more(n: int, what: str = "") -> str:
        return f" (and {n} more{what})" if n else ""

    lo, hi = ROOT_DEPTH_M
    odd = np.nonzero((root[:, 2] < lo) | (root[:, 2] > hi))[0]
    if len(odd):
        z = root[odd[0], 2]
        unit = "millimetres or centimetres? " if z > hi else ""
        line = (f"{path}: {frame(odd[0])}{more(len(odd) - 1)}: root z = {z:g} m, outside the plausible "
                f"{lo:g} to {hi:g} m ({unit}root is the wrist in the camera frame, in metres)")
        if not force:
            raise PropagationInputError(f"{line}; pass --force to use it anyway")
        say(f"warning: {line}; used anyway (--force)")
    big = np.nonzero(np.abs(pose).max(-1) > POSE_WARN_RAD)[0]
    if len(big):
        say(f"warning: {path}: {frame(big[0])}{more(len(big) - 1)}: a pose component is "
            f"{np.abs(pose[big[0]]).max():.1f}, over 2π; degrees? (pose is axis-angle in radians)")
    if names is not None and not by_name:
        numbers = frame_numbers(names)
        shifted = [int(f) for f in frames if numbers[f] is not None and numbers[f] != f]
        if shifted:
            f, others = shifted[0], more(len(shifted) - 1, " with another number")
            say(f"warning: {path}: label {f} is used for {names[f]}{others}: labels are keyed by the frame's "
                "position in the sorted files, from 0; if they follow the file names, pass --labels-by name")


SIDES = ("right", "left")


def label_side(path: str | Path) -> str:
    """The hand side of a labels file: its optional top-level ``"side"`` (JSON) or ``side`` array
    (NPZ), "right" or "left"; "right" when absent. The networks are trained on right hands: callers
    refuse "left" (mirror such a video and its labels to a right hand first)."""
    path = Path(path)
    side = "right"
    try:
        if path.suffix.lower() == ".json":
            data = read_json(path)
            if isinstance(data, dict) and "side" in data:
                side = data["side"]
        elif path.suffix.lower() == ".npz":
            data = _read_npz(path)
            if "side" in data:
                side = str(data["side"])
    except (ValueError, OSError):  # PropagationInputError is a ValueError
        return side  # load_labels reports the malformed file
    if side not in SIDES:
        raise PropagationInputError(f"{path}: 'side' must be one of {SIDES}, got {side!r}")
    return side
