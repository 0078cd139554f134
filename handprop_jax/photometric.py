"""Photometric consistency between two frames of a video through a hand mesh (Hasson et al.'s warp).

A *reference* frame r shows the hand with a known mesh V_r (e.g. a labelled frame's ground truth). A
candidate mesh V_u for another frame u of the same hand says where each surface point went, so every
silhouette pixel p of r can be looked up in frame u: p lies on face f of V_r with screen-space
barycentrics b(p), and moves to

    q(p) = sum_k b_k(p) project(V_u[f_k], K_u)                                   (pixels of u)

— the per-vertex flow ``project(V_u, K_u) - project(V_r, K_r)`` interpolated over r's visible faces
and added to p (Hasson et al. 2020; since ``sum_k b_k project(V_r[f_k], K_r) = p`` the two forms are the
same). If V_u is right, ``I_u(q(p)) ≈ I_r(p)``. The face under each pixel, its barycentrics and the
visibility test come from the rasteriser under stop-gradient, so gradients reach V_u only through the
flow values q.

Per frame (no batch axis; ``jax.vmap`` over frames). Images are float (S, S, 3) in [0, 1], vertices
metres in the camera frame, K (3, 3) pixels of the crop. Pixel centres at integer (u, v)
(``handprop_jax.camera``).

- :func:`sample_reference` — rasterise V_r and draw silhouette pixels → :class:`Reference`;
- :func:`warp` — q(p) for a candidate V_u;
- :func:`flow_warp` — q(p) = p + the per-vertex flow π(V_u) − π(V_r) interpolated with p's
  perspective-correct barycentrics (Hasson et al.'s rendered flow; gradient only through the flow);
- :func:`visible` — which reference points are in front in u (z-buffer of V_u);
- :func:`error` — masked mean L1 between ``I_u(q)`` and the reference colours;
- :func:`cycle_check` — Hasson's forward–backward test: p → q under V_u → back to r under V_r's flow
  at q's nearest pixel must return within a few pixels (an alternative to :func:`visible`);
- :func:`wrist_cap` — the mesh with its wrist opening closed and which faces are the cap (their
  pixels are not the hand's surface: Hasson leaves them out);
- :func:`raster`, :func:`gaussian_blur`, :func:`bilinear`, :func:`inside` — the helpers they use.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from handprop_jax.camera import project
from handprop_jax.render import rasterize, rasterize_splat, screen_barycentrics


class Reference(NamedTuple):
    """Sampled silhouette pixels of a reference frame (constants: no gradient flows into them).

    tri: (N, 3) int32 vertex ids of the face under each pixel; bary: (N, 3) the pixel's screen-space
    barycentrics in that face; persp: (N, 3) perspective-correct barycentrics (the surface point is
    ``persp @ V_r[tri]``); pixel: (N, 2) the pixel (u, v); colour: (L, N, 3) the reference image at the
    pixel after each of the L blurs; valid: (N,) bool (False for padding rows when the silhouette has
    fewer than N pixels).
    """

    tri: jnp.ndarray
    bary: jnp.ndarray
    persp: jnp.ndarray
    pixel: jnp.ndarray
    colour: jnp.ndarray
    valid: jnp.ndarray


def raster(verts: jnp.ndarray, faces: jnp.ndarray, K: jnp.ndarray, image_size: tuple[int, int], window):
    """Face ids (H, W) and inverse depth (H, W) of a mesh: the splat rasteriser with ``window`` (static,
    ``handprop_jax.render.splat_window``), the dense one when ``window`` is None."""
    if window is None:
        return rasterize(verts, faces, K, image_size)
    return rasterize_splat(verts, faces, K, image_size, window)


def gaussian_blur(image: jnp.ndarray, sigma: float) -> jnp.ndarray:
    """Separable Gaussian blur of (H, W, C), borders reflected; ``sigma`` pixels (static), 0 = unchanged."""
    if sigma <= 0:
        return image
    r = max(1, int(round(2.5 * sigma)))
    x = jnp.arange(-r, r + 1, dtype=jnp.float32)
    k = jnp.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).astype(image.dtype)
    H, W = image.shape[:2]
    p = jnp.pad(image, ((r, r), (r, r), (0, 0)), mode="reflect")
    p = sum(k[i] * p[i:i + H] for i in range(2 * r + 1))
    return sum(k[i] * p[:, i:i + W] for i in range(2 * r + 1))


def bilinear(image: jnp.ndarray, uv: jnp.ndarray) -> jnp.ndarray:
    """Bilinear samples of ``image`` (H, W, C) at pixel positions ``uv`` (N, 2), positions clamped to
    the image (callers mask samples outside). Differentiable in ``uv`` (and ``image``)."""
    H, W = image.shape[:2]
    u = jnp.clip(uv[:, 0], 0.0, W - 1.0)
    v = jnp.clip(uv[:, 1], 0.0, H - 1.0)
    u0 = jnp.clip(jnp.floor(u), 0, W - 2).astype(jnp.int32)
    v0 = jnp.clip(jnp.floor(v), 0, H - 2).astype(jnp.int32)
    du = (u - u0)[:, None]
    dv = (v - v0)[:, None]
    top = image[v0, u0] * (1 - du) + image[v0, u0 + 1] * du
    bottom = image[v0 + 1, u0] * (1 - du) + image[v0 + 1, u0 + 1] * du
    return top * (1 - dv) + bottom * dv


def inside(uv: jnp.ndarray, image_size: tuple[int, int]) -> jnp.ndarray:
    """(N,) bool: pixel positions (N, 2) within the image's pixel centres."""
    H, W = image_size
    return (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)


def sample_reference(verts: jnp.ndarray, faces: jnp.ndarray, K: jnp.ndarray, image: jnp.ndarray,
                     n_pixels: int, key: jax.Array, sigmas: tuple[float, ...], window,
                     exclude_faces: jnp.ndarray | None = None) -> Reference:
    """Rasterise the reference mesh and draw ``n_pixels`` of its silhouette pixels uniformly without
    replacement (all of them, padded with invalid rows, when there are fewer; with ``n_pixels`` >= H·W
    every pixel of the image in raster order, ``valid`` marking the silhouette, and ``key`` unused).

    Args:
      verts: (V, 3) reference mesh, metres. faces: (F, 3) int32. K: (3, 3) pixels.
      image: (S, S, 3) float in [0, 1], the reference frame.
      n_pixels: static. key: PRNG key of the draw. sigmas: static blur levels (pixels), one colour per
        level. window: the splat window (static; see :func:`raster`).
      exclude_faces: optional (F,) bool, faces whose pixels are never drawn (e.g. a wrist cap).

    Invalid rows get the centre of a face (barycentrics 1/3): finite weights, so that masking them
    out keeps every gradient finite.
    """
    verts = jax.lax.stop_gradient(verts)
    H, W = image.shape[:2]
    fid, _ = raster(verts, faces, K, (H, W), window)
    fid = fid.reshape(-1)
    ok = fid >= 0
    if exclude_faces is not None:
        ok = ok & ~exclude_faces[jnp.maximum(fid, 0)]
    if n_pixels >= H * W:  # every pixel, in raster order (the silhouette = the valid rows)
        idx = jnp.arange(H * W)
    else:
        score = jnp.where(ok, jax.random.uniform(key, ok.shape), -1.0)
        _, idx = jax.lax.top_k(score, n_pixels)
    valid = ok[idx]
    f = jnp.maximum(fid[idx], 0)
    pixel = jnp.stack([(idx % W).astype(verts.dtype), (idx // W).astype(verts.dtype)], -1)
    # rows off the silhouette hold a pixel outside face f: its barycentrics are unbounded and the
    # perspective weights below can divide by ~0; they are never used, but a non-finite constant there
    # would turn the zero gradient of a masked row into NaN, so they get the face's centre
    bary = jnp.where(valid[:, None], screen_barycentrics(verts, faces, K, f, pixel), 1.0 / 3.0)
    tri = faces[f]
    w = bary / verts[tri, 2]
    persp = w / jnp.sum(w, -1, keepdims=True)
    colour = jnp.stack([bilinear(gaussian_blur(image, s), pixel) for s in sigmas])
    return Reference(tri, bary, persp, pixel, colour, valid)


def warp(ref: Reference, verts_u: jnp.ndarray, K_u: jnp.ndarray) -> jnp.ndarray:
    """Where the reference pixels land in frame u under the mesh ``verts_u`` (V, 3): (N, 2) pixels."""
    uv = project(verts_u, K_u)
    return jnp.einsum("nk,nkc->nc", ref.bary, uv[ref.tri])


def flow_warp(ref: Reference, verts_u: jnp.ndarray, K_u: jnp.ndarray, verts_r: jnp.ndarray,
              K_r: jnp.ndarray) -> jnp.ndarray:
    """Where the reference pixels land in frame u under Hasson et al.'s rendered flow: (N, 2) pixels,
    ``p + Σ_k w_k (π(V_u,k, K_u) − π(V_r,k, K_r))`` over the vertices k of p's face in the reference
    mesh ``verts_r`` (stop-gradient), w = p's perspective-correct barycentrics (``ref.persp``, as a
    renderer interpolates a vertex attribute). V_u = V_r (same K) gives p exactly; on a face at
    constant depth it equals :func:`warp`."""
    verts_r = jax.lax.stop_gradient(verts_r)
    flow = project(verts_u, K_u) - project(verts_r, K_r)
    return ref.pixel + jnp.einsum("nk,nkc->nc", ref.persp, flow[ref.tri])


def visible(ref: Reference, verts_u: jnp.ndarray, K_u: jnp.ndarray, faces: jnp.ndarray,
            image_size: tuple[int, int], window, tolerance: float = 0.02) -> jnp.ndarray:
    """(N,) bool: the surface point of each reference pixel is in front in frame u — its inverse depth
    under ``verts_u`` is within ``tolerance`` (relative) of u's z-buffer at the nearest pixel. The
    occlusion test of the warp (stop-gradient)."""
    verts_u = jax.lax.stop_gradient(verts_u)
    H, W = image_size
    _, zbuf = raster(verts_u, faces, K_u, image_size, window)
    q = warp(ref, verts_u, K_u)
    depth = jnp.einsum("nk,nk->n", ref.persp, verts_u[ref.tri, 2])
    qi = jnp.round(q).astype(jnp.int32)
    on = inside(q, image_size)
    z = zbuf[jnp.clip(qi[:, 1], 0, H - 1), jnp.clip(qi[:, 0], 0, W - 1)]
    return on & (1.0 / depth >= z * (1.0 - tolerance))


def error(ref: Reference, image_u: jnp.ndarray, q: jnp.ndarray, mask: jnp.ndarray, level: int = 0
          ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Masked mean L1 (over pixels and RGB) between ``image_u`` sampled at ``q`` (N, 2) and the
    reference colours of blur ``level``; samples outside the image are left out. Returns (error,
    number of pixels used); error 0 when none is used."""
    use = mask & ref.valid & inside(q, image_u.shape[:2])
    diff = jnp.abs(bilinear(image_u, q) - ref.colour[level]).mean(-1)
    n = use.sum()
    return jnp.sum(jnp.where(use, diff, 0.0)) / jnp.maximum(n, 1), n


def cycle_check(ref: Reference, q: jnp.ndarray, verts_u: jnp.ndarray, K_u: jnp.ndarray, verts_r: jnp.ndarray,
                K_r: jnp.ndarray, faces: jnp.ndarray, image_size: tuple[int, int], window,
                threshold: float = 2.0, exclude_faces: jnp.ndarray | None = None) -> jnp.ndarray:
    """(N,) bool: the forward–backward consistency check of Hasson et al. (App. C; stop-gradient).

    Each reference pixel p goes to q = :func:`warp` (ref, V_u) in frame u; at the pixel centre q'
    nearest to q, the face of V_u in front (rasterised; None there, or a face of ``exclude_faces``,
    fails) says which surface point u shows there, and the backward flow of that point (its screen
    barycentrics in that face of V_u applied to the projections of V_r in frame r) brings q' back to
    p' in frame r. p passes when it is a silhouette row (``ref.valid``), |p' − p| <= ``threshold`` pixels
    and q' lies in the image: a point
    hidden in u (another surface in front), or one whose correspondence is inconsistent, fails.

    Args: ref: the reference pixels (:func:`sample_reference` of V_r). q: (N, 2) their positions in u.
      verts_u, K_u: the candidate mesh of u (V, 3) and u's intrinsics. verts_r, K_r: the reference
      mesh and intrinsics. faces: (F, 3). image_size: (H, W) of u. window: splat window of the
      rasteriser (see :func:`raster`). threshold: pixels. exclude_faces: optional (F,) bool.
    """
    verts_u, verts_r, q = (jax.lax.stop_gradient(x) for x in (verts_u, verts_r, q))
    H, W = image_size
    fid, _ = raster(verts_u, faces, K_u, image_size, window)
    qn = jnp.round(q)
    ok = inside(qn, image_size)
    qi = jnp.clip(qn, 0, jnp.array([W - 1, H - 1], qn.dtype)).astype(jnp.int32)
    f = fid[qi[:, 1], qi[:, 0]]
    ok = ok & (f >= 0)
    f = jnp.maximum(f, 0)
    if exclude_faces is not None:
        ok = ok & ~exclude_faces[f]
    bary = screen_barycentrics(verts_u, faces, K_u, f, qi.astype(verts_u.dtype))
    back = jnp.einsum("nk,nkc->nc", bary, project(verts_r, K_r)[faces[f]])
    return ok & ref.valid & (jnp.linalg.norm(back - ref.pixel, axis=-1) <= threshold)


def wrist_cap(v_template, faces, J_regressor) -> tuple[np.ndarray, np.ndarray]:
    """A hand mesh with its wrist closed, and which faces close it (host-side numpy).

    The flow of a pixel on the wrist cap is not the motion of any visible surface (Hasson et al. close
    MANO's open wrist with 14 faces and leave their pixels out of the loss). An open mesh (MANO: the
    wrist is a loop of edges that belong to one face each) is closed here by a fan of faces over each
    boundary loop, appended after the original faces, which are the cap. A closed mesh (the synthetic
    hand) is returned as it is; its cap is found in the rest pose: the faces that face along the
    forearm axis (|cos| > 0.7 between their normal and the direction from the middle finger's first
    joint to the wrist joint) within 1 cm of the mesh's end on that side.

    Args: v_template (V, 3), faces (F, 3) int, J_regressor (16, V) of a MANO model (MANO joint order:
      joint 0 the wrist, joint 4 the middle finger's first joint).
    Returns: (faces (F', 3) int32, cap (F',) bool).
    """
    v = np.asarray(v_template, np.float64)
    f = np.asarray(faces, np.int64)
    nxt: dict[int, int] = {}
    counts: dict[tuple[int, int], int] = {}
    for a, b in np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]):
        key = (min(a, b), max(a, b))
        counts[key] = counts.get(key, 0) + 1
    for a, b in np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]):
        if counts[(min(a, b), max(a, b))] == 1:
            nxt[int(b)] = int(a)  # the cap runs the boundary the other way round
    if nxt:
        added = []
        while nxt:
            start = next(iter(nxt))
            loop = [start]
            while nxt.get(loop[-1], start) != start:
                loop.append(nxt.pop(loop[-1]))
            nxt.pop(loop[-1], None)
            added += [(loop[0], loop[i], loop[i + 1]) for i in range(1, len(loop) - 1)]
        closed = np.concatenate([f, np.asarray(added, np.int64).reshape(-1, 3)])
        cap = np.arange(len(closed)) >= len(f)
        return closed.astype(np.int32), cap
    J = np.asarray(J_regressor, np.float64) @ v
    axis = J[0] - J[4]
    axis /= np.linalg.norm(axis)
    tri = v[f]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
    used = np.unique(f)
    end = np.max((v[used] - J[0]) @ axis)
    near_end = (tri.mean(1) - J[0]) @ axis > end - 0.01
    return f.astype(np.int32), near_end & (np.abs(normal @ axis) > 0.7)
