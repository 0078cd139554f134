"""2D convolution (NHWC activations, HWIO kernels) with interchangeable formulations.

All formulations compute exactly the same function as
``jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))``
(up to float rounding); they differ only in which XLA operations they lower to, because XLA:CPU's
native convolution is very slow on some shapes (the backward pass of a 3x3 convolution on a
2x2x512 map is ~80x slower than the same maths written as a matmul; see
``/work/shared/bench/xla_cpu_conv_micro.py``).

- ``"xla"``: ``lax.conv_general_dilated`` (the natural choice on GPU/TPU: cuDNN and friends).
- ``"im2col"``: the kernel taps are gathered as shifted, strided slices of the padded input,
  concatenated on the channel axis and contracted with the reshaped kernel in ONE matmul
  ``(B*Ho*Wo, kh*kw*Cin) @ (kh*kw*Cin, Cout)``. Autodiff of slices/concat/matmul gives a backward
  pass made of matmuls and pads, which XLA:CPU runs at close to its matmul speed.
- ``"taps"``: the sum over kernel taps of ``slice @ kernel[i, j]`` (kh*kw matmuls with K = Cin, no
  concatenated copy of the input).
- ``"auto"``: resolved per backend *and per layer* by :func:`resolve_impl`: on GPU/TPU always
  ``"xla"``; on CPU ``"xla"`` for stride-1 spatial kernels whose output map has at least
  ``CPU_XLA_MIN_PIXELS`` pixels (where XLA:CPU's native convolution was measured as fast or
  faster) and ``"im2col"`` for everything else (strided, 1x1 and small maps, where the native
  convolution's backward pass is up to ~100x slower). Measurements: ``benchmarks/train_step.py
  --layers``.

Padding is given as torchvision does it: explicit ``((top, bottom), (left, right))`` pixels, or
the strings ``"SAME"`` / ``"VALID"`` (resolved with XLA's rules).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("xla", "im2col", "taps", "auto")

Padding = str | Sequence[tuple[int, int]]


CPU_XLA_MIN_PIXELS = 64  # "auto" on CPU: native conv for stride-1 kxk (k > 1) maps with >= 8x8 outputs


def resolve_impl(impl: str, backend: str | None = None, kernel_hw: tuple[int, int] | None = None,
                 strides: tuple[int, int] = (1, 1), out_hw: tuple[int, int] | None = None) -> str:
    """Map ``impl`` (one of :data:`IMPLS`) to a concrete formulation for ``backend`` and layer.

    ``"auto"`` is ``"xla"`` on GPU/TPU (where the vendor convolution libraries are the fast path).
    On CPU it is ``"xla"`` for a stride-1 convolution with a spatial kernel and an output of at
    least :data:`CPU_XLA_MIN_PIXELS` pixels, ``"im2col"`` otherwise (and ``"im2col"`` when the
    layer geometry is not given). ``backend`` defaults to ``jax.default_backend()``.
    """
    if impl not in IMPLS:
        raise ValueError(f"conv_impl {impl!r}: expected one of {IMPLS}")
    if impl != "auto":
        return impl
    backend = backend or jax.default_backend()
    if backend != "cpu":
        return "xla"
    if (kernel_hw is not None and out_hw is not None and tuple(strides) == (1, 1)
            and max(kernel_hw) > 1 and out_hw[0] * out_hw[1] >= CPU_XLA_MIN_PIXELS):
        return "xla"
    return "im2col"


def explicit_padding(padding: Padding, in_hw: tuple[int, int], kernel_hw: tuple[int, int],
                     strides: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Resolve ``padding`` to ``((top, bottom), (left, right))`` pixels."""
    if isinstance(padding, str):
        pads = lax.padtype_to_pads(in_hw, kernel_hw, strides, padding.upper())
        return tuple((int(a), int(b)) for a, b in pads)  # type: ignore[return-value]
    pads = tuple((int(a), int(b)) for a, b in padding)
    if len(pads) != 2:
        raise ValueError(f"padding {padding!r}: expected ((top, bottom), (left, right))")
    return pads  # type: ignore[return-value]


def _out_size(n: int, k: int, s: int, lo: int, hi: int) -> int:
    return (n + lo + hi - k) // s + 1


def _taps(x: jax.Array, kernel_hw: tuple[int, int], strides: tuple[int, int],
          pads: tuple[tuple[int, int], tuple[int, int]]) -> tuple[list[jax.Array], int, int]:
    """Shifted strided views of the padded input, one per kernel tap, in (i, j) row-major order.

    Returns the list of kh*kw arrays, each (B, Ho, Wo, Cin), and (Ho, Wo).
    """
    kh, kw = kernel_hw
    sh, sw = strides
    (pt, pb), (pl, pr) = pads
    ho = _out_size(x.shape[1], kh, sh, pt, pb)
    wo = _out_size(x.shape[2], kw, sw, pl, pr)
    if ho <= 0 or wo <= 0:
        raise ValueError(f"conv: input {x.shape} too small for kernel {kernel_hw}, padding {pads}")
    if any(p for pair in pads for p in pair):
        x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    views = []
    for i in range(kh):
        for j in range(kw):
            views.append(lax.slice(x, (0, i, j, 0),
                                   (x.shape[0], i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, x.shape[3]),
                                   (1, sh, sw, 1)))
    return views, ho, wo


def conv_xla(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads) -> jax.Array:
    """Native XLA convolution. x (B,H,W,Cin), kernel (kh,kw,Cin,Cout) -> (B,Ho,Wo,Cout)."""
    return lax.conv_general_dilated(x, kernel, strides, pads,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_im2col(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads) -> jax.Array:
    """im2col convolution: concatenated tap views @ reshaped kernel (one matmul)."""
    kh, kw, cin, cout = kernel.shape
    views, ho, wo = _taps(x, (kh, kw), strides, pads)
    cols = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
    y = cols.reshape(-1, kh * kw * cin) @ kernel.reshape(kh * kw * cin, cout)
    return y.reshape(x.shape[0], ho, wo, cout)


def conv_taps(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads) -> jax.Array:
    """Sum over kernel taps of (tap view @ kernel[i, j]); kh*kw matmuls with K = Cin."""
    kh, kw, cin, cout = kernel.shape
    views, ho, wo = _taps(x, (kh, kw), strides, pads)
    y = None
    for t, v in enumerate(views):
        term = v.reshape(-1, cin) @ kernel[t // kw, t % kw]
        y = term if y is None else y + term
    return y.reshape(x.shape[0], ho, wo, cout)


_IMPL_FNS = {"xla": conv_xla, "im2col": conv_im2col, "taps": conv_taps}


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
    strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
    pads = explicit_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
    out_hw = tuple(_out_size(x.shape[1 + a], kernel.shape[a], strides[a], *pads[a]) for a in range(2))
    return _IMPL_FNS[resolve_impl(impl, None, kernel.shape[:2], strides, out_hw)](x, kernel, strides, pads)
