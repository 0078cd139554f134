"""Max pooling (NHWC) with a backward pass that XLA:CPU runs fast.

``jax.grad`` of ``lax.reduce_window(max)`` lowers to a variadic reduce-window over (value, index)
pairs built from four full-size integer iotas plus a scatter, which was a large share of the CPU
train step's operation time for the single stem max-pool (``benchmarks/profile_step.py``; figures
in docs/benchmarks.md). :func:`max_pool` computes the same
function with a ``custom_vjp`` whose backward pass is one elementwise pass per window tap: the
gradient of each output goes to the *first* maximal input of its window in row-major (i, j)
order, PyTorch's rule (``max_pool2d`` keeps the first index on ties). Ties only matter where
inputs are exactly equal, e.g. zeros after a ReLU, whose gradient the ReLU discards anyway.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from handprop_jax.model.conv_geometry import tap_views


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jax.Array, window: int = 3, stride: int = 2, padding: int = 1) -> jax.Array:
    """Max over ``window x window`` patches of ``x`` every ``stride`` pixels, ``padding`` pixels of
    -inf on each side (torch ``MaxPool2d(window, stride, padding)``).

    Args:
      x: (B, H, W, C) activations (any float dtype).
    Returns:
      (B, Ho, Wo, C) with Ho = (H + 2 padding - window) // stride + 1 (same for W).
    """
    if min(x.shape[1:3]) + 2 * padding < window:
        raise ValueError(f"max_pool: input {x.shape} too small for window {window}, padding {padding}")
    return lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), lax.max, (1, window, window, 1),
                             (1, stride, stride, 1), ((0, 0), (padding, padding), (padding, padding), (0, 0)))


def _max_pool_fwd(x, window, stride, padding):
    y = max_pool(x, window, stride, padding)
    return y, (x, y)


def _max_pool_bwd(window, stride, padding, residuals, dy):
    x, y = residuals
    p = padding
    views, ho, wo = tap_views(x, (window, window), (stride, stride), ((p, p), (p, p)), -jnp.inf)
    # Index of the first tap holding the maximum (taps visited last to first, earlier ones win).
    index_dtype = jnp.int8 if len(views) < 128 else jnp.int32
    first = jnp.full(y.shape, len(views), index_dtype)
    for t in reversed(range(len(views))):
        first = jnp.where(views[t] == y, jnp.asarray(t, index_dtype), first)
    b, h, w, c = x.shape
    hp, wp = h + 2 * p, w + 2 * p  # the padded input the views were cut from
    dxp = jnp.zeros((b, hp, wp, c), dy.dtype)
    zero = jnp.zeros((), dy.dtype)
    for t in range(len(views)):
        i, j = divmod(t, window)
        routed = jnp.where(first == t, dy, zero)
        dxp = dxp + lax.pad(routed, zero, ((0, 0, 0), (i, hp - i - stride * (ho - 1) - 1, stride - 1),
                                           (j, wp - j - stride * (wo - 1) - 1, stride - 1), (0, 0, 0)))
    return (dxp[:, p:p + h, p:p + w],)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
