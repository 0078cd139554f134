"""Square crops centred on the hand, with the intrinsics adjusted to the crop.

Shared by the real-data tfds builders (HO-3D, InterHand2.6M, hand_videos); :func:`crop_intrinsics`
is the one crop-intrinsics formula of the package (also the synthetic renderer's, ``handprop
propagate``'s and the re-crop's). Numpy/PIL only: this runs once per frame while a dataset is built
or a video cropped, never inside a jitted function.

Pixel convention (see ``handprop_jax.camera``): the centre of pixel (row i, column j) is at
(u = j, v = i). A crop is the square box ``[cx - side/2, cx + side/2] x [cy - side/2, cy + side/2]``
(continuous pixel coordinates of the source image) resampled to ``size x size`` pixels, so that the
box edges land on the crop's outer pixel edges (u' = -0.5 and u' = size - 0.5). The map from source
to crop pixels is the affine

    u' = s (u - x0) - 0.5,   v' = s (v - y0) - 0.5,   s = size / side,  x0 = cx - side/2, y0 = cy - side/2

and the crop's intrinsics are ``A @ K`` with ``A = [[s, 0, -s x0 - 0.5], [0, s, -s y0 - 0.5], [0, 0, 1]]``,
so that ``project(X, A @ K) == A(project(X, K))`` exactly.

What the builders share beyond cropping lives in ``handprop_jax.data.builder_support``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class Box:
    """A square crop box in source-image pixels: centre (cx, cy) and side length, pixels."""

    cx: float
    cy: float
    side: float


def hand_box(joints2d: np.ndarray, scale: float = 1.5, min_side: float = 8.0) -> Box:
    """Square box centred on the 2D joints' bounding box.

    Args:
      joints2d: (N, 2) pixels (u, v) in the source image.
      scale: side = scale * max(width, height) of the joints' bounding box (margin around the hand).
      min_side: lower bound on the side, pixels (guards degenerate, e.g. all-equal, joints).
    Returns:
      the ``Box``.
    """
    joints2d = np.asarray(joints2d, dtype=np.float64)
    if joints2d.ndim != 2 or joints2d.shape[1] != 2 or not np.all(np.isfinite(joints2d)):
        raise ValueError(f"hand_box: expected finite (N, 2) joints, got shape {joints2d.shape}")
    lo, hi = joints2d.min(0), joints2d.max(0)
    centre = (lo + hi) / 2
    side = max(float(np.max(hi - lo)) * scale, min_side)
    return Box(float(centre[0]), float(centre[1]), side)


def crop_matrix(box: Box, size: int) -> np.ndarray:
    """(3, 3) float64 affine ``A`` mapping homogeneous source pixels to crop pixels (module
    docstring): the crop intrinsics of the identity camera, :func:`crop_intrinsics`' formula."""
    return crop_intrinsics(np.eye(3), box, size)


def crop_intrinsics(K: np.ndarray, boxes: np.ndarray | Box, size: int) -> np.ndarray:
    """Intrinsics of square crops, pixels: ``A @ K`` (module docstring), vectorised over frames.

    Args:
      K: (..., 3, 3) intrinsics of the source images, pixels (broadcast against ``boxes``).
      boxes: (..., 3) crop boxes cx, cy, side in source-image pixels, or one :class:`Box`.
      size: crop side, pixels.
    Returns:
      (..., 3, 3) crop intrinsics in the dtype of ``K`` and ``boxes`` (float32 inputs: float32
      arithmetic; a ``Box`` is float64): rows 0 and 1 are ``s (K_r - c_r K_2) + (size - 1)/2 K_2``
      with s = size / side and c = (cx, cy), the crop pixel of source pixel u being
      ``(u - c) s + (size - 1)/2``; row 2 is K's.
    """
    if isinstance(boxes, Box):
        boxes = np.array([boxes.cx, boxes.cy, boxes.side], np.float64)
    K, boxes = np.asarray(K), np.asarray(boxes)
    K, boxes = np.broadcast_arrays(K, boxes[..., None, :])  # boxes (..., 1, 3)
    boxes = boxes[..., 0, :]
    s = (size / boxes[..., 2])[..., None]
    half = (size - 1) / 2
    out = np.array(K, dtype=np.result_type(K, boxes), copy=True)
    for r in (0, 1):
        out[..., r, :] = (K[..., r, :] - boxes[..., r, None] * K[..., 2, :]) * s + half * K[..., 2, :]
    return out


def crop_points(uv: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Map (N, 2) source pixels to crop pixels."""
    A = crop_matrix(box, size)
    uv = np.asarray(uv, dtype=np.float64)
    return uv * A[[0, 1], [0, 1]] + A[:2, 2]


def crop_image(image: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Resample the box of ``image`` to a (size, size, 3) uint8 crop (bilinear, antialiased when
    shrinking). Parts of the box outside the image are black.

    Args:
      image: uint8 (H, W, 3).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"crop_image: expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    # PIL's continuous coordinates put pixel i's centre at i + 0.5: shift ours by +0.5.
    left = box.cx - box.side / 2 + 0.5
    top = box.cy - box.side / 2 + 0.5
    right, bottom = left + box.side, top + box.side
    # PIL needs the box inside the image: pad with black where it is not.
    pad_l = max(0, int(np.ceil(-left)))
    pad_t = max(0, int(np.ceil(-top)))
    pad_r = max(0, int(np.ceil(right - w)))
    pad_b = max(0, int(np.ceil(bottom - h)))
    if pad_l or pad_t or pad_r or pad_b:
        # Never pad more than the box itself needs (a box far outside is rejected by callers).
        image = np.pad(image, ((pad_t, pad_b), (pad_l, pad_r), (0, 0)))
        left, right = left + pad_l, right + pad_l
        top, bottom = top + pad_t, bottom + pad_t
    pil = Image.fromarray(image)
    out = pil.resize((size, size), Image.BILINEAR,
                     box=(left, top, min(right, pil.width), min(bottom, pil.height)))
    return np.asarray(out, dtype=np.uint8)


def visible_fraction(uv: np.ndarray, height: int, width: int) -> float:
    """Fraction of the (N, 2) pixels that lie inside an image of the given size."""
    uv = np.asarray(uv, dtype=np.float64)
    inside = ((uv[:, 0] >= -0.5) & (uv[:, 0] <= width - 0.5) & (uv[:, 1] >= -0.5)
              & (uv[:, 1] <= height - 0.5))
    return float(np.mean(inside))


def crop_frame(image: np.ndarray, K: np.ndarray, joints3d: np.ndarray, size: int,
               scale: float = 1.5, min_visible: float = 0.5):
    """Crop a frame around its hand.

    Args:
      image: uint8 (H, W, 3) full frame.
      K: (3, 3) source intrinsics, pixels.
      joints3d: (21, 3) hand joints, OpenCV camera frame, metres.
      size: crop side, pixels.
      scale: box side / max extent of the projected joints.
      min_visible: minimum fraction of projected joints inside the source image.
    Returns:
      (crop uint8 (size, size, 3), K_crop (3, 3) float64, joints2d (21, 2) float64 crop pixels).
    Raises:
      ValueError("hand outside the image: ...") when the hand is behind the camera or too few of
      its joints project inside the image.
    """
    joints3d = np.asarray(joints3d, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    if np.any(joints3d[:, 2] <= 0):
        raise ValueError("hand outside the image: joints behind the camera (z <= 0)")
    uvw = joints3d @ K.T
    uv = uvw[:, :2] / uvw[:, 2:3]
    h, w = image.shape[:2]
    fraction = visible_fraction(uv, h, w)
    if fraction < min_visible:
        raise ValueError(f"hand outside the image: {fraction:.0%} of the joints project inside "
                         f"the {w}x{h} image (need {min_visible:.0%})")
    box = hand_box(uv, scale=scale)
    if box.side > 4 * max(h, w):
        raise ValueError(f"hand outside the image: its box ({box.side:.0f} px) is far larger than the "
                         f"{w}x{h} image")
    crop = crop_image(image, box, size)
    return crop, crop_intrinsics(K, box, size), crop_points(uv, box, size)
