"""Comparison methods 2 and 3 (training/adversarial_motion.py, training/temporal_consistency.py,
model/temporal.py): the losses against hand-computed values, D's rotation augmentation, separate G/D
updates, the aux state in checkpoints, and the temporal input (zero-initialised = stage 1 exactly,
forward = reversed when time is ignored, the recurrence)."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_training_fakes import TinyEncoder, make_frames, tiny_config

from handprop_jax.gamma import Gamma
from handprop_jax.model import handprop as hp
from handprop_jax.model import temporal
from handprop_jax.model.api import HandPropModel
from handprop_jax.training import adversarial_motion as adv
from handprop_jax.training import checkpoint, objectives, registry, steps
from handprop_jax.training import temporal_consistency as tc

N = 4  # clip length in these tests


def _host(tree):
    return jax.tree.map(np.array, jax.device_get(tree))


def _close(a, b, **kw):
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.allclose(x, y, **kw)), _host(a), _host(b))))


@pytest.fixture(scope="module")
def setup():
    config = tiny_config(lr=1e-3, batch_size=2)
    config = dataclasses.replace(
        config, adversarial=dataclasses.replace(config.adversarial, clip_length=N, clips=2, d_width=8),
        temporal=dataclasses.replace(config.temporal, clip_length=N, clips=1, heatmap_sigma=1.5))
    module = hp.HandProp(encoder=TinyEncoder(16))
    model = HandPropModel.create(config, module=module)
    variables = model.init(jax.random.PRNGKey(0))
    # give the zero-initialised output layers some weight so that every head is active
    variables = {"params": jax.tree.map(lambda x: np.asarray(x) + 1e-3 * np.sin(np.arange(x.size)).reshape(
                     x.shape).astype(np.float32), variables["params"]),
                 "batch_stats": variables["batch_stats"]}
    frames = make_frames(config, 2 + 2 * N)
    lab = {k: v[:2] for k, v in frames.items()}
    clip = lambda k, b: frames[k][2:].reshape((b, -1) + frames[k].shape[1:])  # noqa: E731
    return config, module, model, variables, frames, lab, clip


# ----------------------------------------------------------------------------- Spurr et al.


def test_lsgan_losses_against_hand_computed_values():
    d_real, d_fake = jnp.array([0.9, 0.6]), jnp.array([0.2, 0.5])
    # Eq. 4: mean (1 - D(real))^2 + mean D(fake)^2 = (0.01 + 0.16) / 2 + (0.04 + 0.25) / 2
    assert float(adv.d_loss(d_real, d_fake)) == pytest.approx(0.23, abs=1e-7)
    # Eq. 5: mean (1 - D(M(I)))^2 = (0.64 + 0.25) / 2
    assert float(adv.mm_loss(d_fake)) == pytest.approx(0.445, abs=1e-7)
    # a perfect D: L_D = 0, L_MM = 1; a fooled D: L_D = 1 + 1, L_MM = 0
    assert float(adv.d_loss(jnp.ones(3), jnp.zeros(3))) == 0.0 and float(adv.mm_loss(jnp.zeros(3))) == 1.0
    assert float(adv.d_loss(jnp.zeros(3), jnp.ones(3))) == 2.0 and float(adv.mm_loss(jnp.ones(3))) == 0.0


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_2p5d_input_and_rotation_augmentation_keep_the_motion_statistics(setup):
    config, *_ , frames, _, _ = setup
    joints = jnp.asarray(frames["joints3d"][:8].reshape(2, N, 21, 3))
    K = jnp.asarray(frames["K"][:8].reshape(2, N, 3, 3))
    S = config.data.image_size
    m = adv.to_2p5d(joints, K, S)
    uv = (np.asarray(frames["joints2d"][:8]).reshape(2, N, 21, 2) - (S - 1) / 2) / S
    np.testing.assert_allclose(m[..., :2], uv, atol=1e-5)
    np.testing.assert_allclose(m[..., 0, 2], 0.0, atol=1e-7)  # depth relative to the root
    angle = jnp.array([0.7, -2.9])
    r = np.asarray(adv.rotate_motion(m, angle))
    m = np.asarray(m)
    # the first skeleton's root stays, the depth channel is untouched
    np.testing.assert_allclose(r[:, 0, 0], m[:, 0, 0], atol=1e-6)
    np.testing.assert_array_equal(r[..., 2], m[..., 2])

    def stats(x):
        uv = x[..., :2]
        bones = np.linalg.norm(uv[:, :, 1:] - uv[:, :, :1], axis=-1)  # every joint to the root, per frame
        speed = np.linalg.norm(np.diff(uv, axis=1), axis=-1)  # frame-to-frame 2D motion of every joint
        accel = np.linalg.norm(np.diff(uv, 2, axis=1), axis=-1)
        return bones, speed, accel

    for a, b in zip(stats(r), stats(m), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # one rotation for the whole sequence: every frame's displacement turned by the same angle
    d_m, d_r = np.diff(m[..., :2], axis=1), np.diff(r[..., :2], axis=1)
    turn = np.arctan2(d_m[..., 0] * d_r[..., 1] - d_m[..., 1] * d_r[..., 0], (d_m * d_r).sum(-1))
    moving = np.linalg.norm(d_m, axis=-1) > 1e-4
    for i, a in enumerate(np.asarray(angle)):
        np.testing.assert_allclose(np.angle(np.exp(1j * (turn[i][moving[i]] - a))), 0.0, atol=1e-3)


def _adv_batch(setup):
    config, _, _, _, frames, lab, clip = setup
    rng = np.random.default_rng(3)
    real = clip("joints3d", 2)[::-1] + rng.normal(0, 0.003, (2, N, 21, 3)).astype(np.float32)
    return {"frames": lab,
            "clips": {"image": clip("image", 2), "K": clip("K", 2), "video_id": clip("video_id", 2),
                      "frame_index": clip("frame_index", 2), "angle": np.array([0.3, -1.0], np.float32)},
            "motion": {"joints3d": real, "K": clip("K", 2), "angle": np.zeros(2, np.float32)}}


def _adv_steps(setup, lambda_mm, states=None):
    """One compiled adversarial step (λ_MM = ``lambda_mm``) from the initial state and from each of
    ``states`` (functions of the initial state) → [(start, new state, metrics)] as host dicts."""
    config, module, _, variables, *_ = setup
    adversarial = dataclasses.replace(config.adversarial, lambda_mm=lambda_mm)
    config = dataclasses.replace(config, adversarial=adversarial)
    phase = adv.UNPAIRED
    step = jax.jit(steps.make_train_step(config, phase, module=module))
    state = steps.init_state(config, phase, variables, steps.phase_key(config, phase))
    as_dict = lambda st: _host({f: getattr(st, f) for f in checkpoint.STATE_FIELDS})  # noqa: E731
    out = []
    for start in [state] + [f(state) for f in states or ()]:
        new, metrics = step(start, _adv_batch(setup), jax.random.PRNGKey(1))
        out.append((as_dict(start), as_dict(new), _host(metrics)))
    return out


def _diverging_d(state):
    """D's Adam state with a negative second moment: D's next update is NaN (a diverged D), while D
    itself (what the predictor's loss sees) is unchanged."""
    opt = state.aux["opt_state"]
    adam = opt[0]
    opt = (adam._replace(nu=jax.tree.map(lambda x: jnp.full_like(x, -1e6), adam.nu)),) + tuple(opt[1:])
    return state.replace(aux={**state.aux, "opt_state": opt})


@pytest.mark.slow  # compiles two adversarial steps (~40 s of CPU)
def test_generator_step_never_changes_d_and_d_step_never_changes_the_predictor(setup):
    (s0, a, ma), (sc, c, _) = _adv_steps(setup, 0.0, [_diverging_d])
    ((_, b, mb),) = _adv_steps(setup, 100.0)
    # D learns (its own step), identically whatever weight the generator gives the adversarial term
    assert not _close(a["aux"]["params"], s0["aux"]["params"], rtol=0, atol=0)
    assert _close(a["aux"], b["aux"], rtol=1e-6, atol=1e-9)
    # the adversarial term reaches the predictor ...
    assert not _close(a["params"], b["params"], rtol=1e-5, atol=1e-8)
    assert ma["l_mm"] > 0 and {"d_loss", "d_real", "d_fake", "l_mm", "l_pred"} <= set(ma)
    assert steps.AUX_INPUT not in ma and mb["loss"] > ma["loss"]
    # ... and D's optimizer never does: with a diverging D update the predictor's step is the same,
    # D's non-finite update is rejected (D kept) and the step is recorded for the loop to stop the run
    assert _close(c["params"], a["params"], rtol=0, atol=0)
    assert _close(c["aux"], sc["aux"], rtol=0, atol=0)
    assert int(a["bad_step"]) == -1 and int(c["bad_step"]) == 0
    for group in hp.ALIGNER_KEYS:  # trainable: the predictor only
        assert _close(a["params"][group], s0["params"][group], rtol=0, atol=0)


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_checkpoint_round_trips_the_aux_state(setup, tmp_path):
    config, _, _, variables, *_ = setup
    state = steps.init_state(config, adv.UNPAIRED, variables, steps.phase_key(config, adv.UNPAIRED))
    state = state.replace(aux=jax.tree.map(lambda x: x + 0.25, state.aux))  # not the initial values
    assert {"params", "opt_state"} <= set(state.aux)
    ck = checkpoint.PhaseCheckpoints(tmp_path, adv.UNPAIRED)
    ck.save(1, state, {"step": 1})
    ck.wait()
    restored, meta = ck.restore(1, state)
    raw, _ = ck.restore(1)
    ck.close()
    assert meta["step"] == 1 and type(restored) is type(state)
    assert jax.tree.structure(restored.aux) == jax.tree.structure(state.aux)
    assert _close(restored.aux, state.aux, rtol=0, atol=0)
    assert _close(raw["aux"]["params"], state.aux["params"], rtol=0, atol=0)
    assert _close(restored.params, state.params, rtol=0, atol=0)


# ----------------------------------------------------------------------------- Chen et al.


@pytest.fixture(scope="module")
def chen(setup):
    config, _, model, variables, *_ = setup
    return tc.extend_params(config, variables, jax.random.PRNGKey(0))


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_zero_initialised_temporal_input_reproduces_stage1_exactly(setup, chen):
    config, _, model, variables, frames, *_ = setup
    assert set(chen["params"]) == set(variables["params"]) | {temporal.KEY}
    assert not np.any(np.asarray(chen["params"][temporal.KEY]["kernel"]))
    rng = np.random.default_rng(0)
    images, K = frames["image"][:4], frames["K"][:4]
    prev = rng.integers(0, 256, images.shape, dtype=np.uint8)
    g_t, _, offset = jax.jit(lambda v: temporal.predict(model, v, images, K, prev, frames["joints3d"][4:8],
                                                        jnp.ones(4, bool)))(chen)
    _, g_1, _ = jax.jit(lambda v: model.predict(v, images, K))(variables)
    assert not np.any(np.asarray(offset))
    for a, b in zip(_host(g_t), _host(g_1), strict=True):
        np.testing.assert_array_equal(a, b)
    # the temporal input itself is not zero: the zero weights make it irrelevant
    x = temporal.temporal_input(images, prev, frames["joints3d"][4:8], K, jnp.ones(4, bool), 1.5)
    assert x.shape == (4, 32, 32, temporal.CHANNELS) and float(jnp.max(x[..., 3:])) > 0.5


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_heatmaps_peak_at_the_projected_joints(setup):
    _, _, _, _, frames, *_ = setup
    maps = np.asarray(temporal.heatmaps(frames["joints3d"][:2], frames["K"][:2], 32, 1.0))
    uv = frames["joints2d"][:2]
    for b in range(2):
        for j in (0, 4, 20):
            u, v = uv[b, j]
            if 0 <= u <= 31 and 0 <= v <= 31:
                i, k = np.unravel_index(np.argmax(maps[b, :, :, j]), (32, 32))
                assert abs(k - u) <= 0.5 + 1e-6 and abs(i - v) <= 0.5 + 1e-6
                assert maps[b, :, :, j].max() == pytest.approx(
                    np.exp(-((k - u) ** 2 + (i - v) ** 2) / 2), rel=1e-5)


def _clip(setup):
    _, _, _, _, frames, lab, clip = setup
    c = {k: clip(k, 2)[:1] for k in ("image", "K", "joints3d", "root", "pose", "betas", "joints2d")}
    c["labelled"] = np.array([[True, False, False, True]])
    return c


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_forward_and_reversed_passes_agree_when_the_model_ignores_time(setup, chen):
    _, _, model, *_ = setup
    passes = jax.jit(lambda v, c: tc.clip_passes(model, v, c))
    _, joints, verts, _ = passes(chen, _clip(setup))
    np.testing.assert_allclose(joints[0], joints[1], atol=1e-6)
    np.testing.assert_allclose(verts[0], verts[1], atol=1e-6)
    assert float(tc.consistency(joints[0], joints[1])) < 1e-10
    # with weights on the temporal input the two directions differ (frames get different inputs)
    kernel = 0.05 * np.cos(np.arange(np.asarray(chen["params"][temporal.KEY]["kernel"]).size))
    used = {**chen, "params": {**chen["params"], temporal.KEY: {
        "kernel": kernel.reshape(chen["params"][temporal.KEY]["kernel"].shape).astype(np.float32)}}}
    _, joints, _, offset = passes(used, _clip(setup))
    assert float(tc.consistency(joints[0], joints[1])) > 1e-10 and float(jnp.abs(offset).max()) > 0
    # ... but the first frame of each direction has no temporal input: the forward pass at frame 0
    # equals the stage-1 prediction, and so does the reversed pass at the last frame
    g0 = jax.jit(lambda v, im, K: model.joints(model.predict(v, im, K)[1])[0])(chen, _clip(setup)["image"][0],
                                                                             _clip(setup)["K"][0])
    np.testing.assert_allclose(joints[0, 0, 0], g0[0], atol=1e-6)
    np.testing.assert_allclose(joints[1, 0, -1], g0[-1], atol=1e-6)
    # the whole-video recurrence (chunked) is the clip recurrence of the forward pass
    seq = temporal.predict_video(model, used, _clip(setup)["image"][0], _clip(setup)["K"][0], chunk=3)
    (j_seq,) = jax.jit(model.joints)(seq)
    np.testing.assert_allclose(j_seq, joints[0, 0], atol=1e-5)


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_consistency_against_a_hand_computed_value_and_the_masked_loss_against_the_objective(setup):
    a = np.zeros((1, 2, 2, 3), np.float32)
    b = a.copy()
    b[0, 0, 0] = [0.1, 0.0, 0.0]
    b[0, 1, 1] = [0.0, 0.2, 0.2]
    # (1/n) sum_i ||a_i - b_i||_F^2 = (0.01 + 0.08) / 2
    assert float(tc.consistency(a, b)) == pytest.approx(0.045, abs=1e-8)
    _, _, model, *_ = setup
    rng = np.random.default_rng(3)
    hm = np.asarray(model.mano.hands_mean)
    pose = np.zeros((3, 48), np.float32)
    pose[:, :3] = rng.normal(0, 0.5, (3, 3))
    pose[:, 3:] = hm + rng.normal(0, 0.2, (3, 45))
    gamma = Gamma(np.asarray(rng.normal(0, 0.1, (3, 3)), np.float32), pose,
                  np.asarray(rng.normal(0, 0.5, (3, 10)), np.float32))
    (joints,) = model.joints(gamma)
    labels = {"joints3d": np.asarray(joints) + 0.01, "root": np.asarray(gamma.root) + 0.01,
              "pose": pose + 0.1, "betas": np.zeros((3, 10), np.float32)}
    mask = np.array([True, True, False])
    loss, terms = tc.masked_prediction_loss(model, gamma, joints, labels, mask)
    # the truth: the run's objective on the two labelled rows as one batch
    want, want_terms = objectives.prediction_loss(model, gamma.take(mask), joints[mask],
                                                  {k: v[mask] for k, v in labels.items()})
    assert float(loss) == pytest.approx(float(want), rel=1e-4)
    assert set(terms) == set(want_terms)
    for k in terms:
        assert float(terms[k]) == pytest.approx(float(want_terms[k]), rel=1e-4, abs=1e-9), k
    # the unlabelled row's (zero-filled, here absurd) label changes neither the loss nor its gradient
    absurd = {k: v.copy() for k, v in labels.items()}
    absurd["joints3d"][2] += 5.0
    absurd["root"][2] += 5.0
    grad = lambda lab: jax.grad(lambda g: tc.masked_prediction_loss(  # noqa: E731
        model, g, model.joints(g)[0], lab, mask)[0])(gamma)
    same = tc.masked_prediction_loss(model, gamma, joints, absurd, mask)[0]
    assert float(same) == pytest.approx(float(loss))
    chex.assert_trees_all_close(grad(absurd), grad(labels), atol=1e-7)
    assert float(jax.tree.leaves(grad(labels))[0][2].sum()) == 0.0
    # the same gradient as the objective with its own MANO pass for the rotation-free joints
    want_grad = jax.grad(lambda g: objectives.prediction_loss(  # noqa: E731
        model, g, model.joints(g)[0], {k: v[mask] for k, v in labels.items()})[0])(gamma.take(mask))
    chex.assert_trees_all_close(grad(labels).take(mask), want_grad, atol=2e-6, rtol=1e-4)
    none, _ = tc.masked_prediction_loss(model, gamma, joints, labels, np.zeros(3, bool))
    assert float(none) == 0.0


@pytest.mark.slow  # compiles the temporal-consistency train step
def test_temporal_consistency_step_trains_the_temporal_input_and_the_predictor(setup, chen):
    config, module, _, _, _, lab, _ = setup
    step = jax.jit(steps.make_train_step(config, tc.NAME, module=module))
    state = steps.init_state(config, tc.NAME, chen, steps.phase_key(config, tc.NAME))
    new, m = step(state, {"frames": lab, "clips": _clip(setup)}, jax.random.PRNGKey(0))
    new, m = _host({f: getattr(new, f) for f in checkpoint.STATE_FIELDS}), _host(m)
    assert int(new["bad_step"]) == -1 and np.isfinite(m["loss"])
    # starts at the trivial solution: both passes agree, L_c = 0; the labelled clip frames move the
    # temporal weights
    assert m["l_c_pose"] == 0.0 and m["fwd_rev_mm"] == 0.0 and m["l_pred_clip"] > 0
    assert np.any(new["params"][temporal.KEY]["kernel"])
    assert not _close(new["params"]["encoder"], _host(state.params["encoder"]), rtol=0, atol=0)
    for group in hp.ALIGNER_KEYS:
        assert _close(new["params"][group], _host(state.params[group]), rtol=0, atol=0)


def test_phases_are_registered_with_the_baseline_budget():
    from handprop_jax import config as config_lib

    config = config_lib.load("synthetic_compare")
    demo = registry.order(config_lib.load("synthetic"))
    assert registry.order(config)[-3:] == (adv.UNPAIRED, adv.LABELS, tc.NAME)
    assert not {adv.UNPAIRED, adv.LABELS, tc.NAME} & set(demo)
    for name in (adv.UNPAIRED, adv.LABELS, tc.NAME):
        phase = registry.get(name)
        assert phase.init_from == "stage1"
        assert steps.phase_steps(config, name) == steps.phase_steps(config, "baseline") > 0
    assert temporal.KEY in registry.get(tc.NAME).trainable
