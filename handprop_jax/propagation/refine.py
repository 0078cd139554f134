"""Photometric propagation: a geometric prior refined by analysis-by-synthesis against labelled frames.

For an unlabelled frame u the *prior* γ⁰_u is the crop-aware transfer of its labelled neighbours
(:mod:`handprop_jax.propagation.transfer`: each label's root carried in crop coordinates into u's
crop; with two neighbours the two are blended by temporal distance). The refinement moves
γ_u = γ⁰_u ⊕ x by a small update x (51 numbers: the root's depth and pixel offset in u's crop, a
rotation of the hand about the wrist, the finger joints) to minimise

    E(x) = Σ_r w_r · photometric_r(γ_u)                         (r: the labelled reference frames)
         + λ_box · log(extent_u / extent_ref)² + λ_centre · |centre_u − centre_ref|² / S²
         + λ_cover · uncovered(mesh, hand pixels)      (crops that do not follow the hand only)
         + λ_prior · mean(x²),

- photometric_r: masked mean L1 between reference r's silhouette pixels and frame u sampled where
  the surface point went under γ_u (:mod:`handprop_jax.photometric`, Hasson et al.'s warp; the
  reference mesh is r's label), on a coarse-to-fine sequence of blurred images;
- extent and centre: the bounding box of the projected mesh in u's crop against the references' (the
  same box of their labelled meshes in their own crops, weighted like the photometric terms). The
  data sets crop every frame around the hand the same way, so the hand's box in u's crop should be
  the labelled frames' box — the crop-aware idea applied to the whole hand instead of the root alone.
  It uses the crop of u, which the data sets derive from the hand (ground truth or a detector); set
  the two weights to 0 for crops that do not follow the hand; a per-frame lower bound on the side
  (``side_floor``, e.g. the hand's extent against the background) raises the target;
- uncovered: pixels known to be the hand's (``cover``: the outline of the hand's mask against a static
  background, :mod:`handprop_jax.propagation.background`) farther than a tolerance from every
  projected vertex (:func:`uncovered`); the mask is a lower bound on the hand, so the term is
  one-sided: it pulls the mesh over those pixels, never shrinks it;
- the last term keeps γ_u near the prior.

Adam runs ``steps`` iterations from x = 0 (split evenly over the blur levels). With no image
evidence (e.g. uniform images) and the box terms off, every gradient is the prior term's, x stays
0 and the result is the prior exactly (:func:`apply_update` returns γ⁰ unchanged for x = 0).

Units of the update x (one unit ≈ a just-visible change at 64 px; ``propagation.*_step``):

- x[0] · ``depth_step``: the root's focal-normalised depth d_f (``model.root_depth_unit`` metres per
  pixel of focal length; 0.05 ≈ 10 mm at 0.5 m for a 64 px crop of a 200 px hand);
- x[1:3] · ``pixel_step``: the root's pixel offset in u's crop;
- x[3:6] · ``rotation_step``: an axis-angle rotation (radians, camera frame) applied before the
  prior's global rotation (the hand turns about the wrist);
- x[6:51] · ``finger_step``: the 45 finger joint axis-angle components (radians).

Per frame (no batch axis); :func:`refine_batch` vmaps it over frames and jits it.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

import mano_jax
from handprop_jax import photometric
from handprop_jax.camera import project
from handprop_jax.config import PropagationConfig
from handprop_jax.gamma import Gamma
from handprop_jax.hand import hand_in_camera
from handprop_jax.model.heads import recover_root, root_to_raw

UPDATE_SIZE = 51


def _verts(mano: mano_jax.ManoModel, gamma: Gamma) -> jnp.ndarray:
    v, _ = hand_in_camera(mano, gamma.root[None], gamma.pose[None], gamma.betas[None])
    return v[0]


def update_scales(settings: PropagationConfig) -> jnp.ndarray:
    """(51,) size of one unit of each component of the update (module docstring)."""
    s = settings
    return jnp.concatenate([jnp.array([s.depth_step, s.pixel_step, s.pixel_step]),
                            jnp.full(3, s.rotation_step), jnp.full(45, s.finger_step)]).astype(jnp.float32)


def apply_update(prior: Gamma, x: jnp.ndarray, K: jnp.ndarray, scales: jnp.ndarray, image_size: int,
                 z_off: float, depth_unit: float, exact: bool = True) -> Gamma:
    """γ⁰ ⊕ x for one frame: prior root (3,), pose (48,), betas (10,); x (51,); K (3, 3) of u's crop.
    With ``exact``, x = 0 gives the prior bit for bit (the rotation round trip through matrices is
    otherwise only exact to rounding); the optimisation uses ``exact=False``, whose gradient in the
    rotation is also right at x = 0."""
    d = x * scales
    raw = root_to_raw(prior.root[None], K[None], image_size, z_off, depth_unit)[0]
    moved = recover_root((raw + d[:3])[None], K[None], image_size, z_off, depth_unit)[0]
    base = recover_root(raw[None], K[None], image_size, z_off, depth_unit)[0]
    root = prior.root + (moved - base)  # exactly the prior's root when d[:3] = 0
    turned = mano_jax.matrix_to_axis_angle(mano_jax.rodrigues(d[3:6]) @ mano_jax.rodrigues(prior.pose[:3]))
    glob = jnp.where(jnp.all(d[3:6] == 0), prior.pose[:3], turned) if exact else turned
    return Gamma(root=root, pose=jnp.concatenate([glob, prior.pose[3:] + d[6:]]), betas=prior.betas)


def _box(uv: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(larger side, centre (2,)) of the bounding box of projected points uv (V, 2)."""
    lo, hi = uv.min(0), uv.max(0)
    return jnp.max(hi - lo), (lo + hi) / 2


def uncovered(uv: jnp.ndarray, points: jnp.ndarray, weights: jnp.ndarray, tolerance: float,
              cap: float) -> jnp.ndarray:
    """Weighted mean over ``points`` (N, 2) (pixels; ``weights`` (N,), 0 = padding) of
    clip(d − tolerance, 0, cap)², d the pixel distance from the point to the nearest of the projected
    vertices ``uv`` (V, 2): 0 when every point lies on the hand; points farther than tolerance + cap
    count cap² and pull no more (outliers of the mask). pixels²; 0 with no weight."""
    d2 = jnp.min(jnp.sum((points[:, None, :] - uv[None, :, :]) ** 2, -1), 1)
    miss = jnp.clip(jnp.sqrt(d2 + 1e-12) - tolerance, 0.0, cap)
    return jnp.sum(weights * miss ** 2) / jnp.maximum(jnp.sum(weights), 1e-12)


class References(NamedTuple):
    """The labelled reference frames of one frame's refinement (a pytree; a leading batch axis in
    :func:`refine_batch`): images uint8 (R, S, S, 3), their labels γ* (R, ...), K (R, 3, 3) of their
    crops, weights (R,) of their terms (summing to 1)."""

    images: jnp.ndarray
    gammas: Gamma
    K: jnp.ndarray
    weights: jnp.ndarray


def refine_frame(mano: mano_jax.ManoModel, settings: PropagationConfig, image_size: int, z_off: float,
                 depth_unit: float, window, prior: Gamma, K_u: jnp.ndarray, image_u: jnp.ndarray,
                 refs: References, key: jax.Array, side_floor: jnp.ndarray | float = 0.0,
                 cover: tuple[jnp.ndarray, jnp.ndarray] | None = None) -> tuple[Gamma, jnp.ndarray]:
    """Refine the prior γ⁰ of one frame (module docstring).

    Args:
      mano: the MANO model. settings: the ``propagation`` config (static). image_size: S. z_off,
        depth_unit: the root parametrisation (``data.z_off``, ``model.root_depth_unit``). window: splat
        window for the rasteriser (static; ``render.splat_window``, None = dense).
      prior: γ⁰ root (3,), pose (48,), betas (10,). K_u: (3, 3). image_u: uint8 (S, S, 3).
      refs: the labelled reference frames (:class:`References`). key: PRNG key.
      side_floor: a lower bound on the hand's box side in u's crop, pixels (e.g. from the
        background, ``propagation.background``); the box term aims at max(references' side, floor).
        0: none (the references' side exactly).
      cover: optional (points (N, 2), weights (N,)): pixels of u's crop that are the hand's (e.g. the
        background mask's outline); ``settings.cover_weight`` × :func:`uncovered` pulls the mesh over
        them.
    Returns:
      (γ_u, loss per iteration (steps,)).
    """
    s = settings
    faces = mano.faces
    shape = (image_size, image_size)
    scales = update_scales(s)
    v0 = jax.lax.stop_gradient(_verts(mano, prior))
    levels_u = [photometric.gaussian_blur(image_u.astype(jnp.float32) / 255.0, sig) for sig in s.blur]
    ref_verts = jax.vmap(lambda g: _verts(mano, g))(refs.gammas)
    keys = jax.random.split(key, refs.images.shape[0])

    def prepare(verts, K, image, k):
        ref = photometric.sample_reference(verts, faces, K, image.astype(jnp.float32) / 255.0, s.pixels, k,
                                           tuple(s.blur), window)
        mask = photometric.visible(ref, v0, K_u, faces, shape, window, s.visibility_tolerance)
        side, centre = _box(project(verts, K))
        return ref, mask, side, centre

    samples, masks, sides, centres = jax.vmap(prepare)(ref_verts, refs.K, refs.images, keys)
    w = refs.weights / jnp.maximum(jnp.sum(refs.weights), 1e-12)
    side_ref = jnp.maximum(jnp.sum(w * sides), side_floor)
    centre_ref = jnp.sum(w[:, None] * centres, 0)

    def energy(x, level):
        g = apply_update(prior, x, K_u, scales, image_size, z_off, depth_unit, exact=False)
        verts = _verts(mano, g)
        errs = jax.vmap(lambda ref, m: photometric.error(
            ref, levels_u[level], photometric.warp(ref, verts, K_u), m, level)[0])(samples, masks)
        side, centre = _box(project(verts, K_u))
        out = (jnp.sum(w * errs) + s.box_weight * jnp.log(side / side_ref) ** 2
               + s.centre_weight * jnp.sum((centre - centre_ref) ** 2) / image_size ** 2
               + s.prior_weight * jnp.mean(x ** 2))
        if s.cover_weight > 0 and cover is not None:
            out = out + s.cover_weight * uncovered(project(verts, K_u), cover[0], cover[1], s.cover_tolerance,
                                                   s.cover_cap)
        if s.box_weight == 0 and s.floor_weight > 0:  # crops that do not follow the hand: the floor alone
            short = jnp.log(jnp.maximum(side_floor, 1e-6) / side)
            out = out + s.floor_weight * jnp.where(side_floor > 0, jnp.maximum(short, 0.0) ** 2, 0.0)
        return out

    x = jnp.zeros(UPDATE_SIZE, jnp.float32)
    history = []
    per_level = s.steps // len(s.blur) if s.blur else 0
    for level in range(len(s.blur)):
        if per_level == 0:
            break
        opt = optax.adam(optax.cosine_decay_schedule(s.lr, per_level))

        def body(carry, _, level=level, opt=opt):
            x, state = carry
            value, grad = jax.value_and_grad(energy)(x, level)
            updates, state = opt.update(grad, state, x)
            return (optax.apply_updates(x, updates), state), value

        (x, _), values = jax.lax.scan(body, (x, opt.init(x)), None, length=per_level)
        history.append(values)
    out = apply_update(prior, x, K_u, scales, image_size, z_off, depth_unit)
    return out, (jnp.concatenate(history) if history else jnp.zeros(0))


@functools.partial(jax.jit, static_argnames=("settings", "image_size", "z_off", "depth_unit", "window"))
def refine_batch(mano: mano_jax.ManoModel, settings: PropagationConfig, image_size: int, z_off: float,
                 depth_unit: float, window, prior: Gamma, K_u, image_u, refs: References, keys, side_floor,
                 cover_points, cover_weights) -> Gamma:
    """:func:`refine_frame` over a leading batch axis B of every array argument (prior (B, ...),
    K_u (B, 3, 3), image_u (B, S, S, 3), refs (B, R, ...), keys (B, 2), side_floor (B,),
    cover_points (B, N, 2), cover_weights (B, N)); returns γ (B, ...)."""
    def one(prior, K_u, image_u, refs, key, floor, points, weights):
        return refine_frame(mano, settings, image_size, z_off, depth_unit, window, prior, K_u, image_u, refs,
                            key, floor, cover=(points, weights))

    out, _ = jax.vmap(one)(prior, K_u, image_u, refs, keys, side_floor, cover_points, cover_weights)
    return out
