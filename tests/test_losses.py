"""Losses (Eqs. 5-9) against hand-computed cases."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from handprop_jax import losses


class LossTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_joints_sq_error_is_mean_over_batch_joints_xyz(self):
        a = jnp.zeros((2, 21, 3))
        b = a.at[0, 0, 0].set(0.3)  # one coordinate off by 0.3 m
        got = self.variant(losses.joints_sq_error)(a, b)
        np.testing.assert_allclose(got, 0.09 / (2 * 21 * 3), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_pred_loss_hand_computed(self):
        hands_mean = jnp.full((45,), 0.1)
        j_gt = jnp.zeros((2, 21, 3))
        j_reg = jnp.full((2, 21, 3), 0.01)  # every coordinate 1 cm off -> mean sq 1e-4 m^2
        pose = jnp.zeros((2, 48)).at[:, 3:].set(0.1).at[0, 3].set(0.4)  # one joint 0.3 rad off the mean
        pose = pose.at[:, :3].set(2.0)  # the root rotation is not regularised
        betas = jnp.zeros((2, 10)).at[1, 0].set(2.0)
        fn = self.variant(lambda *a: losses.pred_loss(*a, 0.5, 5e-6, 5e-7))
        loss, terms = fn(j_gt, j_reg, pose, betas, hands_mean)
        np.testing.assert_allclose(terms["joints"], 1e-4, rtol=1e-5)
        np.testing.assert_allclose(terms["pose"], 0.09 / 90, rtol=1e-5)
        np.testing.assert_allclose(terms["shape"], 4.0 / 20, rtol=1e-6)
        np.testing.assert_allclose(loss, 0.5 * 1e-4 + 5e-6 * 0.001 + 5e-7 * 0.2, rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_align_loss_hand_computed(self):
        hm = jnp.zeros((45,))
        z = jnp.zeros((1, 21, 3))
        j_align_s = z.at[0, 5, 1].set(0.21)  # forward: 0.21^2 / 63
        j_reg_u = z.at[0, 2, 2].set(0.042)  # backward: (0.042)^2 / 63
        pose_s = jnp.zeros((1, 48)).at[0, 10].set(0.3)
        pose_u = jnp.zeros((1, 48)).at[0, 20].set(0.6)
        fn = self.variant(lambda *a: losses.align_loss(*a, 0.5, 5e-6))
        loss, terms = fn(z, j_align_s, j_reg_u, z, pose_s, pose_u, hm)
        np.testing.assert_allclose(terms["forward"], 0.21 ** 2 / 63, rtol=1e-5)
        np.testing.assert_allclose(terms["backward"], 0.042 ** 2 / 63, rtol=1e-5)
        np.testing.assert_allclose(terms["pose"], (0.09 + 0.36) / 45, rtol=1e-5)
        want = 0.5 * (0.21 ** 2 + 0.042 ** 2) / 63 + 5e-6 * 0.45 / 45
        np.testing.assert_allclose(loss, want, rtol=1e-5)
        np.testing.assert_allclose(losses.total_loss(2.0, loss, 0.1), 2.0 + 0.1 * want, rtol=1e-6)


class PoseRegTest(parameterized.TestCase):
    def test_pose_reg_equals_pca_coefficient_penalty(self):
        """θ = [root; mean + c @ P] with orthonormal P: pose_reg = |c|^2 / 45 per sample."""
        rng = np.random.default_rng(0)
        P, _ = np.linalg.qr(rng.normal(size=(45, 45)))
        mean = rng.normal(size=45)
        c = rng.normal(size=(3, 15))
        pose = np.concatenate([rng.normal(size=(3, 3)), mean + c @ P.T[:15]], axis=1)
        got = losses.pose_reg(jnp.asarray(pose, jnp.float32), jnp.asarray(mean, jnp.float32))
        np.testing.assert_allclose(got, np.mean(np.sum(c ** 2, axis=1)) / 45, rtol=1e-4)

    def test_gradient_of_joint_term(self):
        a = jnp.asarray(np.random.default_rng(1).normal(size=(2, 21, 3)), jnp.float32)
        g = jax.grad(losses.joints_sq_error)(a, jnp.zeros_like(a))
        np.testing.assert_allclose(g, 2 * a / a.size, rtol=1e-5)
