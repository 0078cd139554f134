"""Table I metrics: joint/vertex errors under four alignments and the HO-3D F-scores.

Inputs are in **metres**, camera frame (OpenCV), joints in manopth order (joint 0 = wrist);
errors are reported in **millimetres**, F-scores as fractions in [0, 1].

The computations are vectorised numpy in float64 (batched SVDs and alignments; the F-score's
nearest neighbours use one pair of k-d trees per frame). They are evaluation-only (never
differentiated) and float64 keeps them equal to the official HO-3D evaluation
(``shreyashampali/ho3d``, ``eval.py``, which runs in float64 numpy and open3d) to well below
1e-6 mm, and keeps the F-score threshold tests exact; jax arrays are accepted and converted.

Definitions, per frame, with prediction P and ground truth G (each (J, 3)), averaged over points
and then over frames:

- ``MPJPE``: mean_j ||P_j - G_j|| (no alignment).
- ``MPJPE (T)``: translation (root) aligned, root = wrist (joint 0): P - P_0 + G_0.
- ``MPJPE (SD)``: scaled-depth aligned (paper section V-B: "aligning the overall scale and the
  mean depth of the predicted keypoints with the ground-truth"). We fit one scale ``s`` about the
  **camera centre** and one shift ``d`` along the optical axis e_z, by least squares::

      (s, d) = argmin  sum_j || s * P_j + d * e_z - G_j ||^2

  Closed form: setting the derivative in d to zero gives d = mean_j(G_jz) - s * mean_j(P_jz), so
  the aligned prediction has exactly the ground-truth mean depth; substituting, with the depth
  centred points P~ = P - (0, 0, mean P_z), G~ = G - (0, 0, mean G_z),
  s = sum_j <P~_j, G~_j> / sum_j ||P~_j||^2. Scaling about the camera centre is the
  depth/scale ambiguity of a single image (it leaves the 2D projection unchanged); the depth shift
  absorbs the remaining mean-depth error. x-y translation and rotation are NOT aligned. The error is
  invariant to P -> a P + b e_z for any a != 0, b.
- ``MPJPE (P)``, ``MPVPE (P)``: Procrustes aligned: per frame the similarity transform (scale c,
  orthogonal R, translation t) minimising sum_j ||c R P_j + t - G_j||^2 (Umeyama's closed form:
  centre both sets, SVD of the 3x3 cross-covariance, c = trace / ||P - mean P||^2). Exactly what the
  HO-3D evaluation's ``align_w_scale`` computes (scipy ``orthogonal_procrustes`` on centred,
  Frobenius-normalised sets), **including its reflection handling: R may be a reflection** (det -1)
  when a mirror image of the prediction fits the ground truth better than any rotation of it. For a
  plausible hand prediction the best orthogonal map is always a rotation and the two conventions
  agree; they differ only for predictions closer to the mirrored hand (or unrelated point sets),
  where the official numbers are the reference. ``ALLOW_REFLECTION = False`` (or the
  ``allow_reflection`` arguments) gives the proper-rotation Umeyama (sign of the smallest singular
  value flipped when det(U V^T) < 0). Joints and vertices are each aligned with their own
  transform, as HO-3D does for MANO meshes.
- ``MPVPE``: mean_v ||P_v - G_v|| on the 778 MANO vertices (no alignment).
- ``F@5``, ``F@15``: as the HO-3D challenge computes them, on the Procrustes-aligned vertices
  (paper: "We report the F-score values after Procrustes alignment"): for each predicted point the
  distance to the nearest ground-truth point, and vice versa; precision = fraction of predicted
  points whose nearest distance is < th, recall = fraction of ground-truth points whose nearest
  distance is < th (strict inequality, as HO-3D); F = 2 P R / (P + R), 0 when P + R = 0; th = 5 mm
  and 15 mm; averaged over frames. The point sets may have different sizes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

import mano_jax

#: Table I column names, in the paper's order. F-scores are fractions, the others mm.
COLUMNS: tuple[str, ...] = ("F@5", "F@15", "MPVPE", "MPVPE (P)", "MPJPE", "MPJPE (T)", "MPJPE (SD)",
                            "MPJPE (P)")
#: Columns where larger is better.
HIGHER_IS_BETTER: frozenset[str] = frozenset({"F@5", "F@15"})
F_THRESHOLDS_M: dict[str, float] = {"F@5": 0.005, "F@15": 0.015}
ROOT_JOINT = 0  # wrist, manopth order
#: Procrustes convention of MPJPE (P), MPVPE (P) and the F-scores: True = HO-3D's (orthogonal map,
#: reflections allowed), False = proper rotations only (see the module docstring).
ALLOW_REFLECTION = True

_TINY = 1e-30


def _points(name: str, x, n_points: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"{name}: expected an array (N, P, 3) of points in metres, got shape {a.shape}")
    if n_points is not None and a.shape[1] != n_points:
        raise ValueError(f"{name}: expected {n_points} points per frame, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def _pair(pred, gt, name: str) -> tuple[np.ndarray, np.ndarray]:
    p = _points(f"pred_{name}", pred)
    g = _points(f"gt_{name}", gt)
    if p.shape != g.shape:
        raise ValueError(f"pred_{name} {p.shape} and gt_{name} {g.shape} must have the same shape")
    return p, g


def point_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Mean Euclidean distance per frame. pred, gt: (N, P, 3) metres → (N,) metres."""
    return np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1).mean(-1)


def align_root(pred: np.ndarray, gt: np.ndarray, root: int = ROOT_JOINT) -> np.ndarray:
    """Translate each predicted frame so that its root joint lies on the ground truth's.

    pred, gt: (N, J, 3) metres → (N, J, 3)."""
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    return pred - pred[:, root:root + 1] + gt[:, root:root + 1]


def scaled_depth_params(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares scale ``s`` (about the camera centre) and depth shift ``d`` (metres) with
    ``s * pred + d * e_z ≈ gt`` (see the module docstring). pred, gt: (N, J, 3) → s (N,), d (N,)."""
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    mp = pred[..., 2].mean(-1)
    mg = gt[..., 2].mean(-1)
    pc = pred.copy()
    pc[..., 2] -= mp[:, None]
    gc = gt.copy()
    gc[..., 2] -= mg[:, None]
    s = np.einsum("njk,njk->n", pc, gc) / np.maximum(np.einsum("njk,njk->n", pc, pc), _TINY)
    d = mg - s * mp
    return s, d


def align_scaled_depth(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``s * pred + d * e_z`` with the least-squares (s, d). (N, J, 3) metres → (N, J, 3)."""
    s, d = scaled_depth_params(pred, gt)
    out = np.asarray(pred, np.float64) * s[:, None, None]
    out[..., 2] += d[:, None]
    return out


def procrustes_params(pred: np.ndarray, gt: np.ndarray, allow_reflection: bool = ALLOW_REFLECTION
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame similarity transform (Umeyama) mapping pred onto gt in the least-squares sense.

    Args:
      pred, gt: (N, P, 3) metres.
      allow_reflection: True: R may be any orthogonal matrix (HO-3D's ``orthogonal_procrustes``);
        False: a proper rotation (det +1). Default ``ALLOW_REFLECTION``.
    Returns:
      scale c (N,), rotation R (N, 3, 3), translation t (N, 3) metres with
      ``c * pred @ R.T + t ≈ gt``.
    """
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    mu_p = pred.mean(1)
    mu_g = gt.mean(1)
    p0 = pred - mu_p[:, None]
    g0 = gt - mu_g[:, None]
    cov = np.einsum("npi,npj->nij", g0, p0)  # (N, 3, 3) = G0^T P0
    u, sv, vt = np.linalg.svd(cov)
    sign = np.ones_like(sv)
    if not allow_reflection:
        sign[:, 2] = np.sign(np.linalg.det(u) * np.linalg.det(vt))
        sign[sign == 0] = 1.0
    rot = np.einsum("nij,nj,njk->nik", u, sign, vt)
    scale = (sv * sign).sum(-1) / np.maximum(np.einsum("npk,npk->n", p0, p0), _TINY)
    trans = mu_g - scale[:, None] * np.einsum("nij,nj->ni", rot, mu_p)
    return scale, rot, trans


def align_procrustes(pred: np.ndarray, gt: np.ndarray, allow_reflection: bool = ALLOW_REFLECTION
                     ) -> np.ndarray:
    """``pred`` after its per-frame Procrustes alignment to ``gt``. (N, P, 3) metres → (N, P, 3)."""
    scale, rot, trans = procrustes_params(pred, gt, allow_reflection)
    return scale[:, None, None] * np.einsum("nij,npj->npi", rot, np.asarray(pred, np.float64)) \
        + trans[:, None]


def nearest_distances(a: np.ndarray, b: np.ndarray, upper_bound: float = np.inf
                      ) -> tuple[np.ndarray, np.ndarray]:
    """For two per-frame point sets, the distance from each point to the nearest point of the other.

    Exact (float64 k-d trees, ``scipy.spatial.cKDTree``, one pair per frame: for 778 points a k-d
    tree query is much cheaper than the vectorised all-pairs distances).

    Args:
      a: (N, A, 3), b: (N, B, 3) metres (A and B may differ).
      upper_bound: distances beyond this (metres) may be returned as inf (faster queries).
    Returns:
      d_ab (N, A): for each point of a, distance to its nearest point of b; d_ba (N, B) likewise.
    """
    from scipy.spatial import cKDTree

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"nearest_distances: {a.shape[0]} vs {b.shape[0]} frames")
    d_ab = np.empty(a.shape[:2])
    d_ba = np.empty(b.shape[:2])
    for i in range(a.shape[0]):
        d_ab[i] = cKDTree(b[i]).query(a[i], distance_upper_bound=upper_bound)[0]
        d_ba[i] = cKDTree(a[i]).query(b[i], distance_upper_bound=upper_bound)[0]
    return d_ab, d_ba


def f_score(pred: np.ndarray, gt: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HO-3D F-score per frame at ``threshold`` metres (no alignment is applied here).

    Args:
      pred: (N, A, 3), gt: (N, B, 3) metres.
    Returns:
      f (N,), precision (N,) = fraction of predicted points within < threshold of a ground-truth point,
      recall (N,) = fraction of ground-truth points within < threshold of a predicted point.
    """
    d_pred, d_gt = nearest_distances(pred, gt, upper_bound=2.0 * threshold)
    return _f_from_distances(d_pred, d_gt, threshold)


def _f_from_distances(d_pred, d_gt, threshold):
    precision = (d_pred < threshold).mean(-1)
    recall = (d_gt < threshold).mean(-1)
    denom = precision + recall
    f = np.where(denom > 0, 2.0 * precision * recall / np.where(denom > 0, denom, 1.0), 0.0)
    return f, precision, recall


def per_frame(pred_joints, gt_joints, pred_verts, gt_verts, allow_reflection: bool = ALLOW_REFLECTION
              ) -> dict[str, np.ndarray]:
    """Every Table I metric for every frame.

    Args:
      pred_joints, gt_joints: (N, 21, 3) metres, camera frame, manopth order (joint 0 = wrist).
      pred_verts, gt_verts: (N, 778, 3) metres, camera frame.
      allow_reflection: Procrustes convention (module docstring; default HO-3D's).
    Returns:
      dict keyed by ``COLUMNS``, each (N,) float64: errors in mm, F-scores as fractions.
    """
    pj, gj = _pair(pred_joints, gt_joints, "joints")
    pv, gv = _pair(pred_verts, gt_verts, "verts")
    if pj.shape[0] != pv.shape[0]:
        raise ValueError(f"pred_joints has {pj.shape[0]} frames but pred_verts has {pv.shape[0]}")
    mm = 1000.0
    pv_p = align_procrustes(pv, gv, allow_reflection)
    d_pred, d_gt = nearest_distances(pv_p, gv, upper_bound=2.0 * max(F_THRESHOLDS_M.values()))
    out = {name: _f_from_distances(d_pred, d_gt, th)[0] for name, th in F_THRESHOLDS_M.items()}
    out["MPVPE"] = mm * point_error(pv, gv)
    out["MPVPE (P)"] = mm * point_error(pv_p, gv)
    out["MPJPE"] = mm * point_error(pj, gj)
    out["MPJPE (T)"] = mm * point_error(align_root(pj, gj), gj)
    out["MPJPE (SD)"] = mm * point_error(align_scaled_depth(pj, gj), gj)
    out["MPJPE (P)"] = mm * point_error(align_procrustes(pj, gj, allow_reflection), gj)
    return {name: out[name] for name in COLUMNS}


#: the side column of Table I: the median over frames of the global rotation's geodesic error, degrees
ROTATION = "Rot. (°)"


def rotation_error_deg(pred_pose: np.ndarray, gt_pose: np.ndarray) -> np.ndarray:
    """Geodesic angle between predicted and true global rotations, degrees. pred_pose, gt_pose: (N, ≥3)
    axis-angle poses (radians; the first 3 components are the global rotation) → (N,)."""
    rot = lambda p: mano_jax.rodrigues(np.asarray(p, np.float32)[:, :3])
    return np.degrees(np.asarray(mano_jax.geodesic_angle(rot(pred_pose), rot(gt_pose)), np.float64))


def per_frame_with_rotation(pred_joints, gt_joints, pred_verts, gt_verts, pred_pose: np.ndarray,
                            gt_pose: np.ndarray) -> dict[str, np.ndarray]:
    """Every Table I metric (:func:`per_frame`, default convention) and the global rotation's error
    (:data:`ROTATION`, :func:`rotation_error_deg`) for every frame: how ``handprop evaluate`` and
    ``handprop score`` score frames.

    Args:
      pred_joints, gt_joints: (N, 21, 3) metres, camera frame, manopth order.
      pred_verts, gt_verts: (N, 778, 3) metres, camera frame.
      pred_pose, gt_pose: (N, ≥3) axis-angle poses, radians (the first 3: the global rotation).
    Returns:
      dict keyed by ``COLUMNS`` and ``ROTATION``, each (N,) float64: mm, F-scores as fractions,
      degrees.
    """
    out = per_frame(pred_joints, gt_joints, pred_verts, gt_verts)
    out[ROTATION] = rotation_error_deg(pred_pose, gt_pose)
    return out


def summarize(frames: Mapping[str, np.ndarray], mask=None) -> dict[str, float]:
    """Mean over frames of a ``per_frame`` dict (optionally only where ``mask`` (N,) is True)."""
    result = {}
    for name in COLUMNS:
        values = np.asarray(frames[name], np.float64)
        if mask is not None:
            values = values[np.asarray(mask, bool)]
        result[name] = float(values.mean()) if values.size else float("nan")
    return result


def compute(pred_joints, gt_joints, pred_verts, gt_verts) -> dict[str, float]:
    """Table I metrics averaged over frames.

    Args:
      pred_joints, gt_joints: (N, 21, 3) metres. pred_verts, gt_verts: (N, 778, 3) metres.
    Returns:
      {"F@5", "F@15", "MPVPE", "MPVPE (P)", "MPJPE", "MPJPE (T)", "MPJPE (SD)", "MPJPE (P)"} →
      float (errors in mm, F-scores in [0, 1]).
    """
    return summarize(per_frame(pred_joints, gt_joints, pred_verts, gt_verts))
