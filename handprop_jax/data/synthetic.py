"""Rendered synthetic hand videos: the embedded default data set (no download needed).

Per video (all drawn from ``numpy.random.default_rng([seed, split, video])``, so any video can be
regenerated alone and the result does not depend on batching):

- appearance: MANO betas, a skin tone with smooth per-vertex variation, a light direction and an
  ambient level, a textured background (gradient + multi-scale value noise + random shapes) painted
  in *full-image* coordinates, so the crop that follows the hand sees the background move;
- camera: a 640x480 pinhole camera with a random focal length and principal point;
- motion: a speed profile (base pace with 1-3 fast bursts) warps time; root rotation (axis-angle
  offsets around a random base orientation, palm/back/side views), root position (normalised image
  coordinates and depth) and all 45 finger PCA coefficients (scaled by ``synthetic_pose_std``) are
  natural cubic splines through random keyframes of the warped time;
- per frame: a square crop centred on the hand's projected vertex bounding box (side 1.2x its larger
  extent), the crop intrinsics (focal scaled, principal point shifted), the rendered image and every
  feature of ``handprop_jax.data.features.frame_features``.

Rendering runs as ``render_batch`` (jitted) over chunks of frames with the fast splat rasteriser.

Motion statistics (10 videos x 128 frames, K = 16): consecutive frames move the joints by 10 mm and
the global rotation by 2.9 deg on average (p99 32 mm / 12 deg, on fast segments); copying the nearest
label N(u) at gap 8 is off by 66 mm MPJPE (root-relative 34 mm) and 20 deg on average (p90 118 mm).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import jax.numpy as jnp
import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline

import mano_jax
from handprop_jax.camera import project
from handprop_jax.data.boxes import MIN_SIDE_M, VERTEX_SCALE, square_boxes
from handprop_jax.data.crop import crop_intrinsics
from handprop_jax.hand import hand_in_camera_jit
from handprop_jax.render import face_extents, render_batch

SPLITS = ("train", "val", "test")
FULL_SIZE = (480, 640)  # (H, W) of the virtual full camera image, pixels
CANVAS_SIZE = (240, 320)  # background painted at half the full resolution
KEY_SPACING = 20.0  # frames (of normal-speed time) between trajectory keyframes
RENDER_CHUNK = 32  # frames rendered per render_batch call
MIN_CROP = MIN_SIDE_M  # metres: smallest crop side at the root depth
SPLAT_CONFIGS = ((8, 6), (12, 8), (16, 10), (24, 14))  # (large faces, other faces) splat windows
SKIN_TONES = np.array([  # albedo, light to dark
    [0.96, 0.80, 0.69], [0.89, 0.68, 0.55], [0.78, 0.57, 0.42], [0.62, 0.43, 0.30], [0.42, 0.28, 0.19]])
#: SynthSpec.style values: the demo's videos, and the differently styled pretraining source set
STYLES = ("target", "source")
#: the source style's albedos: gloves and painted hands as much as skin (no target tone among them)
SOURCE_TONES = np.array([
    [0.85, 0.85, 0.88], [0.20, 0.35, 0.75], [0.75, 0.25, 0.20], [0.30, 0.60, 0.35], [0.95, 0.75, 0.30],
    [0.55, 0.45, 0.65], [0.15, 0.15, 0.18], [0.70, 0.52, 0.48]])


@dataclasses.dataclass(frozen=True)
class SynthSpec:
    """Static parameters of a synthetic data set.

    videos: videos per split (train, val, test); frames: frames per video; image_size: crop side in
    pixels; seed: generation seed; side: MANO hand side; mano_seed: seed of ``mano_jax.synthetic``
    (the hand model the rest of the code uses by default, see ``handprop_jax.hand.default_mano``).
    """

    videos: tuple[int, int, int] = (40, 6, 10)
    frames: int = 128
    image_size: int = 64
    seed: int = 0
    side: str = "right"
    mano_seed: int = 0
    style: str = "target"

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"SynthSpec.style must be one of {STYLES}, got {self.style!r}")
        if len(self.videos) != 3 or min(self.videos) < 0:
            raise ValueError(f"SynthSpec.videos must be 3 counts (train, val, test), got {self.videos}")
        if self.frames < 2:
            raise ValueError(f"SynthSpec.frames must be >= 2, got {self.frames}")
        if self.image_size < 16:
            raise ValueError(f"SynthSpec.image_size must be >= 16 pixels, got {self.image_size}")

    @property
    def name(self) -> str:
        """Builder-config name that identifies the data (used as the tfds config name)."""
        v = "-".join(str(n) for n in self.videos)
        style = "" if self.style == "target" else f"_{self.style}"
        return f"v{v}_f{self.frames}_s{self.image_size}_seed{self.seed}{style}"

    def num_videos(self, split: str) -> int:
        return self.videos[SPLITS.index(split)]


def spec_from_config(data_config) -> SynthSpec:
    """SynthSpec of a ``handprop_jax.config.DataConfig``."""
    return SynthSpec(videos=tuple(data_config.synth_videos), frames=int(data_config.synth_frames),
                     image_size=int(data_config.image_size), seed=int(getattr(data_config, "synth_seed", 0)),
                     style=str(getattr(data_config, "synth_style", "target")))


# ----------------------------------------------------------------------------------------------
# random ingredients (numpy, per video)

def _rotation(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues in numpy: (..., 3) -> (..., 3, 3)."""
    return np.asarray(mano_jax.rodrigues(jnp.asarray(axis_angle, jnp.float32)), np.float64)


def _axis(axis: int, angle: float) -> np.ndarray:
    v = np.zeros(3)
    v[axis] = angle
    return _rotation(v)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _frame_from(up: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Rotation taking ``up`` (wrist -> middle finger) to image-up (-y) and the palm-plane normal
    (side x up) to -z (towards the camera); the random yaw of each video then gives palm, back and
    side views."""
    y_src = _unit(up)
    z_src = _unit(np.cross(side, up))
    x_src = np.cross(y_src, z_src)
    src = np.stack([x_src, y_src, z_src], 0)  # rows: hand-frame axes in model coordinates
    dst = np.stack([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]], 0)  # where they should go
    return dst.T @ src


def _speed_profile(rng: np.random.Generator, frames: int) -> np.ndarray:
    """Warped time (frames,): cumulative speed; base speed 0.6-1 with 1-3 Gaussian bursts adding
    1.5-2.5 (fast segments of ~10-30 frames)."""
    t = np.arange(frames, dtype=np.float64)
    speed = np.full(frames, rng.uniform(0.6, 1.0))
    for _ in range(rng.integers(1, 4)):
        centre, width = rng.uniform(0, frames), rng.uniform(5, 14)
        speed += rng.uniform(1.5, 2.5) * np.exp(-0.5 * ((t - centre) / width) ** 2)
    return np.concatenate([[0.0], np.cumsum(speed[:-1])])


def _spline(rng: np.random.Generator, phase: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Natural cubic spline through ``keys`` (n_keys, D) placed every KEY_SPACING of phase."""
    knots = np.arange(keys.shape[0]) * KEY_SPACING - rng.uniform(0, KEY_SPACING)
    return CubicSpline(knots, keys, bc_type="natural")(phase)


def _n_keys(phase: np.ndarray) -> int:
    return int(np.ceil(phase[-1] / KEY_SPACING)) + 3


def _background(rng: np.random.Generator) -> np.ndarray:
    """Textured canvas (CANVAS_SIZE + (3,)) float in [0, 1]: gradient + value noise + shapes."""
    from PIL import Image, ImageDraw

    H, W = CANVAS_SIZE
    yy, xx = np.mgrid[0:H, 0:W] / max(H, W)
    a = rng.uniform(0, 2 * np.pi)
    g = (np.cos(a) * xx + np.sin(a) * yy)
    g = (g - g.min()) / max(np.ptp(g), 1e-6)
    c0, c1 = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
    img = c0 + g[..., None] * (c1 - c0)
    for cells, amp in ((4, 0.25), (10, 0.15), (30, 0.08), (80, 0.05)):
        grid = rng.normal(0, 1, (cells * H // W + 2, cells + 2, 3))
        noise = ndimage.zoom(grid, (H / (grid.shape[0] - 1), W / (grid.shape[1] - 1), 1), order=1)
        img = img + amp * noise[:H, :W]
    canvas = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(4, 14)):
        x0, y0 = rng.uniform(-0.1, 1.0) * W, rng.uniform(-0.1, 1.0) * H
        w, h = rng.uniform(0.05, 0.35) * W, rng.uniform(0.05, 0.35) * H
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = [x0, y0, x0 + w, y0 + h]
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse(shape, fill=colour)
        elif kind == 1:
            draw.rectangle(shape, fill=colour)
        else:
            draw.line(shape, fill=colour, width=int(rng.integers(2, 8)))
    return np.asarray(canvas, np.float32) / 255.0


def _background_source(rng: np.random.Generator) -> np.ndarray:
    """The source style's canvas (CANVAS_SIZE + (3,)) in [0, 1]: stripes or a checkerboard at a random
    angle and scale, a vignette and value noise: other textures than :func:`_background`'s."""
    H, W = CANVAS_SIZE
    yy, xx = np.mgrid[0:H, 0:W] / max(H, W)
    a = rng.uniform(0, np.pi)
    u, v = np.cos(a) * xx + np.sin(a) * yy, -np.sin(a) * xx + np.cos(a) * yy
    freq = rng.uniform(3, 25)
    if rng.uniform() < 0.5:
        pattern = 0.5 + 0.5 * np.sin(2 * np.pi * freq * u)
    else:
        pattern = ((np.floor(freq * u) + np.floor(freq * v)) % 2).astype(np.float64)
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    img = c0 + pattern[..., None] * (c1 - c0)
    grid = rng.normal(0, 1, (8 * H // W + 2, 8 + 2, 3))
    zoom = (H / (grid.shape[0] - 1), W / (grid.shape[1] - 1), 1)
    img = img + 0.12 * ndimage.zoom(grid, zoom, order=1)[:H, :W]
    vignette = 1 - rng.uniform(0, 0.5) * ((xx - xx.mean()) ** 2 + (yy - yy.mean()) ** 2) / 0.3
    return np.clip(img * vignette[..., None], 0, 1).astype(np.float32)


def _skin_source(rng: np.random.Generator, rest_vertices: np.ndarray) -> np.ndarray:
    """The source style's (V, 3) albedo: one of :data:`SOURCE_TONES` jittered, with blotches."""
    tone = SOURCE_TONES[rng.integers(len(SOURCE_TONES))] * rng.uniform(0.8, 1.2, 3)
    freq = rng.normal(0, 80, (3, 2))
    blotch = 0.15 * np.sin(rest_vertices @ freq + rng.uniform(0, 2 * np.pi, 2)).mean(-1, keepdims=True)
    fine = rng.normal(0, 0.04, rest_vertices.shape)
    return np.clip(tone * (1 + blotch) + fine, 0, 1).astype(np.float32)


def _skin(rng: np.random.Generator, rest_vertices: np.ndarray) -> np.ndarray:
    """(V, 3) albedo: a tone between two neighbouring palette entries, smooth and fine variation."""
    i = rng.uniform(0, len(SKIN_TONES) - 1)
    lo = int(np.floor(i))
    tone = SKIN_TONES[lo] + (i - lo) * (SKIN_TONES[min(lo + 1, len(SKIN_TONES) - 1)] - SKIN_TONES[lo])
    tone = tone * rng.uniform(0.9, 1.1, 3)
    freq = rng.normal(0, 40, (3, 3))
    smooth = 0.06 * np.sin(rest_vertices @ freq + rng.uniform(0, 2 * np.pi, 3)).mean(-1, keepdims=True)
    fine = rng.normal(0, 0.02, rest_vertices.shape)
    return np.clip(tone * (1 + smooth) + fine, 0, 1).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Hand:
    """The model plus per-model constants the generator needs (cached per SynthSpec side/seed)."""

    model: mano_jax.ManoModel
    pose_std: np.ndarray  # (45,)
    canonical: np.ndarray  # (3, 3)
    rest_vertices: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3) int32, the model's faces reordered: large faces first
    n_large: int  # faces rasterised with the larger splat window


@functools.lru_cache(maxsize=4)
def _hand(side: str, mano_seed: int) -> _Hand:
    model = mano_jax.synthetic(side=side, seed=mano_seed)
    j = np.asarray(mano_jax.forward(model, jnp.zeros((1, 48)), jnp.zeros((1, 10)), use_pca=False,
                                    flat_hand_mean=True, center_idx=0)[1][0], np.float64)
    canonical = _frame_from(j[9] - j[0], j[5] - j[17])
    rest = np.asarray(model.v_template, np.float64)
    faces = np.asarray(model.faces, np.int32)
    tri = rest[faces]
    longest = np.max(np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=-1), axis=1)
    order = np.argsort(-longest, kind="stable")
    n_large = int(np.sum(longest > 1.5 * np.median(longest)))
    return _Hand(model=model, pose_std=np.asarray(mano_jax.synthetic_pose_std(side, mano_seed), np.float64),
                 canonical=canonical, rest_vertices=rest, faces=faces[order], n_large=max(n_large, 1))


def video_parameters(spec: SynthSpec, split: str, video: int) -> dict[str, np.ndarray]:
    """Everything random about one video, before rendering (deterministic in (seed, split, video)).

    Returns root (T, 3) m, pose (T, 48) rad, betas (10,), colors (V, 3), light (3,), ambient (),
    canvas (240, 320, 3), K_full (3, 3) pixels of the 640x480 camera, noise_seed ()."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    hand = _hand(spec.side, spec.mano_seed)
    source = spec.style == "source"
    # the source style draws from its own random streams: no source video repeats a target video
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), video]
                                + ([STYLES.index(spec.style)] * source))
    T = spec.frames
    phase = _speed_profile(rng, T)
    nk = _n_keys(phase)

    # camera
    f = rng.uniform(380, 900) if source else rng.uniform(480, 720)
    K_full = np.array([[f, 0, (FULL_SIZE[1] - 1) / 2 + rng.normal(0, 8)],
                       [0, f, (FULL_SIZE[0] - 1) / 2 + rng.normal(0, 8)], [0, 0, 1]])

    # root rotation: random base (roll, yaw over palm/side/back, pitch) then spline offsets
    base = (_axis(2, rng.uniform(-2.0, 2.0)) @ _axis(1, rng.uniform(-np.pi, np.pi))
            @ _axis(0, rng.uniform(-0.7, 0.7)) @ hand.canonical)
    offsets = _spline(rng, phase, rng.normal(0, 0.3, (nk, 3)))
    rot = _rotation(offsets) @ base
    global_aa = np.asarray(mano_jax.matrix_to_axis_angle(jnp.asarray(rot, jnp.float32)), np.float64)

    # root position: depth and normalised image coordinates, kept inside the view
    z0, xy0 = rng.uniform(0.4, 0.6), rng.uniform(-0.15, 0.15, 2)
    z = np.clip(_spline(rng, phase, z0 + rng.uniform(-0.1, 0.1, (nk, 1)))[:, 0], 0.3, 0.75)
    xy = np.clip(_spline(rng, phase, xy0 + rng.uniform(-0.1, 0.1, (nk, 2))), -0.28, 0.28)
    root = np.concatenate([xy * z[:, None], z[:, None]], 1)

    # fingers: all 45 PCA coefficients at the natural-pose scale
    coeffs = np.clip(rng.normal(0, 1, (nk, 45)), -2.2, 2.2) * hand.pose_std
    fingers = np.asarray(mano_jax.pca_to_axis_angle(hand.model, jnp.asarray(_spline(rng, phase, coeffs),
                                                                             jnp.float32)))
    pose = np.concatenate([global_aa, fingers], 1)

    betas = np.clip(rng.normal(0, 1, 10), -2.5, 2.5)
    if source:  # light from any side of the hand, a wider range of ambient levels
        light = rng.normal(0, 1, 3) - np.array([0, 0, 0.3])
        ambient = rng.uniform(0.1, 0.7)
    else:
        light = np.array([rng.normal(0, 0.8), rng.normal(-0.4, 0.8), -rng.uniform(0.5, 1.5)])
        ambient = rng.uniform(0.25, 0.5)
    light = (light / np.linalg.norm(light)).astype(np.float32)
    return dict(root=root.astype(np.float32), pose=pose.astype(np.float32), betas=betas.astype(np.float32),
                colors=(_skin_source if source else _skin)(rng, hand.rest_vertices), light=light,
                ambient=np.float32(ambient), canvas=(_background_source if source else _background)(rng),
                K_full=K_full.astype(np.float32), noise_seed=np.int64(rng.integers(2**31)))


def _crop_background(canvas: np.ndarray, centre: np.ndarray, side: np.ndarray, size: int) -> np.ndarray:
    """Bilinear samples of the canvas under each crop: (T, size, size, 3) float."""
    H, W = CANVAS_SIZE
    scale = np.array([W / FULL_SIZE[1], H / FULL_SIZE[0]])
    grid = np.arange(size) - (size - 1) / 2
    out = np.empty((len(side), size, size, 3), np.float32)
    for t in range(len(side)):
        u = (grid[None, :] * side[t] / size + centre[t, 0] + 0.5) * scale[0] - 0.5
        v = (grid[:, None] * side[t] / size + centre[t, 1] + 0.5) * scale[1] - 0.5
        uu, vv = np.broadcast_arrays(u, v)
        for c in range(3):
            out[t, :, :, c] = ndimage.map_coordinates(canvas[..., c], [vv, uu], order=1, mode="mirror")
    return out


def _windows(large: int, small: int, n_large: int, n_faces: int) -> tuple | None:
    """Splat windows (few fixed configurations: few compilations) for the face groups; None = dense."""
    for wl, ws in SPLAT_CONFIGS:
        if large <= wl and small <= ws:
            return ((n_large, wl), (n_faces - n_large, ws))
    return None


def _hand_and_crops(hand: _Hand, p: dict, size: int) -> tuple[np.ndarray, ...]:
    """The posed hand of a video's parameters and the crop that follows it in every frame:
    (verts (T, V, 3), joints (T, 21, 3), centre (T, 2) and side (T,) in full-image pixels, crop K
    (T, 3, 3) float32)."""
    T = len(p["root"])
    betas = np.broadcast_to(p["betas"], (T, 10))
    verts, joints = (np.asarray(a) for a in hand_in_camera_jit(
        hand.model, jnp.asarray(p["root"]), jnp.asarray(p["pose"]), jnp.asarray(betas)))
    uv = np.asarray(project(jnp.asarray(verts), jnp.asarray(p["K_full"])))  # (T, V, 2) full image
    # 1.2x the larger bounding-box extent, but at least MIN_CROP metres at the root depth (bounds the
    # zoom on compact, end-on views): the vertex rule of handprop_jax.data.boxes (the tool's boxes)
    centre, side = square_boxes(uv, VERTEX_SCALE, p["K_full"][0, 0] * MIN_CROP / p["root"][:, 2])
    K = crop_intrinsics(p["K_full"], np.concatenate([centre, side[:, None]], 1), size).astype(np.float32)
    return verts, joints, centre, side, K


def video_motion(spec: SynthSpec, split: str, video: int) -> dict[str, np.ndarray]:
    """The hand motion of one video without rendering it: root (T, 3), pose (T, 48), betas (T, 10),
    joints3d (T, 21, 3) float32 and the crop intrinsics K (T, 3, 3) that ``render_video`` would use
    (same crop rule). Used as unpaired motion data (a video nobody renders)."""
    hand = _hand(spec.side, spec.mano_seed)
    p = video_parameters(spec, split, video)
    _, joints, _, _, K = _hand_and_crops(hand, p, spec.image_size)
    T = spec.frames
    return {"root": p["root"], "pose": p["pose"],
            "betas": np.ascontiguousarray(np.broadcast_to(p["betas"], (T, 10))),
            "joints3d": joints.astype(np.float32), "K": K}


def render_video(spec: SynthSpec, split: str, video: int) -> dict[str, np.ndarray]:
    """All frames of one video: dict of per-frame arrays with the keys of ``frame_features``
    (image uint8 (T, S, S, 3) not yet PNG-encoded; video_name a str)."""
    hand = _hand(spec.side, spec.mano_seed)
    p = video_parameters(spec, split, video)
    T, S = spec.frames, spec.image_size
    betas = np.broadcast_to(p["betas"], (T, 10))
    verts, joints, centre, side, K = _hand_and_crops(hand, p, S)
    image = _render_crops(hand, p, verts, centre, side, K, S)
    joints2d = np.asarray(project(jnp.asarray(joints), jnp.asarray(K)), np.float32)
    return {
        "image": image, "K": K, "root": p["root"], "pose": p["pose"], "betas": np.ascontiguousarray(betas),
        "joints3d": joints.astype(np.float32), "joints2d": joints2d,
        "video_id": np.full(T, video, np.int32), "video_name": f"{split}_{video:04d}",
        "frame_index": np.arange(T, dtype=np.int32), "frame_time": np.arange(T, dtype=np.int32),
        "video_length": np.full(T, T, np.int32),
    }


def render_video_at(spec: SynthSpec, split: str, video: int, boxes: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of one video cropped with the given boxes instead of the crops that follow the
    hand: the same scene (hand, light, background, camera noise) seen through other crops of the
    full 640x480 camera. ``boxes`` (T, 3) float: cx, cy, side in full-image pixels (the convention of
    ``handprop_jax.data.boxes``). Returns (image uint8 (T, S, S, 3), K (T, 3, 3) float32 of the crops).
    At the boxes ``render_video`` uses, the images and K are ``render_video``'s bit for bit."""
    hand = _hand(spec.side, spec.mano_seed)
    p = video_parameters(spec, split, video)
    S = spec.image_size
    boxes = np.asarray(boxes, np.float64)
    if boxes.shape != (spec.frames, 3):
        raise ValueError(f"render_video_at: boxes of shape {boxes.shape}, expected ({spec.frames}, 3)")
    verts, _, _, _, _ = _hand_and_crops(hand, p, S)
    centre, side = boxes[:, :2], boxes[:, 2]
    K = crop_intrinsics(p["K_full"], boxes, S).astype(np.float32)
    return _render_crops(hand, p, verts, centre, side, K, S), K


def crop_boxes(spec: SynthSpec, split: str, video: int) -> np.ndarray:
    """(T, 3) float64 the boxes (cx, cy, side, full-image pixels) of the crops ``render_video`` draws."""
    _, _, centre, side, _ = _hand_and_crops(_hand(spec.side, spec.mano_seed),
                                            video_parameters(spec, split, video), spec.image_size)
    return np.concatenate([centre, side[:, None]], 1).astype(np.float64)


def _render_crops(hand: _Hand, p: dict, verts: np.ndarray, centre: np.ndarray, side: np.ndarray,
                  K: np.ndarray, S: int) -> np.ndarray:
    """uint8 (T, S, S, 3): the posed hand ``verts`` (T, V, 3) over the canvas, seen through the crops
    (centre (T, 2), side (T,) full-image pixels; their K (T, 3, 3)), with the video's camera noise."""
    T = len(verts)
    background = _crop_background(p["canvas"], centre, side, S)
    faces = jnp.asarray(hand.faces)
    extents = np.asarray(face_extents(jnp.asarray(verts), faces, jnp.asarray(K)))  # (T, F)
    large, small = extents[:, :hand.n_large].max(1), extents[:, hand.n_large:].max(1)

    images = np.empty((T, S, S, 3), np.float32)
    chunk = min(RENDER_CHUNK, T)
    for start in range(0, T, chunk):
        idx = np.minimum(np.arange(start, start + chunk), T - 1)  # pad the last chunk by repetition
        window = _windows(int(large[idx].max()), int(small[idx].max()), hand.n_large, len(hand.faces))
        out = render_batch(jnp.asarray(verts[idx]), faces, jnp.asarray(K[idx]),
                           jnp.broadcast_to(jnp.asarray(p["colors"]), (chunk,) + p["colors"].shape),
                           jnp.broadcast_to(jnp.asarray(p["light"]), (chunk, 3)), (S, S),
                           jnp.asarray(background[idx]), jnp.full((chunk,), p["ambient"]),
                           splat_window=window)
        n = min(chunk, T - start)
        images[start:start + n] = np.asarray(out["image"])[:n]
    noise = np.random.default_rng(int(p["noise_seed"])).normal(0, 1.5, images.shape)
    return np.clip(np.round(images * 255 + noise), 0, 255).astype(np.uint8)


def iterate_split(spec: SynthSpec, split: str, progress: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """Render the videos of a split in order, yielding ``render_video`` dicts."""
    from tqdm import tqdm

    n = spec.num_videos(split)
    for v in tqdm(range(n), desc=f"render {split}", unit="video", disable=not progress or n == 0):
        yield render_video(spec, split, v)


# ----------------------------------------------------------------------------------------------
# whole frames of the camera (handprop data synth-videos: the own-videos layout with ground truth)

def frame_geometry(size: tuple[int, int]) -> tuple[float, int]:
    """For whole frames of ``size`` (H, W) pixels of the 640x480 camera (the same aspect, 4:3): the
    scale s = W / 640 (frame pixel = s x camera pixel) and the row offset of the frame inside the
    square S = W rendering that :func:`render_full_frames` crops it from. ValueError on another aspect
    or a frame under 16 px."""
    H, W = (int(v) for v in size)
    if H * FULL_SIZE[1] != W * FULL_SIZE[0] or H < 16:
        raise ValueError(f"frame size {W}x{H}: expected the camera's 4:3 aspect (e.g. 320x240, 640x480), "
                         "at least 16 px high")
    return W / FULL_SIZE[1], (W - H) // 2


def swept_roots(hand_model, p: dict, rng: np.random.Generator, travel: float, depth_scale: float,
                margin: float = 0.04) -> np.ndarray:
    """The roots (T, 3) metres of a video's hand moved for whole frames: depths times ``depth_scale``
    (the generator's 0.3-0.75 m fill a crop, not a frame), then the root shifted parallel to the image
    so that the centre of the hand's projected mesh box follows a sweep across the camera image: the
    image centre plus the generator's own motion of that centre (its mean removed) plus a straight
    line of length ``travel`` x the image width along a random direction (within 30 deg of the
    horizontal, either way), linear in time; each frame's centre is kept ``margin`` x the width plus
    half the box inside the image (the hand stays in view when it fits). Solved by two fixed-point
    steps (a root shift moves the mesh's projection by almost the same amount: all its points are at
    nearly the root's depth). travel 0 keeps the generator's motion, centred."""
    T = len(p["root"])
    K, f = p["K_full"].astype(np.float64), float(p["K_full"][0, 0])
    betas = jnp.asarray(np.broadcast_to(p["betas"], (T, 10)))
    z = p["root"][:, 2:3].astype(np.float64) * depth_scale
    xy = p["root"][:, :2] / p["root"][:, 2:3]  # normalised image position of the root

    def box(xy):
        root = jnp.asarray(np.concatenate([xy * z, z], 1), jnp.float32)
        verts, _ = hand_in_camera_jit(hand_model, root, jnp.asarray(p["pose"]), betas)
        uv = np.asarray(project(verts, jnp.asarray(K, jnp.float32)), np.float64)
        lo, hi = uv.min(1), uv.max(1)
        return (lo + hi) / 2, (hi - lo) / 2

    a = rng.uniform(-np.pi / 6, np.pi / 6) + np.pi * rng.integers(2)
    ramp = np.linspace(-0.5, 0.5, T)[:, None] * travel * FULL_SIZE[1] * np.array([np.cos(a), np.sin(a)])
    centre, half = box(xy)
    size = np.array([FULL_SIZE[1], FULL_SIZE[0]], np.float64)
    target = (size - 1) / 2 + centre - centre.mean(0) + ramp
    for last in (False, True):
        lo, hi = half + margin * size[0], size - 1 - half - margin * size[0]
        goal = np.where(lo <= hi, np.clip(target, lo, np.maximum(lo, hi)), (size - 1) / 2)
        xy = xy + (goal - centre) / f
        if not last:  # the final roots' mesh is the caller's to build
            centre, half = box(xy)
    return np.concatenate([xy * z, z], 1).astype(np.float32)


def render_full_frames(spec: SynthSpec, split: str, video: int, size: tuple[int, int] = (240, 320),
                       travel: float = 0.5, depth_scale: float = 1.6) -> dict[str, np.ndarray]:
    """Every frame of one video as whole frames of the camera, not hand crops: the scene of
    ``video_parameters`` (hand, light, background, camera noise), with the root swept across the image
    by ``travel`` image widths (:func:`swept_roots`; its direction drawn from its own random
    stream, so travel 0 is the data set's motion), seen through the whole 640x480 camera scaled to
    ``size`` (H, W), 4:3. Rendered as one square crop of side 640 centred on the camera image (the
    renderer's crop rule, ``_render_crops``) at W px, whose middle H rows are the frame.

    Returns image uint8 (T, H, W, 3), K (3, 3) float64 the frame's intrinsics (pixels of the frame),
    root (T, 3) m, pose (T, 48) rad, betas (T, 10), joints3d (T, 21, 3) m camera frame and joints2d
    (T, 21, 2) pixels of the frame (float32)."""
    _, offset = frame_geometry(size)
    H, W = (int(v) for v in size)
    hand = _hand(spec.side, spec.mano_seed)
    p = dict(video_parameters(spec, split, video))
    p["root"] = swept_roots(hand.model, p, np.random.default_rng([spec.seed, SPLITS.index(split), video, 7]),
                            travel, depth_scale)
    T = len(p["root"])
    betas = np.ascontiguousarray(np.broadcast_to(p["betas"], (T, 10)))
    verts, joints = (np.asarray(a) for a in hand_in_camera_jit(
        hand.model, jnp.asarray(p["root"]), jnp.asarray(p["pose"]), jnp.asarray(betas)))
    centre = np.tile([(FULL_SIZE[1] - 1) / 2, (FULL_SIZE[0] - 1) / 2], (T, 1))
    side = np.full(T, float(FULL_SIZE[1]))
    boxes = np.concatenate([centre, side[:, None]], 1)
    K_square = crop_intrinsics(p["K_full"].astype(np.float64), boxes, W)  # (T, 3, 3)
    image = _render_crops(hand, p, verts, centre, side, K_square.astype(np.float32), W)[:, offset:offset + H]
    K = K_square[0].copy()
    K[1, 2] -= offset
    return {"image": image, "K": K, "root": p["root"], "pose": p["pose"], "betas": betas,
            "joints3d": joints.astype(np.float32),
            "joints2d": np.asarray(project(jnp.asarray(joints), jnp.asarray(K, jnp.float32)), np.float32)}
