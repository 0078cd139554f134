"""Propagation core: sparse annotations of a video → an annotation for every frame.

Used by the evaluation (scenario 2 of Table I), the visual report and ``handprop propagate``; no
file input or output here (:mod:`handprop_jax.propagation.inputs` reads the tool's files,
:mod:`handprop_jax.propagation.cli` is the command).

Each unlabelled frame u gets ``γ̃_u = φ(γ*_s, z_u − z_s) + γ*_s`` from its nearest labelled frame
s = N(u) (ties go to the earlier frame; ``handprop_jax.data.sparse.neighbours``), the aligner φ of a
:class:`~handprop_jax.model.api.BoundModel`. With ``both_sides`` the two labelled frames l < u < r
around u are both propagated to u and blended by temporal distance, weight (u − l) / (r − l) on r
(:func:`handprop_jax.gamma.blend`: root and betas linearly, every joint rotation of the pose along
the geodesic of SO(3)); frames before the first / after the last label use their only neighbour.

- :func:`propagate_video` ``(model, images, K, labelled, labels, both_sides) -> VideoPropagation``;
- :func:`batched` ``(fn, *args, batch_size)``: apply a jitted function in fixed-size batches;
- :func:`hand_mesh` ``(mano, gamma) -> (verts (T, 778, 3), joints (T, 21, 3))``;
- :func:`bound_from_run` ``(workdir, phase) -> (config, BoundModel)``: a trained run's model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from handprop_jax.data.sparse import neighbours
from handprop_jax.gamma import Gamma, blend
from handprop_jax.model.api import BoundModel, Features, Frame

blend_jit = jax.jit(blend)


def batched(fn: Callable, *args: Any, batch_size: int) -> Any:
    """``fn(*args)`` for pytrees of arrays with a common leading axis M, in batches of ``batch_size``.

    The last batch is padded (by repeating its last row) to ``batch_size``, so a jitted ``fn`` compiles
    once; the outputs (any pytree, e.g. a Gamma) come back as numpy arrays, concatenated and cut back
    to M rows."""
    leaves = jax.tree_util.tree_leaves(args)
    m = leaves[0].shape[0] if leaves else 0
    outs = []
    for start in range(0, m, batch_size):
        stop = min(start + batch_size, m)
        idx = np.minimum(np.arange(start, start + batch_size), stop - 1)
        res = fn(*rows(args, idx))
        outs.append(jax.tree_util.tree_map(lambda y, n=stop - start: np.asarray(y)[:n], res))
    if not outs:
        raise ValueError("batched: nothing to process (0 rows)")
    return jax.tree_util.tree_map(lambda *ys: np.concatenate(ys, 0), *outs)


def rows(tree: Any, index: Any) -> Any:
    """Rows ``index`` of every leaf of a pytree (numpy)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[index], tree)


@dataclasses.dataclass(frozen=True)
class VideoPropagation:
    """Annotations of every frame of one video (T frames, numpy).

    ``gamma``: γ (T, ...) float32, labelled frames = their labels exactly; ``labelled`` (T,) bool;
    ``source`` (T, 2) int: the labelled frame(s) each annotation comes from (left/right with both
    sides, else nearest and −1; −1 = none); ``weight`` (T, 2): their weights; ``gap`` (T,) |u − N(u)|;
    ``nearest``: with both sides, the nearest-only γ (T, ...) from the same aligner calls, else None.
    """

    gamma: Gamma
    labelled: np.ndarray
    source: np.ndarray
    weight: np.ndarray
    gap: np.ndarray
    nearest: Gamma | None = None


def propagate_video(model: BoundModel, images: np.ndarray | None, K: np.ndarray, labelled: np.ndarray,
                    labels: Gamma, both_sides: bool = False, features: Features | None = None
                    ) -> VideoPropagation:
    """Annotations for every frame of one video from its labelled frames.

    Args:
      model: the run's inference functions (or stand-ins).
      images: uint8 (T, S, S, 3) crops (ignored when ``features`` is given).
      K: (T, 3, 3) intrinsics of the crops, pixels.
      labelled: (L,) sorted unique frame indices with labels, L >= 1.
      labels: γ* of the labelled frames (L, ...), in the same order.
      both_sides: blend the propagations from both neighbouring labelled frames.
      features: optional precomputed Features (T, F) of every frame.
    """
    labelled = np.asarray(labelled, np.int64)
    if features is None:
        features = batched(model.features, images, batch_size=model.batch_size)
    features = Features(*features)
    T = np.shape(features.z_r)[0]
    nb = neighbours(T, labelled)
    frames = Frame(features=Features(*(np.asarray(z) for z in features)),
                   K=np.broadcast_to(np.asarray(K, np.float32), (T, 3, 3)))
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

    def run_align(s: np.ndarray) -> Gamma:  # γ*_s moved to u, frame by frame
        return batched(model.align, gamma_star.take(row_of[s]), rows(frames, u), rows(frames, s),
                       batch_size=model.batch_size)

    if len(u) and not both_sides:
        s = nb["nearest"][u]
        res = run_align(s)
        source[u, 0], weight[u, 0] = s, 1.0
    elif len(u):
        l, r, w = nb["left"][u], nb["right"][u], nb["weight"][u]
        s_l = np.where(l >= 0, l, r)
        res_l = run_align(s_l)
        res_r = run_align(np.where(r >= 0, r, l))
        res = batched(blend_jit, res_l, res_r, w.astype(np.float32), batch_size=model.batch_size)
        # the nearest-only result comes for free: N(u) is one of the two sides
        take_r = (nb["nearest"][u] != s_l)[:, None]
        picked = Gamma(*(np.where(take_r, b, a) for a, b in zip(res_l, res_r, strict=True)))
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


def _with_rows(gamma: Gamma, index: np.ndarray, values: Gamma) -> Gamma:
    """A float32 copy of ``gamma`` with rows ``index`` replaced by ``values``."""
    out = Gamma(*(np.array(field, np.float32) for field in gamma))  # copies
    for field, new in zip(out, values, strict=True):
        field[index] = np.asarray(new, np.float32)
    return out


def hand_mesh(mano, gamma: Gamma, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (T, 778, 3) and joints (T, 21, 3), camera frame, metres, of annotations γ (T, ...)."""
    from handprop_jax.hand import hand_in_camera_jit

    return batched(lambda g: hand_in_camera_jit(mano, *g), Gamma.of(gamma).numpy(), batch_size=batch_size)


def bound_from_run(workdir: str | Path, phase: str = "align", batch_size: int | None = None,
                   which: str = "latest") -> tuple[Any, BoundModel]:
    """The inference functions of a trained run's checkpoint ``phase`` (``stage1``, ``baseline``,
    ``stage2`` or ``align``; ``which``: ``latest`` or ``best``). Returns (config, BoundModel)."""
    from handprop_jax.model.api import HandPropModel
    from handprop_jax.training.checkpoint import load_run

    config, variables = load_run(workdir, phase, which)
    return config, HandPropModel.create(config).bind(variables, batch_size)
