"""Table I metrics against closed forms, invariances, hand-computed cases and an independent
re-statement of the HO-3D evaluation (scipy orthogonal_procrustes + KD-tree nearest neighbours)."""

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from handprop_jax import metrics

N = 5


def _hand_like(rng, n, p, depth=0.5, size=0.08):
    """Random 'hands': anisotropic point clouds of ~size metres around depth metres."""
    centre = np.stack([rng.uniform(-0.05, 0.05, n), rng.uniform(-0.05, 0.05, n),
                       rng.uniform(depth - 0.1, depth + 0.1, n)], -1)
    pts = rng.normal(size=(n, p, 3)) * np.array([1.0, 0.6, 0.3]) * size / 2
    return pts + centre[:, None]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    gj = _hand_like(rng, N, 21)
    gv = _hand_like(rng, N, 778)
    return gj, gv, rng


def _similarity(rng, n):
    rot = Rotation.random(n, random_state=1).as_matrix()
    scale = rng.uniform(0.7, 1.4, n)
    trans = rng.normal(size=(n, 3)) * 0.05
    return scale, rot, trans


def _apply(x, scale, rot, trans):
    return scale[:, None, None] * np.einsum("nij,npj->npi", rot, x) + trans[:, None]


ERRORS = [c for c in metrics.COLUMNS if not c.startswith("F@")]


def test_identical_inputs_are_perfect(data):
    gj, gv, _ = data
    out = metrics.compute(gj, gj, gv, gv)
    assert set(out) == set(metrics.COLUMNS)
    for c in ERRORS:
        assert out[c] == pytest.approx(0.0, abs=1e-9), c
    assert out["F@5"] == 1.0 and out["F@15"] == 1.0


def test_procrustes_metrics_invariant_to_similarity_only(data):
    gj, gv, rng = data
    s, r, t = _similarity(rng, N)
    out = metrics.per_frame(_apply(gj, s, r, t), gj, _apply(gv, s, r, t), gv)
    # the similarity is exactly undone by the Procrustes alignment
    np.testing.assert_allclose(out["MPJPE (P)"], 0, atol=1e-9)
    np.testing.assert_allclose(out["MPVPE (P)"], 0, atol=1e-9)
    np.testing.assert_array_equal(out["F@5"], 1.0)
    # ... but not by the other alignments
    for c in ("MPJPE", "MPJPE (T)", "MPJPE (SD)", "MPVPE"):
        assert np.all(out[c] > 1.0), c


def test_procrustes_not_invariant_to_nonrigid(data):
    gj, gv, rng = data
    pj = gj * np.array([1.0, 1.3, 1.0])  # anisotropic stretch is not a similarity
    out = metrics.per_frame(pj, gj, gv, gv)
    assert np.all(out["MPJPE (P)"] > 0.5)


def test_root_alignment_invariant_to_translation_only(data):
    gj, gv, rng = data
    t = rng.normal(size=(N, 1, 3)) * 0.05
    out = metrics.per_frame(gj + t, gj, gv + t, gv)
    np.testing.assert_allclose(out["MPJPE (T)"], 0, atol=1e-9)
    np.testing.assert_allclose(out["MPJPE (P)"], 0, atol=1e-9)
    np.testing.assert_allclose(out["MPJPE"], 1000 * np.linalg.norm(t[:, 0], axis=-1), rtol=1e-12)
    assert np.all(out["MPJPE (SD)"] > 1.0)  # x-y translation is not aligned by SD
    # a rotation about the wrist is not undone by root alignment
    rot = Rotation.random(N, random_state=3).as_matrix()
    rotated = np.einsum("nij,npj->npi", rot, gj - gj[:, :1]) + gj[:, :1]
    out = metrics.per_frame(rotated, gj, gv, gv)
    assert np.all(out["MPJPE (T)"] > 5.0)
    np.testing.assert_allclose(out["MPJPE (P)"], 0, atol=1e-9)


def test_scaled_depth_invariant_to_scale_and_depth_only(data):
    gj, gv, rng = data
    a = rng.uniform(0.6, 1.5, (N, 1, 1))
    b = rng.uniform(-0.2, 0.2, (N, 1))
    ez = np.array([0.0, 0.0, 1.0])
    pj = a * gj + b[..., None] * ez  # camera-centred scale + depth shift
    out = metrics.per_frame(pj, gj, gv, gv)
    np.testing.assert_allclose(out["MPJPE (SD)"], 0, atol=1e-9)
    assert np.all(out["MPJPE"] > 1.0) and np.all(out["MPJPE (T)"] > 0.1)
    # exact invariance of a non-zero SD error: noisy prediction, then scale + depth shift
    noisy = gj + rng.normal(size=gj.shape) * 0.004
    base = metrics.per_frame(noisy, gj, gv, gv)["MPJPE (SD)"]
    moved = metrics.per_frame(a * noisy + b[..., None] * ez, gj, gv, gv)["MPJPE (SD)"]
    np.testing.assert_allclose(moved, base, rtol=1e-9)
    assert np.all(base > 1.0)
    # not invariant to an x translation or a rotation
    shifted = metrics.per_frame(gj + np.array([0.02, 0, 0]), gj, gv, gv)["MPJPE (SD)"]
    assert np.all(shifted > 5.0)
    rot = Rotation.random(N, random_state=4).as_matrix()
    rotated = np.einsum("nij,npj->npi", rot, gj - gj.mean(1, keepdims=True)) + gj.mean(1, keepdims=True)
    assert np.all(metrics.per_frame(rotated, gj, gv, gv)["MPJPE (SD)"] > 5.0)


def test_scaled_depth_closed_form_is_least_squares(data):
    gj, _, rng = data
    pj = gj + rng.normal(size=gj.shape) * 0.01
    s, d = metrics.scaled_depth_params(pj, gj)
    ez = np.array([0.0, 0.0, 1.0])
    for n in range(N):  # linear least squares in (s, d) solved generically
        A = np.stack([pj[n].reshape(-1), np.tile(ez, 21)], -1)
        sol, *_ = np.linalg.lstsq(A, gj[n].reshape(-1), rcond=None)
        np.testing.assert_allclose([s[n], d[n]], sol, rtol=1e-9, atol=1e-12)
    aligned = metrics.align_scaled_depth(pj, gj)
    np.testing.assert_allclose(aligned[..., 2].mean(-1), gj[..., 2].mean(-1), atol=1e-12)


def test_hand_computed_cases():
    # MPJPE: every joint off by a (3, 4, 0) mm displacement = 5 mm
    g = np.zeros((1, 21, 3)) + np.array([0, 0, 0.5])
    v = np.zeros((1, 778, 3)) + np.array([0, 0, 0.5])
    out = metrics.per_frame(g + np.array([0.003, 0.004, 0.0]), g, v, v)
    assert out["MPJPE"][0] == pytest.approx(5.0)
    assert out["MPJPE (T)"][0] == pytest.approx(0.0, abs=1e-12)
    # SD with a residual: P = (0.1,0,1),(0,0.1,1); G = (0.1,0,1),(0,-0.1,1) → s = 0, d = 1,
    # aligned = (0,0,1) twice, error 0.1 m per point
    p = np.array([[[0.1, 0, 1], [0, 0.1, 1]]])
    q = np.array([[[0.1, 0, 1], [0, -0.1, 1]]])
    s, d = metrics.scaled_depth_params(p, q)
    assert s[0] == pytest.approx(0.0) and d[0] == pytest.approx(1.0)
    assert 1000 * metrics.point_error(metrics.align_scaled_depth(p, q), q)[0] == pytest.approx(100.0)
    # Procrustes with a mirror image: HO-3D's orthogonal Procrustes undoes the reflection, the
    # proper-rotation variant cannot
    tet = np.array([[[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]]]) * 0.05
    mirror = tet * np.array([1, 1, -1.0])
    assert metrics.point_error(metrics.align_procrustes(mirror, tet), tet)[0] == pytest.approx(0, abs=1e-12)
    assert metrics.point_error(metrics.align_procrustes(mirror, tet, allow_reflection=False), tet)[0] > 0.005
    _, rot, _ = metrics.procrustes_params(mirror, tet, allow_reflection=False)
    assert np.linalg.det(rot[0]) == pytest.approx(1.0)
    _, rot, _ = metrics.procrustes_params(mirror, tet)
    assert np.linalg.det(rot[0]) == pytest.approx(-1.0)
    # Procrustes scale: pred is gt at half size around its centroid, plus a shift
    c = tet.mean(1, keepdims=True)
    scale, rot, trans = metrics.procrustes_params(0.5 * (tet - c) + c + 0.1, tet)
    assert scale[0] == pytest.approx(2.0) and np.allclose(rot[0], np.eye(3))


def test_f_score_known_matching():
    # gt: 10 points on the x axis, 20 mm apart. pred: 4 within 3 mm, 3 at 8 mm, 3 at 12 mm of
    # their gt point, plus 2 outliers 1 m away (12 predicted points, 10 gt points).
    gt = np.zeros((1, 10, 3))
    gt[0, :, 0] = np.arange(10) * 0.02
    offsets = np.array([0.003] * 4 + [0.008] * 3 + [0.012] * 3)
    pred = gt.copy()
    pred[0, :, 1] += offsets
    pred = np.concatenate([pred, np.array([[[1.0, 1.0, 1.0], [2.0, 1.0, 1.0]]])], axis=1)
    f5, p5, r5 = metrics.f_score(pred, gt, 0.005)
    assert p5[0] == pytest.approx(4 / 12) and r5[0] == pytest.approx(4 / 10)
    assert f5[0] == pytest.approx(2 * (4 / 12) * (4 / 10) / (4 / 12 + 4 / 10))
    f15, p15, r15 = metrics.f_score(pred, gt, 0.015)
    assert p15[0] == pytest.approx(10 / 12) and r15[0] == pytest.approx(1.0)
    assert f15[0] == pytest.approx(2 * (10 / 12) / (10 / 12 + 1))
    # nothing within the threshold → 0, not NaN
    f, _, _ = metrics.f_score(pred + 5.0, gt, 0.005)
    assert f[0] == 0.0


def _ho3d_reference(pj, gj, pv, gv):
    """The HO-3D challenge evaluation restated independently: scipy orthogonal_procrustes on
    centred, Frobenius-normalised point sets; KD-tree nearest neighbours; strict thresholds."""

    def align(gt, pred):
        g0, p0 = gt - gt.mean(0), pred - pred.mean(0)
        sg, sp = np.linalg.norm(g0), np.linalg.norm(p0)
        r, s = orthogonal_procrustes(g0 / sg, p0 / sp)
        return (p0 / sp) @ r.T * s * sg + gt.mean(0)

    def fscore(gt, pred, th):
        d_gt = cKDTree(pred).query(gt)[0]
        d_pred = cKDTree(gt).query(pred)[0]
        p, r = np.mean(d_pred < th), np.mean(d_gt < th)
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    rows = []
    for a, b, c, d in zip(pj, gj, pv, gv, strict=True):
        va = align(d, c)
        rows.append({
            "MPJPE": np.linalg.norm(a - b, axis=-1).mean() * 1000,
            "MPJPE (P)": np.linalg.norm(align(b, a) - b, axis=-1).mean() * 1000,
            "MPVPE": np.linalg.norm(c - d, axis=-1).mean() * 1000,
            "MPVPE (P)": np.linalg.norm(va - d, axis=-1).mean() * 1000,
            "F@5": fscore(d, va, 0.005), "F@15": fscore(d, va, 0.015),
        })
    return {k: np.mean([r[k] for r in rows]) for k in rows[0]}


def test_matches_ho3d_evaluation(data):
    gj, gv, rng = data
    s, r, t = _similarity(rng, N)
    # predictions: a similarity-transformed ground truth plus per-point noise of a few mm
    pj = _apply(gj + rng.normal(size=gj.shape) * 0.004, s, r, t)
    pv = _apply(gv + rng.normal(size=gv.shape) * 0.004, s, r, t)
    ours = metrics.compute(pj, gj, pv, gv)
    ref = _ho3d_reference(pj, gj, pv, gv)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, rel=1e-7, abs=1e-9), k
    assert 0.05 < ours["F@5"] < 0.95  # the thresholds are actually exercised


def test_matches_ho3d_evaluation_on_unrelated_point_sets(data):
    """Independent random predictions: about half the frames' best orthogonal map is a reflection;
    the default convention is HO-3D's, so the numbers still agree."""
    gj, gv, rng = data
    pj = _hand_like(rng, N, 21)
    pv = _hand_like(rng, N, 778)
    ours = metrics.compute(pj, gj, pv, gv)
    ref = _ho3d_reference(pj, gj, pv, gv)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, rel=1e-7, abs=1e-9), k
    dets = [np.linalg.det(r) for r in metrics.procrustes_params(pv, gv)[1]]
    assert min(dets) < 0 < max(dets)  # both cases occur


def test_summarize_and_mask(data):
    gj, gv, rng = data
    pj = gj + rng.normal(size=gj.shape) * 0.01
    frames = metrics.per_frame(pj, gj, gv, gv)
    mask = np.array([True, False, True, True, False])
    masked = metrics.summarize(frames, mask)
    direct = metrics.compute(pj[mask], gj[mask], gv[mask], gv[mask])
    for k in metrics.COLUMNS:
        assert masked[k] == pytest.approx(direct[k], rel=1e-12)


def test_bad_shapes_raise(data):
    gj, gv, _ = data
    with pytest.raises(ValueError, match="pred_joints"):
        metrics.compute(gj[:, :20], gj, gv, gv)
    with pytest.raises(ValueError, match="gt_verts"):
        metrics.compute(gj, gj, gv, gv[..., :2])
    with pytest.raises(ValueError, match="frames"):
        metrics.compute(gj, gj, gv[:2], gv[:2])
    with pytest.raises(ValueError, match="NaN"):
        metrics.compute(gj * np.nan, gj, gv, gv)


def test_accepts_jax_arrays(data):
    import jax.numpy as jnp

    gj, gv, _ = data
    out = metrics.compute(jnp.asarray(gj), jnp.asarray(gj), jnp.asarray(gv), jnp.asarray(gv))
    assert out["MPJPE"] < 1e-3  # float32 round trip


def test_per_frame_with_rotation_adds_the_global_rotation_error(data):
    """Table I's columns (MPJPE by hand) plus Rot. (°): the angle between the global rotations (from
    scipy), whatever the rest of the pose."""
    gj, gv, rng = data
    pj, pv = gj + rng.normal(size=gj.shape) * 0.01, gv + rng.normal(size=gv.shape) * 0.01
    gt_pose = rng.normal(size=(N, 48)) * 0.4
    turn = Rotation.from_rotvec(rng.normal(size=(N, 3)) * 0.5)
    pred_pose = rng.normal(size=(N, 48)) * 0.4  # other finger joints: no effect
    pred_pose[:, :3] = (turn * Rotation.from_rotvec(gt_pose[:, :3])).as_rotvec()
    got = metrics.per_frame_with_rotation(pj, gj, pv, gv, pred_pose, gt_pose)
    assert set(got) == {*metrics.COLUMNS, metrics.ROTATION}
    np.testing.assert_allclose(got["MPJPE"], 1000 * np.linalg.norm(pj - gj, axis=-1).mean(-1), rtol=1e-12)
    np.testing.assert_allclose(got[metrics.ROTATION], np.degrees(turn.magnitude()), atol=1e-3)
