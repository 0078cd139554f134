"""Regressor / aligner heads, root recovery, and gradients of L_pred / L_align on a tiny network."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from test_training_fakes import TinyEncoder, make_frames, tiny_config

from handprop_jax import losses
from handprop_jax.camera import project
from handprop_jax.gamma import Gamma
from handprop_jax.hand import default_mano
from handprop_jax.model import handprop as hp
from handprop_jax.model import heads
from handprop_jax.model.api import Features, Frame, HandPropModel
from handprop_jax.training import objectives


class RootRecoveryTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_recovers_projected_root(self):
        """Project a known root with K, build (d_f, t_u, t_v) by hand, recover the root."""
        S, z_off = 64, 0.4
        K = jnp.asarray([[[140.0, 0, 30.2], [0, 150.0, 33.7], [0, 0, 1]],
                         [[90.0, 0, 31.5], [0, 90.0, 31.5], [0, 0, 1]]])
        root = jnp.asarray([[0.03, -0.05, 0.62], [-0.1, 0.02, 0.35]])
        uv = project(root[:, None], K)[:, 0]
        unit = 1e-3  # d_f in mm per pixel
        raw = jnp.stack([(root[:, 2] - z_off) / K[:, 0, 0] / unit, uv[:, 0] - 31.5, uv[:, 1] - 31.5], axis=1)
        got = self.variant(heads.recover_root, static_argnums=(2, 3, 4))(raw, K, S, z_off, unit)
        np.testing.assert_allclose(got, root, atol=1e-6)
        np.testing.assert_allclose(heads.root_to_raw(root, K, S, z_off, unit), raw, rtol=1e-5, atol=1e-5)

    def test_zero_output_is_crop_centre_at_z_off(self):
        K = jnp.asarray([[[100.0, 0, 20.0], [0, 100.0, 40.0], [0, 0, 1]]])
        got = heads.recover_root(jnp.zeros((1, 3)), K, 64, 0.4)
        np.testing.assert_allclose(project(got[:, None], K)[0, 0], [31.5, 31.5], atol=1e-4)
        np.testing.assert_allclose(got[0, 2], 0.4)


class HeadShapesTest(chex.TestCase):
    def test_regressor_output_sizes(self):
        z = jnp.ones((5, 512))
        out, _ = heads.PoseShapeRegressor(ncomps=15).init_with_output(jax.random.PRNGKey(0), z)
        assert out.shape == (5, 28)
        out, p = heads.RootRegressor().init_with_output(jax.random.PRNGKey(0), z)
        assert out.shape == (5, 3)
        assert p["params"]["fc1"]["kernel"].shape == (512, 256)

    def test_aligner_shapes_identity_init_beta_copy_and_bound(self):
        b = 4
        module = hp.HandProp(encoder=TinyEncoder(16), pose_aligner_blocks=3, root_aligner_blocks=1)
        variables = jax.jit(module.init)(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3), jnp.uint8))
        p = variables["params"]
        assert set(p["pose_aligner"]["net"]) == {"fc_in", "block0", "block1", "block2", "out"}
        assert p["pose_aligner"]["net"]["fc_in"]["kernel"].shape == (48 + 16, 512)
        assert p["root_aligner"]["net"]["fc_in"]["kernel"].shape == (3 + 16, 128)
        rng = np.random.default_rng(0)
        gamma_b = Gamma(jnp.asarray(rng.normal(size=(b, 3)), jnp.float32),
                        jnp.asarray(rng.normal(size=(b, 48)), jnp.float32),
                        jnp.asarray(rng.normal(size=(b, 10)), jnp.float32))
        K = jnp.tile(jnp.eye(3), (b, 1, 1))
        frame_a = Frame(Features(*(jnp.asarray(rng.normal(size=(b, 16)), jnp.float32),) * 2), K)
        frame_b = Frame(Features(*(jnp.zeros((b, 16)),) * 2), K)
        model = HandPropModel.create(tiny_config(), module=module)
        align = jax.jit(model.align)
        out = align(p, gamma_b, frame_a, frame_b)
        assert isinstance(out, Gamma) and tuple(x.shape for x in out) == ((b, 3), (b, 48), (b, 10))
        chex.assert_trees_all_equal(out, gamma_b)  # zero-initialised output layers: identity
        big = jax.tree.map(lambda x: 50.0 * jnp.ones_like(x), p)
        out = align(big, gamma_b, frame_a, frame_b)
        np.testing.assert_array_equal(out.betas, gamma_b.betas)  # Eq. 2
        delta = np.abs(np.asarray(out.pose - gamma_b.pose))
        assert delta.max() <= np.pi + 1e-5 and delta.max() > 3.0  # Tanh-bounded, saturated
        assert np.abs(np.asarray(out.root - gamma_b.root)).max() > 1.0  # φ^r is unbounded

    def test_pca_pose_to_full_adds_mean(self):
        mano = default_mano(tiny_config())
        c = jnp.asarray(np.random.default_rng(0).normal(size=(2, 18)), jnp.float32)
        full = heads.pca_pose_to_full(mano, c)
        want = np.asarray(mano.hands_mean) + np.asarray(c[:, 3:]) @ np.asarray(mano.hands_components)[:15]
        np.testing.assert_allclose(full[:, 3:], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(full[:, :3], c[:, :3])


@pytest.fixture(scope="module")
def tiny_net():
    config = tiny_config()
    module = hp.HandProp(encoder=TinyEncoder(8), root_aligner_hidden=8, root_aligner_blocks=1,
                         pose_aligner_hidden=8, pose_aligner_blocks=1)
    frames = make_frames(config, 4, seed=3)
    frames["image"] = frames["image"][:, :16, :16]
    variables = jax.jit(module.init)(jax.random.PRNGKey(1), jnp.asarray(frames["image"][:2]))
    # non-zero output layers so that every parameter receives a gradient
    rng = np.random.default_rng(2)  # numpy: no per-shape eager compilations
    params = jax.tree.map(lambda x: np.asarray(x) + 0.01 * rng.normal(size=x.shape).astype(np.float32),
                          variables["params"])
    return config, module, frames, params, variables["batch_stats"]


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_grads_of_losses_match_finite_differences(tiny_net):
    """d L_pred / d params and d L_align / d params (rev mode) against central differences, in
    float64, on a tiny network (eval-mode BatchNorm: a fixed function of the parameters)."""
    config, module, frames, params, stats = tiny_net
    with jax.enable_x64(True):
        mano = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), default_mano(config))
        model = HandPropModel.create(config, mano, module)
        f64 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64)
                                     if np.issubdtype(np.asarray(x).dtype, np.floating) else x, t)
        fr, p0, st = f64(frames), f64(params), f64(stats)
        hm = mano.hands_mean

        def l_pred(p):
            _, g, _ = model.predict({"params": p, "batch_stats": st}, fr["image"], fr["K"], train=False)
            (j,) = model.joints(g)
            return losses.pred_loss(fr["joints3d"], j, g.pose, g.betas, hm, 0.5, 5e-2, 5e-2)[0]

        def l_align(p):
            z, g, _ = model.predict({"params": p, "batch_stats": st}, fr["image"], fr["K"], train=False)
            frame_s = Frame(Features(z.z_r[:2], z.z_theta[:2]), fr["K"][:2])
            frame_u = Frame(Features(z.z_r[2:], z.z_theta[2:]), fr["K"][2:])
            s = {k: fr[k][:2] for k in ("root", "pose", "betas", "joints3d")}
            loss, _, _, _ = objectives.alignment_terms(model, p, frame_s, frame_u, g.take(slice(2, None)), s)
            return loss

        both = jax.jit(lambda p: jnp.stack([l_pred(p), l_align(p)]))  # one compilation for both
        check_grads(both, (p0,), order=1, modes=("rev",), eps=1e-5, atol=1e-6, rtol=1e-4)
