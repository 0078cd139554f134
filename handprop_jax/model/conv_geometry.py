"""Window geometry shared by the convolutions (``conv``, ``conv_cols``) and the max-pool (``pool``):
padding resolution, output sizes and the shifted strided views of an input, one per window tap.

Conventions: NHWC activations; ``pads`` = ``((top, bottom), (left, right))`` pixels; window and
strides as (rows, columns).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

Padding = str | Sequence[tuple[int, int]]
Pads = tuple[tuple[int, int], tuple[int, int]]


def explicit_padding(padding: Padding, in_hw: tuple[int, int], kernel_hw: tuple[int, int],
                     strides: tuple[int, int]) -> Pads:
    """Resolve ``padding`` ("SAME", "VALID" with XLA's rules, or explicit pixels) to
    ``((top, bottom), (left, right))``."""
    if isinstance(padding, str):
        pads = lax.padtype_to_pads(in_hw, kernel_hw, strides, padding.upper())
        return tuple((int(a), int(b)) for a, b in pads)  # type: ignore[return-value]
    pads = tuple((int(a), int(b)) for a, b in padding)
    if len(pads) != 2:
        raise ValueError(f"padding {padding!r}: expected ((top, bottom), (left, right))")
    return pads  # type: ignore[return-value]


def output_size(n: int, k: int, s: int, lo: int, hi: int) -> int:
    """Outputs along one axis of length ``n`` for a window of ``k`` taps, stride ``s`` and ``lo``/``hi``
    pixels of padding: ``(n + lo + hi - k) // s + 1`` (<= 0 when the window does not fit)."""
    return (n + lo + hi - k) // s + 1


def output_hw(in_hw: Sequence[int], kernel_hw: Sequence[int], strides: Sequence[int],
              pads: Pads) -> tuple[int, int]:
    """(Ho, Wo) of a window over an (H, W) input (see :func:`output_size`)."""
    return tuple(output_size(in_hw[a], kernel_hw[a], strides[a], *pads[a]) for a in range(2))  # type: ignore


def tap_views(x: jax.Array, kernel_hw: tuple[int, int], strides: tuple[int, int], pads: Pads,
              pad_value: float = 0.0) -> tuple[list[jax.Array], int, int]:
    """Shifted strided views of the input padded with ``pad_value``, one per kernel (or pooling
    window) tap, in (i, j) row-major order.

    Returns the list of kh*kw arrays, each (B, Ho, Wo, C), and (Ho, Wo).
    """
    kh, kw = kernel_hw
    sh, sw = strides
    (pt, pb), (pl, pr) = pads
    ho, wo = output_hw(x.shape[1:3], kernel_hw, strides, pads)
    if ho <= 0 or wo <= 0:
        raise ValueError(f"input {x.shape} too small for window {kernel_hw}, padding {pads}")
    if any(p for pair in pads for p in pair):
        x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)
    views = []
    for i in range(kh):
        for j in range(kw):
            views.append(lax.slice(x, (0, i, j, 0),
                                   (x.shape[0], i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, x.shape[3]),
                                   (1, sh, sw, 1)))
    return views, ho, wo
