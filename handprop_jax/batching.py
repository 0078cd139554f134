"""Batching helpers for pytrees of arrays (numpy on the host; used by the propagation, the
evaluation, the visual report and the training loop).

- :func:`batched` ``(fn, *args, batch_size)``: apply a (jitted) function in fixed-size batches;
- :func:`rows` ``(tree, index)``: rows of every leaf of a pytree;
- :func:`numeric_batch` ``(batch)``: the array entries of a batch dict (drops text such as
  ``video_name``), what a jitted step is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def batched(fn: Callable, *args: Any, batch_size: int) -> Any:
    """``fn(*args)`` for pytrees of arrays with a common leading axis M, in batches of ``batch_size``.

    The last batch is padded (by repeating its last row) to ``batch_size``, so a jitted ``fn`` compiles
    once; the outputs (any pytree, e.g. a Gamma) come back as numpy arrays, concatenated and cut back
    to M rows."""
    leaves = jax.tree_util.tree_leaves(args)
    m = leaves[0].shape[0] if leaves else 0
    outs = []
    for start in range(0, m, batch_size):
        stop = min(start + batch_size, m)
        idx = np.minimum(np.arange(start, start + batch_size), stop - 1)
        res = fn(*rows(args, idx))
        outs.append(jax.tree_util.tree_map(lambda y, n=stop - start: np.asarray(y)[:n], res))
    if not outs:
        raise ValueError("batched: nothing to process (0 rows)")
    return jax.tree_util.tree_map(lambda *ys: np.concatenate(ys, 0), *outs)


def rows(tree: Any, index: Any) -> Any:
    """Rows ``index`` of every leaf of a pytree (numpy)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[index], tree)


def numeric_batch(batch: dict) -> dict:
    """Keep the array entries a step uses (drops text such as video_name)."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out[k] = numeric_batch(v)
        elif hasattr(v, "dtype") and getattr(v.dtype, "kind", "O") in "biuf":
            out[k] = v
    return out
