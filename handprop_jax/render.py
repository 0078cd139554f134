"""A small pure-JAX rasteriser: z-buffer, barycentric interpolation, per-vertex normals, Lambert +
ambient shading, through a pinhole camera (OpenCV convention, see ``handprop_jax.camera``).

The work is vectorised over all pixels and a chunk of faces at a time; a ``lax.scan`` over face
chunks keeps a running z-buffer, so memory is O(pixels x face_chunk) whatever the mesh size. The
face that wins a pixel is found with a non-differentiable arg-max, but every interpolated quantity is
recomputed from the vertices afterwards, so colours/depth are differentiable in the vertex positions
inside each face (a later soft/differentiable renderer can reuse the same pieces).

Pixel (row i, column j) is sampled at its centre (u=j, v=i). A pixel centre on a shared edge counts
as inside both triangles (barycentric tolerance EDGE_EPS; the z-buffer picks one), so closed meshes
have no cracks.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from handprop_jax.camera import backproject, project

NEAR = 1e-3  # metres: faces with a vertex closer than this to the camera plane are not drawn
# A pixel centre counts as inside a face when all its barycentrics are >= -EDGE_EPS: centres on a
# shared edge then belong to both faces whatever the float rounding (no cracks along edges).
EDGE_EPS = 1e-5


def vertex_normals(vertices: jnp.ndarray, faces: jnp.ndarray) -> jnp.ndarray:
    """Area-weighted unit vertex normals. vertices (V, 3), faces (F, 3) int -> (V, 3)."""
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    fn = jnp.cross(v1 - v0, v2 - v0)  # (F, 3), length = 2 * area
    acc = jnp.zeros_like(vertices)
    for k in range(3):
        acc = acc.at[faces[:, k]].add(fn)
    norm = jnp.sqrt(jnp.sum(acc * acc, axis=-1, keepdims=True))
    return acc / jnp.maximum(norm, 1e-12)


def _screen_coefficients(vertices: jnp.ndarray, faces: jnp.ndarray, K: jnp.ndarray):
    """Per face, the screen-space barycentrics as affine functions of the pixel (u, v).

    Returns bary (F, 3, 3) with b_k(u, v) = bary[f, k, 0] u + bary[f, k, 1] v + bary[f, k, 2],
    inverse-depth coefficients (F, 3) (1/z is affine in screen space), and valid (F,) bool.
    """
    uv = project(vertices, K)  # (V, 2)
    z = vertices[:, 2]
    p = uv[faces]  # (F, 3, 2)
    zf = z[faces]  # (F, 3)
    x, y = p[..., 0], p[..., 1]

    def edge(i, j):  # E_ij(q) = (p_j - p_i) x (q - p_i) as (A, B, C) with E = A u + B v + C
        a = -(y[:, j] - y[:, i])
        b = x[:, j] - x[:, i]
        c = -b * y[:, i] - a * x[:, i]
        return jnp.stack([a, b, c], axis=-1)

    e = jnp.stack([edge(1, 2), edge(2, 0), edge(0, 1)], axis=1)  # (F, 3, 3): b0, b1, b2 numerators
    area2 = e[:, 2, 0] * x[:, 2] + e[:, 2, 1] * y[:, 2] + e[:, 2, 2]  # E_01(p2) = 2 * signed area
    valid = (jnp.abs(area2) > 1e-9) & jnp.all(zf > NEAR, axis=-1)
    safe = jnp.where(valid, area2, 1.0)
    bary = e / safe[:, None, None]
    inv_z = jnp.einsum("fkc,fk->fc", bary, 1.0 / jnp.where(valid[:, None], zf, 1.0))
    return bary, inv_z, valid


def screen_barycentrics(vertices: jnp.ndarray, faces: jnp.ndarray, K: jnp.ndarray, face_ids: jnp.ndarray,
                        pixels: jnp.ndarray) -> jnp.ndarray:
    """Screen-space barycentrics of ``pixels`` (P, 2) (u, v) in the faces ``face_ids`` (P,) int of the
    mesh (V, 3) seen through K (3, 3): (P, 3), summing to 1; ``sum_k b_k project(v[face_k]) = pixel``.
    Differentiable in the vertices (the face ids are integers: pick them with :func:`rasterize`)."""
    bary, _, _ = _screen_coefficients(vertices, faces, K)
    q = jnp.concatenate([pixels, jnp.ones_like(pixels[:, :1])], axis=-1)
    return jnp.einsum("pkc,pc->pk", bary[face_ids], q)


def rasterize(vertices: jnp.ndarray, faces: jnp.ndarray, K: jnp.ndarray, image_size: tuple[int, int],
              face_chunk: int = 128) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Z-buffer visibility.

    Args:
      vertices: (V, 3) camera frame, metres. faces: (F, 3) int32. K: (3, 3) pixels.
      image_size: (H, W) static. face_chunk: faces processed at once (memory ~ H*W*face_chunk).
    Returns:
      face_id (H, W) int32 (-1 where no face) and inverse depth (H, W) (0 where no face), 1/metres.
    """
    H, W = image_size
    bary, inv_z, valid = _screen_coefficients(vertices, faces, K)
    F = faces.shape[0]
    n_chunks = -(-F // face_chunk)
    pad = n_chunks * face_chunk - F
    bary = jnp.pad(bary, ((0, pad), (0, 0), (0, 0))).reshape(n_chunks, face_chunk, 3, 3)
    inv_z = jnp.pad(inv_z, ((0, pad), (0, 0))).reshape(n_chunks, face_chunk, 3)
    valid = jnp.pad(valid, (0, pad)).reshape(n_chunks, face_chunk)
    ids = jnp.arange(n_chunks * face_chunk, dtype=jnp.int32).reshape(n_chunks, face_chunk)
    vv, uu = jnp.meshgrid(jnp.arange(H, dtype=vertices.dtype), jnp.arange(W, dtype=vertices.dtype),
                          indexing="ij")
    u, v = uu.reshape(-1, 1), vv.reshape(-1, 1)  # (P, 1)

    def step(carry, chunk):
        best_w, best_f = carry
        cb, cw, cvalid, cids = chunk
        inside = cvalid[None, :]
        for k in range(3):
            inside = inside & (u * cb[None, :, k, 0] + v * cb[None, :, k, 1] + cb[None, :, k, 2] >= -EDGE_EPS)
        w = u * cw[None, :, 0] + v * cw[None, :, 1] + cw[None, :, 2]  # (P, C) inverse depth
        w = jnp.where(inside & (w > 0), w, 0.0)
        arg = jnp.argmax(w, axis=1)
        wmax = jnp.take_along_axis(w, arg[:, None], axis=1)[:, 0]
        closer = wmax > best_w
        return (jnp.where(closer, wmax, best_w), jnp.where(closer, cids[arg], best_f)), None

    P = H * W
    init = (jnp.zeros(P, vertices.dtype), jnp.full(P, -1, jnp.int32))
    (best_w, best_f), _ = jax.lax.scan(step, init, (bary, inv_z, valid, ids))
    return best_f.reshape(H, W), best_w.reshape(H, W)


def rasterize_splat(vertices: jnp.ndarray, faces: jnp.ndarray, K: jnp.ndarray, image_size: tuple[int, int],
                    window: int | tuple[tuple[int, int], ...]) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Z-buffer visibility for small triangles: each face tests only the ``window`` x ``window``
    pixel centres from the top-left of its screen bounding box and scatters into the z-buffer.

    ``window`` is one int for all faces, or ((n_faces, window), ...) groups covering the faces in
    order (e.g. a few large faces first with a large window, the many small ones with a small one).
    Exact (same result as ``rasterize``) when every face's bounding box spans at most its window
    pixel centres per axis (see ``max_face_extent``); larger faces are clipped. Cost O(sum n w^2)
    instead of O(F H W). Same arguments and returns as ``rasterize``.
    """
    H, W = image_size
    F = faces.shape[0]
    groups = ((F, window),) if isinstance(window, int) else tuple(window)
    if sum(n for n, _ in groups) != F:
        raise ValueError(f"rasterize_splat: window groups {groups} do not cover the {F} faces")
    bary_all, inv_z_all, valid_all = _screen_coefficients(vertices, faces, K)
    uv_all = project(vertices, K)[faces]  # (F, 3, 2)
    P = H * W
    pix_l, w_l, fid_l = [], [], []
    first = 0
    for n, win in groups:
        sl = slice(first, first + n)
        bary, inv_z, valid, uv = bary_all[sl], inv_z_all[sl], valid_all[sl], uv_all[sl]
        lo = jnp.ceil(jnp.min(uv, axis=1))  # first pixel centre inside the bounding box
        lo = jnp.where(valid[:, None] & jnp.isfinite(lo), lo, -2.0 * win)
        lo = jnp.clip(lo, -2.0 * win, jnp.array([W, H], lo.dtype))
        d = jnp.arange(win, dtype=vertices.dtype)
        du, dv = jnp.meshgrid(d, d, indexing="xy")
        u = lo[:, 0:1] + du.reshape(1, -1)  # (n, win*win)
        v = lo[:, 1:2] + dv.reshape(1, -1)
        inside = valid[:, None] & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
        for k in range(3):
            b = u * bary[:, None, k, 0] + v * bary[:, None, k, 1] + bary[:, None, k, 2]
            inside = inside & (b >= -EDGE_EPS)
        w = u * inv_z[:, None, 0] + v * inv_z[:, None, 1] + inv_z[:, None, 2]
        inside = inside & (w > 0)
        pix_l.append(jnp.where(inside, v.astype(jnp.int32) * W + u.astype(jnp.int32), P).reshape(-1))
        w_l.append(jnp.where(inside, w, 0.0).reshape(-1))
        ids = jnp.arange(first, first + n, dtype=jnp.int32)[:, None]
        fid_l.append(jnp.broadcast_to(ids, u.shape).reshape(-1))
        first += n
    pix, w, fids = jnp.concatenate(pix_l), jnp.concatenate(w_l), jnp.concatenate(fid_l)  # P = dump slot
    id_bits = max(1, int(F).bit_length())
    if id_bits <= 12 and vertices.dtype == jnp.float32:
        # one scatter-max of a packed key: the float32 bits of the inverse depth (monotonic for
        # positive floats) with the low mantissa bits replaced by the face id. Depth resolution is
        # then 2^(id_bits - 23) relative (e.g. 0.12 mm at 0.5 m for MANO's 1538 faces); ties go to
        # the larger face id.
        bits = jax.lax.bitcast_convert_type(w, jnp.int32)
        key = jnp.where(pix < P, ((bits >> id_bits) << id_bits) | fids, -1)
        kbuf = jnp.full(P + 1, -1, jnp.int32).at[pix].max(key)[:P]
        fbuf = jnp.where(kbuf >= 0, kbuf & ((1 << id_bits) - 1), -1)
        inv_z = inv_z_all.T  # (3, F)
        f = jnp.maximum(fbuf, 0)
        q_u = (jnp.arange(P) % W).astype(vertices.dtype)
        q_v = (jnp.arange(P) // W).astype(vertices.dtype)
        zbuf = jnp.where(fbuf >= 0, inv_z[0, f] * q_u + inv_z[1, f] * q_v + inv_z[2, f], 0.0)
        return fbuf.reshape(H, W), zbuf.reshape(H, W)
    zbuf = jnp.zeros(P + 1, vertices.dtype).at[pix].max(w)
    win_mask = (pix < P) & (w >= zbuf[pix])
    fbuf = jnp.full(P + 1, -1, jnp.int32).at[jnp.where(win_mask, pix, P)].max(fids)
    return fbuf[:P].reshape(H, W), zbuf[:P].reshape(H, W)


def face_extents(vertices: jnp.ndarray, faces: jnp.ndarray, K: jnp.ndarray) -> jnp.ndarray:
    """Pixel centres spanned by each face's screen bounding box (max over u, v): the window that
    makes ``rasterize_splat`` exact for that face. vertices (..., V, 3), K (..., 3, 3) -> (..., F)."""
    uv = project(vertices, K)[..., faces, :]  # (..., F, 3, 2)
    span = jnp.floor(jnp.max(uv, axis=-2)) - jnp.ceil(jnp.min(uv, axis=-2)) + 1
    return jnp.max(span, axis=-1).astype(jnp.int32)


def max_face_extent(vertices: jnp.ndarray, faces: jnp.ndarray, K: jnp.ndarray) -> jnp.ndarray:
    """Largest ``face_extents`` of a mesh: one ``window`` that makes ``rasterize_splat`` exact.
    vertices (..., V, 3), K (..., 3, 3) -> (...)."""
    return jnp.max(face_extents(vertices, faces, K), axis=-1)


#: splat windows :func:`splat_window` chooses from (few sizes: few compiled variants)
SPLAT_WINDOWS = (4, 6, 8, 12, 16, 24, 32)


def splat_window(vertices, faces, K) -> int | None:
    """The smallest of :data:`SPLAT_WINDOWS` that makes ``rasterize_splat`` exact for every mesh of a
    batch — vertices (..., V, 3), K (..., 3, 3) — or None (use the dense ``rasterize``) when a face spans
    more than the largest window or a projection is not finite. Host-side (returns a Python int)."""
    import numpy as np

    ext = np.asarray(max_face_extent(jnp.asarray(vertices, jnp.float32), jnp.asarray(faces),
                                     jnp.asarray(K, jnp.float32)), np.float64)
    if ext.size == 0 or not np.all(np.isfinite(ext)):
        return None
    worst = float(ext.max())
    return next((w for w in SPLAT_WINDOWS if worst <= w), None)


def render(vertices: jnp.ndarray, faces: jnp.ndarray, K: jnp.ndarray, vertex_colors: jnp.ndarray,
           light_dir: jnp.ndarray, image_size: tuple[int, int], background: jnp.ndarray,
           ambient: float | jnp.ndarray = 0.35, face_chunk: int = 128,
           splat_window: int | tuple[tuple[int, int], ...] | None = None) -> dict[str, jnp.ndarray]:
    """Render a coloured, Lambert-shaded mesh over a background.

    Args:
      vertices: (V, 3) camera frame, metres (z > 0 in front of the camera).
      faces: (F, 3) int32 vertex indices (either winding: lighting is two-sided).
      K: (3, 3) intrinsics, pixels.
      vertex_colors: (V, 3) albedo in [0, 1].
      light_dir: (3,) direction from the surface towards the light, camera frame (normalised here).
      image_size: (H, W) static python ints.
      background: (H, W, 3) float in [0, 1].
      ambient: ambient fraction; shade = ambient + (1 - ambient) * max(0, n . l).
      face_chunk: static, faces rasterised at once by the exact dense rasteriser.
      splat_window: static; when given, use ``rasterize_splat`` with this window, an int or
        ((n_faces, window), ...) groups (much faster for meshes of small triangles; exact when each
        face's ``face_extents`` <= its window).
    Returns:
      dict(image (H, W, 3) float in [0, 1], depth (H, W) metres (0 off the mesh), mask (H, W) bool).
    """
    H, W = image_size
    if splat_window is None:
        face_id, _ = rasterize(vertices, faces, K, image_size, face_chunk)
    else:
        face_id, _ = rasterize_splat(vertices, faces, K, image_size, splat_window)
    mask = face_id >= 0
    fid = jnp.maximum(face_id, 0).reshape(-1)
    vv, uu = jnp.meshgrid(jnp.arange(H, dtype=vertices.dtype), jnp.arange(W, dtype=vertices.dtype),
                          indexing="ij")
    q = jnp.stack([uu.reshape(-1), vv.reshape(-1), jnp.ones(H * W, vertices.dtype)], axis=-1)  # (P, 3)
    b = screen_barycentrics(vertices, faces, K, fid, q[:, :2])  # (P, 3) screen-space barycentrics
    tri = faces[fid]  # (P, 3)
    zk = vertices[tri, 2]
    persp = b / zk
    denom = jnp.sum(persp, axis=-1, keepdims=True)
    lam = persp / jnp.where(jnp.abs(denom) > 0, denom, 1.0)  # perspective-correct barycentrics
    depth = 1.0 / jnp.where(lam.sum(-1) > 0, denom[:, 0], 1.0)

    normals = vertex_normals(vertices, faces)
    n = jnp.einsum("pk,pkc->pc", lam, normals[tri])
    n = n / jnp.maximum(jnp.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    point = backproject(q[:, :2], depth, K)
    n = jnp.where(jnp.sum(n * point, axis=-1, keepdims=True) > 0, -n, n)  # face the camera
    light = light_dir / jnp.maximum(jnp.linalg.norm(light_dir), 1e-12)
    shade = ambient + (1.0 - ambient) * jnp.maximum(n @ light, 0.0)
    color = jnp.einsum("pk,pkc->pc", lam, vertex_colors[tri]) * shade[:, None]
    m = mask.reshape(-1, 1)
    image = jnp.where(m, color, background.reshape(-1, 3))
    return {
        "image": jnp.clip(image, 0.0, 1.0).reshape(H, W, 3),
        "depth": jnp.where(mask, depth.reshape(H, W), 0.0),
        "mask": mask,
    }


@functools.partial(jax.jit, static_argnames=("image_size", "face_chunk", "splat_window"))
def render_batch(vertices: jnp.ndarray, faces: jnp.ndarray, K: jnp.ndarray, vertex_colors: jnp.ndarray,
                 light_dir: jnp.ndarray, image_size: tuple[int, int], background: jnp.ndarray,
                 ambient: jnp.ndarray, face_chunk: int = 128,
                 splat_window: int | tuple[tuple[int, int], ...] | None = None) -> dict[str, jnp.ndarray]:
    """``render`` over a leading batch axis of every argument except faces (shared), jitted.

    vertices (B, V, 3), K (B, 3, 3), vertex_colors (B, V, 3), light_dir (B, 3),
    background (B, H, W, 3), ambient (B,). Returns the dict of ``render`` with a batch axis.
    (``render`` is vmap-able; on CPU a sequential ``lax.map`` over the batch is faster, because the
    splat rasteriser's scatters do not vectorise, and it bounds memory.)"""
    fn = functools.partial(render, image_size=image_size, face_chunk=face_chunk, splat_window=splat_window)
    return jax.lax.map(lambda a: fn(a[0], faces, a[1], a[2], a[3], background=a[4], ambient=a[5]),
                       (vertices, K, vertex_colors, light_dir, background, ambient))
