"""Propagation core: sparse annotations of a video → an annotation for every frame.

Used by the evaluation (scenario 2 of Table I), the visual report and ``handprop propagate``; no
file input or output here (:mod:`handprop_jax.propagation.inputs` reads the tool's files,
:mod:`handprop_jax.propagation.cli` is the command).

Each unlabelled frame u gets an annotation from its nearest labelled frame s = N(u) (ties go to the
earlier frame; ``handprop_jax.data.sparse.neighbours``) or, with ``both_sides``, from the two labelled
frames l < u < r around it, blended by temporal distance, weight (u − l) / (r − l) on r
(:func:`handprop_jax.gamma.blend`: root and betas linearly, every joint rotation of the pose along the
geodesic of SO(3)); frames before the first / after the last label use their only neighbour. How a
label moves to u is the :class:`Propagator`'s method:

- ``copy``: unchanged (both sides: slerp interpolation);
- ``crop``: crop-aware — the root carried in crop coordinates (:mod:`.transfer`);
- ``paper``: the trained Pose Alignment network, ``γ̃_u = φ(γ*_s, z_u − z_s) + γ*_s`` (Eqs. 2–4);
- ``photometric`` (the default): the crop-aware result refined against the labelled frames' images by
  analysis-by-synthesis (:mod:`.refine`); needs no trained network.

- :func:`propagate_video` ``(propagator, images, K, labelled, labels, both_sides) -> VideoPropagation``.

Batching (``batched``, ``rows``) is :mod:`handprop_jax.batching`, the hand mesh of annotations
``hand_mesh`` is :mod:`handprop_jax.hand`, a trained run's model ``bound_from_run`` is
:mod:`handprop_jax.training.checkpoint`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from handprop_jax.batching import batched, rows
from handprop_jax.config import PropagationConfig
from handprop_jax.data.sparse import neighbours
from handprop_jax.gamma import Gamma, blend
from handprop_jax.hand import default_mano, hand_mesh
from handprop_jax.model.api import BoundModel, Features, Frame
from handprop_jax.propagation.refine import References, refine_batch
from handprop_jax.propagation.transfer import transfer
from handprop_jax.render import splat_window

blend_jit = jax.jit(blend)


@dataclasses.dataclass(frozen=True)
class VideoPropagation:
    """Annotations of every frame of one video (T frames, numpy).

    ``gamma``: γ (T, ...) float32, labelled frames = their labels exactly; ``labelled`` (T,) bool;
    ``source`` (T, 2) int: the labelled frame(s) each annotation comes from (left/right with both
    sides, else nearest and −1; −1 = none); ``weight`` (T, 2): their weights; ``gap`` (T,) |u − N(u)|;
    ``nearest``: with both sides, the nearest-only γ (T, ...) when it was computed (free for every
    method but the photometric one, which refines it separately on request), else None.
    """

    gamma: Gamma
    labelled: np.ndarray
    source: np.ndarray
    weight: np.ndarray
    gap: np.ndarray
    nearest: Gamma | None = None


METHODS = ("photometric", "paper", "crop", "copy")


@dataclasses.dataclass(frozen=True)
class Propagator:
    """How annotations move from labelled frames to the others (module docstring).

    method: "photometric" (crop-aware transfer refined against the labelled frames,
    :mod:`handprop_jax.propagation.refine`), "paper" (the trained aligner ``model``), "crop"
    (crop-aware copy / interpolation, :mod:`handprop_jax.propagation.transfer`) or "copy" (plain copy /
    interpolation). ``model``: the run's inference functions (paper). ``mano``, ``settings``: the MANO
    model and the ``propagation`` config (photometric). ``image_size``, ``z_off``, ``depth_unit``: the
    crops' side and the root parametrisation (crop-aware transfer); ``batch_size``: frames per call.
    """

    method: str
    model: BoundModel | None = None
    mano: Any = None
    settings: PropagationConfig | None = None
    image_size: int = 64
    z_off: float = 0.4
    depth_unit: float = 1e-3
    batch_size: int = 64

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"propagation method {self.method!r}: expected one of {METHODS}")
        if self.method == "paper" and self.model is None:
            raise ValueError("the 'paper' propagation needs a trained model (a run's align checkpoint)")
        if self.method == "photometric" and (self.mano is None or self.settings is None):
            raise ValueError("the 'photometric' propagation needs the MANO model and the propagation "
                             "settings")

    @classmethod
    def from_config(cls, config: Any, method: str | None = None, model: BoundModel | None = None,
                    mano: Any = None) -> Propagator:
        """The propagator of a run config (``propagation.method`` unless ``method`` is given); ``mano``
        defaults to the config's MANO model."""
        method = method or config.propagation.method
        if method == "photometric" and mano is None:
            mano = default_mano(config)
        return cls(method=method, model=model, mano=mano if method == "photometric" else None,
                   settings=config.propagation, image_size=config.data.image_size, z_off=config.data.z_off,
                   depth_unit=config.model.root_depth_unit,
                   batch_size=config.propagation.batch_size if method == "photometric"
                   else (model.batch_size if model is not None else config.eval.batch_size))


def propagate_video(propagator: Propagator | BoundModel, images: np.ndarray | None, K: np.ndarray,
                    labelled: np.ndarray, labels: Gamma, both_sides: bool = False,
                    features: Features | None = None, with_nearest: bool = False,
                    times: np.ndarray | None = None, side_floor: np.ndarray | None = None,
                    cover: tuple[np.ndarray, np.ndarray] | None = None) -> VideoPropagation:
    """Annotations for every frame of one video from its labelled frames.

    Args:
      propagator: the method (a :class:`BoundModel` means the paper's aligner of that model).
      images: uint8 (T, S, S, 3) crops (the paper method may pass ``features`` instead; the geometric
        methods do not look at them).
      K: (T, 3, 3) intrinsics of the crops, pixels.
      labelled: (L,) sorted unique frame indices with labels, L >= 1.
      labels: γ* of the labelled frames (L, ...), in the same order.
      both_sides: blend the propagations from both neighbouring labelled frames.
      features: optional precomputed Features (T, F) of every frame (paper method).
      with_nearest: with ``both_sides``, also compute the nearest-only annotations for the photometric
        method (a second refinement; the other methods give them for free).
      times: optional (T,) source times of the frames (strictly increasing; default 0..T-1): N(u),
        the gaps and the both-sides weights are measured in them.
      side_floor: optional (T,) lower bounds on the hand's box side in each crop, pixels (0: none;
        the photometric refinement, ``refine.refine_frame``).
      cover: optional (points (T, N, 2), weights (T, N)): pixels of each crop that are the hand's
        (``refine.refine_frame``'s ``cover``; weight 0: padding).
    """
    if isinstance(propagator, BoundModel):
        propagator = Propagator("paper", model=propagator, image_size=propagator.image_size,
                                batch_size=propagator.batch_size)
    p = propagator
    labelled = np.asarray(labelled, np.int64)
    if p.method == "paper" and features is None:
        features = batched(p.model.features, images, batch_size=p.model.batch_size)
    T = np.shape(features.z_r)[0] if features is not None else np.shape(images)[0]
    nb = neighbours(T, labelled, times)
    K = np.broadcast_to(np.asarray(K, np.float32), (T, 3, 3))
    row_of = np.full(T, -1, np.int64)
    row_of[labelled] = np.arange(len(labelled))
    gamma_star = Gamma.of(labels).numpy()
    is_lab = row_of >= 0
    # every frame starts as its own label (unlabelled rows are overwritten below)
    out = gamma_star.take(np.maximum(row_of, 0))
    source = np.full((T, 2), -1, np.int64)
    weight = np.zeros((T, 2))
    source[is_lab, 0] = np.nonzero(is_lab)[0]
    weight[is_lab, 0] = 1.0
    nearest = None
    u = np.nonzero(~is_lab)[0]
    move = _mover(p, images, K, features)

    def run(s: np.ndarray) -> Gamma:  # γ*_s moved to u, frame by frame, without image evidence
        return move(gamma_star.take(row_of[s]), s, u)

    if len(u) and not both_sides:
        s = nb["nearest"][u]
        res = run(s)
        if p.method == "photometric":
            res = _refine(p, images, K, u, res, gamma_star, row_of, np.stack([s], -1), np.ones((len(u), 1)),
                          side_floor, cover)
        source[u, 0], weight[u, 0] = s, 1.0
    elif len(u):
        l, r, w = nb["left"][u], nb["right"][u], nb["weight"][u]
        s_l, s_r = np.where(l >= 0, l, r), np.where(r >= 0, r, l)
        res_l, res_r = run(s_l), run(s_r)
        res = batched(blend_jit, res_l, res_r, w.astype(np.float32), batch_size=p.batch_size)
        # nearest-only: N(u) is one of the two sides
        take_r = (nb["nearest"][u] != s_l)[:, None]
        picked = Gamma(*(np.where(take_r, b, a) for a, b in zip(res_l, res_r, strict=True)))
        if p.method == "photometric":
            res = _refine(p, images, K, u, res, gamma_star, row_of, np.stack([s_l, s_r], -1),
                          np.stack([1.0 - w, w], -1), side_floor, cover)
            if with_nearest:
                s_n = nb["nearest"][u]
                picked = _refine(p, images, K, u, picked, gamma_star, row_of, s_n[:, None],
                                 np.ones((len(u), 1)), side_floor, cover)
        if p.method != "photometric" or with_nearest:
            nearest = _with_rows(out, u, picked)
        source[u] = np.stack([l, r], -1)
        weight[u] = np.stack([1.0 - w, w], -1)
        weight[source < 0] = 0.0
    if len(u):
        out = _with_rows(out, u, res)
    elif both_sides:
        nearest = out
    return VideoPropagation(gamma=out, labelled=is_lab, source=source, weight=weight, gap=nb["gap"],
                            nearest=nearest)


def _mover(p: Propagator, images, K: np.ndarray, features: Features | None) -> Callable:
    """``move(gamma_s (M, ...), s (M,), u (M,)) -> Gamma``: the method's transfer of labelled frames'
    annotations to frames u without image evidence (the paper's aligner looks at the features)."""
    if p.method == "paper":
        frames = Frame(features=Features(*(np.asarray(z) for z in features)), K=K)
        return lambda g, s, u: batched(p.model.align, g, rows(frames, u), rows(frames, s),
                                       batch_size=p.batch_size)
    crop_aware = p.method in ("crop", "photometric")
    fn = functools.partial(_transfer_jit, crop_aware=crop_aware, image_size=p.image_size, z_off=p.z_off,
                           depth_unit=p.depth_unit)
    return lambda g, s, u: batched(fn, g, K[s], K[u], batch_size=p.batch_size)


@functools.partial(jax.jit, static_argnames=("crop_aware", "image_size", "z_off", "depth_unit"))
def _transfer_jit(gamma_s, K_s, K_u, *, crop_aware, image_size, z_off, depth_unit):
    return transfer(Gamma.of(gamma_s), K_s, K_u, crop_aware, image_size, z_off, depth_unit)


def _refine(p: Propagator, images: np.ndarray, K: np.ndarray, u: np.ndarray, prior: Gamma, gamma_star: Gamma,
            row_of: np.ndarray, refs: np.ndarray, ref_weights: np.ndarray,
            side_floor: np.ndarray | None = None, cover: tuple[np.ndarray, np.ndarray] | None = None
            ) -> Gamma:
    """The photometric refinement of the priors of frames u (M,) against the labelled frames ``refs``
    (M, R) with weights (M, R); ``side_floor`` (T,) lower bounds on the hand's box side in every
    frame's crop, pixels, ``cover`` (points (T, N, 2), weights (T, N)) hand pixels of every crop
    (``refine.refine_frame``; None: none)."""
    if images is None:
        raise ValueError("the photometric propagation needs the video's images")
    images = np.asarray(images)
    lab = np.nonzero(row_of >= 0)[0]
    verts_lab, _ = hand_mesh(p.mano, gamma_star.take(row_of[lab]))
    verts_prior, _ = hand_mesh(p.mano, prior)
    window = splat_window(np.concatenate([verts_lab, verts_prior]), p.mano.faces,
                          np.concatenate([K[lab], K[u]]))
    base = jax.random.PRNGKey(p.settings.seed)
    keys = np.asarray(jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(u)))
    ref_gamma = gamma_star.take(row_of[refs])  # (M, R, ...)
    # no hand pixels given: the term is not compiled in at all (the result is the one without it)
    settings = p.settings if cover is not None else dataclasses.replace(p.settings, cover_weight=0.0)
    fn = functools.partial(refine_batch, p.mano, settings, p.image_size, p.z_off, p.depth_unit, window)
    floor = np.zeros(len(u), np.float32) if side_floor is None else np.asarray(side_floor, np.float32)[u]
    if cover is None:
        points, point_weights = np.zeros((len(u), 1, 2), np.float32), np.zeros((len(u), 1), np.float32)
    else:
        points, point_weights = np.asarray(cover[0], np.float32)[u], np.asarray(cover[1], np.float32)[u]
    references = References(images[refs], ref_gamma, K[refs], ref_weights.astype(np.float32))
    return batched(fn, prior, K[u], images[u], references, keys, floor, points, point_weights,
                   batch_size=p.batch_size)


#: the photometric refinement of given priors (``handprop_jax.propagation.recrop`` refines again)
refine_frames = _refine


def _with_rows(gamma: Gamma, index: np.ndarray, values: Gamma) -> Gamma:
    """A float32 copy of ``gamma`` with rows ``index`` replaced by ``values``."""
    out = Gamma(*(np.array(field, np.float32) for field in gamma))  # copies
    for field, new in zip(out, values, strict=True):
        field[index] = np.asarray(new, np.float32)
    return out
