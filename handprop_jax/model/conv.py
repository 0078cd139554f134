"""2D convolution (NHWC activations, HWIO kernels) with interchangeable formulations.

All formulations compute exactly the same function as
``jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))``
(up to float rounding); they differ only in which XLA operations they lower to, because XLA:CPU's
native convolution is very slow on some shapes (e.g. the backward pass of a 3x3 convolution on a
2x2 map, against the same maths written as a matmul; ``benchmarks/train_step.py --layers`` measures
every formulation per layer, figures in docs/benchmarks.md).

- ``"xla"``: ``lax.conv_general_dilated`` (the natural choice on GPU/TPU: cuDNN and friends).
- ``"im2col"``: the kernel taps are gathered as shifted, strided slices of the padded input,
  concatenated on the channel axis and contracted with the reshaped kernel in ONE matmul
  ``(B*Ho*Wo, kh*kw*Cin) @ (kh*kw*Cin, Cout)``. Autodiff of slices/concat/matmul gives a backward
  pass made of matmuls and pads, which XLA:CPU runs at close to its matmul speed.
- ``"taps"``: the sum over kernel taps of ``slice @ kernel[i, j]`` (kh*kw matmuls with K = Cin, no
  concatenated copy of the input).
- ``"hybrid"``: a ``custom_vjp`` whose forward, input-gradient and kernel-gradient passes each
  use the formulation :func:`cpu_plan` picks for the layer's geometry (native where XLA:CPU's
  convolution is fast, im2col where XLA:CPU falls into its slow paths: tiny maps, strided
  input gradients, 1x1 kernels, kernel gradients; for the RGB stem's kernel gradient the im2col
  of the space-to-depth input, :func:`conv_s2d`).
- ``"bf16_cols"``: CPU only, opt-in: bfloat16 im2col columns built by compiled C++ XLA FFI
  handlers and contracted by XLA's AMX/AVX512-BF16 matmul with float32 sums
  (:mod:`handprop_jax.model.conv_cols`). Not the same function: the operands of every
  convolution matmul are rounded to bfloat16 (relative error per layer below 1e-2, tested).
- ``"auto"``: resolved per backend by :func:`resolve_impl`: ``"xla"`` on GPU/TPU (cuDNN etc.),
  ``"hybrid"`` on CPU. Measurements: ``benchmarks/train_step.py --layers``.

Padding is given as torchvision does it: explicit ``((top, bottom), (left, right))`` pixels, or
the strings ``"SAME"`` / ``"VALID"`` (resolved with XLA's rules).
"""

from __future__ import annotations

import functools
import operator
from typing import cast

import jax
import jax.numpy as jnp
from jax import lax

from handprop_jax.config import CONV_IMPLS
from handprop_jax.model.conv_cols import conv_bf16_cols
from handprop_jax.model.conv_geometry import Padding, explicit_padding, output_hw, tap_views

IMPLS = CONV_IMPLS  # the values model.conv_impl accepts


# CPU plan thresholds, from per-pass timings (benchmarks/train_step.py --layers) and from the
# per-operation profile of the full 64 px stage-1 step (benchmarks/profile_step.py):
CPU_FWD_XLA_MIN_PIXELS = 16  # native forward conv for k>1 maps of >= 4x4 outputs (2x2 maps: far slower)
CPU_DX_XLA_MIN_PIXELS = 196  # native input-gradient conv for stride 1 and >= 14x14 outputs
CPU_S2D_MAX_CIN = 4  # kernel gradient of strided convs over <= 4 channels (RGB stem) via space-to-depth


def cpu_plan(kernel_hw: tuple[int, int], strides: tuple[int, int], out_hw: tuple[int, int],
             in_channels: int | None = None) -> tuple[str, str, str]:
    """Formulation ("xla", "im2col" or "s2d") of the (forward, input-gradient, kernel-gradient)
    passes of one convolution layer on XLA:CPU, chosen from per-layer timings
    (``benchmarks/train_step.py --layers``) and the step's profile (``benchmarks/profile_step.py``);
    the figures behind each rule are in docs/benchmarks.md:

    - 1x1 convolutions: im2col everywhere (a strided slice and a matmul; XLA's 1x1/2 kernel
      gradient was slower).
    - forward: native for outputs of at least 4x4 pixels (Eigen/YNNPACK's convolution is faster
      than a materialised im2col on large maps); im2col on smaller maps (native 2x2 is far slower).
    - input gradient: native only for stride 1 and outputs >= 14x14; strided layers' input
      gradient (an lhs-dilated convolution in XLA, far slower on small maps) and small maps use the
      im2col transpose.
    - kernel gradient: im2col for every layer (the native kernel gradient of the 3x3 layers on
      large maps cost more than the im2col columns plus one matmul).
      Strided layers over at most ``CPU_S2D_MAX_CIN`` channels (the RGB stem) use the im2col of
      the space-to-depth input ("s2d": 16 taps of 12 channels for the 7x7/2 stem instead of 49
      slices of 3 channels, a fraction of the column copies).
    """
    pixels = out_hw[0] * out_hw[1]
    if max(kernel_hw) == 1:
        return ("im2col", "im2col", "im2col")
    stride1 = tuple(strides) == (1, 1)
    fwd = "xla" if pixels >= CPU_FWD_XLA_MIN_PIXELS else "im2col"
    dx = "xla" if stride1 and pixels >= CPU_DX_XLA_MIN_PIXELS else "im2col"
    few_channels = in_channels is not None and in_channels <= CPU_S2D_MAX_CIN
    return (fwd, dx, "s2d" if few_channels and not stride1 else "im2col")


def resolve_impl(impl: str, backend: str | None = None, kernel_hw: tuple[int, int] | None = None,
                 strides: tuple[int, int] = (1, 1), out_hw: tuple[int, int] | None = None) -> str:
    """Map ``impl`` (one of :data:`IMPLS`) to a concrete formulation for ``backend`` and layer.

    ``"auto"`` is ``"xla"`` on GPU/TPU (where the vendor convolution libraries are the fast path).
    On CPU it is ``"hybrid"`` (see :func:`cpu_plan`) when the layer geometry is given and
    ``"im2col"`` otherwise. ``backend`` defaults to ``jax.default_backend()``.
    """
    if impl not in IMPLS:
        raise ValueError(f"conv_impl {impl!r}: expected one of {IMPLS}")
    backend = backend or jax.default_backend()
    if impl == "bf16_cols" and backend != "cpu":
        raise ValueError(f"conv_impl 'bf16_cols' is a CPU formulation (compiled XLA:CPU FFI handlers); "
                         f"the default backend is {backend!r}: use 'auto' (with model.dtype=bfloat16 "
                         "for bfloat16 convolutions)")
    if impl != "auto":
        return impl
    if backend != "cpu":
        return "xla"
    return "im2col" if kernel_hw is None or out_hw is None else "hybrid"


def fast_cpu_impl() -> str:
    """``"bf16_cols"`` when JAX runs on the CPU and the processor multiplies bfloat16 natively
    (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo), else ``"auto"`` — the demo config's choice: bfloat16
    convolution operands train the demo ~1.35x faster there (docs/benchmarks.md), and elsewhere they
    would be emulated, so every other machine keeps the float32 default."""
    if jax.default_backend() != "cpu":
        return "auto"
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return "auto"
    return "bf16_cols" if (" avx512_bf16" in flags or " amx_bf16" in flags) else "auto"


def conv_xla(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads) -> jax.Array:
    """Native XLA convolution. x (B,H,W,Cin), kernel (kh,kw,Cin,Cout) -> (B,Ho,Wo,Cout)."""
    return lax.conv_general_dilated(x, kernel, strides, pads,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_im2col(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads) -> jax.Array:
    """im2col convolution: concatenated tap views @ reshaped kernel (one matmul)."""
    kh, kw, cin, cout = kernel.shape
    views, ho, wo = tap_views(x, (kh, kw), strides, pads)
    cols = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
    y = cols.reshape(-1, kh * kw * cin) @ kernel.reshape(kh * kw * cin, cout)
    return y.reshape(x.shape[0], ho, wo, cout)


def conv_taps(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads) -> jax.Array:
    """Sum over kernel taps of (tap view @ kernel[i, j]); kh*kw matmuls with K = Cin."""
    kh, kw, cin, cout = kernel.shape
    views, ho, wo = tap_views(x, (kh, kw), strides, pads)
    terms = (v.reshape(-1, cin) @ kernel[t // kw, t % kw] for t, v in enumerate(views))
    return functools.reduce(operator.add, terms).reshape(x.shape[0], ho, wo, cout)  # ((t0 + t1) + t2)...


def conv_s2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads) -> jax.Array:
    """A strided convolution as a stride-1 im2col convolution of the space-to-depth input.

    The padded input is cut into ``sh x sw`` pixel blocks stacked on the channel axis
    (B, H/sh, W/sw, sh*sw*Cin) and the kernel, zero-padded to a multiple of the stride, is
    rearranged to (ceil(kh/sh), ceil(kw/sw), sh*sw*Cin, Cout): output pixel (o, p) reads input
    block (o + i // sh, p + j // sw), phase (i % sh, j % sw) for kernel tap (i, j), so the result is
    the same function with zero-weight taps added. Useful for the ResNet stem (7x7/2 over 3
    channels): 16 taps of 12 channels instead of 49 taps of 3 channels.
    """
    b, h, w, cin = x.shape
    kh, kw, _, cout = kernel.shape
    sh, sw = strides
    (pt, pb), (pl, pr) = pads
    ho, wo = output_hw((h, w), (kh, kw), strides, pads)
    kh2, kw2 = -(-kh // sh), -(-kw // sw)
    hn, wn = (ho - 1 + kh2) * sh, (wo - 1 + kw2) * sw  # padded input extent the blocks cover
    x = jnp.pad(x, ((0, 0), (pt, max(hn - h - pt, 0)), (pl, max(wn - w - pl, 0)), (0, 0)))[:, :hn, :wn]
    xs = (x.reshape(b, hn // sh, sh, wn // sw, sw, cin).transpose(0, 1, 3, 2, 4, 5)
          .reshape(b, hn // sh, wn // sw, sh * sw * cin))
    k = jnp.pad(kernel, ((0, kh2 * sh - kh), (0, kw2 * sw - kw), (0, 0), (0, 0)))
    ks = (k.reshape(kh2, sh, kw2, sw, cin, cout).transpose(0, 2, 1, 3, 4, 5)
          .reshape(kh2, kw2, sh * sw * cin, cout))
    return conv_im2col(xs, ks, (1, 1), ((0, 0), (0, 0)))


_IMPL_FNS = {"xla": conv_xla, "im2col": conv_im2col, "taps": conv_taps, "s2d": conv_s2d}


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_hybrid(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads,
                plan: tuple[str, str, str]) -> jax.Array:
    """Convolution whose forward, input-gradient and kernel-gradient passes each use the
    formulation named in ``plan`` = (forward, dx, dw) (keys of ``_IMPL_FNS``). Same values and
    gradients as any single formulation. Residuals are (x, kernel), except that a "s2d" kernel
    gradient runs the training forward through the space-to-depth columns and keeps them (they
    would otherwise be built twice); without differentiation the forward is ``plan[0]``."""
    return _IMPL_FNS[plan[0]](x, kernel, strides, pads)


def _hybrid_fwd(x, kernel, strides, pads, plan):
    if plan[2] == "s2d":
        y, kernel_vjp = jax.vjp(lambda w_: conv_s2d(x, w_, strides, pads), kernel)
        return y, (x, kernel, kernel_vjp)
    return conv_hybrid(x, kernel, strides, pads, plan), (x, kernel, None)


def _hybrid_bwd(strides, pads, plan, residuals, dy):
    x, kernel, kernel_vjp = residuals
    fx, fw = _IMPL_FNS[plan[1]], _IMPL_FNS[plan[2]]
    (dx,) = jax.vjp(lambda x_: fx(x_, kernel, strides, pads), x)[1](dy)
    if kernel_vjp is None:
        kernel_vjp = jax.vjp(lambda w_: fw(x, w_, strides, pads), kernel)[1]
    (dw,) = kernel_vjp(dy)
    return dx, dw


conv_hybrid.defvjp(_hybrid_fwd, _hybrid_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, strides: int | tuple[int, int] = 1,
           padding: Padding = "SAME", impl: str = "auto") -> jax.Array:
    """2D cross-correlation, NHWC x HWIO -> NHWC, no bias.

    Args:
      x: (B, H, W, Cin) activations.
      kernel: (kh, kw, Cin, Cout) weights.
      strides: int or (sh, sw).
      padding: "SAME", "VALID" or explicit ((top, bottom), (left, right)) pixels.
      impl: one of :data:`IMPLS`; "auto" picks the fast formulation of the default backend.

    Returns:
      (B, Ho, Wo, Cout), dtype of ``x``/``kernel`` promotion; equal to ``lax.conv_general_dilated``.
    """
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError(f"conv2d: expected x (B,H,W,C) and kernel (kh,kw,Cin,Cout), got {x.shape}, "
                         f"{kernel.shape}")
    if x.shape[-1] != kernel.shape[2]:
        raise ValueError(f"conv2d: x has {x.shape[-1]} channels but kernel {kernel.shape} expects "
                         f"{kernel.shape[2]}")
    sh, sw = (strides, strides) if isinstance(strides, int) else strides
    hw, kernel_hw = (x.shape[1], x.shape[2]), (kernel.shape[0], kernel.shape[1])
    pads = explicit_padding(padding, hw, kernel_hw, (sh, sw))
    out_hw = output_hw(hw, kernel_hw, (sh, sw), pads)
    impl = resolve_impl(impl, None, kernel_hw, (sh, sw), out_hw)
    if impl == "hybrid":
        plan = cpu_plan(kernel_hw, (sh, sw), out_hw, x.shape[-1])
        return conv_hybrid(x, kernel, (sh, sw), pads, plan)
    if impl == "bf16_cols":  # (a custom_vjp function: its return type is lost to the checker)
        return cast(jax.Array, conv_bf16_cols(x, kernel, (sh, sw), pads)).astype(jnp.result_type(x, kernel))
    return _IMPL_FNS[impl](x, kernel, (sh, sw), pads)
