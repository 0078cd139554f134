"""The MANO forward pass as pure JAX functions (manopth ``ManoLayer`` semantics, metres).

Pipeline: pose (PCA or axis-angle) -> full 48-d axis-angle -> rotations (``rodrigues``) ->
shape blend (``blend_shapes``) and joint regression -> pose correctives (``pose_features`` x
posedirs) -> kinematic chain, level by level (``kinematic_chain``) -> linear blend skinning
(``skin``) -> 16 joints + 5 fingertip vertices, reordered to manopth's 21-joint order.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mano_jax import constants as C
from mano_jax.geometry import rodrigues
from mano_jax.model import ManoModel

# Full float32 precision for every contraction (accelerators would otherwise use reduced-precision
# passes for f32 matmuls; on CPU this is a no-op). MANO is tiny next to any network.
_HI = jax.lax.Precision.HIGHEST


def _dot(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    return jnp.matmul(a, b, precision=_HI)


def _float_dtype(*xs) -> jnp.dtype:
    """Result float dtype: float32 by default, float64 when x64 is enabled and inputs allow."""
    return jnp.result_type(float, *[x for x in xs if x is not None])


# ----------------------------------------------------------------------------- PCA

def hands_mean_or_zero(model: ManoModel, flat_hand_mean: bool) -> jnp.ndarray:
    """(45,) the mean finger pose added to the coefficients: zeros when ``flat_hand_mean``."""
    return jnp.zeros_like(model.hands_mean) if flat_hand_mean else model.hands_mean


@functools.partial(jax.jit, static_argnames=("flat_hand_mean",))
def pca_to_axis_angle(model: ManoModel, coeffs: jnp.ndarray, *, flat_hand_mean: bool = False
                      ) -> jnp.ndarray:
    """Finger pose PCA coefficients -> 45-d finger axis-angle (mean added unless flat).

    Args:
      model: the MANO model.
      coeffs: (..., n) PCA coefficients, 1 <= n <= 45 (the first n components are used).
      flat_hand_mean: if False, ``hands_mean`` is added (manopth ``flat_hand_mean=False``).
    Returns:
      (..., 45) axis-angle of the 15 finger joints in MANO joint order, radians.
    """
    n = coeffs.shape[-1]
    if not 1 <= n <= 45:
        raise ValueError(f"pca_to_axis_angle: coeffs last axis must be 1..45, got shape {coeffs.shape}")
    return hands_mean_or_zero(model, flat_hand_mean) + _dot(coeffs, model.hands_components[:n])


@functools.partial(jax.jit, static_argnames=("ncomps", "flat_hand_mean"))
def axis_angle_to_pca(model: ManoModel, finger_pose: jnp.ndarray, *, ncomps: int = 45,
                      flat_hand_mean: bool = False) -> jnp.ndarray:
    """45-d finger axis-angle -> the least-squares PCA coefficients of the first ``ncomps``.

    Exact inverse of ``pca_to_axis_angle`` when ``ncomps == 45`` (or when the pose lies in the
    span of the first ``ncomps`` components).

    Args:
      model: the MANO model.
      finger_pose: (..., 45) finger axis-angle in MANO joint order, radians (hands_mean included).
      ncomps: number of PCA components (1..45).
      flat_hand_mean: if False, ``hands_mean`` is subtracted first.
    Returns:
      (..., ncomps) PCA coefficients.
    """
    if finger_pose.shape[-1] != 45:
        raise ValueError(f"axis_angle_to_pca: finger_pose must be (..., 45), got {finger_pose.shape}")
    if not 1 <= ncomps <= 45:
        raise ValueError(f"axis_angle_to_pca: ncomps must be in 1..45, got {ncomps}")
    comps = model.hands_components[:ncomps]
    centred = finger_pose - hands_mean_or_zero(model, flat_hand_mean)
    return _dot(centred, jnp.linalg.pinv(comps))


def full_pose(model: ManoModel, pose: jnp.ndarray, *, ncomps: int = 15, use_pca: bool = True,
              flat_hand_mean: bool = False) -> jnp.ndarray:
    """The 48-d axis-angle pose that ``forward`` poses the hand with (manopth semantics).

    Args:
      model: the MANO model.
      pose: (B, 3 + ncomps) root axis-angle + PCA coefficients when ``use_pca``, else (B, 48)
        root + 45 finger axis-angle. As in manopth, trailing extra columns are ignored.
      ncomps, use_pca, flat_hand_mean: as in ``forward``.
    Returns:
      (B, 48) root axis-angle followed by 15 finger joints' axis-angle (hands_mean included).
    """
    n = ncomps if use_pca else 45
    if pose.ndim != 2 or pose.shape[1] < 3 + n:
        want = f"(B, {3 + n})"
        raise ValueError(f"forward: pose must be {want} (use_pca={use_pca}, ncomps={ncomps}), "
                         f"got shape {pose.shape}")
    coeffs = pose[:, 3:3 + n]
    if use_pca:
        fingers = pca_to_axis_angle(model, coeffs, flat_hand_mean=flat_hand_mean)
    else:
        fingers = hands_mean_or_zero(model, flat_hand_mean) + coeffs
    return jnp.concatenate([pose[:, :3], fingers], axis=1)


# ----------------------------------------------------------------------------- pieces

def blend_shapes(model: ManoModel, betas: jnp.ndarray) -> jnp.ndarray:
    """Shaped rest vertices ``v_template + shapedirs . betas``.

    Args:
      model: the MANO model.
      betas: (B, 10) shape coefficients.
    Returns:
      (B, 778, 3) vertices in the rest (flat) pose, metres.
    """
    nb = model.shapedirs.shape[-1]
    offs = _dot(betas, model.shapedirs.reshape(-1, nb).T)
    return model.v_template + offs.reshape(betas.shape[0], -1, 3)


def regress_joints(model: ManoModel, v_shaped: jnp.ndarray) -> jnp.ndarray:
    """Rest-pose joints ``J_regressor @ v_shaped``: (B, 778, 3) -> (B, 16, 3), metres."""
    return jnp.einsum("jv,bvc->bjc", model.J_regressor, v_shaped, precision=_HI)


def pose_features(rotmats: jnp.ndarray) -> jnp.ndarray:
    """``lrotmin`` pose features: flattened (R - I) of the 15 non-root joints.

    Args:
      rotmats: (B, 16, 3, 3) local joint rotations (joint 0 = global rotation, ignored).
    Returns:
      (B, 135) features, joint-major, row-major within each 3x3 block.
    """
    eye = jnp.eye(3, dtype=rotmats.dtype)
    return (rotmats[:, 1:] - eye).reshape(rotmats.shape[0], -1)


def pose_blend_shapes(model: ManoModel, feats: jnp.ndarray) -> jnp.ndarray:
    """Pose-corrective offsets ``posedirs . feats``: (B, 135) -> (B, 778, 3), metres."""
    offs = _dot(feats, model.posedirs.reshape(-1, model.posedirs.shape[-1]).T)
    return offs.reshape(feats.shape[0], -1, 3)


@functools.lru_cache(maxsize=16)
def _levels(parents: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    depth = [0] * len(parents)
    for i, p in enumerate(parents):
        depth[i] = 0 if p < 0 else depth[p] + 1
    return tuple(tuple(i for i in range(len(parents)) if depth[i] == d) for d in range(max(depth) + 1))


def _is_mano_tree(parents: tuple[int, ...]) -> bool:
    return tuple(parents) == C.PARENTS


def kinematic_chain(rotmats: jnp.ndarray, joints: jnp.ndarray,
                    parents: tuple[int, ...] = C.PARENTS) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Global joint transforms, evaluated level by level (3 levels below the root for MANO).

    ``G_k = G_parent(k) [R_k | j_k - j_parent(k)]`` and ``G_root = [R_root | j_root]``.

    Args:
      rotmats: (B, J, 3, 3) local rotations (joint 0 = global rotation).
      joints: (B, J, 3) rest-pose joint locations, metres.
      parents: static parent index of each joint (-1 for the root).
    Returns:
      (global rotations (B, J, 3, 3), posed joint locations (B, J, 3) in metres).
    """
    if _is_mano_tree(parents):
        return _chain_mano(rotmats, joints)
    return _chain_generic(rotmats, joints, tuple(parents))


def _chain_mano(rotmats: jnp.ndarray, joints: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """MANO's tree: fingers are contiguous triples, joint 1 + 3 f + l is level l of finger f, so
    each level is a strided slice (no gathers)."""
    B = joints.shape[0]
    rf = rotmats[:, 1:].reshape(B, 5, 3, 3, 3)
    jf = joints[:, 1:].reshape(B, 5, 3, 3)
    r_prev = jnp.broadcast_to(rotmats[:, :1], (B, 5, 3, 3))
    t_prev = jnp.broadcast_to(joints[:, :1], (B, 5, 3))
    j_prev = t_prev
    rots, trans = [], []
    for lvl in range(3):
        rel = jf[:, :, lvl] - j_prev
        t_prev = jnp.einsum("bfij,bfj->bfi", r_prev, rel, precision=_HI) + t_prev
        r_prev = _dot(r_prev, rf[:, :, lvl])
        j_prev = jf[:, :, lvl]
        rots.append(r_prev)
        trans.append(t_prev)
    g_rot = jnp.concatenate([rotmats[:, :1], jnp.stack(rots, 2).reshape(B, 15, 3, 3)], 1)
    g_t = jnp.concatenate([joints[:, :1], jnp.stack(trans, 2).reshape(B, 15, 3)], 1)
    return g_rot, g_t


def _chain_generic(rotmats: jnp.ndarray, joints: jnp.ndarray, parents: tuple[int, ...]
                   ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Any tree: the joints of one depth are composed with their parents at once."""
    J = joints.shape[1]
    levels = _levels(parents)
    g_rot: list[Any] = [None] * J  # every entry is set below, parents first
    g_t: list[Any] = [None] * J
    root = levels[0]
    for i in root:
        g_rot[i] = rotmats[:, i]
        g_t[i] = joints[:, i]
    for lvl in levels[1:]:
        idx = np.asarray(lvl)
        par = np.asarray([parents[i] for i in lvl])
        pr = jnp.stack([g_rot[p] for p in par], 1)
        pt = jnp.stack([g_t[p] for p in par], 1)
        rel = joints[:, idx] - joints[:, par]
        t = jnp.einsum("bkij,bkj->bki", pr, rel, precision=_HI) + pt
        r = _dot(pr, rotmats[:, idx])
        for k, i in enumerate(lvl):
            g_rot[i] = r[:, k]
            g_t[i] = t[:, k]
    return jnp.stack(g_rot, 1), jnp.stack(g_t, 1)


def skin(model: ManoModel, v_posed: jnp.ndarray, joints_rest: jnp.ndarray,
         g_rot: jnp.ndarray, g_t: jnp.ndarray) -> jnp.ndarray:
    """Linear blend skinning.

    ``v' = sum_k w_vk (G_rot_k (v - j_k) + G_t_k)`` with rest joints j_k.

    Args:
      model: supplies ``weights`` (778, 16).
      v_posed: (B, 778, 3) rest-pose vertices with pose correctives, metres.
      joints_rest: (B, 16, 3) rest-pose joints, metres.
      g_rot: (B, 16, 3, 3) global joint rotations.
      g_t: (B, 16, 3) posed joint locations, metres.
    Returns:
      (B, 778, 3) posed vertices, metres.
    """
    B, J = g_t.shape[:2]
    t = g_t - jnp.einsum("bkij,bkj->bki", g_rot, joints_rest, precision=_HI)
    A = jnp.concatenate([g_rot, t[..., None]], axis=-1).reshape(B, J, 12)      # (B, J, 12)
    T = jnp.einsum("vk,bkm->bvm", model.weights, A, precision=_HI).reshape(B, -1, 3, 4)  # (B, V, 3, 4)
    return _affine_apply(T, v_posed)


@jax.custom_jvp
def _affine_apply(T: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    """``T[..., :3] @ v + T[..., 3]`` for (..., 3, 4) transforms and (..., 3) points.

    The value is computed with explicit multiply-adds (fastest forward on CPU); derivatives are
    written as contractions, whose transposes make the fastest backward pass.
    """
    return T[..., 0] * v[..., 0:1] + T[..., 1] * v[..., 1:2] + T[..., 2] * v[..., 2:3] + T[..., 3]


@_affine_apply.defjvp
def _affine_apply_jvp(primals, tangents):
    T, v = primals
    dT, dv = tangents
    out = _affine_apply(T, v)
    d_out = (jnp.einsum("...ij,...j->...i", dT[..., :3], v, precision=_HI) + dT[..., 3]
             + jnp.einsum("...ij,...j->...i", T[..., :3], dv, precision=_HI))
    return out, d_out


# ----------------------------------------------------------------------------- forward

_CHUNK = 32          # batch chunk for large batches
_CHUNK_ABOVE = 64    # batches larger than this are processed chunk by chunk


def _posed(m: ManoModel, aa: jnp.ndarray, betas: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Full 48-d axis-angle (B, 48) and betas (B, 10) -> uncentred verts (B, 778, 3), joints (B, 21, 3)."""
    B = aa.shape[0]
    rot = rodrigues(aa.reshape(B, -1, 3))                                   # (B, 16, 3, 3)
    # Shape: vertices and joints (joint regressor folded into the shape basis).
    nb = m.shapedirs.shape[-1]
    sd = m.shapedirs.reshape(-1, nb)                                         # (V*3, nb)
    v_shaped = m.v_template.reshape(-1) + _dot(betas, sd.T)                 # (B, V*3)
    j_template = _dot(m.J_regressor, m.v_template)                          # (16, 3)
    j_dirs = jnp.einsum("jv,vcb->jcb", m.J_regressor, m.shapedirs, precision=_HI).reshape(-1, nb)
    joints_rest = (j_template.reshape(-1) + _dot(betas, j_dirs.T)).reshape(B, -1, 3)
    # Pose correctives.
    feats = pose_features(rot)
    v_posed = (v_shaped + _dot(feats, m.posedirs.reshape(-1, m.posedirs.shape[-1]).T)).reshape(B, -1, 3)

    g_rot, g_t = kinematic_chain(rot, joints_rest, m.parents)
    verts = skin(m, v_posed, joints_rest, g_rot, g_t)

    tips = verts[:, np.asarray(C.TIP_VERTEX_IDS[m.side])]
    joints = jnp.concatenate([g_t, tips], axis=1)[:, np.asarray(C.MANOPTH_JOINT_ORDER)]
    return verts, joints


@functools.partial(jax.jit, static_argnames=("ncomps", "use_pca", "flat_hand_mean", "center_idx"))
def forward(model: ManoModel, pose: jnp.ndarray, betas: jnp.ndarray | None = None,
            trans: jnp.ndarray | None = None, *, ncomps: int = 15, use_pca: bool = True,
            flat_hand_mean: bool = False, center_idx: int | None = None
            ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """MANO forward pass with the semantics of manopth's ``ManoLayer`` (but in metres).

    Args:
      model: the MANO model (official or synthetic).
      pose: (B, 3 + ncomps) [root axis-angle, PCA coefficients] when ``use_pca``; otherwise
        (B, 48) [root axis-angle, 15 finger joints' axis-angle in MANO joint order], radians.
      betas: (B, 10) shape coefficients, or None for the mean shape.
      trans: (B, 3) translation, metres, or None. As in manopth: if ``trans`` is None or all
        zero, the output is centred on joint ``center_idx`` (when given); otherwise ``trans``
        is added and no centring is done.
      ncomps: number of PCA components used when ``use_pca``.
      use_pca: pose given as PCA coefficients (True) or axis-angle (False).
      flat_hand_mean: if False, ``hands_mean`` is added to the finger pose (so zero
        coefficients give the mean pose); if True zero gives the flat hand.
      center_idx: output joint (0..20, manopth order) to centre on, or None.
    Returns:
      vertices (B, 778, 3) and joints (B, 21, 3), metres; joints in manopth order (wrist,
      thumb 1-3 + tip, index, middle, ring, pinky).

    Jit-compiled (ncomps, use_pca, flat_hand_mean, center_idx static). Inputs are float32 unless
    x64 is enabled and they are float64. Bad shapes raise ValueError at trace time.
    """
    pose = jnp.asarray(pose)
    dtype = _float_dtype(pose, betas, trans)
    pose = pose.astype(dtype)
    B = pose.shape[0]
    if betas is None:
        betas = jnp.zeros((B, model.shapedirs.shape[-1]), dtype)
    betas = jnp.asarray(betas, dtype)
    if betas.ndim != 2 or betas.shape[1] != model.shapedirs.shape[-1] or betas.shape[0] not in (1, B):
        raise ValueError(f"forward: betas must be (B={B}, {model.shapedirs.shape[-1]}), got {betas.shape}")
    if center_idx is not None and not -C.NUM_OUT_JOINTS <= center_idx < C.NUM_OUT_JOINTS:
        raise ValueError(f"forward: center_idx must index the 21 output joints, got {center_idx}")
    m = model if model.v_template.dtype == dtype else model.astype(dtype)
    aa = full_pose(m, pose, ncomps=ncomps, use_pca=use_pca, flat_hand_mean=flat_hand_mean)
    betas = jnp.broadcast_to(betas, (B, betas.shape[1]))
    if trans is not None:
        trans = jnp.asarray(trans, dtype)
        if trans.shape != (B, 3) and trans.shape != (1, 3):
            raise ValueError(f"forward: trans must be (B={B}, 3), got {trans.shape}")
    if B > _CHUNK_ABOVE and jax.default_backend() == "cpu" and jax.device_count() == 1:
        # Large batches run as a loop over cache-sized chunks: several times faster on a CPU.
        # (Not with several devices, where the batch axis may be sharded, nor on accelerators.)
        n = -(-B // _CHUNK)
        pad = n * _CHUNK - B
        aa_c = jnp.pad(aa, ((0, pad), (0, 0))).reshape(n, _CHUNK, -1)
        b_c = jnp.pad(betas, ((0, pad), (0, 0))).reshape(n, _CHUNK, -1)
        verts, joints = jax.lax.map(lambda ab: _posed(m, ab[0], ab[1]), (aa_c, b_c))
        verts = verts.reshape(n * _CHUNK, -1, 3)[:B]
        joints = joints.reshape(n * _CHUNK, -1, 3)[:B]
    else:
        verts, joints = _posed(m, aa, betas)

    c = joints[:, center_idx][:, None] if center_idx is not None else jnp.zeros((), dtype)
    if trans is None:
        return verts - c, joints - c
    is_zero = jnp.all(trans == 0)
    off = jnp.where(is_zero, -c, trans[:, None, :])
    return verts + off, joints + off
