"""A static camera's background, seen by the labelled frames: where the hand is in any other crop.

With a camera that does not move, every labelled frame s shows the background wherever its label's
hand is not. Mapped into the crop of another frame u of the same camera (all crops are squares of
the same full frames: ``data.crop.crop_intrinsics``' convention), the labelled frames give u a
background model — per pixel, the median colour of the labelled frames that see that pixel outside
their (dilated) hand silhouette — and the pixels of u that differ from it by more than a threshold
are the hand's (a 4-neighbour opening removes the speckle of resampling a textured background).

The hand's box side in that mask is a **lower bound** on the true one, and so is its pixel area: the
mask misses hand pixels whose colour matches the background, and rarely adds any. The propagation
under user crops (``propagation.recrop``) therefore uses it as a floor on the hand size the
refinement's box term aims at: in the first pass the mask's side; in the second (by default,
``propagation.floor_measure="area"``) the side the first pass's hand has when scaled to the mask's
area, which a finger the mask misses changes less than it changes the box. Measured (docs/results.md,
"A background cue"): the mask alone is no better than the propagated hand, but the larger of the two
is. Its outline (:func:`outline_points`) is also given to both passes as pixels the projected hand
must cover (``propagation.cover_weight``): that bounds the hand in every direction, not only its
size, and says where it is.

Whether the cue holds for a video is checked on its labelled frames first (:func:`check`, once per
video in :func:`model`): each is
masked with the background model of the others, and the cue is used only when the mask's side is
within ``tolerance`` of, or below, its label's side on at least three quarters of the labelled
frames — a moving camera, an arm or an object that moves with the hand makes the mask larger than the
hand and turns it off.

Numpy and ``scipy.ndimage``, plus one rasterisation of the labels' meshes.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from handprop_jax.camera import project
from handprop_jax.gamma import Gamma
from handprop_jax.hand import hand_mesh
from handprop_jax.render import rasterize, rasterize_splat, splat_window

#: labelled frames used as the background model of a frame: the nearest in time
NEAREST = 6
#: grey levels (0-255, any channel) by which a hand pixel differs from the background model
THRESHOLD = 20.0
#: the label's silhouette is dilated by this many pixels before its surroundings count as background
DILATE = 2


@dataclasses.dataclass(frozen=True)
class Check:
    """The cue on a video's labelled frames (leave-one-out): ``ratio`` (L,) mask side / label side
    (NaN where the mask is empty), ``usable`` whether the cue may be used for the video."""

    ratio: np.ndarray
    usable: bool


def resample(image: np.ndarray, box_from: np.ndarray, box_to: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A crop (S, S, C) cut at ``box_from`` seen through ``box_to`` (boxes cx, cy, side, full-frame
    pixels): (S, S, C) float32 bilinear samples and (S, S) bool where the sample lies inside the
    source crop. Crop pixel q of full-frame pixel x is (x − c)·S/side + (S − 1)/2."""
    size = image.shape[0]
    half = (size - 1) / 2
    p = np.arange(size, dtype=np.float64)
    full_x = (p - half) * box_to[2] / size + box_to[0]
    full_y = (p - half) * box_to[2] / size + box_to[1]
    qx, qy = np.meshgrid((full_x - box_from[0]) * size / box_from[2] + half,
                         (full_y - box_from[1]) * size / box_from[2] + half)
    inside = (qx >= 0) & (qx <= size - 1) & (qy >= 0) & (qy <= size - 1)
    out = np.stack([ndimage.map_coordinates(image[..., c].astype(np.float32), [qy, qx], order=1,
                                            mode="nearest") for c in range(image.shape[-1])], -1)
    return out, inside


def silhouettes(mano, verts: np.ndarray, K: np.ndarray, size: int) -> np.ndarray:
    """(M, S, S) bool: the rendered silhouettes of meshes ``verts`` (M, 778, 3), metres, through crop
    intrinsics K (M, 3, 3) (the splatting rasteriser where its window is exact, else the dense one)."""
    window = splat_window(verts, mano.faces, K)
    return np.asarray(_raster(jnp.asarray(verts, jnp.float32), jnp.asarray(mano.faces),
                              jnp.asarray(K, jnp.float32), size, window)) >= 0


@functools.partial(jax.jit, static_argnames=("size", "window"))
def _raster(verts, faces, K, size: int, window: int | None):
    if window is None:
        return jax.vmap(lambda v, k: rasterize(v, faces, k, (size, size))[0])(verts, K)
    return jax.vmap(lambda v, k: rasterize_splat(v, faces, k, (size, size), window)[0])(verts, K)


def hand_mask(image: np.ndarray, box: np.ndarray, refs: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
              threshold: float = THRESHOLD) -> np.ndarray:
    """(S, S) bool: where ``image`` (uint8 (S, S, 3), cut at ``box``) differs from the background
    model of ``refs`` [(a labelled crop (S, S, 3), its box, its background pixels (S, S) bool)],
    opened by the 4-neighbour cross; pixels no reference sees are not the hand."""
    samples, valid = [], []
    for ref_image, ref_box, background in refs:
        colour, inside = resample(ref_image, ref_box, box)
        keep, _ = resample(background[..., None].astype(np.float32), ref_box, box)
        samples.append(colour)
        valid.append(inside & (keep[..., 0] > 0.99))
    samples, valid = np.stack(samples), np.stack(valid)
    known = valid.any(0)
    masked = np.where(valid[..., None], samples, np.inf)
    # the median over the references that see the pixel (inf rows sort last)
    count = valid.sum(0)
    ordered = np.sort(masked, axis=0)
    lo = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[None, ..., None], 0)[0]
    hi = np.take_along_axis(ordered, np.maximum(count // 2, 0)[None, ..., None], 0)[0]
    model = np.where(known[..., None], (lo + hi) / 2, 0.0)
    diff = np.abs(image.astype(np.float32) - model).max(-1)
    return ndimage.binary_opening((diff > threshold) & known)


def mask_side(mask: np.ndarray) -> float:
    """The larger side of the mask's bounding box, pixels (pixel extents: a single pixel is 1); 0 if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0.0
    return float(max(xs.max() - xs.min(), ys.max() - ys.min()) + 1)


@dataclasses.dataclass(frozen=True)
class Model:
    """A video's background as its labelled frames show it (:func:`model`): ``frames`` (L,) their
    indices, ``images`` uint8 (L, S, S, 3) their crops, ``boxes`` (L, 3) the crops' boxes,
    ``backgrounds`` (L, S, S) bool their pixels outside the dilated label silhouette, ``check`` the
    leave-one-out :class:`Check`."""

    frames: np.ndarray
    images: np.ndarray
    boxes: np.ndarray
    backgrounds: np.ndarray
    check: Check

    def references(self, t: int, exclude: int | None = None) -> list:
        """[(crop, box, background pixels)] of the NEAREST labelled frames to frame t (not ``exclude``)."""
        order = np.argsort(np.abs(self.frames - t), kind="stable")
        picked = [i for i in order if self.frames[i] != exclude][:NEAREST]
        return [(self.images[i], self.boxes[i], self.backgrounds[i]) for i in picked]


def check(frames: np.ndarray, images: np.ndarray, boxes: np.ndarray, backgrounds: np.ndarray,
          label_sides: np.ndarray, tolerance: float = 0.05, share: float = 0.75) -> Check:
    """The cue on the labelled frames themselves (``frames`` (L,), their crops, boxes, background
    pixels and label box sides (L,)): each masked with the other labelled frames' background model.
    Usable when at least two labelled frames exist and on at least ``share`` of them the mask's side
    is at most (1 + ``tolerance``) × the label's (the floor never pushes a correct hand larger) and
    the mask is not empty."""
    frames = np.asarray(frames)
    if len(frames) < 2:
        return Check(np.full(len(frames), np.nan), False)
    unchecked = Model(frames, images, boxes, backgrounds, Check(np.zeros(0), False))
    ratio = np.full(len(frames), np.nan)
    for i, s in enumerate(frames):
        side = mask_side(hand_mask(images[i], boxes[i], unchecked.references(int(s), exclude=int(s))))
        if side > 0:
            ratio[i] = side / label_sides[i]
    ok = np.isfinite(ratio) & (ratio <= 1 + tolerance)
    return Check(ratio, bool(ok.mean() >= share))


def model(mano, images: np.ndarray, K: np.ndarray, boxes: np.ndarray, labelled: np.ndarray,
          labels: Gamma) -> Model:
    """The background of a video from its labelled frames, checked (module docstring).

    Args:
      mano: the labels' MANO model. images: uint8 (T, S, S, 3) every frame's crop (only the
        labelled ones are read); K: (T, 3, 3) their intrinsics; boxes: (T, 3) their boxes (cx, cy,
        side, full-frame pixels). labelled: (L,) frame indices with labels; labels: their γ* (L, ...).
    """
    labelled = np.asarray(labelled, np.int64)
    size = images.shape[1]
    verts, _ = hand_mesh(mano, Gamma.of(labels).numpy())
    sil = silhouettes(mano, verts, K[labelled], size)
    backgrounds = ~np.stack([ndimage.binary_dilation(s, iterations=DILATE) for s in sil])
    label_sides = box_sides(verts, K[labelled])
    lab_images, lab_boxes = np.asarray(images)[labelled], np.asarray(boxes, np.float64)[labelled]
    return Model(labelled, lab_images, lab_boxes, backgrounds,
                 check(labelled, lab_images, lab_boxes, backgrounds, label_sides))


def masks(background: Model, images: np.ndarray, boxes: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(M, S, S) bool: the hand masks (:func:`hand_mask`) of the crops ``images[frames]`` cut at
    ``boxes[frames]`` against the background of their nearest labelled frames; empty everywhere when
    the background's check failed."""
    size = np.shape(images)[1]
    out = np.zeros((len(frames), size, size), bool)
    if background.check.usable:
        for i, t in enumerate(np.asarray(frames, np.int64)):
            out[i] = hand_mask(images[t], boxes[t], background.references(int(t)))
    return out


def outline_points(masks: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` pixels of each mask's outline (its pixels with a 4-neighbour outside it), evenly
    spread in raster order: points (M, count, 2) float32 (x, y crop pixels, a pixel's centre at
    integers) and weights (M, count) float32 (1, or 0 for padding)."""
    points = np.zeros((len(masks), count, 2), np.float32)
    weights = np.zeros((len(masks), count), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m & ~ndimage.binary_erosion(m))
        if len(xs) == 0:
            continue
        pick = np.unique(np.linspace(0, len(xs) - 1, min(count, len(xs))).round().astype(np.int64))
        points[i, :len(pick)] = np.stack([xs[pick], ys[pick]], -1)
        weights[i, :len(pick)] = 1.0
    return points, weights


def side_floors(background: Model, images: np.ndarray, boxes: np.ndarray, frames: np.ndarray,
                estimate: tuple[np.ndarray, np.ndarray] | None = None,
                hand_masks: np.ndarray | None = None) -> np.ndarray:
    """(M,) float32 lower bounds on the hand's box side (crop pixels) in the crops ``images[frames]``
    cut at ``boxes[frames]`` (images (T, S, S, 3), boxes (T, 3)); 0 — no bound — everywhere when the
    background's check failed.

    Without ``estimate`` the bound is the mask's box side. With ``estimate`` = (sides (M,), areas (M,)):
    the box side and silhouette pixel area of a current estimate of each hand in those crops, the
    bound is the side that hand has when scaled to the mask's area, sides · sqrt(mask area / area)
    (the mask's area is a lower bound on the hand's as its side is, and less sensitive to a finger
    the mask misses). ``hand_masks``: the frames' :func:`masks` when the caller has them."""
    floors = np.zeros(len(frames), np.float32)
    if background.check.usable:
        found = masks(background, images, boxes, frames) if hand_masks is None else hand_masks
        for i, mask in enumerate(found):
            if estimate is None:
                floors[i] = mask_side(mask)
            elif estimate[1][i] > 0:
                floors[i] = estimate[0][i] * np.sqrt(mask.sum() / estimate[1][i])
    return floors


def extents(mano, gamma: Gamma, K: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Box sides (M,) and silhouette pixel areas (M,) of hands γ (M, ...) in crops with intrinsics K
    (M, 3, 3) of ``size`` pixels: ``side_floors``' estimate."""
    verts, _ = hand_mesh(mano, Gamma.of(gamma).numpy())
    return box_sides(verts, K), silhouettes(mano, verts, K, size).sum((1, 2)).astype(np.float64)


def box_sides(verts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(M,) the larger side of the bounding box of meshes ``verts`` (M, V, 3), metres, projected
    through K (M, 3, 3): crop pixels (the refinement's box term measures the same)."""
    uv = np.asarray(project(jnp.asarray(verts, jnp.float32), jnp.asarray(K, jnp.float32)))
    return (uv.max(1) - uv.min(1)).max(1)
