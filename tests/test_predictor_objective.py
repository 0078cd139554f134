"""Issue 24's predictor pieces: the 6-D rotation, the geodesic angle, the decoupled L_pred (each part
gets only its own gradient), the roll about the crop centre, the pretrained-weights file and the
source set's independence from the target videos."""

import dataclasses
import hashlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import mano_jax
from handprop_jax import losses
from handprop_jax.camera import project
from handprop_jax.config import Config, DataConfig, ModelConfig
from handprop_jax.data import synthetic
from handprop_jax.data.augment import augment, camera_rolls
from handprop_jax.errors import UserError
from handprop_jax.hand import hand_in_camera
from handprop_jax.model import heads, pretrained
from handprop_jax.model.api import HandPropModel


def _rotations(seed: int, n: int, max_angle: float = np.pi) -> np.ndarray:
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    return (axis * rng.uniform(0, max_angle, (n, 1))).astype(np.float32)


# ------------------------------------------------------------------------------------ rotations


class Rotation6dTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_round_trip_over_the_whole_sphere(self):
        R = mano_jax.rodrigues(jnp.asarray(_rotations(0, 64)))
        back = self.variant(mano_jax.rotation_6d_to_matrix)(mano_jax.matrix_to_rotation_6d(R))
        np.testing.assert_allclose(back, R, atol=1e-5)

    def test_any_six_numbers_give_a_rotation(self):
        six = jax.random.normal(jax.random.PRNGKey(1), (100, 6)) * 3
        R = mano_jax.rotation_6d_to_matrix(six)
        eye = np.broadcast_to(np.eye(3), R.shape)
        np.testing.assert_allclose(jnp.swapaxes(R, -1, -2) @ R, eye, atol=1e-5)
        np.testing.assert_allclose(jnp.linalg.det(R), 1.0, atol=1e-5)
        # Gram–Schmidt: the first column is the first vector's direction (a hand-computed case)
        R1 = mano_jax.rotation_6d_to_matrix(jnp.asarray([0.0, 2.0, 0.0, 1.0, 1.0, 0.0]))
        np.testing.assert_allclose(R1, [[0, 1, 0], [1, 0, 0], [0, 0, -1]], atol=1e-6)

    def test_gradients_match_finite_differences(self):
        six = jnp.asarray(np.random.default_rng(2).normal(size=(3, 6)), jnp.float32)
        check_grads(mano_jax.rotation_6d_to_matrix, (six,), order=1, modes=("rev",), atol=2e-2, rtol=2e-2)

    def test_identity_head_output_is_the_identity(self):
        np.testing.assert_allclose(heads.global_rotation_matrix(jnp.zeros((2, 6))), np.stack([np.eye(3)] * 2),
                                   atol=1e-7)


class GeodesicTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_angle_of_a_known_rotation(self):
        """R_a = R_b · exp(θ n): the geodesic angle is θ, over all of [0, π]."""
        angles = np.linspace(0, np.pi, 13, dtype=np.float32)
        rel = mano_jax.rodrigues(jnp.asarray(np.array([0.0, 0.6, 0.8], np.float32) * angles[:, None]))
        base = mano_jax.rodrigues(jnp.asarray(_rotations(3, 13)))
        got = self.variant(mano_jax.geodesic_angle)(base @ rel, base)
        np.testing.assert_allclose(got, angles, atol=2e-3)

    def test_symmetric_and_finite_gradient_at_zero(self):
        R = mano_jax.rodrigues(jnp.asarray(_rotations(4, 5)))
        S = mano_jax.rodrigues(jnp.asarray(_rotations(5, 5)))
        np.testing.assert_allclose(mano_jax.geodesic_angle(R, S), mano_jax.geodesic_angle(S, R), atol=1e-5)
        g = jax.grad(lambda v: mano_jax.geodesic_angle(mano_jax.rodrigues(v), jnp.eye(3)))(jnp.zeros(3))
        assert np.all(np.isfinite(g))
        # away from 0 the angle grows with unit slope along the axis
        slope = jax.grad(lambda t: mano_jax.geodesic_angle(mano_jax.rodrigues(t * jnp.array([0.0, 0, 1])),
                                                           jnp.eye(3)))(0.7)
        np.testing.assert_allclose(slope, 1.0, atol=1e-3)


# ------------------------------------------------------------------------------------ decoupled loss


def _loss_inputs():
    rng = np.random.default_rng(6)
    B = 3
    model = mano_jax.synthetic("right", 0)
    pose_gt = rng.normal(0, 0.3, (B, 48)).astype(np.float32)
    pose_gt[:, :3] = _rotations(7, B)
    betas_gt = rng.normal(0, 1, (B, 10)).astype(np.float32)
    root_gt = np.array([[0.02, -0.01, 0.5]] * B, np.float32)
    _, j_gt = hand_in_camera(model, jnp.asarray(root_gt), jnp.asarray(pose_gt), jnp.asarray(betas_gt))
    pred = dict(root=root_gt + 0.01, rot=mano_jax.rodrigues(jnp.asarray(_rotations(8, B))),
                fingers=jnp.asarray(pose_gt[:, 3:] + 0.1), betas=jnp.asarray(betas_gt * 0.5))
    return model, dict(j_gt=j_gt, root_gt=jnp.asarray(root_gt), pose_gt=jnp.asarray(pose_gt),
                       betas_gt=jnp.asarray(betas_gt)), pred


def _decoupled(model, gt, pred, **lambdas):
    weights = dict(lambda_j=1.0, lambda_articulation=1.0, lambda_rotation=1.0, lambda_params=1.0,
                   lambda_theta=0.0, lambda_beta=0.0)
    weights.update(lambdas)
    B = gt["root_gt"].shape[0]
    pose = jnp.concatenate([jnp.zeros((B, 3)), pred["fingers"]], -1)
    _, j_local = hand_in_camera(model, jnp.zeros((B, 3)), pose, pred["betas"])
    coeffs = lambda f: mano_jax.axis_angle_to_pca(model, f, ncomps=15)
    mine = losses.HandParts(pred["root"], pred["rot"], j_local, coeffs(pred["fingers"]), pred["betas"])
    label = losses.HandParts(gt["root_gt"], mano_jax.rodrigues(gt["pose_gt"][:, :3]), None,
                             coeffs(gt["pose_gt"][:, 3:]), gt["betas_gt"])
    return losses.decoupled_pred_loss(mine, label, gt["j_gt"], pose, model.hands_mean, weights)


@pytest.mark.parametrize("term, moves, still", [
    ("lambda_j", ("root", "rot"), ("fingers", "betas")),
    ("lambda_articulation", ("fingers", "betas"), ("root", "rot")),
    ("lambda_rotation", ("rot",), ("root", "fingers", "betas")),
    ("lambda_params", ("fingers", "betas"), ("root", "rot")),
])
@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_each_term_reaches_only_its_parts(term, moves, still):
    model, gt, pred = _loss_inputs()
    only = {k: (1.0 if k == term else 0.0) for k in ("lambda_j", "lambda_articulation", "lambda_rotation",
                                                      "lambda_params")}
    grads = jax.grad(lambda p: _decoupled(model, gt, p, **only)[0])(pred)
    for k in moves:
        assert float(jnp.abs(grads[k]).max()) > 0, (term, k)
    for k in still:
        assert float(jnp.abs(grads[k]).max()) == 0, (term, k)


def test_decoupled_terms_against_hand_computed_values():
    """Ground truth everywhere but a root offset d and a rotation by θ about the wrist: the global
    term is the mean squared joint offset of that transform, articulation and params are zero."""
    model, gt, _ = _loss_inputs()
    R_gt = mano_jax.rodrigues(gt["pose_gt"][:, :3])
    theta = 0.3
    turn = mano_jax.rodrigues(jnp.array([0.0, 0.0, theta]))
    d = jnp.array([0.01, -0.02, 0.03])
    pred = dict(root=gt["root_gt"] + d, rot=turn @ R_gt, fingers=gt["pose_gt"][:, 3:], betas=gt["betas_gt"])
    loss, terms = _decoupled(model, gt, pred)
    local = gt["j_gt"] - gt["root_gt"][:, None]
    moved = jnp.einsum("ij,bnj->bni", turn, local) + gt["root_gt"][:, None] + d
    np.testing.assert_allclose(terms["global"], np.mean((np.asarray(moved) - np.asarray(gt["j_gt"])) ** 2),
                               rtol=1e-4)
    np.testing.assert_allclose(terms["rotation"], theta, atol=1e-4)
    np.testing.assert_allclose(terms["articulation"], 0.0, atol=1e-10)
    np.testing.assert_allclose(terms["params"], 0.0, atol=1e-8)
    np.testing.assert_allclose(loss, terms["global"] + terms["rotation"], rtol=1e-5, atol=1e-8)


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_predictor_loss_has_finite_gradients_through_the_6d_head():
    """The default objective trains the 6-D head through γ's axis-angle; gradients stay finite for
    rotations near π and near the identity."""
    from test_training_fakes import tiny_config

    from handprop_jax.model.handprop import regress_gamma
    from handprop_jax.training import objectives

    config = tiny_config()
    assert config.model.global_rotation == "6d" and config.train.pred_objective == "decoupled"
    model = HandPropModel.create(config)
    turns = jnp.asarray([[np.pi - 1e-3, 0, 0], [0, 1e-4, 0], [0.3, 0.2, -1.0]], jnp.float32)
    six = mano_jax.matrix_to_rotation_6d(mano_jax.rodrigues(turns)) - jnp.asarray(heads.IDENTITY_6D)
    _, gt, _ = _loss_inputs()
    s = {"joints3d": gt["j_gt"], "root": gt["root_gt"], "pose": gt["pose_gt"], "betas": gt["betas_gt"]}

    def loss(six):
        raw = jnp.concatenate([six, jnp.zeros((3, 25))], -1)
        K = jnp.asarray([[100.0, 0, 15.5], [0, 100.0, 15.5], [0, 0, 1]])
        g = regress_gamma(model.mano, jnp.zeros((3, 3)), raw, jnp.stack([K] * 3), 32, 0.4, 15)
        (j,) = model.joints(g)
        return objectives.prediction_loss(model, g, j, s)[0]

    g = jax.grad(loss)(six)
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).max()) > 0


# ------------------------------------------------------------------------------------ augmentation


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_roll_about_the_crop_centre_keeps_the_centre_and_the_labels():
    S = 48
    model = mano_jax.synthetic("right", 0)
    rng = np.random.default_rng(9)
    B = 3
    pose = rng.normal(0, 0.3, (B, 48)).astype(np.float32)
    root = np.array([[0.05, -0.03, 0.5], [-0.04, 0.02, 0.45], [0.0, 0.06, 0.55]], np.float32)
    betas = np.zeros((B, 10), np.float32)
    _, joints = hand_in_camera(model, jnp.asarray(root), jnp.asarray(pose), jnp.asarray(betas))
    # crops whose centre is far from the principal point (as in the data: ~30 px on average)
    K = np.tile(np.array([[90.0, 0, -20.0], [0, 90.0, 60.0], [0, 0, 1]], np.float32), (B, 1, 1))
    frame = {"image": np.zeros((B, S, S, 3), np.uint8), "K": K, "root": root, "pose": pose, "betas": betas,
             "joints3d": np.asarray(joints), "joints2d": np.asarray(project(joints, jnp.asarray(K)))}
    cfg = DataConfig(color_jitter=0.0, rotation_range=0.4)
    out = jax.jit(lambda b, k: augment(b, k, cfg))(frame, jax.random.PRNGKey(3))
    # labels consistent: the new γ gives the new joints, which project onto the new 2D joints
    _, j_new = hand_in_camera(model, out["root"], out["pose"], out["betas"])
    np.testing.assert_allclose(j_new, out["joints3d"], atol=3e-5)
    np.testing.assert_allclose(project(out["joints3d"], jnp.asarray(K)), out["joints2d"], atol=2e-3)
    # the crop centre is the fixed point of the image map, the principal point is not
    R = camera_rolls(jnp.asarray(K), jnp.array([0.3, -0.3, 0.2]), S)
    A = jnp.asarray(K) @ R @ jnp.linalg.inv(jnp.asarray(K))
    c = jnp.array([(S - 1) / 2, (S - 1) / 2, 1.0])
    moved = jnp.einsum("bij,j->bi", A, c)
    np.testing.assert_allclose(moved[:, :2] / moved[:, 2:], np.full((B, 2), (S - 1) / 2), atol=1e-3)
    R_pp = camera_rolls(jnp.asarray(K), jnp.array([0.3, -0.3, 0.2]), S, "principal_point")
    moved_pp = jnp.einsum("bij,j->bi", jnp.asarray(K) @ R_pp @ jnp.linalg.inv(jnp.asarray(K)), c)
    assert float(jnp.abs(moved_pp[:, :2] / moved_pp[:, 2:] - (S - 1) / 2).max()) > 5


# ------------------------------------------------------------------------------------ pretraining


def test_source_videos_are_disjoint_from_the_target_videos():
    """Same seed and index, other style: nothing of a source video equals a target video's."""
    target = synthetic.SynthSpec(videos=(3, 1, 1), frames=4, style="target")
    source = dataclasses.replace(target, style="source")
    assert source.name != target.name
    t_params = [synthetic.video_parameters(target, sp, v) for sp in synthetic.SPLITS
                for v in range(target.num_videos(sp))]
    for v in range(3):
        s = synthetic.video_parameters(source, "train", v)
        for t in t_params:
            for key in ("root", "pose", "betas", "colors", "canvas", "K_full"):
                assert not np.allclose(s[key], t[key]), key
    with pytest.raises(ValueError, match="style"):
        synthetic.SynthSpec(style="other")


def _tiny(**model):
    return Config(data=DataConfig(image_size=32), model=ModelConfig(encoder_width=8, **model))


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_predictor_file_round_trip_and_refusals(tmp_path):
    """Two compilations of the model's init (each call of ``HandPropModel.init`` compiles it; the
    refusal of a file made for another model is checked on the config, before any variable is read)."""
    config = _tiny()
    model = HandPropModel.create(config)
    trained = jax.tree.map(np.asarray, model.init(jax.random.PRNGKey(1)))
    path = tmp_path / "p.npz"
    digest = pretrained.export_predictor(trained, config, path, source="test")
    assert digest == pretrained.sha256(path) and pretrained.read_meta(path)["source"] == "test"
    fresh = jax.tree.map(np.array, model.init(jax.random.PRNGKey(2)))
    loaded = pretrained.initialise(jax.tree.map(np.array, fresh),  # a copy: fresh stays as it was
                                   dataclasses.replace(config, model=dataclasses.replace(
                                       config.model, init_checkpoint=str(path))))
    for k in pretrained.PREDICTOR_KEYS:  # float16 storage: the weights agree to half precision
        chex.assert_trees_all_close(loaded["params"][k], trained["params"][k], rtol=1e-3, atol=1e-4)
    chex.assert_trees_all_close(loaded["batch_stats"], trained["batch_stats"])
    # the aligners are not in the file: they stay fresh (and fresh differs from trained there)
    chex.assert_trees_all_close(loaded["params"]["pose_aligner"], fresh["params"]["pose_aligner"])
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, fresh["params"]["pose_aligner"],
                                                trained["params"]["pose_aligner"])))
    other = _tiny(global_rotation="axis_angle", init_checkpoint=str(path))
    with pytest.raises(UserError, match="global_rotation"):
        pretrained.initialise(fresh, other)
    with pytest.raises(UserError, match="no such file"):
        pretrained.resolve(tmp_path / "missing.npz")


def test_provenance_names_the_file_a_continuation_started_from(tmp_path):
    """A pretraining run's ``source`` line: step, source set and validation metrics; a continuation
    (``model.init_checkpoint`` set) adds the starting file's name and its SHA-256 (hashlib's, computed
    here), so that a chain of runs can be traced back."""
    from handprop_jax.training import pretrain

    config = Config(name="synthetic_source", data=DataConfig(synth_videos=(640, 16, 0), synth_frames=32))
    stats = {"step": 2500, "loss": 0.1, "val_mpjpe_mm": 54.5597, "val_rotation_deg": 32.8606}
    line = pretrain.provenance(config, stats)
    assert line == ("handprop pretrain --config synthetic_source: stage1 step 2500, 640 source videos x 32 "
                    "frames; val_mpjpe_mm 54.56, val_rotation_deg 32.86")
    start = tmp_path / "first.npz"
    start.write_bytes(b"weights")
    continued = dataclasses.replace(config, model=ModelConfig(init_checkpoint=str(start)))
    assert pretrain.provenance(continued, stats) == (
        f"{line}; started from first.npz (sha256 {hashlib.sha256(b'weights').hexdigest()})")
