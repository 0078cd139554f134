"""Encoder psi (ResNet-18) and the convolution formulations of handprop_jax.model.conv."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from handprop_jax.model.conv import conv2d, conv_hybrid, conv_s2d, cpu_plan, resolve_impl
from handprop_jax.model.conv_geometry import explicit_padding, output_size
from handprop_jax.model.encoder import IMAGENET_MEAN, IMAGENET_STD, BatchNorm, Encoder, normalize_images
from handprop_jax.model.pool import max_pool

# (kernel, stride, padding) as ResNet-18 uses them, plus SAME/VALID strings and an odd size.
CONV_CASES = [
    (7, 2, ((3, 3), (3, 3))),  # stem
    (3, 1, ((1, 1), (1, 1))),
    (3, 2, ((1, 1), (1, 1))),
    (1, 2, ((0, 0), (0, 0))),  # projection shortcut
    (1, 1, "VALID"),
    (3, 2, "SAME"),
]


def _reference_conv(x, w, stride, padding):
    return lax.conv_general_dilated(x, w, (stride, stride), padding,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=lax.Precision.HIGHEST)


def _hybrid(plan):
    def conv(x, w, s, pad):
        pads = explicit_padding(pad, x.shape[1:3], w.shape[:2], (s, s))
        return conv_hybrid(x, w, (s, s), pads, plan)
    return conv


def _space_to_depth(x, w, s, pad):
    return conv_s2d(x, w, (s, s), explicit_padding(pad, x.shape[1:3], w.shape[:2], (s, s)))


IMPLS = {"im2col": lambda x, w, s, pad: conv2d(x, w, s, pad, "im2col"),
         "space_to_depth": _space_to_depth,
         "taps": lambda x, w, s, pad: conv2d(x, w, s, pad, "taps"),
         "hybrid(xla,im2col,im2col)": _hybrid(("xla", "im2col", "im2col")),
         "hybrid(im2col,xla,xla)": _hybrid(("im2col", "xla", "xla")),
         "hybrid(xla,im2col,s2d)": _hybrid(("xla", "im2col", "s2d"))}


def _case_results(conv, x, w, ct, s, pad):
    y, vjp = jax.vjp(lambda x, w: conv(x, w, s, pad), x, w)
    return (y, *vjp(ct))


def _cases(rng, cases):
    """(k, s, pad, x, w, cotangent) per case: odd and even sizes for SAME, channels 3 -> 5."""
    out = []
    for k, s, pad in cases:
        for size in ((9, 8) if pad == "SAME" else (9,)):
            x = jnp.asarray(rng.randn(2, size, size, 3), jnp.float32)
            w = jnp.asarray(rng.randn(k, k, 3, 5) * 0.3, jnp.float32)
            ho = _reference_conv(x, w, s, pad).shape
            out.append((k, s, pad, x, w, jnp.asarray(rng.randn(*ho), jnp.float32)))
    return out


class ConvTest(chex.TestCase):
    """Values, input gradients and kernel gradients of every formulation equal lax.conv's."""

    def _check(self, impls, cases):
        for k, s, pad, x, w, ct in cases:
            want = _case_results(_reference_conv, x, w, ct, s, pad)
            for name, conv in impls.items():
                fn = self.variant(lambda x, w, ct, s=s, pad=pad, conv=conv:
                                  _case_results(conv, x, w, ct, s, pad))
                got = fn(x, w, ct)
                for g, r, what in zip(got, want, ("y", "dx", "dw"), strict=True):
                    assert g.shape == r.shape, (name, k, s, pad, what)
                    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3,
                                               err_msg=f"{what} {name} k{k} s{s} {pad}")

    @chex.variants(with_jit=True)
    @pytest.mark.slow  # values and both gradients of every formulation on every ResNet-18 case
    def test_all_formulations_all_resnet_cases(self):
        self._check(IMPLS, _cases(np.random.RandomState(0), CONV_CASES))

    @chex.variants(without_jit=True)
    @pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
    def test_eager(self):
        cases = _cases(np.random.RandomState(1), [(3, 2, "SAME"), (1, 2, ((0, 0), (0, 0)))])
        self._check({k: IMPLS[k] for k in ("im2col", "hybrid(im2col,xla,xla)")}, cases)

    def test_auto_and_errors(self):
        assert resolve_impl("auto", "cpu") == "im2col"
        assert resolve_impl("auto", "gpu") == "xla"
        assert resolve_impl("auto", "cpu", (3, 3), (1, 1), (16, 16)) == "hybrid"
        # per-pass CPU plan: never the native conv on 2x2 maps or for strided input gradients
        assert cpu_plan((3, 3), (1, 1), (2, 2)) == ("im2col",) * 3
        assert cpu_plan((3, 3), (2, 2), (16, 16)) == ("xla", "im2col", "im2col")
        assert cpu_plan((1, 1), (2, 2), (16, 16)) == ("im2col",) * 3
        assert cpu_plan((3, 3), (1, 1), (16, 16)) == ("xla", "xla", "im2col")
        assert cpu_plan((7, 7), (2, 2), (32, 32), 3) == ("xla", "im2col", "s2d")
        assert cpu_plan((3, 3), (2, 2), (32, 32), 64) == ("xla", "im2col", "im2col")
        assert resolve_impl("taps") == "taps"
        with pytest.raises(ValueError, match="conv_impl"):
            resolve_impl("winograd")
        with pytest.raises(ValueError, match="channels"):
            conv2d(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 2, 4)))


class MaxPoolTest(chex.TestCase):
    """max_pool's custom gradient against autodiff of lax.reduce_window, and its tie rule."""

    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
    def test_matches_reduce_window(self):
        rng = np.random.RandomState(0)
        cases = (((2, 9, 8, 3), (3, 2, 1)), ((1, 6, 6, 2), (2, 2, 0)), ((1, 7, 5, 1), (3, 1, 1)))
        for shape, (k, s, p) in cases:
            x = jnp.asarray(rng.randn(*shape), jnp.float32)  # continuous values: no ties

            def reference(x, k=k, s=s, p=p):
                return lax.reduce_window(x, -jnp.inf, lax.max, (1, k, k, 1), (1, s, s, 1),
                                         ((0, 0), (p, p), (p, p), (0, 0)))

            y, vjp = jax.vjp(self.variant(lambda x, k=k, s=s, p=p: max_pool(x, k, s, p)), x)
            y_ref, vjp_ref = jax.vjp(reference, x)
            ct = jnp.asarray(rng.randn(*y.shape), jnp.float32)
            np.testing.assert_array_equal(y, y_ref)
            np.testing.assert_allclose(vjp(ct)[0], vjp_ref(ct)[0], rtol=1e-6)

    def test_ties_go_to_the_first_maximum(self):
        # 4x4 of equal values, 3x3/2 windows with one pixel of padding: output (a, b)'s window
        # starts at input (2a - 1, 2b - 1), so its first real pixel in row-major order is (a, b).
        x = jnp.ones((1, 4, 4, 1))
        dy = jnp.arange(1.0, 5.0).reshape(1, 2, 2, 1)
        dx = jax.vjp(lambda x: max_pool(x, 3, 2, 1), x)[1](dy)[0][0, :, :, 0]
        want = np.zeros((4, 4))
        want[:2, :2] = [[1, 2], [3, 4]]
        np.testing.assert_array_equal(dx, want)

    def test_too_small(self):
        with pytest.raises(ValueError, match="too small"):
            max_pool(jnp.zeros((1, 1, 1, 1)), 3, 2, 0)


@pytest.mark.parametrize("hw, k, s, pad", [
    ((7, 9), 3, 2, "SAME"), ((7, 9), 3, 1, "VALID"), ((64, 64), 7, 2, ((3, 3), (3, 3))),
    ((5, 4), 2, 3, ((0, 1), (2, 0))), ((2, 2), 3, 1, "VALID")])
def test_output_size_matches_xla_convolution(hw, k, s, pad):
    pads = explicit_padding(pad, hw, (k, k), (s, s))
    want = [output_size(hw[a], k, s, *pads[a]) for a in range(2)]
    conv = lambda x, w: lax.conv_general_dilated(x, w, (s, s), pads,
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = jax.eval_shape(conv, jax.ShapeDtypeStruct((1, *hw, 1), jnp.float32),
                       jax.ShapeDtypeStruct((k, k, 1, 1), jnp.float32))
    assert list(y.shape[1:3]) == want


def test_normalize_images():
    img = np.array([[[[0, 255, 128]]]], np.uint8)
    want = (np.array([0, 1, 128 / 255]) - IMAGENET_MEAN) / IMAGENET_STD
    out = normalize_images(jnp.asarray(img))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out[0, 0, 0], want, rtol=1e-6)
    with pytest.raises(ValueError, match="RGB"):
        normalize_images(jnp.zeros((2, 4, 4, 1), jnp.uint8))


def test_batchnorm_train_eval_semantics():
    """Train: normalise with batch stats, update running stats (torch momentum, unbiased var).
    Eval: normalise with the running stats."""
    rng = np.random.RandomState(1)
    x = jnp.asarray(rng.randn(4, 3, 3, 2) * 2 + 5, jnp.float32)
    bn = BatchNorm(use_running_average=False)
    v = bn.init(jax.random.key(0), x)
    v = {"params": {"scale": jnp.array([2.0, 0.5]), "bias": jnp.array([1.0, -1.0])},
         "batch_stats": v["batch_stats"]}
    y, upd = bn.apply(v, x, mutable=("batch_stats",))
    xn = np.asarray(x, np.float64)
    mean, var = xn.mean((0, 1, 2)), xn.var((0, 1, 2))
    np.testing.assert_allclose(y, (xn - mean) / np.sqrt(var + 1e-5) * [2.0, 0.5] + [1.0, -1.0],
                               rtol=1e-4, atol=1e-4)
    n = 4 * 3 * 3
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * var * n / (n - 1), rtol=1e-5)
    # Eval with the updated running statistics.
    v2 = {"params": v["params"], "batch_stats": upd["batch_stats"]}
    y_eval = BatchNorm(use_running_average=True).apply(v2, x)
    rm, rv = np.asarray(upd["batch_stats"]["mean"]), np.asarray(upd["batch_stats"]["var"])
    np.testing.assert_allclose(y_eval, (xn - rm) / np.sqrt(rv + 1e-5) * [2.0, 0.5] + [1.0, -1.0],
                               rtol=1e-4, atol=1e-4)


class Jitted:
    """An Encoder whose init/apply are jitted (eager Flax on a ResNet is slow to dispatch)."""

    def __init__(self, module):
        self.module = module
        self.init = jax.jit(module.init, static_argnames="train")
        self.apply = jax.jit(module.apply, static_argnames=("train", "mutable"))

    def clone(self, **kw):
        return Jitted(self.module.clone(**kw))


@pytest.fixture(scope="module")
def tiny():
    enc = Jitted(Encoder(width=4, feature_dim=16, z_r_stage=2, conv_impl="xla"))  # fastest to compile
    raw = np.random.RandomState(0).randint(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    images = normalize_images(jnp.asarray(raw))
    variables = enc.init(jax.random.key(0), images, train=False)
    return enc, images, variables


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_encoder_shapes_and_names(tiny):
    enc, images, variables = tiny
    z_r, z_t = enc.apply(variables, images, train=False)
    assert z_r.shape == (3, 16) and z_t.shape == (3, 16)
    assert z_r.dtype == jnp.float32 and z_t.dtype == jnp.float32
    p = variables["params"]
    assert p["conv1"]["kernel"].shape == (7, 7, 3, 4)
    assert p["layer4_0"]["downsample_conv"]["kernel"].shape == (1, 1, 16, 32)
    assert "downsample_conv" not in p["layer1_0"]
    assert p["z_r_proj"]["kernel"].shape == (8, 16)  # stage 2 has 2 * width channels
    assert p["z_theta_proj"]["kernel"].shape == (32, 16)
    assert set(variables["batch_stats"]["layer3_1"]["bn2"]) == {"mean", "var"}


def test_resnet18_width_has_no_theta_projection():
    enc = Encoder()
    shapes = jax.eval_shape(lambda: enc.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    p = shapes["params"]
    assert "z_theta_proj" not in p
    n = sum(int(np.prod(a.shape)) for k, a in jax.tree_util.tree_leaves_with_path(p)
            if "z_r_proj" not in jax.tree_util.keystr(k))
    assert n == 11_176_512  # torchvision resnet18 without fc: 11,689,512 - 513,000


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_encoder_impls_agree(tiny):
    enc, images, variables = tiny
    out_a, st_a = enc.apply(variables, images, train=True, mutable=("batch_stats",))
    out_b, st_b = enc.clone(conv_impl="auto").apply(variables, images, train=True, mutable=("batch_stats",))
    chex.assert_trees_all_close(out_a, out_b, rtol=1e-4, atol=1e-4)
    chex.assert_trees_all_close(st_a, st_b, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_encoder_train_vs_eval_batch_dependence(tiny):
    """Eval: a sample's features do not depend on the rest of the batch; train (batch
    statistics): they do."""
    enc, images, variables = tiny
    other = images.at[1:].set(images[1:] * 0.5 + 1.0)
    eval_a, eval_b = enc.apply(variables, images, train=False), enc.apply(variables, other, train=False)
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[0], eval_a), jax.tree.map(lambda a: a[0], eval_b),
                                rtol=1e-5, atol=1e-5)
    train_a, _ = enc.apply(variables, images, train=True, mutable=("batch_stats",))
    train_b, _ = enc.apply(variables, other, train=True, mutable=("batch_stats",))
    assert not np.allclose(train_a[1][0], train_b[1][0], atol=1e-4)


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_freeze_batchnorm_leaves_stats_unchanged(tiny):
    enc, images, variables = tiny
    _, upd = enc.apply(variables, images, train=True, mutable=("batch_stats",))
    assert not np.allclose(upd["batch_stats"]["bn1"]["mean"], variables["batch_stats"]["bn1"]["mean"])
    frozen = enc.clone(freeze_batchnorm=True)
    out, upd_f = frozen.apply(variables, images, train=True, mutable=("batch_stats",))
    chex.assert_trees_all_equal(upd_f["batch_stats"], variables["batch_stats"])
    chex.assert_trees_all_close(out, enc.apply(variables, images, train=False), rtol=1e-6)


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_bfloat16_compute(tiny):
    enc, images, variables = tiny
    z32 = enc.apply(variables, images, train=False)
    z16 = enc.clone(dtype=jnp.bfloat16).apply(variables, images, train=False)
    assert z16[0].dtype == jnp.float32
    chex.assert_trees_all_close(z16, z32, rtol=0.1, atol=0.1)
