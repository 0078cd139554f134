"""The "bf16_cols" CPU convolution (handprop_jax.model.conv_cols) and its C++ column builders
(handprop_jax/native/conv_cols.cc), against independent references:

- the builders against the existing float32 im2col (``conv_geometry.tap_views``) rounded by XLA's own
  float32 -> bfloat16 conversion (bit-exact), numpy rearrangements of the kernel, and the
  adjoint identity of col2im;
- the convolution and both gradients against ``lax.conv_general_dilated`` evaluated on the
  bfloat16-rounded operands in float32 (the same products, so ~1e-6), and against the float32
  convolution within bfloat16's precision.
"""

import functools

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from handprop_jax import native
from handprop_jax.model import conv_cols
from handprop_jax.model import encoder as encoder_lib
from handprop_jax.model.conv import conv2d, resolve_impl
from handprop_jax.model.conv_geometry import explicit_padding, tap_views

# (batch, height, width, cin, cout, kernel, stride, pad): ResNet-18's kinds of layer, odd and
# non-square maps, VALID padding, a depth (7*7*3 = 147) that is padded to 160 columns, and layers
# on both sides of the transposed-kernel-gradient rule (M <= 2 Cout).
CASES = [
    (2, 7, 9, 5, 6, 3, 1, 1),
    (2, 8, 8, 5, 6, 3, 2, 1),
    (2, 9, 11, 3, 4, 7, 2, 3),
    (2, 8, 8, 5, 6, 1, 2, 0),
    (2, 5, 6, 4, 3, 3, 1, 0),
    (1, 2, 2, 8, 16, 3, 1, 1),  # M = 4 <= 2 * 16: transposed columns, col2im input gradient
    (2, 4, 4, 6, 8, 3, 2, 1),  # M = 8 <= 16, strided
    (1, 3, 3, 5, 8, 3, 1, 1),  # M = 9 <= 16 with a padded depth (45 -> 64)
]


def _bf(a):
    return a.astype(jnp.bfloat16).astype(jnp.float32)


def _lax_conv(x, w, strides, pads):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=lax.Precision.HIGHEST)


def _ref_conv(x, w, s, p):
    return _lax_conv(x, w, (s, s), ((p, p), (p, p)))


def _cols_f32(x, k, s, p):
    views, _, _ = tap_views(x, (k, k), (s, s), ((p, p), (p, p)))
    return jnp.concatenate(views, axis=-1).reshape(-1, k * k * x.shape[-1])


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_native_handlers_build_and_load():
    ok, why = native.available()
    assert ok, why
    assert native.library_path().exists()


class ColumnBuilderTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
    def test_im2col_is_rounded_tap_views(self):
        rng = np.random.RandomState(0)
        for b, h, w, ci, _, k, s, p in CASES:
            x = jnp.asarray(rng.randn(b, h, w, ci), jnp.float32)
            want = _cols_f32(x, k, s, p).astype(jnp.bfloat16)
            depth = conv_cols.padded_depth(k * k * ci)
            got = self.variant(lambda x, k=k, s=s, p=p, d=depth: conv_cols.im2col_bf16(
                x, (k, k), (s, s), ((p, p), (p, p)), depth=d))(x)
            chex.assert_shape(got, (want.shape[0], depth))
            assert got.dtype == jnp.bfloat16
            np.testing.assert_array_equal(np.asarray(got[:, :want.shape[1]], np.float32),
                                          np.asarray(want, np.float32))
            np.testing.assert_array_equal(np.asarray(got[:, want.shape[1]:], np.float32), 0.0)
            got_t = conv_cols.im2col_bf16(x, (k, k), (s, s), ((p, p), (p, p)), transposed=True)
            np.testing.assert_array_equal(np.asarray(got_t, np.float32), np.asarray(want.T, np.float32))

    @pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
    def test_rounding_matches_xla_including_ties_and_specials(self):
        # Ties (exactly half an ulp of bfloat16) round to even; inf, nan and signed zero survive;
        # lengths 1..40 exercise the vector body and the masked tail. Subnormal inputs (index 5)
        # may be flushed to zero: AVX512-BF16's conversion treats them as zero.
        base = np.array([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, -(1.0 + 2.0**-8), 3.0e38, -3.4e38, 1e-40,
                         np.inf, -np.inf, np.nan, -0.0, 0.0, 65504.0], np.float32)
        rng = np.random.RandomState(1)
        for n in range(1, 41):
            v = np.concatenate([base, rng.randn(n).astype(np.float32) * 10.0 ** rng.randint(-30, 30, n)])
            x = jnp.asarray(v[None, None, :, None])  # (1, 1, W, 1): one row of W pixels
            got = np.asarray(conv_cols.to_bf16(x)[:, 0], np.float32)
            want = np.asarray(jnp.asarray(v).astype(jnp.bfloat16), np.float32)
            sub = np.abs(v) < np.finfo(np.float32).tiny
            assert np.all((got[sub] == 0) | (got[sub] == want[sub]))
            np.testing.assert_array_equal(got[~sub], want[~sub])
            np.testing.assert_array_equal(np.signbit(got), np.signbit(want))

    def test_kernel_layouts_and_transpose(self):
        rng = np.random.RandomState(2)
        w = rng.randn(3, 2, 5, 7).astype(np.float32)
        wb = np.asarray(jnp.asarray(w).astype(jnp.bfloat16), np.float32)
        m0 = np.asarray(conv_cols.kernel_bf16(jnp.asarray(w), 0, depth=32), np.float32)
        np.testing.assert_array_equal(m0[:30], wb.reshape(30, 7))
        np.testing.assert_array_equal(m0[30:], 0.0)
        m1 = np.asarray(conv_cols.kernel_bf16(jnp.asarray(w), 1), np.float32)
        np.testing.assert_array_equal(m1, wb[::-1, ::-1].transpose(0, 1, 3, 2).reshape(42, 5))
        with pytest.raises(ValueError, match="mode"):
            conv_cols.kernel_bf16(jnp.asarray(w), 2)
        a = rng.randn(70, 33).astype(np.float32)
        np.testing.assert_array_equal(np.asarray(conv_cols.transpose_bf16(jnp.asarray(a)), np.float32),
                                      np.asarray(jnp.asarray(a.T).astype(jnp.bfloat16), np.float32))

    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
    def test_col2im_is_the_adjoint_of_im2col(self):
        rng = np.random.RandomState(3)
        for b, h, w, ci, _, k, s, p in CASES:
            x = jnp.zeros((b, h, w, ci), jnp.float32)
            cols_of, vjp = jax.vjp(lambda x, k=k, s=s, p=p: _cols_f32(x, k, s, p), x)
            c = jnp.asarray(rng.randn(*cols_of.shape), jnp.float32)
            got = self.variant(lambda c, k=k, s=s, p=p, shape=x.shape: conv_cols.col2im_f32(
                c, shape, (k, k), (s, s), ((p, p), (p, p))))(c)
            np.testing.assert_allclose(got, vjp(c)[0], rtol=1e-6, atol=1e-6)


class ConvBf16ColsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
    def test_value_and_gradients(self):
        rng = np.random.RandomState(4)
        for b, h, w, ci, co, k, s, p in CASES:
            x = jnp.asarray(rng.randn(b, h, w, ci), jnp.float32)
            kern = jnp.asarray(rng.randn(k, k, ci, co) * 0.3, jnp.float32)
            y_ref, vjp_ref = jax.vjp(lambda x, w, s=s, p=p: _ref_conv(x, w, s, p), _bf(x), _bf(kern))
            dy = jnp.asarray(rng.randn(*y_ref.shape), jnp.float32)
            fn = self.variant(lambda x, w, dy, s=s, p=p: (
                lambda out: (out[0], *out[1](dy)))(jax.vjp(
                    lambda x, w: conv2d(x, w, s, ((p, p), (p, p)), "bf16_cols"), x, w)))
            y, dx, dw = fn(x, kern, dy)
            # Same bfloat16 products, float32 sums: agrees with the reference on rounded operands.
            for got, want, what in zip((y, dx, dw), (y_ref, *vjp_ref(_bf(dy))), ("y", "dx", "dw"),
                                       strict=True):
                chex.assert_equal_shape((got, want))
                scale = float(jnp.max(jnp.abs(want)))
                np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * scale,
                                           err_msg=f"{what} {(b, h, w, ci, co, k, s, p)}")
            # And the float32 convolution within bfloat16's precision.
            y32, vjp32 = jax.vjp(lambda x, w, s=s, p=p: _ref_conv(x, w, s, p), x, kern)
            for got, want in zip((y, dx, dw), (y32, *vjp32(dy)), strict=True):
                rel = float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))
                assert rel < 1e-2, rel

    def test_vmap_and_bfloat16_inputs(self):
        rng = np.random.RandomState(5)
        xs = jnp.asarray(rng.randn(3, 2, 6, 6, 4), jnp.float32)
        kern = jnp.asarray(rng.randn(3, 3, 4, 5), jnp.float32)
        conv = lambda x: conv2d(x, kern, 1, "SAME", "bf16_cols")
        np.testing.assert_array_equal(jax.vmap(conv)(xs), jnp.stack([conv(x) for x in xs]))
        y = conv2d(xs[0].astype(jnp.bfloat16), kern.astype(jnp.bfloat16), 1, "SAME", "bf16_cols")
        assert y.dtype == jnp.bfloat16

    def test_errors(self):
        with pytest.raises(ValueError, match="CPU formulation"):
            resolve_impl("bf16_cols", "gpu")
        with pytest.raises(ValueError, match="depth"):
            conv_cols.im2col_bf16(jnp.zeros((1, 4, 4, 3)), (3, 3), (1, 1), ((1, 1), (1, 1)), depth=16)
        with pytest.raises(ValueError, match="too small"):
            conv_cols.im2col_bf16(jnp.zeros((1, 2, 2, 3)), (5, 5), (1, 1), ((0, 0), (0, 0)))

    def test_build_error_names_the_compiler(self):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CXX", "/nonexistent/c++")
            with pytest.raises(native.NativeBuildError, match="nonexistent"):
                native.build(force=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _rounded_operand_conv(x, w, strides, pads):
    """lax.conv on bfloat16-rounded operands, in float32; its backward rounds dy, x and w too."""
    return _lax_conv(_bf(x), _bf(w), strides, pads)


def _rounded_fwd(x, w, strides, pads):
    return _rounded_operand_conv(x, w, strides, pads), (x, w)


def _rounded_bwd(strides, pads, res, dy):
    x, w = res
    return jax.vjp(lambda x, w: _lax_conv(x, w, strides, pads), _bf(x), _bf(w))[1](_bf(dy))


_rounded_operand_conv.defvjp(_rounded_fwd, _rounded_bwd)


@pytest.mark.slow  # gradients of a whole ResNet-18 twice (bf16_cols and the rounded reference)
def test_encoder_gradients_match_a_rounded_operand_reference(monkeypatch):
    """A whole ResNet-18 (width 8, 64 px, batch 4) with bf16_cols against the same encoder whose
    convolutions are lax.conv on bfloat16-rounded operands: the parameter gradients agree to
    float32 noise (amplified through eight BatchNorms), so the formulation is wired correctly
    through every layer. (Against the float32 encoder they differ far more at this random init
    and tiny batch: BatchNorm amplifies bfloat16 rounding, as it amplifies float32 summation
    order, so the float32 encoder is not the reference here.)"""
    original = encoder_lib.conv2d

    def conv2d_with_reference(x, kernel, strides=1, padding="SAME", impl="auto"):
        if impl != "reference":
            return original(x, kernel, strides, padding, impl)
        s = (strides, strides) if isinstance(strides, int) else tuple(strides)
        pads = explicit_padding(padding, x.shape[1:3], kernel.shape[:2], s)
        return _rounded_operand_conv(x, kernel, s, pads)

    monkeypatch.setattr(encoder_lib, "conv2d", conv2d_with_reference)
    monkeypatch.setattr(encoder_lib, "IMPLS", encoder_lib.IMPLS + ("reference",))
    x = jnp.asarray(np.random.RandomState(6).rand(4, 64, 64, 3), jnp.float32)
    encoders = {k: encoder_lib.Encoder(width=8, conv_impl=k) for k in ("reference", "bf16_cols")}
    variables = encoders["reference"].init(jax.random.PRNGKey(0), x, train=True)

    def grads(enc):
        def loss(params):
            (z_r, z_theta), _ = enc.apply({**variables, "params": params}, x, train=True,
                                          mutable=["batch_stats"])
            return jnp.sum(jnp.sin(z_r)) + jnp.sum(jnp.sin(z_theta))
        return jax.flatten_util.ravel_pytree(jax.jit(jax.grad(loss))(variables["params"]))[0]

    want, got = grads(encoders["reference"]), grads(encoders["bf16_cols"])
    assert float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want)) < 0.02
