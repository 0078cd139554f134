"""Photometric propagation on crops that do not follow the hand: a user's video.

``handprop propagate`` crops an unlabelled frame u with the labelled frames' boxes interpolated in
time (``handprop_jax.data.boxes``): the crop does not follow the hand between the labels, so the
refinement's box and centre terms (which pull the hand to the references' place and size in u's
crop) pull it to the wrong place, and part of the hand may fall outside the crop. Here:

1. **first pass**: the photometric propagation (:func:`handprop_jax.propagation.core.propagate_video`)
   on the interpolated crops with the box and centre terms off (weight 0: nothing says where the
   hand is in those crops);
2. **re-crop**: each unlabelled frame is cropped again with the box of its first-pass hand, by the
   labels' own rule (``data.boxes.square_boxes``: the square around the projected mesh vertices,
   VERTEX_SCALE x their extent, at least MIN_SIDE_M metres at the wrist's depth), so the crop now
   follows the (estimated) hand as the labelled frames' crops follow theirs;
3. **second pass**: the photometric refinement again on the new crops, against the same labelled
   frames, from the first pass's annotations (``prior="previous"``, the default; ``"transfer"``:
   from the labels' crop-aware transfer into the new crops, i.e. the paper protocol's method on
   crops made from the first pass instead of from the ground truth), with the configured box and
   centre weights (``box_terms``; the crop now follows the estimated hand). The "previous"
   refinement runs ``propagation.recrop_steps`` Adam iterations (default 10; the first pass and a
   "transfer" second pass run ``propagation.steps``, 60). ``rounds`` > 1 repeats 2–3. Measured on
   the user protocol (docs/results.md, "Propagation under the user protocol"): "previous" with the
   box terms beat "transfer" with or without them on data seed 0; 60 + 10 iterations against 60 + 60:
   −0.57 / +0.08 / +0.10 mm MPJPE on data seeds 0 / 1 / 2 (on seed 0's first 4 videos a long second
   pass drifts); a second round is worse (seed 0). With ``propagation.background_floor`` (default) and
   a "previous" second pass with the box terms, the hand's extent against the background the labelled
   frames show (:mod:`handprop_jax.propagation.background`: a static camera, checked on the labelled
   frames) is a floor on the hand size: in the first pass the mask's box side (a one-sided term,
   ``propagation.floor_weight``), in the second the side of the first pass's hand scaled to the
   mask's area (``propagation.floor_measure``), which the box term aims at when it is larger than
   the references' side.

The crops are made by the caller's ``crop(boxes) -> (images, K)`` (the tool cuts its full frames;
the evaluation re-renders the synthetic scene, ``handprop_jax.evaluation.protocol``), so nothing
here reads a frame's ground truth. Labelled frames keep their boxes and labels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from handprop_jax.data.boxes import MIN_SIDE_M, VERTEX_SCALE, vertex_boxes
from handprop_jax.data.crop import crop_intrinsics
from handprop_jax.gamma import Gamma
from handprop_jax.hand import hand_mesh
from handprop_jax.propagation import background
from handprop_jax.propagation.core import Propagator, VideoPropagation, propagate_video, refine_frames
from handprop_jax.propagation.inputs import load_frames

#: ``box_source`` of a frame re-cropped around its propagated hand (``handprop propagate``'s outputs)
FROM_PROPAGATION = "propagated"


@dataclasses.dataclass(frozen=True)
class Recrop:
    """rounds: re-crop + second-pass rounds after the first pass (0: first pass only).
    box_terms: the second pass keeps the configured box/centre weights (else 0, as in the first).
    prior: the second pass starts from "transfer" (the labels' crop-aware transfer into the new
    crops, as the first) or "previous" (the previous pass's annotations: the refinement goes on)."""

    rounds: int = 1
    box_terms: bool = True
    prior: str = "previous"

    def __post_init__(self):
        if self.prior not in ("transfer", "previous"):
            raise ValueError(f"Recrop.prior {self.prior!r}: expected 'transfer' or 'previous'")


def hand_boxes(mano, gamma: Gamma, K_full: np.ndarray, scale: float = VERTEX_SCALE,
               min_side: float = MIN_SIDE_M) -> np.ndarray:
    """(M, 3) float64 boxes cx, cy, side (full-frame pixels) of hands γ (M, ...) seen through
    K_full (M, 3, 3): the labels' box rule (``data.boxes.label_box`` with vertices, ``vertex_boxes``)."""
    verts, joints = hand_mesh(mano, gamma)
    centre, side = vertex_boxes(verts, np.asarray(joints)[:, 0, 2], K_full, scale, min_side)
    return np.concatenate([centre, side[:, None]], 1)


def frame_cropper(frames, image_size: int, K_full: np.ndarray) -> Callable:
    """``crop(boxes)`` for :func:`propagate_recrop` on a user's full frames (``handprop propagate``):
    ``frames`` a folder or video file read by ``propagation.inputs.load_frames``, K_full (T, 3, 3) or
    (3, 3) of the full frames; returns (crops uint8 (T, S, S, 3), K (T, 3, 3))."""
    def crop(boxes):
        _, crops, _, _ = load_frames(frames, image_size, boxes=np.asarray(boxes, np.float64))
        return crops, crop_intrinsics(np.asarray(K_full, np.float64), np.asarray(boxes, np.float64),
                                      image_size).astype(np.float32)

    return crop


def _without_box_terms(p: Propagator) -> Propagator:
    return dataclasses.replace(p, settings=dataclasses.replace(p.settings, box_weight=0.0, centre_weight=0.0))


def _with_steps(p: Propagator, steps: int) -> Propagator:
    return dataclasses.replace(p, settings=dataclasses.replace(p.settings, steps=steps))


def _follow(p: Propagator, crop: Callable, boxes: np.ndarray, K_full: np.ndarray, labelled: np.ndarray,
            labels: Gamma, both_sides: bool, times, recrop: Recrop, images=None, K=None
            ) -> tuple[VideoPropagation, np.ndarray]:
    if images is None:
        images, K = crop(boxes)
    # the labelled frames keep their crops in every pass: one background model per video
    scene = (background.model(p.mano, np.asarray(images), np.asarray(K), boxes, labelled, labels)
             if p.settings.background_floor else None)
    first_floor = cover = None
    todo = np.setdiff1d(np.arange(len(boxes)), labelled)
    if scene is not None and (p.settings.floor_weight > 0 or p.settings.cover_weight > 0):
        found = background.masks(scene, np.asarray(images), boxes, todo)
        first_floor = np.zeros(len(boxes), np.float32)
        first_floor[todo] = background.side_floors(scene, np.asarray(images), boxes, todo, hand_masks=found)
        cover = _cover(p, found, todo, len(boxes))
    res = propagate_video(_without_box_terms(p), images, K, labelled, labels, both_sides=both_sides,
                          times=times, side_floor=first_floor, cover=cover)
    u = np.nonzero(~res.labelled)[0]
    second = p if recrop.box_terms else _without_box_terms(p)
    for _ in range(recrop.rounds):
        if len(u) == 0:
            break
        boxes = np.array(boxes, np.float64)
        boxes[u] = hand_boxes(p.mano, res.gamma.take(u), K_full[u])
        images, K = crop(boxes)
        if recrop.prior == "transfer":
            res = propagate_video(second, images, K, labelled, labels, both_sides=both_sides, times=times)
        else:
            floors = cover = None
            if recrop.box_terms and scene is not None:
                found = background.masks(scene, images, boxes, u)
                floors = np.zeros(len(boxes), np.float32)
                estimate = (background.extents(p.mano, res.gamma.take(u), np.asarray(K)[u], images.shape[1])
                            if p.settings.floor_measure == "area" else None)
                floors[u] = background.side_floors(scene, images, boxes, u, estimate, hand_masks=found)
                cover = _cover(p, found, u, len(boxes))
            short = _with_steps(second, p.settings.recrop_steps)
            res = _refine_again(short, images, K, res, labelled, labels, floors, cover)
    return res, boxes


def _cover(p: Propagator, found: np.ndarray, frames: np.ndarray, T: int
           ) -> tuple[np.ndarray, np.ndarray] | None:
    """The mask outlines of ``frames`` as ``propagate_video``'s ``cover`` (T rows; None when off or
    when every mask is empty, e.g. the background's check failed)."""
    if p.settings.cover_weight <= 0 or not found.any():
        return None
    points, weights = background.outline_points(found, p.settings.cover_points)
    all_points = np.zeros((T, *points.shape[1:]), np.float32)
    all_weights = np.zeros((T, weights.shape[1]), np.float32)
    all_points[frames], all_weights[frames] = points, weights
    return all_points, all_weights


def _refine_again(p: Propagator, images: np.ndarray, K: np.ndarray, res: VideoPropagation,
                  labelled: np.ndarray, labels: Gamma, side_floor: np.ndarray | None = None,
                  cover: tuple[np.ndarray, np.ndarray] | None = None) -> VideoPropagation:
    """The photometric refinement of the unlabelled frames of ``res`` from ``res`` itself, against the
    same labelled frames with the same weights (``res.source``, ``res.weight``), on new crops;
    ``side_floor`` (T,) lower bounds on the hand's box side in those crops (or None); ``cover``
    (points (T, N, 2), weights (T, N)) hand pixels in those crops (or None)."""
    T = len(res.labelled)
    u = np.nonzero(~res.labelled)[0]
    row_of = np.full(T, -1, np.int64)
    row_of[np.asarray(labelled, np.int64)] = np.arange(len(labelled))
    src, wts = res.source[u], res.weight[u]
    refs = np.where(src >= 0, src, src[:, ::-1])  # a missing side: the other one, weight 0
    keep = slice(0, 1) if np.all(src[:, 1] < 0) else slice(None)  # nearest-only: one reference
    refined = refine_frames(p, images, K, u, res.gamma.take(u), Gamma.of(labels).numpy(), row_of,
                            refs[:, keep], wts[:, keep], side_floor, cover)
    gamma = Gamma(*(np.array(f, np.float32) for f in res.gamma))
    for field, new in zip(gamma, refined, strict=True):
        field[u] = np.asarray(new, np.float32)
    return dataclasses.replace(res, gamma=gamma, nearest=None)


def propagate_recrop(propagator: Propagator, crop: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                     boxes: np.ndarray, K_full: np.ndarray, labelled: np.ndarray, labels: Gamma,
                     both_sides: bool = False, with_nearest: bool = False, times: np.ndarray | None = None,
                     recrop: Recrop = Recrop(), images: np.ndarray | None = None,
                     K: np.ndarray | None = None) -> tuple[VideoPropagation, np.ndarray]:
    """The photometric propagation of one video with re-cropping (module docstring).

    Args:
      propagator: a photometric Propagator (its settings are the second pass's).
      crop: ``crop(boxes (T, 3)) -> (images uint8 (T, S, S, 3), K (T, 3, 3))``: every frame cut with
        the boxes (cx, cy, side, full-frame pixels) and the crops' intrinsics.
      boxes: (T, 3) the first crops' boxes (the tool's: labels' boxes, interpolated in between).
      K_full: (T, 3, 3) or (3, 3) intrinsics of the full frames.
      labelled, labels, both_sides, times: as :func:`propagate_video`. with_nearest: with both
        sides, also the nearest-only annotations (their own passes and crops).
      images, K: the crops at ``boxes`` when the caller has them (else ``crop(boxes)``).
    Returns:
      (VideoPropagation, the last crops' boxes (T, 3) of the both-sides (else nearest) result).
    """
    if propagator.method != "photometric":
        raise ValueError(f"propagate_recrop: the photometric propagation only, got {propagator.method!r}")
    T = len(boxes)
    K_full = np.broadcast_to(np.asarray(K_full, np.float64), (T, 3, 3))
    args = (propagator, crop, boxes, K_full, labelled, labels)
    res, last = _follow(*args, both_sides, times, recrop, images, K)
    if both_sides and with_nearest:
        near, _ = _follow(*args, False, times, recrop, images, K)
        res = dataclasses.replace(res, nearest=near.gamma)
    return res, last
