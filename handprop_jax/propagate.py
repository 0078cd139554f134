"""Propagate sparse 3D hand annotations to every frame of a video with a trained Pose Alignment run.

    handprop propagate --checkpoint RUN_DIR --frames FRAMES_DIR_OR_VIDEO --labels LABELS.json \\
        --intrinsics fx,fy,cx,cy --out OUT/ [--both-sides] [--overlays]

Each unlabelled frame u gets ``γ̃_u = φ(γ*_s, z_u - z_s) + γ*_s`` from its nearest labelled frame
s = N(u) (ties go to the earlier frame), with the aligner φ of the run's ``align`` checkpoint
(``--model`` picks another). With ``--both-sides`` the two labelled frames l < u < r around u are
both propagated to u and blended by temporal distance, weight (u - l) / (r - l) on r: root and betas
linearly, every joint rotation of the 48-d pose by spherical linear interpolation (geodesic on
SO(3), not an average of axis-angle vectors). Frames before the first / after the last label use
their only neighbour.

Frames (``--frames``): a folder of images (png, jpg, jpeg, bmp, gif, tif, tiff, webp; sorted by name,
numbers compared numerically, so frame_2 < frame_10), or one multi-frame file that Pillow reads
(animated GIF / PNG / WebP, multi-page TIFF); other video formats (mp4, avi, ...) are read only when
the optional package ``imageio`` (with its ffmpeg plug-in) is installed. Frame index i is the i-th
frame in that order (0-based). All frames must have the same size.

What the tool assumes about the frames: the network was trained on square crops centred on the hand
(the run's ``data.image_size``). Every frame is cropped with the SAME square box and resized to that
size, and K is mapped to the crop exactly (``handprop_jax.data.crop``). By default the box is the
largest centred square of the frame, so frames should already be roughly hand-centred crops;
``--crop CX CY SIDE`` (pixels of the original frame) chooses another box. Outputs are in the
original frame: 3D in the camera frame (metres, OpenCV axes, unaffected by cropping) and 2D joints
in the original frame's pixels.

Labels (``--labels``), frame index → γ = (root (3,) metres: the wrist in the camera frame; pose
(48,) full MANO axis-angle, radians, global rotation in the camera frame first, hands_mean included;
betas (10,)), see docs/design.md. JSON::

    {"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],          # optional (else --intrinsics)
     "labels": {"0":  {"root": [x, y, z], "pose": [48 numbers], "betas": [10 numbers]},
                "64": {...}}}

(a top-level ``{"0": {...}, ...}`` without "labels" is accepted too) or NPZ with arrays ``frames``
(L,) int, ``root`` (L, 3), ``pose`` (L, 48), ``betas`` (L, 10) and optionally ``K``.

Intrinsics (``--intrinsics``): ``fx,fy,cx,cy`` in pixels of the original frames, or a .json /
.npy / .txt file holding a 3x3 matrix (JSON: a 3x3 list or {"K": ...} or {"fx","fy","cx","cy"});
.json/.npy (and the labels' ``K``) may also hold one matrix per frame, (T, 3, 3), e.g. for frames
that are already per-frame hand crops.

Outputs in OUT/: ``annotations.json`` (one entry per frame: index, file, labelled, sources,
weights, K, root, pose, betas, joints3d, joints2d) and ``annotations.npz`` (the same as arrays with
a leading frame axis: frame_index (T,), labelled (T,), source (T, 2) with -1 for none, weight (T, 2),
root (T, 3), pose (T, 48), betas (T, 10), joints3d (T, 21, 3), joints2d (T, 21, 2), K (T, 3, 3));
with ``--overlays`` also ``overlays/<index>.png``: the propagated mesh rendered over each crop.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from handprop_jax.data.sparse import neighbours

HELP = "propagate sparse labels to every frame of a video"

GAMMA_KEYS = ("root", "pose", "betas")
GAMMA_SHAPES = {"root": (3,), "pose": (48,), "betas": (10,)}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class PropagationInputError(ValueError):
    """Bad user input to the propagation tool (the message names the file, key or shape)."""


# ----------------------------------------------------------------------------------------------
# Pure numeric pieces (jit/vmap friendly)


@jax.jit
def slerp_axis_angle(a: jnp.ndarray, b: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """Geodesic interpolation between rotations given as axis-angle vectors.

    ``R(t) = R_a exp(t log(R_a^T R_b))`` — the same path as quaternion slerp along the shorter arc.

    Args:
      a, b: (..., 3) rotation vectors, radians.
      t: (...) interpolation weight on b in [0, 1] (broadcast against a[..., 0]).
    Returns:
      (..., 3) rotation vectors, radians (angle in [0, pi]).
    """
    from mano_jax import matrix_to_axis_angle, rodrigues

    ra, rb = rodrigues(a), rodrigues(b)
    rel = matrix_to_axis_angle(jnp.swapaxes(ra, -1, -2) @ rb)
    t = jnp.asarray(t, rel.dtype)[..., None]
    return matrix_to_axis_angle(ra @ rodrigues(t * rel))


@jax.jit
def blend_gammas(gamma_a: dict, gamma_b: dict, weight_b: jnp.ndarray) -> dict:
    """Blend two annotations: root and betas linearly, each of the 16 pose rotations by slerp.

    Args:
      gamma_a, gamma_b: {root (B, 3), pose (B, 48), betas (B, 10)}.
      weight_b: (B,) weight of gamma_b in [0, 1]; exactly 0 or 1 returns gamma_a or gamma_b unchanged.
    Returns:
      the blended γ dict.
    """
    w = jnp.asarray(weight_b)
    B = w.shape[0]
    pose = slerp_axis_angle(gamma_a["pose"].reshape(B, 16, 3), gamma_b["pose"].reshape(B, 16, 3),
                            w[:, None]).reshape(B, 48)
    out = {"pose": pose.astype(gamma_a["pose"].dtype)}
    for k in ("root", "betas"):
        out[k] = (1.0 - w[:, None]) * gamma_a[k] + w[:, None] * gamma_b[k]
    # exact endpoints (the slerp round trip through matrices is only accurate to rounding)
    return {k: jnp.where((w == 0.0)[:, None], gamma_a[k], jnp.where((w == 1.0)[:, None], gamma_b[k], out[k]))
            for k in GAMMA_KEYS}


# ----------------------------------------------------------------------------------------------
# A trained run, as the three functions propagation needs


@dataclasses.dataclass(frozen=True)
class Predictor:
    """The model functions of one checkpoint, closed over its config and variables.

    features: images uint8 (B, S, S, 3) → (z_r (B, d), z_theta (B, d)).
    regress: (z_r, z_theta, K (B, 3, 3)) → γ dict.
    align: (γ_b, z_a, z_b) → γ_a, z_* being (z_r, z_theta) tuples (the propagation is
      align(γ*_s, z_u, z_s)).
    image_size: S. batch_size: the fixed batch the functions are called with (the last batch is
    padded so that nothing recompiles).
    """

    features: Callable
    regress: Callable
    align: Callable
    image_size: int
    batch_size: int


def predictor_from_run(workdir: str | Path, model: str = "align", batch_size: int | None = None
                       ) -> tuple[Any, Predictor]:
    """Load ``workdir``'s checkpoint ``model`` (``handprop_jax.model.inference.load_run``).

    Returns (config, Predictor)."""
    from handprop_jax.model import inference

    config, variables = inference.load_run(workdir, model=model)
    return config, predictor_from_variables(config, variables, batch_size)


def predictor_from_variables(config, variables: dict, batch_size: int | None = None) -> Predictor:
    """The Predictor of model ``variables`` ({"params", "batch_stats"}) under ``config``
    (``handprop_jax.model.inference``'s jitted functions)."""
    from handprop_jax.model import inference

    return Predictor(
        features=lambda images: inference.features(config, variables, images),
        regress=lambda z_r, z_t, K: inference.regress(config, variables, z_r, z_t, K),
        align=lambda gamma_b, z_a, z_b: inference.align(config, variables, gamma_b, z_a, z_b),
        image_size=config.data.image_size,
        batch_size=batch_size or config.eval.batch_size,
    )


def batched(fn: Callable, inputs: Any, batch_size: int) -> Any:
    """Apply ``fn`` to a pytree of arrays with leading axis M in fixed-size batches.

    The last batch is padded (by repeating its last row) to ``batch_size``, so a jitted ``fn`` compiles
    once; outputs are concatenated as numpy arrays and cut back to M rows."""
    leaves = jax.tree_util.tree_leaves(inputs)
    m = leaves[0].shape[0] if leaves else 0
    outs = []
    for start in range(0, m, batch_size):
        stop = min(start + batch_size, m)
        idx = np.minimum(np.arange(start, start + batch_size), stop - 1)
        chunk = jax.tree_util.tree_map(lambda x, idx=idx: np.asarray(x)[idx], inputs)
        res = fn(*chunk) if isinstance(chunk, tuple) else fn(chunk)
        outs.append(jax.tree_util.tree_map(lambda y, n=stop - start: np.asarray(y)[:n], res))
    if not outs:
        raise ValueError("batched: nothing to process (0 rows)")
    return jax.tree_util.tree_map(lambda *ys: np.concatenate(ys, 0), *outs)


def propagate_video(predictor: Predictor, images: np.ndarray, labelled: np.ndarray, labels: dict,
                    both_sides: bool = False, features: tuple[np.ndarray, np.ndarray] | None = None
                    ) -> dict[str, np.ndarray]:
    """Annotations for every frame of one video from its labelled frames.

    Args:
      predictor: the run's functions.
      images: uint8 (T, S, S, 3) crops (ignored when ``features`` is given).
      labelled: (L,) sorted unique frame indices with labels, L >= 1.
      labels: γ* of the labelled frames {root (L, 3), pose (L, 48), betas (L, 10)} (same order).
      both_sides: blend the propagations from both neighbouring labelled frames.
      features: optional precomputed (z_r (T, d), z_theta (T, d)).
    Returns:
      {root (T, 3), pose (T, 48), betas (T, 10)} float32, labelled frames = their labels exactly,
      plus ``labelled`` (T,) bool, ``source`` (T, 2) int (left/right or nearest/-1; -1 = none),
      ``weight`` (T, 2) float (weights of the sources), ``gap`` (T,) |u - N(u)|; with ``both_sides``
      also ``nearest``: the nearest-only γ {root, pose, betas} (T, ...), from the same aligner calls.
    """
    labelled = np.asarray(labelled, np.int64)
    T = features[0].shape[0] if features is not None else images.shape[0]
    nb = neighbours(T, labelled)
    if features is None:
        features = batched(predictor.features, images, predictor.batch_size)
    z_r, z_t = (np.asarray(z) for z in features)
    row_of = np.full(T, -1, np.int64)
    row_of[labelled] = np.arange(len(labelled))
    gamma_star = {k: np.asarray(labels[k], np.float32) for k in GAMMA_KEYS}

    is_lab = row_of >= 0
    out = {k: np.zeros((T,) + GAMMA_SHAPES[k], np.float32) for k in GAMMA_KEYS}
    for k in GAMMA_KEYS:
        out[k][is_lab] = gamma_star[k][row_of[is_lab]]
    source = np.full((T, 2), -1, np.int64)
    weight = np.zeros((T, 2))
    nearest = out
    source[is_lab, 0] = np.nonzero(is_lab)[0]
    weight[is_lab, 0] = 1.0
    u = np.nonzero(~is_lab)[0]
    if len(u):
        def run_align(s):
            g = {k: gamma_star[k][row_of[s]] for k in GAMMA_KEYS}

            def fn(g_b, zr_a, zt_a, zr_b, zt_b):
                return predictor.align(g_b, (zr_a, zt_a), (zr_b, zt_b))

            return batched(fn, (g, z_r[u], z_t[u], z_r[s], z_t[s]), predictor.batch_size)

        if not both_sides:
            s = nb["nearest"][u]
            res = run_align(s)
            source[u, 0], weight[u, 0] = s, 1.0
        else:
            l, r, w = nb["left"][u], nb["right"][u], nb["weight"][u]
            s_l = np.where(l >= 0, l, r)
            res_l = run_align(s_l)
            res_r = run_align(np.where(r >= 0, r, l))
            res = batched(blend_gammas, (res_l, res_r, w.astype(np.float32)), predictor.batch_size)
            # the nearest-only result comes for free: N(u) is one of the two sides
            take_r = (nb["nearest"][u] != s_l)[:, None]
            nearest = {k: v.copy() for k, v in out.items()}
            for k in GAMMA_KEYS:
                nearest[k][u] = np.where(take_r, res_r[k], res_l[k]).astype(np.float32)
            source[u] = np.stack([l, r], -1)
            weight[u] = np.stack([1.0 - w, w], -1)
            weight[source < 0] = 0.0
        for k in GAMMA_KEYS:
            out[k][u] = np.asarray(res[k], np.float32)
    extra = {"nearest": nearest} if both_sides else {}
    return {**out, "labelled": is_lab, "source": source, "weight": weight, "gap": nb["gap"], **extra}


def hand_mesh(model, gamma: dict, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Joints (T, 21, 3) and vertices (T, 778, 3), camera frame, metres, of annotations γ."""
    from handprop_jax.hand import hand_in_camera_jit

    return batched(lambda g: hand_in_camera_jit(model, g["root"], g["pose"], g["betas"]),
                   {k: np.asarray(gamma[k], np.float32) for k in GAMMA_KEYS}, batch_size)


# ----------------------------------------------------------------------------------------------
# User input: frames, intrinsics, labels


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def list_frames(source: str | Path) -> list[str]:
    """Names of the frames in order (file names for a folder, "<video>#i" for a video file)."""
    return [name for name, _ in _iter_frames(Path(source), names_only=True)]


def _iter_frames(path: Path, names_only: bool = False):
    from PIL import Image, ImageSequence, UnidentifiedImageError

    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
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
        return
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


def centre_box(height: int, width: int):
    """The largest centred square crop box of an image (``handprop_jax.data.crop.Box``)."""
    from handprop_jax.data.crop import Box

    return Box(cx=(width - 1) / 2, cy=(height - 1) / 2, side=float(min(height, width)))


def load_frames(source: str | Path, image_size: int, box=None) -> tuple[list[str], np.ndarray, tuple, Any]:
    """Read, crop (same box for every frame) and resize the frames of a folder or video file.

    Returns (names (T,), crops uint8 (T, S, S, 3), (H, W) of the original frames, the Box used)."""
    from handprop_jax.data.crop import crop_image

    names, crops, hw = [], [], None
    for name, frame in _iter_frames(Path(source)):
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise PropagationInputError(f"{source}: frame {name} is not an RGB image (shape {frame.shape})")
        if hw is None:
            hw = frame.shape[:2]
            box = box or centre_box(*hw)
        elif frame.shape[:2] != hw:
            raise PropagationInputError(f"{source}: frame {name} is {frame.shape[1]}x{frame.shape[0]} but "
                                        f"the first frame is {hw[1]}x{hw[0]}; all frames must have one size")
        names.append(name)
        crops.append(crop_image(frame.astype(np.uint8), box, image_size))
    if not names:
        raise PropagationInputError(f"{source}: no frames")
    return names, np.stack(crops), hw, box


def parse_intrinsics(text: str) -> np.ndarray:
    """``fx,fy,cx,cy`` or a .json/.npy/.txt file with a 3x3 matrix → (3, 3) float64."""
    path = Path(text)
    if path.suffix.lower() in (".json", ".npy", ".txt") or path.exists():
        if not path.is_file():
            raise PropagationInputError(f"--intrinsics {text}: no such file")
        try:
            if path.suffix.lower() == ".npy":
                K = np.load(path)
            elif path.suffix.lower() == ".json":
                data = json.loads(path.read_text())
                if isinstance(data, dict) and "K" in data:
                    data = data["K"]
                if isinstance(data, dict):
                    K = np.array([[data["fx"], 0, data["cx"]], [0, data["fy"], data["cy"]], [0, 0, 1]])
                else:
                    K = np.asarray(data, np.float64)
            else:
                K = np.loadtxt(path)
        except (ValueError, KeyError, OSError) as e:
            raise PropagationInputError(f"--intrinsics {path}: cannot read a 3x3 matrix ({e!r})") from e
        return check_intrinsics(K, str(path))
    parts = text.replace(" ", "").split(",")
    try:
        fx, fy, cx, cy = (float(p) for p in parts)
    except ValueError as e:
        raise PropagationInputError(f"--intrinsics {text!r}: expected fx,fy,cx,cy (pixels) or a file "
                                    f"with a 3x3 matrix") from e
    return check_intrinsics(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), "--intrinsics")


def check_intrinsics(K, source: str, num_frames: int | None = None) -> np.ndarray:
    """Validate intrinsics: one (3, 3) matrix, or one per frame (T, 3, 3). Returns float64."""
    try:
        K = np.asarray(K, np.float64)
    except (ValueError, TypeError) as e:
        raise PropagationInputError(f"{source}: intrinsics are not a numeric 3x3 matrix") from e
    if K.shape[-2:] != (3, 3) or K.ndim not in (2, 3) or not np.all(np.isfinite(K)) \
            or np.any(K[..., 0, 0] <= 0) or np.any(K[..., 1, 1] <= 0):
        raise PropagationInputError(f"{source}: intrinsics must be a finite 3x3 matrix (or one per frame, "
                                    f"(T, 3, 3)) with positive focal lengths, got shape {K.shape}")
    if K.ndim == 3 and num_frames is not None and K.shape[0] != num_frames:
        raise PropagationInputError(f"{source}: {K.shape[0]} per-frame intrinsics for {num_frames} frames")
    return K


def load_labels(path: str | Path, num_frames: int | None = None
                ) -> tuple[np.ndarray, dict, np.ndarray | None]:
    """Read a labels file (schema in the module docstring).

    Returns (frames (L,) sorted int64, γ* {root (L, 3), pose (L, 48), betas (L, 10)} float32,
    K (3, 3) or None). Raises PropagationInputError naming the file, the frame and the key."""
    path = Path(path)
    if not path.is_file():
        raise PropagationInputError(f"{path}: no such labels file")
    K = None
    if path.suffix.lower() == ".npz":
        try:
            data = dict(np.load(path, allow_pickle=False))
        except (ValueError, OSError) as e:
            raise PropagationInputError(f"{path}: not a readable .npz ({e})") from e
        missing = [k for k in ("frames", *GAMMA_KEYS) if k not in data]
        if missing:
            raise PropagationInputError(f"{path}: missing arrays {missing} (have {sorted(data)}); expected "
                                        f"frames (L,), root (L, 3), pose (L, 48), betas (L, 10)")
        frames = np.asarray(data["frames"])
        if frames.ndim != 1 or not np.issubdtype(frames.dtype, np.integer):
            raise PropagationInputError(f"{path}: 'frames' must be a 1-D integer array, got "
                                        f"{frames.dtype} {frames.shape}")
        gamma = {}
        for k in GAMMA_KEYS:
            a = np.asarray(data[k])
            if a.shape != (len(frames),) + GAMMA_SHAPES[k]:
                raise PropagationInputError(f"{path}: '{k}' has shape {a.shape}, expected "
                                            f"{(len(frames),) + GAMMA_SHAPES[k]}")
            gamma[k] = a
        if "K" in data:
            K = check_intrinsics(data["K"], f"{path}: 'K'")
    elif path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PropagationInputError(f"{path}: malformed JSON ({e})") from e
        if not isinstance(data, dict):
            raise PropagationInputError(f"{path}: expected a JSON object with 'labels'")
        if "K" in data:
            try:
                K = check_intrinsics(data["K"], f"{path}: 'K'")
            except (ValueError, TypeError) as e:
                raise PropagationInputError(f"{path}: 'K' is not a 3x3 matrix") from e
        entries = data.get("labels", {k: v for k, v in data.items() if k != "K"})
        if not isinstance(entries, dict):
            raise PropagationInputError(f"{path}: 'labels' must map frame index → {{root, pose, betas}}")
        frames, gamma = [], {k: [] for k in GAMMA_KEYS}
        for key, entry in entries.items():
            try:
                frames.append(int(key))
            except ValueError as e:
                raise PropagationInputError(f"{path}: label key {key!r} is not a frame index") from e
            if not isinstance(entry, dict):
                raise PropagationInputError(f"{path}: frame {key}: expected {{root, pose, betas}}")
            for k in GAMMA_KEYS:
                if k not in entry:
                    raise PropagationInputError(f"{path}: frame {key}: missing key {k!r}")
                try:
                    a = np.asarray(entry[k], np.float64)
                except (ValueError, TypeError) as e:
                    raise PropagationInputError(f"{path}: frame {key}: '{k}' is not numeric") from e
                if a.shape != GAMMA_SHAPES[k]:
                    raise PropagationInputError(f"{path}: frame {key}: '{k}' has shape {a.shape}, "
                                                f"expected {GAMMA_SHAPES[k]}")
                gamma[k].append(a)
        frames = np.asarray(frames, np.int64)
        gamma = {k: np.asarray(v, np.float64).reshape((len(frames),) + GAMMA_SHAPES[k])
                 for k, v in gamma.items()}
    else:
        raise PropagationInputError(f"{path}: labels must be a .json or .npz file")
    if len(frames) == 0:
        raise PropagationInputError(f"{path}: no labelled frame at all; label at least one frame")
    for k in GAMMA_KEYS:
        if not np.all(np.isfinite(np.asarray(gamma[k], np.float64))):
            raise PropagationInputError(f"{path}: '{k}' contains NaN or inf")
    if len(np.unique(frames)) != len(frames):
        raise PropagationInputError(f"{path}: duplicate frame indices")
    if num_frames is not None:
        bad = frames[(frames < 0) | (frames >= num_frames)]
        if len(bad):
            raise PropagationInputError(f"{path}: label frame index {int(bad[0])} is outside the video "
                                        f"(frames 0..{num_frames - 1})")
    order = np.argsort(frames)
    return frames[order], {k: np.asarray(v, np.float32)[order] for k, v in gamma.items()}, K


# ----------------------------------------------------------------------------------------------
# The tool


def propagate_files(checkpoint: str | Path, frames: str | Path, labels: str | Path, out: str | Path,
                    intrinsics: str | np.ndarray | None = None, both_sides: bool = False,
                    overlays: bool = False, model: str = "align", crop: Sequence[float] | None = None,
                    predictor: tuple[Any, Predictor] | None = None) -> dict[str, np.ndarray]:
    """Everything ``handprop propagate`` does; returns the arrays written to annotations.npz.

    ``predictor`` = (config, Predictor) replaces loading ``checkpoint`` (tests)."""
    from handprop_jax.data.crop import Box, crop_intrinsics
    from handprop_jax.hand import default_mano

    box = Box(*map(float, crop)) if crop is not None else None
    if box is not None and box.side <= 0:
        raise PropagationInputError(f"--crop: side must be positive, got {box.side}")
    # cheap checks first: bad labels or intrinsics fail before a checkpoint is loaded or frames decoded
    names = list_frames(frames)
    lab, gamma_star, K_labels = load_labels(labels, len(names))
    if intrinsics is None and K_labels is None:
        raise PropagationInputError("missing intrinsics: pass --intrinsics fx,fy,cx,cy (or a file), or put "
                                    "'K' in the labels file")
    K = (parse_intrinsics(intrinsics) if isinstance(intrinsics, str)
         else check_intrinsics(intrinsics, "intrinsics") if intrinsics is not None else K_labels)
    K = np.broadcast_to(check_intrinsics(K, "intrinsics", len(names)), (len(names), 3, 3))
    if predictor is None:
        if not Path(checkpoint).is_dir():
            raise PropagationInputError(f"--checkpoint {checkpoint}: no such run folder")
        predictor = predictor_from_run(checkpoint, model)
    config, pred = predictor
    S = pred.image_size
    names, crops, _, box = load_frames(frames, S, box)
    K_crop = np.stack([crop_intrinsics(k, box, S) for k in K]).astype(np.float32)

    result = propagate_video(pred, crops, lab, gamma_star, both_sides=both_sides)
    mano = default_mano(config)
    joints, verts = hand_mesh(mano, result)
    from handprop_jax.camera import project

    joints2d = np.asarray(project(jnp.asarray(joints), jnp.asarray(K, jnp.float32)))
    T = len(names)
    arrays = {
        "frame_index": np.arange(T), "labelled": result["labelled"], "source": result["source"],
        "weight": result["weight"], "root": result["root"], "pose": result["pose"],
        "betas": result["betas"], "joints3d": joints.astype(np.float32),
        "joints2d": joints2d.astype(np.float32), "K": K.astype(np.float32),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "annotations.npz", **arrays)
    entries = []
    for i in range(T):
        valid = arrays["source"][i] >= 0
        entries.append({
            "index": i, "file": names[i], "labelled": bool(arrays["labelled"][i]),
            "sources": arrays["source"][i][valid].tolist(), "K": arrays["K"][i].tolist(),
            "weights": [round(float(w), 6) for w in arrays["weight"][i][valid]],
            **{k: np.round(arrays[k][i].astype(np.float64), 7).tolist()
               for k in ("root", "pose", "betas", "joints3d", "joints2d")},
        })
    meta = {"checkpoint": str(checkpoint), "model": model, "frames": str(frames), "labels": str(labels),
            "both_sides": both_sides, "crop_box": dataclasses.asdict(box),
            "image_size": S, "num_frames": T, "num_labelled": int(len(lab)),
            "units": {"root": "m", "joints3d": "m (camera frame, OpenCV)", "pose": "rad, axis-angle",
                      "joints2d": "px of the original frames"}}
    (out / "annotations.json").write_text(json.dumps({**meta, "frames_out": entries}))
    if overlays:
        write_overlays(out / "overlays", crops, verts, K_crop, mano.faces, names)
    return arrays


def export_example(config, split: str, video: int, out: str | Path, stride: int | None = None
                   ) -> dict[str, Path]:
    """Write video ``video`` of a built data set's ``split`` in the tool's input formats, to try
    ``handprop propagate`` (see :func:`write_example`; ``stride`` defaults to
    ``config.data.label_stride``)."""
    from handprop_jax.data.pipeline import open_split

    sp = open_split(config.data, split)
    if not 0 <= video < sp.table.num_videos:
        raise PropagationInputError(f"{split} has videos 0..{sp.table.num_videos - 1}, not {video}")
    return write_example(sp.video(video, with_labels=True), out, stride or config.data.label_stride)


def write_example(video: dict, out: str | Path, stride: int) -> dict[str, Path]:
    """Write one whole video {image uint8 (T, S, S, 3), K (T, 3, 3), root, pose, betas, joints3d}
    in the tool's input formats: OUT/frames/000000.png..., OUT/labels.json (every ``stride``-th
    frame and the last, as the evaluation labels them), OUT/intrinsics.npy (T, 3, 3: the crops'
    per-frame K) and OUT/ground_truth.npz (γ and joints3d of every frame, to score the result)."""
    from PIL import Image

    from handprop_jax.data.sparse import labelled_frames

    out = Path(out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(video["image"]):
        Image.fromarray(np.asarray(img, np.uint8)).save(out / "frames" / f"{i:06d}.png")
    lab = labelled_frames(len(video["image"]), stride)
    labels = {"labels": {str(int(f)): {k: np.asarray(video[k][f], np.float64).tolist() for k in GAMMA_KEYS}
                         for f in lab}}
    (out / "labels.json").write_text(json.dumps(labels))
    np.save(out / "intrinsics.npy", np.asarray(video["K"], np.float64))
    np.savez(out / "ground_truth.npz", **{k: np.asarray(video[k]) for k in (*GAMMA_KEYS, "joints3d")})
    return {"frames": out / "frames", "labels": out / "labels.json", "intrinsics": out / "intrinsics.npy",
            "ground_truth": out / "ground_truth.npz"}


def render_overlays(crops: np.ndarray, verts: np.ndarray, K: np.ndarray, faces, alpha: float = 0.6,
                    batch_size: int = 16, color=(0.95, 0.75, 0.6)) -> np.ndarray:
    """The meshes rendered over the images with the project renderer (Lambert + ambient, blended).

    crops uint8 (T, S, S, 3), verts (T, 778, 3) metres, K (T, 3, 3) of the crops, color RGB in [0, 1]
    → uint8 (T, S, S, 3)."""
    from handprop_jax.render import max_face_extent, render_batch

    T, S = crops.shape[0], crops.shape[1]
    color = np.broadcast_to(np.asarray(color, np.float32), verts.shape[1:])
    # the splat rasteriser is exact when every face spans <= window pixel centres; powers of two
    # keep the number of compiled variants small; large faces (close-ups) use the dense rasteriser
    extent = np.asarray(max_face_extent(jnp.asarray(verts, jnp.float32), jnp.asarray(faces),
                                        jnp.asarray(K, jnp.float32)), np.float64)
    ext = float(np.max(extent)) if extent.size and np.all(np.isfinite(extent)) else np.inf
    window = None if not ext <= 32 else max(4, 1 << (max(int(ext), 1) - 1).bit_length())

    def one(v, k, img):
        bg = img.astype(np.float32) / 255.0
        B = v.shape[0]
        r = render_batch(jnp.asarray(v, jnp.float32), jnp.asarray(faces), jnp.asarray(k, jnp.float32),
                         jnp.broadcast_to(color, (B,) + color.shape),
                         jnp.tile(jnp.array([[0.0, -0.3, -1.0]]), (B, 1)),
                         (S, S), jnp.asarray(bg), jnp.full((B,), 0.35), splat_window=window)
        m = np.asarray(r["mask"])[..., None]
        blended = np.where(m, alpha * np.asarray(r["image"]) + (1 - alpha) * bg, bg)
        return (np.clip(blended, 0, 1) * 255 + 0.5).astype(np.uint8)

    return batched(one, (verts, K, crops), batch_size) if T else crops


def write_overlays(folder: Path, crops, verts, K, faces, names) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    images = render_overlays(crops, verts, K, faces)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:06d}.png")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="run folder (workdir) of a trained run")
    parser.add_argument("--model", default="align", choices=("align", "stage2", "baseline", "stage1"),
                        help="checkpoint whose aligner is used (default: align)")
    parser.add_argument("--frames", required=True, help="folder of frame images, or a video file")
    parser.add_argument("--labels", required=True, help="sparse labels, .json or .npz (schema above)")
    parser.add_argument("--intrinsics", default=None,
                        help="fx,fy,cx,cy in pixels of the original frames, or a .json/.npy/.txt 3x3 file "
                             "(else 'K' in the labels file)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--both-sides", action="store_true",
                        help="blend propagations from the labelled frames on both sides")
    parser.add_argument("--overlays", action="store_true", help="also write overlays/<index>.png")
    parser.add_argument("--crop", type=float, nargs=3, metavar=("CX", "CY", "SIDE"), default=None,
                        help="square crop box (pixels of the original frames) applied to every frame; "
                             "default: the largest centred square")


def run(args: argparse.Namespace) -> int:
    try:
        arrays = propagate_files(args.checkpoint, args.frames, args.labels, args.out, args.intrinsics,
                                 both_sides=args.both_sides, overlays=args.overlays, model=args.model,
                                 crop=args.crop)
    except PropagationInputError as e:
        print(f"handprop propagate: error: {e}", file=sys.stderr)
        return 2
    n, nl = len(arrays["frame_index"]), int(arrays["labelled"].sum())
    print(f"propagated {nl} labelled frame(s) to {n - nl} unlabelled frame(s) → {Path(args.out).resolve()}"
          f"/annotations.{{json,npz}}")
    return 0
