"""The jitted train steps: what each stage may change, loss decrease, the non-finite guard."""

import jax
import numpy as np
import pytest
from test_training_fakes import FakeSource, TinyEncoder, make_frames, tiny_config

from handprop_jax.model import handprop as hp
from handprop_jax.model.api import HandPropModel
from handprop_jax.training import steps

N_STEPS = 6


def _equal(a, b) -> bool:
    same = jax.tree.map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), a, b)
    return all(jax.tree.leaves(same))


def _host(tree):
    return jax.tree.map(np.array, jax.device_get(tree))


@pytest.fixture(scope="module")
def setup():
    config = tiny_config(lr=1e-3, batch_size=4)
    module = hp.HandProp(encoder=TinyEncoder(16))
    frames = make_frames(config, 4)
    variables = HandPropModel.create(config, module=module).init(jax.random.PRNGKey(0))
    # give the zero-initialised output layers some weight so that every head is active
    variables = {"params": jax.tree.map(lambda x: np.asarray(x) + 1e-3 * np.sin(np.arange(x.size)).reshape(
                     x.shape).astype(np.float32), variables["params"]),
                 "batch_stats": variables["batch_stats"]}
    return config, module, frames, variables


_STEPS = {}


def _step(setup, phase):
    """The jitted step of ``phase`` (compiled once per module; no donation: tests keep inputs)."""
    if phase not in _STEPS:
        config, module, _, _ = setup
        _STEPS[phase] = jax.jit(steps.make_train_step(config, phase, module=module))
    return _STEPS[phase]


def _run(setup, phase, n=N_STEPS, batch=None):
    """n steps of ``phase`` on ONE fixed batch (memorisation: the loss must go down)."""
    config, module, frames, variables = setup
    step = _step(setup, phase)
    state = steps.init_state(config, phase, variables, steps.phase_key(config, phase))
    batch = FakeSource(frames, phase, 4).batch_at(0) if batch is None else batch
    history = []
    for i in range(n):
        state, metrics = step(state, batch, jax.random.PRNGKey(i))
        history.append(_host(metrics))
    return state, history


@pytest.fixture(scope="module")
def stage1(setup):
    return _run(setup, "stage1")


@pytest.fixture(scope="module")
def stage2(setup):
    return _run(setup, "stage2")


@pytest.fixture(scope="module")
def stage3(setup):
    return _run(setup, "align")


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_stage1_changes_predictor_and_bn_but_not_aligners(setup, stage1):
    _, _, _, v = setup
    state, _ = stage1
    for k in hp.ALIGNER_KEYS:
        assert _equal(state.params[k], v["params"][k]), k
    for k in hp.PREDICTOR_KEYS:
        assert not _equal(state.params[k], v["params"][k]), k
    assert not _equal(state.batch_stats, v["batch_stats"])
    assert int(state.step) == N_STEPS and int(state.bad_step) == -1


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_stage2_changes_only_aligners_bit_identical_predictor_and_bn(setup, stage2):
    _, _, _, v = setup
    state, _ = stage2
    for k in hp.PREDICTOR_KEYS:
        assert _equal(state.params[k], v["params"][k]), k
    assert _equal(state.batch_stats, v["batch_stats"])
    for k in hp.ALIGNER_KEYS:
        assert not _equal(state.params[k], v["params"][k]), k


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_stage3_changes_everything(setup, stage3):
    _, _, _, v = setup
    state, _ = stage3
    for k in hp.PREDICTOR_KEYS + hp.ALIGNER_KEYS:
        assert not _equal(state.params[k], v["params"][k]), k
    assert not _equal(state.batch_stats, v["batch_stats"])


@pytest.mark.parametrize("phase", ["stage1", "stage2", "stage3"])
@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_a_few_steps_lower_the_loss(phase, stage1, stage2, stage3):
    _, history = {"stage1": stage1, "stage2": stage2, "stage3": stage3}[phase]
    losses = [h["loss"] for h in history]
    assert np.all(np.isfinite(losses))
    # at least 20 % lower after N_STEPS steps (the decoupled L_pred's geodesic term, in radians, falls
    # more slowly than squared joint errors: stage 1 reaches ~0.72x)
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_stage3_loss_is_pred_plus_weighted_align(setup, stage3):
    config = setup[0]
    h = stage3[1][0]
    np.testing.assert_allclose(h["loss"], h["l_pred"] + config.train.lambda_align * h["l_align"], rtol=1e-5)


@pytest.mark.slow  # quick tier (make test-fast): compiles a train step, runs in make test
def test_non_finite_loss_keeps_state_and_records_step(setup):
    config, module, frames, variables = setup
    batch = FakeSource(frames, "stage1", 4).batch_at(0)
    bad = dict(batch, joints3d=np.full_like(batch["joints3d"], np.nan))
    step = _step(setup, "stage1")
    state = steps.init_state(config, "stage1", variables, steps.phase_key(config, "stage1"))
    state, _ = step(state, batch, jax.random.PRNGKey(0))
    good = _host(state)
    state, metrics = step(state, bad, jax.random.PRNGKey(1))
    assert not np.isfinite(float(metrics["loss"]))
    assert int(state.bad_step) == 1 and int(state.step) == 2
    # parameters, Adam moments and BatchNorm statistics are those of the last good step
    assert _equal(state.params, good.params) and _equal(state.batch_stats, good.batch_stats)
    assert _equal(state.opt_state.inner_state, good.opt_state.inner_state)
    assert int(state.opt_state.total_notfinite) == 1
    state, _ = step(state, batch, jax.random.PRNGKey(2))
    assert int(state.bad_step) == 1  # the first bad step is kept
    assert not _equal(state.params, good.params)  # a finite step afterwards updates again


def test_bfloat16_on_cpu_warns_and_float32_does_not():
    import warnings

    from handprop_jax import config as config_lib

    if jax.default_backend() != "cpu":
        pytest.skip("the warning is about XLA:CPU")
    config = tiny_config()
    bf16 = config_lib.override(config, ["model.dtype=bfloat16"])
    with pytest.warns(UserWarning, match="bfloat16 on CPU"):
        steps.make_train_step(bf16, "stage1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        steps.make_train_step(config, "stage1")
