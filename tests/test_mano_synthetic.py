"""The procedural synthetic hand: MANO's shapes, a closed mesh, tips at the finger ends, meaning."""

from __future__ import annotations

import collections

import jax.numpy as jnp
import numpy as np
import pytest

import mano_jax

FINGERS = {"thumb": 13, "index": 1, "middle": 4, "ring": 10, "pinky": 7}   # first MANO joint
TIP_ORDER = ("thumb", "index", "middle", "ring", "pinky")


@pytest.fixture(scope="module", params=["right", "left"])
def hand(request):
    m = mano_jax.synthetic(request.param, seed=0)
    return m, m.numpy()


@pytest.fixture(scope="module")
def right():
    m = mano_jax.synthetic("right", seed=0)
    return m, m.numpy()


def test_shapes_and_tree(hand):
    m, a = hand
    for key, shape in mano_jax.ARRAY_SHAPES.items():
        assert a[key].shape == shape, key
    assert m.parents == mano_jax.PARENTS
    assert np.asarray(m.faces).dtype == np.int32


def test_deterministic_and_seeded():
    a = mano_jax.synthetic("right", seed=0).numpy()
    b = mano_jax.synthetic("right", seed=0).numpy()
    c = mano_jax.synthetic("right", seed=1).numpy()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(a["v_template"], c["v_template"])     # geometry does not depend on seed
    assert not np.allclose(a["hands_mean"], c["hands_mean"])
    np.testing.assert_array_equal(mano_jax.synthetic_pose_std("right", 0),
                                  mano_jax.synthetic_pose_std("right", 0))


def test_mesh_closed_consistently_oriented_non_degenerate(hand):
    _, a = hand
    f, v = a["faces"].astype(int), a["v_template"]
    directed = collections.Counter()
    for t in f:
        for i in range(3):
            directed[(t[i], t[(i + 1) % 3])] += 1
    # closed + consistently oriented: every directed edge once, and its reverse exactly once
    assert max(directed.values()) == 1
    assert all((b, a_) in directed for (a_, b) in directed)
    assert len({tuple(sorted(t)) for t in f}) == len(f)                 # no duplicate faces
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert area.min() > 2e-7                                            # > 0.2 mm^2
    vol = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert 2e-4 < vol < 5e-4                                            # outward normals, 200-500 ml
    unused = sorted(set(range(778)) - set(f.ravel()))
    assert unused == [773, 774, 775, 776, 777]                          # Euler: 1538 closed faces


def _winding_number(points, tri):
    """Generalised winding number of each point w.r.t. the closed triangle mesh (solid angles)."""
    out = []
    for p in points:
        a, b, c = tri[:, 0] - p, tri[:, 1] - p, tri[:, 2] - p
        la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
        num = np.einsum("ij,ij->i", a, np.cross(b, c))
        den = la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", b, c) * la \
            + np.einsum("ij,ij->i", c, a) * lb
        out.append(2 * np.arctan2(num, den).sum() / (4 * np.pi))
    return np.asarray(out)


def test_joints_inside_mesh_and_regressor_valid(hand):
    _, a = hand
    Jr = a["J_regressor"]
    assert Jr.min() >= 0 and np.allclose(Jr.sum(1), 1.0)
    J = Jr @ a["v_template"]
    wn = _winding_number(J, a["v_template"][a["faces"]])
    # inside (the thumb's base joint is inside both the palm and the overlapping thumb part)
    assert np.all(np.abs(wn - np.round(wn)) < 1e-6) and np.all(np.round(wn) >= 1), wn
    assert np.sum(np.round(wn) > 1) == 1 and wn[13] == pytest.approx(2.0)
    # knuckles: the finger base joints sit close to the palm's distal end, fingers in a row
    z = {n: J[j0, 2] for n, j0 in FINGERS.items()}
    assert a is not None and len(set(np.sign([z["index"] - z["middle"], z["middle"] - z["ring"],
                                               z["ring"] - z["pinky"]]))) == 1


def test_tip_vertices_are_the_finger_ends(hand):
    m, a = hand
    v, W = a["v_template"], a["weights"]
    J = a["J_regressor"] @ v
    for name, vid in zip(TIP_ORDER, mano_jax.TIP_VERTEX_IDS[m.side], strict=True):
        j3 = FINGERS[name] + 2
        d = J[j3] - J[j3 - 1]
        d /= np.linalg.norm(d)
        distal = np.nonzero(W[:, j3] > 0.5)[0]
        assert vid in distal, name
        proj = (v[distal] - J[j3]) @ d
        assert (v[vid] - J[j3]) @ d >= proj.max() - 1e-9, name        # furthest along the finger
        assert 0.012 < (v[vid] - J[j3]) @ d < 0.035, name                # a distal phalanx away


def test_realistic_size(right):
    _, a = right
    v = a["v_template"]
    J = a["J_regressor"] @ v
    assert 0.175 < np.linalg.norm(v[444] - J[0]) < 0.195            # wrist -> middle tip 19.0 cm
    not_thumb = a["weights"][:, 13:16].sum(1) < 0.05
    knuckles = v[(np.abs(v[:, 0] - J[4, 0]) < 0.01) & not_thumb]      # slice through the knuckles
    width = knuckles[:, 2].max() - knuckles[:, 2].min()
    assert 0.07 < width < 0.09, width


def test_weights_smooth_and_normalised(hand):
    _, a = hand
    W, f = a["weights"], a["faces"].astype(int)
    assert W.min() >= 0 and np.allclose(W.sum(1), 1.0)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    assert np.abs(W[e[:, 0]] - W[e[:, 1]]).max() < 0.8                  # no hard seams (a jump of 1)
    assert (W.max(1) < 0.99).sum() > 100                                # many blended vertices


def test_shape_blend_shapes_have_meaning(right):
    m, a = right
    v0, j0 = (np.asarray(x[0]) for x in mano_jax.forward(m, jnp.zeros((1, 48)), None, use_pca=False,
                                                            flat_hand_mean=True))
    sd = a["shapedirs"]
    # beta 0 is a uniform scale about the origin (the wrist joint): exactly 5 % per unit
    np.testing.assert_allclose(sd[:, :, 0], 0.05 * a["v_template"], atol=1e-7)

    def out(k, val=1.0):
        b = np.zeros((1, 10), np.float32)
        b[0, k] = val
        v, j = mano_jax.forward(m, jnp.zeros((1, 48)), jnp.asarray(b), use_pca=False, flat_hand_mean=True)
        return np.asarray(v[0]), np.asarray(j[0])

    def finger_len(j, f):      # MCP -> tip in manopth joint order (f: 0 thumb .. 4 pinky)
        return np.linalg.norm(j[1 + 4 * f + 3] - j[1 + 4 * f])

    _, j1 = out(1)
    assert 1.04 < finger_len(j1, 2) / finger_len(j0, 2) < 1.08           # finger lengths +6 %
    _, j2 = out(2)
    assert (j2[5, 2] - j2[17, 2]) / (j0[5, 2] - j0[17, 2]) > 1.04       # palm width: index-pinky MCP
    v3, _ = out(3)
    assert np.ptp(v3[:, 1]) > 1.04 * np.ptp(v0[:, 1])                   # thickness
    _, j6 = out(6)
    assert finger_len(j6, 1) > finger_len(j0, 1) and finger_len(j6, 3) < finger_len(j0, 3)


def test_natural_pose_pca(hand):
    m, a = hand
    comps, mean = a["hands_components"], a["hands_mean"]
    np.testing.assert_allclose(comps @ comps.T, np.eye(45), atol=1e-6)       # float32 storage
    std = mano_jax.synthetic_pose_std(m.side)
    assert std.shape == (45,) and np.all(std > 0) and np.all(np.diff(std) <= 1e-12)
    rng = np.random.default_rng(0)
    poses = mean + (rng.normal(size=(4000, 45)) * std) @ comps
    aa = poses.reshape(-1, 15, 3)
    # flexion-dominated: for the four fingers the flexion axis is ~z (MANO right-hand convention)
    fingers = aa[:, :12]
    flex, abd = fingers[..., 2], fingers[..., 1]
    mirror = -1.0 if m.side == "left" else 1.0
    assert 0.25 < mirror * flex.mean() < 0.9
    assert flex.std() > 3 * abd.std()
    # correlated fingers: index and ring proximal flexion
    assert np.corrcoef(flex[:, 0], flex[:, 9])[0, 1] > 0.5


def test_mean_pose_flexes_fingers_towards_the_palm(hand):
    m, a = hand
    v_flat, j_flat = mano_jax.forward(m, jnp.zeros((1, 48)), None, use_pca=False, flat_hand_mean=True)
    v_mean, j_mean = mano_jax.forward(m, jnp.zeros((1, 18)), None)          # zero PCA coeffs = mean pose
    dy = np.asarray(j_mean[0, [8, 12, 16, 20], 1] - j_flat[0, [8, 12, 16, 20], 1])
    assert np.all(dy < -0.02)            # fingertips move >2 cm towards the palm side (-y)
    # and the palm itself does not move
    np.testing.assert_allclose(np.asarray(j_mean[0, 0]), np.asarray(j_flat[0, 0]), atol=1e-7)


def test_bad_side():
    with pytest.raises(ValueError, match="side"):
        mano_jax.synthetic("middle")
