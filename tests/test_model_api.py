"""The model facade (``handprop_jax.model.api``): the MANO output order, one MANO call for several γ,
and ``bind``'s jitted functions equal to the pure methods they wrap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_training_fakes import TinyEncoder, make_frames, tiny_config

import mano_jax
from handprop_jax.gamma import Gamma
from handprop_jax.model import handprop as hp
from handprop_jax.model.api import Frame, HandPropModel


@pytest.fixture(scope="module")
def setup():
    config = tiny_config()
    model = HandPropModel.create(config, module=hp.HandProp(encoder=TinyEncoder(16)))
    variables = model.init(jax.random.PRNGKey(0))
    # non-zero aligner output layers, so that align is not the identity
    params = jax.tree.map(lambda x: np.asarray(x) + 0.01, variables["params"])
    return config, model, {"params": params, "batch_stats": variables["batch_stats"]}, make_frames(config, 4)


def test_hand_is_verts_then_joints_placed_at_the_root(setup):
    _, model, _, frames = setup
    g = Gamma.of(frames)
    verts, joints = model.hand(g)
    ref_verts, ref_joints = mano_jax.forward(model.mano, jnp.asarray(g.pose), jnp.asarray(g.betas),
                                             use_pca=False, flat_hand_mean=True, center_idx=0)
    assert verts.shape == (4, 778, 3) and joints.shape == (4, 21, 3)
    np.testing.assert_allclose(verts, ref_verts + g.root[:, None], atol=1e-6)
    np.testing.assert_allclose(joints, ref_joints + g.root[:, None], atol=1e-6)
    np.testing.assert_allclose(joints[:, 0], g.root, atol=1e-6)  # the root is the wrist
    a, b = model.joints(g.take([0, 1]), g.take([2, 3]))  # one MANO call, split back
    np.testing.assert_allclose(np.concatenate([a, b]), joints, atol=1e-6)


def test_bind_equals_the_pure_methods(setup):
    config, model, variables, frames = setup
    net = model.bind(variables, batch_size=4)
    assert net.batch_size == 4 and net.image_size == config.data.image_size
    feats, gamma, stats = model.predict(variables, frames["image"], frames["K"])
    assert stats is variables["batch_stats"]  # inference mode leaves the statistics alone
    got = net.features(frames["image"])
    for x, y in zip(got, feats, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    for x, y in zip(net.regress(got, frames["K"]), gamma, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    fa, fb = Frame(feats, frames["K"]), Frame(jax.tree.map(lambda z: z[::-1], feats), frames["K"])
    moved = net.align(gamma, fa, fb)
    want = model.align(variables["params"], gamma, fa, fb)
    for x, y in zip(moved, want, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert not np.allclose(moved.root, gamma.root)  # the aligner moved it
    np.testing.assert_array_equal(moved.betas, gamma.betas)  # Eq. 2: β copied


def test_training_mode_updates_batchnorm_statistics(setup):
    _, model, variables, frames = setup
    _, stats = model.encode(variables, frames["image"], train=True)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), stats, variables["batch_stats"])
    assert any(jax.tree.leaves(changed))
