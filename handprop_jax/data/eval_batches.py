"""Evaluation batches (Table I): scenario 1 (every evaluated frame, with labels) and scenario 2
(every (evaluated u, N(u)) pair), in video/frame order, no shuffling, last batch padded.

The evaluated frames are those with a label outside the labelled set S_V (``Split.evaluated``: every
unlabelled frame of the dense data sets); batch formats in docs/design.md ("Batches").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from handprop_jax.config import DataConfig
from handprop_jax.data.sources import Split, open_split


def eval_items(sp: Split, scenario: int, max_items: int | None = None) -> dict[str, np.ndarray]:
    """Positions evaluated in a scenario, in video/frame order: {"u": (M,)} (scenario 1) or
    {"u", "s", "gap"} (scenario 2). ``max_items`` keeps an evenly spaced subset. u = every frame
    with a label outside S_V (``Split.evaluated``: every unlabelled frame of the dense data sets)."""
    u = np.nonzero(sp.evaluated)[0]
    if max_items is not None and len(u) > max_items:
        u = u[np.linspace(0, len(u) - 1, max_items).round().astype(int)]
    if scenario == 1:
        return {"u": u}
    if scenario == 2:
        s = sp.nearest[u]
        return {"u": u, "s": s, "gap": np.abs(sp.table.time[u] - sp.table.time[s])}
    raise ValueError(f"scenario must be 1 or 2, got {scenario!r}")


def eval_batches(data_config: DataConfig, split: str, scenario: int, batch_size: int,
                 max_items: int | None = None, split_data: Split | None = None) -> Iterator[dict[str, Any]]:
    """Evaluation batches (design.md), no shuffling, last batch padded (``mask`` False on padding).

    Scenario 1: frame dicts of every unlabelled frame, with labels, plus ``mask`` (B,).
    Scenario 2: {"s": N(u) with labels, "u": unlabelled u with labels, "gap" (B,), "mask" (B,)}."""
    sp = split_data or open_split(data_config, split)
    items = eval_items(sp, scenario, max_items)
    n = len(items["u"])
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        mask = idx < n
        idx = np.where(mask, idx, max(n - 1, 0))
        if scenario == 1:
            batch = sp.frames(items["u"][idx], with_labels=True)
        else:
            batch = {"s": sp.frames(items["s"][idx]), "u": sp.frames(items["u"][idx]),
                     "gap": items["gap"][idx].astype(np.int32)}
        batch["mask"] = mask
        yield batch
