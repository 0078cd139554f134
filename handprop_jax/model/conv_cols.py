"""The ``"bf16_cols"`` CPU convolution: bfloat16 im2col columns built by C++ XLA FFI handlers,
contracted by XLA with float32 accumulation.

On a CPU with AMX / AVX512-BF16, XLA:CPU multiplies bfloat16 matrices into float32 at several
times its float32 matmul rate (``benchmarks/train_step.py`` prints both rates), but its bfloat16
pads, slices, concatenations and transposes are slow, so the columns are built by
:mod:`handprop_jax.native` (one pass that gathers and rounds to bfloat16). Every pass of a layer
is one matmul of bfloat16 operands with a float32 result:

- forward: ``y = im2col(x) @ W``, ``W`` the HWIO kernel as ``(kh*kw*Cin, Cout)``;
- layers on large maps (``M = B*Ho*Wo > 2 Cout``, the columns larger than the weights):
  kernel gradient ``dW^T = dy^T @ im2col(x)`` (the forward's columns, kept); input gradient,
  stride 1: the convolution of the padded output gradient with the flipped kernel,
  ``im2col(dy) @ W_flip``;
- layers on small maps (``M <= 2 Cout``, deep layers: transposing their weights would cost more
  than their columns): ``dW = im2col(x)^T @ dy`` with transposed columns built from ``x``;
- input gradient of those and of every strided layer: ``col2im(dy @ W^T)`` (``W^T`` as the
  contraction of the forward's bfloat16 kernel matrix on its second axis; col2im sums each
  column's taps back onto the input in float32).

Numerics: activations, output gradients and weights are rounded to bfloat16 (round to nearest
even) as operands of each matmul; sums are float32, results float32. Everything else in the model
(BatchNorm, MANO, losses, Adam, parameters) stays float32. Relative error of one layer's output
and gradients against the float32 convolution: below 1e-2 (bfloat16's 8-bit significand), tested
in ``tests/test_conv_cols.py`` beside the exact rounded-operand reference. This is opt-in
(``model.conv_impl="bf16_cols"``); ``"auto"`` keeps float32 maths.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from handprop_jax import native
from handprop_jax.model.conv_geometry import output_hw


def padded_depth(k: int) -> int:
    """Column count used for a contraction of depth ``k``: a multiple of 32 (one AMX tile row of
    bfloat16), e.g. the 7x7x3 stem's 147 -> 160."""
    return -(-k // 32) * 32


def im2col_bf16(x: jax.Array, kernel_hw: tuple[int, int], strides: tuple[int, int], pads,
                transposed: bool = False, depth: int | None = None) -> jax.Array:
    """bfloat16 im2col columns of float32 ``x`` (B, H, W, C).

    Returns (B*Ho*Wo, depth), column order (tap row, tap column, channel) and zeros past
    kh*kw*C (``depth`` defaults to kh*kw*C); or its transpose (depth, B*Ho*Wo) when
    ``transposed``. Out-of-image taps are zero.
    """
    native.load()
    b, h, w, c = x.shape
    ho, wo = output_hw((h, w), kernel_hw, strides, pads)
    if ho <= 0 or wo <= 0:
        raise ValueError(f"im2col_bf16: input {x.shape} too small for window {kernel_hw}, padding {pads}")
    k = kernel_hw[0] * kernel_hw[1] * c
    if depth is not None and depth < k:
        raise ValueError(f"im2col_bf16: depth {depth} < kh*kw*C = {k}")
    shape = (b * ho * wo, k if depth is None else depth)
    out = jax.ShapeDtypeStruct(shape[::-1] if transposed else shape, jnp.bfloat16)
    return jax.ffi.ffi_call("handprop_im2col_bf16", out, vmap_method="sequential")(
        x.astype(jnp.float32), kh=np.int64(kernel_hw[0]), kw=np.int64(kernel_hw[1]),
        sh=np.int64(strides[0]), sw=np.int64(strides[1]), pt=np.int64(pads[0][0]),
        pl=np.int64(pads[1][0]), wo=np.int64(wo), transposed=bool(transposed))


def to_bf16(x: jax.Array) -> jax.Array:
    """float32 (B, H, W, C) -> bfloat16 (B*H*W, C) (a 1x1 im2col: one rounding pass)."""
    return im2col_bf16(x, (1, 1), (1, 1), ((0, 0), (0, 0)))


def kernel_bf16(kernel: jax.Array, mode: int, depth: int | None = None) -> jax.Array:
    """HWIO float32 kernel as a bfloat16 matrix: mode 0 (depth, Cout), rows past kh*kw*Cin zero
    (``depth`` defaults to kh*kw*Cin); mode 1 the spatially flipped kernel as
    (kh*kw*Cout, Cin)."""
    native.load()
    kh, kw, ci, co = kernel.shape
    if mode not in (0, 1) or (mode == 1 and depth is not None):
        raise ValueError(f"kernel_bf16: mode {mode} (0, or 1 without depth)")
    shape = (depth or kh * kw * ci, co) if mode == 0 else (kh * kw * co, ci)
    return jax.ffi.ffi_call("handprop_kernel_bf16", jax.ShapeDtypeStruct(shape, jnp.bfloat16),
                            vmap_method="sequential")(kernel.astype(jnp.float32), mode=np.int64(mode))


def transpose_bf16(x: jax.Array) -> jax.Array:
    """float32 (M, N) -> bfloat16 (N, M)."""
    native.load()
    return jax.ffi.ffi_call("handprop_transpose_bf16", jax.ShapeDtypeStruct(x.shape[::-1], jnp.bfloat16),
                            vmap_method="sequential")(x.astype(jnp.float32))


def col2im_f32(cols: jax.Array, x_shape: tuple[int, int, int, int], kernel_hw, strides, pads) -> jax.Array:
    """Adjoint of im2col: float32 columns (B*Ho*Wo, K >= kh*kw*C) summed back onto (B, H, W, C)
    (columns past kh*kw*C are ignored)."""
    native.load()
    _, wo = output_hw(x_shape[1:3], kernel_hw, strides, pads)
    return jax.ffi.ffi_call("handprop_col2im_f32", jax.ShapeDtypeStruct(tuple(x_shape), jnp.float32),
                            vmap_method="sequential")(
        cols.astype(jnp.float32), kh=np.int64(kernel_hw[0]), kw=np.int64(kernel_hw[1]),
        sh=np.int64(strides[0]), sw=np.int64(strides[1]), pt=np.int64(pads[0][0]),
        pl=np.int64(pads[1][0]), wo=np.int64(wo))


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, preferred_element_type=jnp.float32)


def _matmul_nt(a: jax.Array, b: jax.Array) -> jax.Array:
    """a (M, N) @ b (K, N)^T with float32 sums."""
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def _small_map(m: int, cout: int) -> bool:
    """Layers whose columns (M rows) are no larger than about their weights (``M <= 2 Cout``)."""
    return m <= 2 * cout


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_bf16_cols(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads) -> jax.Array:
    """NHWC x HWIO convolution with bfloat16 operands and float32 sums (see module docstring).

    x (B, H, W, Cin) float32, kernel (kh, kw, Cin, Cout), strides (sh, sw), pads
    ((top, bottom), (left, right)) -> (B, Ho, Wo, Cout) float32.
    """
    return _forward(x, kernel, strides, pads)[0]


def _forward(x, kernel, strides, pads):
    kh, kw, cin, cout = kernel.shape
    ho, wo = output_hw(x.shape[1:3], (kh, kw), strides, pads)
    depth = padded_depth(kh * kw * cin)
    cols = im2col_bf16(x, (kh, kw), strides, pads, depth=depth)
    w0 = kernel_bf16(kernel, 0, depth)
    return _matmul(cols, w0).reshape(x.shape[0], ho, wo, cout), (x, cols, w0, kernel)


def _bwd(strides, pads, residuals, dy):
    x, cols, w0, kernel = residuals
    kh, kw, cin, cout = kernel.shape
    m, k = dy.shape[0] * dy.shape[1] * dy.shape[2], kh * kw * cin
    small = _small_map(m, cout)
    stride1_large = tuple(strides) == (1, 1) and not small
    dy16 = None if stride1_large else to_bf16(dy)  # (M, Cout): small maps' dW and col2im's dx
    if small:
        assert dy16 is not None
        dw = _matmul(im2col_bf16(x, (kh, kw), strides, pads, transposed=True), dy16)
    else:
        # The barrier keeps XLA from folding the transpose into the dot (a bf16 dot with a
        # transposed result is not a library call on XLA:CPU).
        dw = lax.optimization_barrier(_matmul(transpose_bf16(dy.reshape(m, cout)), cols)[:, :k]).T
    dw = dw.reshape(kernel.shape)
    if stride1_large:
        (pt, pb), (pl, pr) = pads
        full = ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr))
        dx = _matmul(im2col_bf16(dy, (kh, kw), (1, 1), full), kernel_bf16(kernel, 1)).reshape(x.shape)
    else:
        assert dy16 is not None
        dx = col2im_f32(_matmul_nt(dy16, w0), x.shape, (kh, kw), strides, pads)
    return dx.astype(x.dtype), dw.astype(kernel.dtype)


conv_bf16_cols.defvjp(_forward, _bwd)
