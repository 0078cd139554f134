"""mano_jax forward pass and geometry: closed-form cases, invariances, gradients, manopth parity."""

from __future__ import annotations

import importlib.util
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import mano_jax
from mano_jax import layer as L

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def model():
    return mano_jax.synthetic("right", seed=0)


@pytest.fixture(scope="module")
def model_left():
    return mano_jax.synthetic("left", seed=0)


def _axis_angle(rng, n, scale=0.6):
    return rng.normal(0.0, scale, (n, 3))


def _rodrigues_np(v):
    """Reference: matrix exponential of the skew matrix (scipy-free, series in float64)."""
    out = []
    for w in np.asarray(v, np.float64).reshape(-1, 3):
        K = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
        R, term = np.eye(3), np.eye(3)
        for k in range(1, 40):
            term = term @ K / k
            R = R + term
        out.append(R)
    return np.stack(out)


# ----------------------------------------------------------------------------- geometry

def test_rodrigues_matches_matrix_exponential():
    rng = np.random.default_rng(0)
    v = np.concatenate([_axis_angle(rng, 20, 1.5), [[0, 0, 0], [1e-9, 0, 0], [0, 3e-3, 1e-3],
                                                   [np.pi, 0, 0], [0, 0, -3.0]]])
    with jax.enable_x64(True):
        R = np.asarray(mano_jax.rodrigues(jnp.asarray(v)))
    np.testing.assert_allclose(R, _rodrigues_np(v), atol=1e-13)


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_rodrigues_gradient_exact_and_finite_at_zero():
    with jax.enable_x64(True):
        jac = jax.jacfwd(mano_jax.rodrigues)(jnp.zeros(3))          # (3, 3, 3)
        jac_rev = jax.jacrev(mano_jax.rodrigues)(jnp.zeros(3))
        hess = jax.hessian(lambda v: mano_jax.rodrigues(v).sum())(jnp.zeros(3))
        # dR/dw_i at 0 is the generator [e_i]_x
        gens = np.stack([np.array([[0, 0, 0], [0, 0, -1], [0, 1, 0]]),
                         np.array([[0, 0, 1], [0, 0, 0], [-1, 0, 0]]),
                         np.array([[0, -1, 0], [1, 0, 0], [0, 0, 0]])], -1)
        np.testing.assert_allclose(np.asarray(jac), gens, atol=1e-15)
        np.testing.assert_allclose(np.asarray(jac_rev), gens, atol=1e-15)
        # d2/dw2 of sum(R) at 0: sum of (e_i e_j^T + e_j e_i^T)/2 - delta_ij I entries
        ref = np.zeros((3, 3))
        for i in range(3):
            for j in range(3):
                M = (np.outer(np.eye(3)[i], np.eye(3)[j]) + np.outer(np.eye(3)[j], np.eye(3)[i])) / 2
                ref[i, j] = (M - (i == j) * np.eye(3)).sum()
        np.testing.assert_allclose(np.asarray(hess), ref, atol=1e-14)
        check_grads(mano_jax.rodrigues, (jnp.zeros(3),), order=2, modes=("rev",), eps=1e-6)
        for v in ([1e-5, -2e-5, 0.0], [0.3, -1.0, 2.0]):     # series branch and closed form
            check_grads(mano_jax.rodrigues, (jnp.asarray(v),), order=1, modes=("rev",), eps=1e-6)


@pytest.mark.parametrize("angle", [0.0, 1e-8, 1e-3, 0.5, 2.0, np.pi - 1e-3, np.pi - 1e-7, np.pi])
def test_matrix_to_axis_angle_round_trip(angle):
    rng = np.random.default_rng(1)
    axes = rng.normal(size=(16, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    v = axes * angle
    with jax.enable_x64(True):
        R = _rodrigues_np(v)
        back = np.asarray(mano_jax.matrix_to_axis_angle(jnp.asarray(R)))
        np.testing.assert_allclose(_rodrigues_np(back), R, atol=1e-9)
        assert np.all(np.linalg.norm(back, axis=1) <= np.pi + 1e-9)
        if angle < np.pi - 1e-2:
            np.testing.assert_allclose(back, v, atol=1e-9)


def test_matrix_to_axis_angle_gradient_finite_at_identity():
    with jax.enable_x64(True):
        f = lambda v: mano_jax.matrix_to_axis_angle(mano_jax.rodrigues(v))
        jac = jax.jacrev(f)(jnp.zeros(3))
        np.testing.assert_allclose(np.asarray(jac), np.eye(3), atol=1e-12)
        check_grads(f, (jnp.asarray([0.2, -0.4, 0.1]),), order=1, modes=("rev",), eps=1e-6)


# ----------------------------------------------------------------------------- forward

class TestForward(chex.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.model = mano_jax.synthetic("right", seed=0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_shapes_and_dtypes(self):
        fwd = self.variant(lambda p, b: mano_jax.forward(self.model, p, b, ncomps=6))
        v, j = fwd(jnp.zeros((3, 9)), jnp.zeros((3, 10)))
        chex.assert_shape(v, (3, 778, 3))
        chex.assert_shape(j, (3, 21, 3))
        chex.assert_type([v, j], jnp.float32)
        chex.assert_tree_all_finite((v, j))

    @chex.variants(with_jit=True, without_jit=True)
    def test_zero_pose_gives_template(self):
        m = self.model
        fwd = self.variant(lambda p, b: mano_jax.forward(m, p, b, use_pca=False, flat_hand_mean=True))
        v, j = fwd(jnp.zeros((2, 48)), jnp.zeros((2, 10)))
        vt = np.asarray(m.v_template)
        J = np.asarray(m.J_regressor) @ vt
        tips = vt[list(mano_jax.TIP_VERTEX_IDS["right"])]
        ref = np.concatenate([J, tips])[list(mano_jax.MANOPTH_JOINT_ORDER)]
        np.testing.assert_allclose(np.asarray(v[1]), vt, atol=1e-7)
        np.testing.assert_allclose(np.asarray(j[0]), ref, atol=1e-7)

    @chex.variants(with_jit=True, without_jit=True)
    def test_root_rotation_is_rigid(self):
        rng = np.random.default_rng(2)
        m = self.model
        fingers = rng.normal(0, 0.4, (2, 45))
        betas = jnp.asarray(rng.normal(0, 1, (2, 10)), jnp.float32)
        root = rng.normal(0, 1.0, (2, 3))
        fwd = self.variant(lambda p, b: mano_jax.forward(m, p, b, use_pca=False, center_idx=0))
        v0, j0 = fwd(jnp.asarray(np.concatenate([np.zeros((2, 3)), fingers], 1), jnp.float32), betas)
        v1, j1 = fwd(jnp.asarray(np.concatenate([root, fingers], 1), jnp.float32), betas)
        R = _rodrigues_np(root)
        np.testing.assert_allclose(np.asarray(v1), np.einsum("bij,bvj->bvi", R, np.asarray(v0)), atol=2e-6)
        np.testing.assert_allclose(np.asarray(j1), np.einsum("bij,bvj->bvi", R, np.asarray(j0)), atol=2e-6)

    def test_centring_and_translation_follow_manopth(self):
        rng = np.random.default_rng(3)
        m = self.model
        pose = jnp.asarray(rng.normal(0, 0.5, (4, 18)), jnp.float32)
        betas = jnp.asarray(rng.normal(0, 1, (4, 10)), jnp.float32)
        v, j = mano_jax.forward(m, pose, betas)
        c = 9
        vc, jc = mano_jax.forward(m, pose, betas, center_idx=c)
        np.testing.assert_allclose(np.asarray(jc[:, c]), 0.0, atol=1e-7)
        np.testing.assert_allclose(np.asarray(vc), np.asarray(v - j[:, c:c + 1]), atol=1e-7)
        # all-zero trans behaves like None: centred
        vz, jz = mano_jax.forward(m, pose, betas, jnp.zeros((4, 3)), center_idx=c)
        np.testing.assert_allclose(np.asarray(jz), np.asarray(jc), atol=1e-7)
        np.testing.assert_allclose(np.asarray(vz), np.asarray(vc), atol=1e-7)
        t = jnp.asarray(rng.normal(0, 0.1, (4, 3)), jnp.float32)
        vt, jt = mano_jax.forward(m, pose, betas, t, center_idx=9)       # trans wins, no centring
        np.testing.assert_allclose(np.asarray(jt), np.asarray(j + t[:, None]), atol=1e-6)
        np.testing.assert_allclose(np.asarray(vt), np.asarray(v + t[:, None]), atol=1e-6)

    def test_pca_round_trip_and_hands_mean(self):
        rng = np.random.default_rng(4)
        m = self.model
        coeffs = jnp.asarray(rng.normal(0, 0.5, (3, 45)), jnp.float32)
        for flat in (False, True):
            aa = mano_jax.pca_to_axis_angle(m, coeffs, flat_hand_mean=flat)
            back = mano_jax.axis_angle_to_pca(m, aa, ncomps=45, flat_hand_mean=flat)
            np.testing.assert_allclose(np.asarray(back), np.asarray(coeffs), atol=1e-5)
        for flat in (False,):
            aa = mano_jax.pca_to_axis_angle(m, coeffs, flat_hand_mean=flat)
            root = jnp.asarray(rng.normal(0, 0.5, (3, 3)), jnp.float32)
            v_pca, j_pca = mano_jax.forward(m, jnp.concatenate([root, coeffs], 1), None, ncomps=45,
                                            flat_hand_mean=flat)
            v_aa, j_aa = mano_jax.forward(m, jnp.concatenate([root, aa], 1), None, use_pca=False,
                                          flat_hand_mean=True)
            np.testing.assert_allclose(np.asarray(v_pca), np.asarray(v_aa), atol=1e-6)
            np.testing.assert_allclose(np.asarray(j_pca), np.asarray(j_aa), atol=1e-6)
        # zero coefficients without flat_hand_mean give exactly the mean pose
        v0, _ = mano_jax.forward(m, jnp.zeros((1, 9)), None, ncomps=6)
        vm, _ = mano_jax.forward(m, jnp.concatenate([jnp.zeros((1, 3)), m.hands_mean[None]], 1), None,
                                 use_pca=False, flat_hand_mean=True)
        np.testing.assert_allclose(np.asarray(v0), np.asarray(vm), atol=1e-7)

    def test_batch_rows_are_independent(self):
        rng = np.random.default_rng(5)
        m = self.model
        # 70 > 64 rows: forward runs the batch in chunks (CPU); vmap of single rows does not
        pose = jnp.asarray(rng.normal(0, 0.5, (70, 48)), jnp.float32)
        betas = jnp.asarray(rng.normal(0, 1, (70, 10)), jnp.float32)
        v, j = mano_jax.forward(m, pose, betas, use_pca=False)
        vv, jv = jax.vmap(lambda p, b: mano_jax.forward(m, p[None], b[None], use_pca=False))(pose, betas)
        np.testing.assert_allclose(np.asarray(vv[:, 0]), np.asarray(v), atol=1e-6)
        np.testing.assert_allclose(np.asarray(jv[:, 0]), np.asarray(j), atol=1e-6)

    def test_bad_input_errors(self):
        m = self.model
        with pytest.raises(ValueError, match=r"pose must be \(B, 18\)"):
            mano_jax.forward(m, jnp.zeros((2, 10)), None)
        with pytest.raises(ValueError, match=r"betas must be \(B=2, 10\)"):
            mano_jax.forward(m, jnp.zeros((2, 18)), jnp.zeros((2, 8)))
        with pytest.raises(ValueError, match=r"trans must be \(B=2, 3\)"):
            mano_jax.forward(m, jnp.zeros((2, 18)), None, jnp.zeros((2, 2)))


def _naive_chain(rotmats, joints, parents):
    """Joint-by-joint 4x4 composition (independent reference)."""
    B, J = joints.shape[:2]
    G = np.zeros((B, J, 4, 4))
    for k in range(J):
        local = np.tile(np.eye(4), (B, 1, 1))
        local[:, :3, :3] = rotmats[:, k]
        p = parents[k]
        local[:, :3, 3] = joints[:, k] - (joints[:, p] if p >= 0 else 0.0)
        G[:, k] = local if p < 0 else G[:, p] @ local
    return G[:, :, :3, :3], G[:, :, :3, 3]


def test_kinematic_chain_matches_naive_composition():
    rng = np.random.default_rng(6)
    rot = _rodrigues_np(rng.normal(0, 0.7, (2 * 16, 3))).reshape(2, 16, 3, 3)
    joints = rng.normal(0, 0.05, (2, 16, 3))
    with jax.enable_x64(True):
        ref_r, ref_t = _naive_chain(rot, joints, mano_jax.PARENTS)
        for fn in (lambda r, j: mano_jax.kinematic_chain(r, j, mano_jax.PARENTS),
                   lambda r, j: L._chain_generic(r, j, mano_jax.PARENTS)):
            g_r, g_t = fn(jnp.asarray(rot), jnp.asarray(joints))
            np.testing.assert_allclose(np.asarray(g_r), ref_r, atol=1e-12)
            np.testing.assert_allclose(np.asarray(g_t), ref_t, atol=1e-12)
        # a different (chain-shaped) tree goes through the generic path
        parents = (-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)
        ref_r, ref_t = _naive_chain(rot, joints, parents)
        g_r, g_t = mano_jax.kinematic_chain(jnp.asarray(rot), jnp.asarray(joints), parents)
        np.testing.assert_allclose(np.asarray(g_t), ref_t, atol=1e-12)


def test_gradients_match_finite_differences_including_zero_pose():
    with jax.enable_x64(True):
        m = mano_jax.synthetic("right", seed=0).astype(jnp.float64)
        rng = np.random.default_rng(7)
        betas = jnp.asarray(rng.normal(0, 1, (1, 10)))
        w = jnp.asarray(rng.normal(size=(778, 3)))

        def f(pose, betas):
            v, j = mano_jax.forward(m, pose, betas, use_pca=False, flat_hand_mean=True)
            return jnp.sum(v[0] * w) + jnp.sum(j ** 2)

        f = jax.jit(f)
        for pose in (jnp.zeros((1, 48)), jnp.asarray(rng.normal(0, 0.4, (1, 48)))):
            check_grads(f, (pose, betas), order=1, modes=("rev",), eps=1e-6)
        g = jax.grad(f)(jnp.zeros((1, 48)), betas)
        assert np.all(np.isfinite(np.asarray(g))) and np.abs(np.asarray(g)).max() > 0


def test_left_hand_is_the_mirror_image(model, model_left):
    rng = np.random.default_rng(8)
    pose = rng.normal(0, 0.5, (3, 48))
    betas = jnp.asarray(rng.normal(0, 1, (3, 10)), jnp.float32)
    mirror_aa = np.tile([1.0, -1.0, -1.0], 16)
    vr, jr = mano_jax.forward(model, jnp.asarray(pose, jnp.float32), betas, use_pca=False)
    vl, jl = mano_jax.forward(model_left, jnp.asarray(pose * mirror_aa, jnp.float32), betas, use_pca=False)
    flip = np.array([-1.0, 1.0, 1.0])
    perm = np.arange(778)
    perm[[444, 445]] = [445, 444]
    np.testing.assert_allclose(np.asarray(vl), np.asarray(vr)[:, perm] * flip, atol=2e-6)
    np.testing.assert_allclose(np.asarray(jl), np.asarray(jr) * flip, atol=2e-6)


def _torch_reference():
    if importlib.util.find_spec("torch") is None:
        return None
    spec = importlib.util.spec_from_file_location(
        "mano_throughput", os.path.join(os.path.dirname(HERE), "benchmarks", "mano_throughput.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("side", ["right", "left"])
def test_matches_manopth_style_pytorch_layer(side):
    """Parity with a PyTorch transcription of manopth ManoLayer.forward (skipped without torch)."""
    ref = _torch_reference()
    if ref is None:
        pytest.skip("torch not installed")
    import torch

    rng = np.random.default_rng(9)
    W = rng.random((778, 16))
    Jr = rng.random((16, 778))
    arrays = dict(v_template=rng.normal(0, 0.05, (778, 3)), shapedirs=rng.normal(0, 0.01, (778, 3, 10)),
                  posedirs=rng.normal(0, 0.01, (778, 3, 135)), J_regressor=Jr / Jr.sum(1, keepdims=True),
                  weights=W / W.sum(1, keepdims=True), faces=rng.integers(0, 778, (1538, 3)),
                  hands_components=rng.normal(0, 0.3, (45, 45)), hands_mean=rng.normal(0, 0.3, 45))
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in arrays.items() if k != "faces"}
    with jax.enable_x64(True):
        m = mano_jax.make_model(arrays, side=side)
        cases = [(True, 6, False, None, None), (False, 45, False, 0, "zero"), (True, 45, True, 4, "rand")]
        if side == "left":
            cases = cases[1:]
        for use_pca, nc, flat, ci, tr in cases:
            pose = rng.normal(0, 1.0, (3, 3 + nc))
            pose[0] = 0.0
            betas = rng.normal(0, 1, (3, 10))
            trans = None if tr is None else (np.zeros((3, 3)) if tr == "zero" else rng.normal(0, .1, (3, 3)))
            v, j = mano_jax.forward(m, jnp.asarray(pose), jnp.asarray(betas),
                                    None if trans is None else jnp.asarray(trans), ncomps=nc,
                                    use_pca=use_pca, flat_hand_mean=flat, center_idx=ci)
            tv, tj = ref.torch_forward(t, torch.tensor(pose), torch.tensor(betas),
                                       None if trans is None else torch.tensor(trans), ncomps=nc,
                                       use_pca=use_pca, flat_hand_mean=flat, center_idx=ci, side=side)
            # (manopth's Rodrigues adds 1e-8 to the axis-angle before the norm: ~1e-9 m effects)
            np.testing.assert_allclose(np.asarray(v), tv.numpy(), atol=1e-7)
            np.testing.assert_allclose(np.asarray(j), tj.numpy(), atol=1e-7)
