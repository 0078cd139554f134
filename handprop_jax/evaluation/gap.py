"""Error as a function of the frame gap |u - N(u)| (``workdir/eval/gap.{csv,md,png}``).

The gap is measured in source frames, |t_u - t_N(u)| of the stored ``frame_time``s, so frames missing
from a video (skipped bad input) do not shrink it. Gaps are grouped in powers of two: 1, 2-3, 4-7,
8-15, ... (the largest gap is about K/2, up to K next to a missing labelled frame).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from handprop_jax.metrics import COLUMNS, HIGHER_IS_BETTER


def gap_bins(max_gap: int) -> list[tuple[int, int]]:
    """[(lo, hi)] inclusive bins 1, 2-3, 4-7, ... covering 1..max_gap."""
    bins, lo = [], 1
    while lo <= max(max_gap, 1):
        bins.append((lo, 2 * lo - 1))
        lo *= 2
    return bins


def gap_rows(results: dict[str, tuple[dict, np.ndarray]]) -> list[dict]:
    """Rows {"split", "model", "gap_lo", "gap_hi", "gap_mean", "frames", <column>: mean} per split,
    row and bin
    (bins without frames are left out). ``results`` = {split: ({row: {column: (N,)}}, gap (N,))}."""
    rows = []
    for split, (per_row, gap) in results.items():
        gap = np.asarray(gap)
        if gap.size == 0:
            continue
        for lo, hi in gap_bins(int(gap.max())):
            sel = (gap >= lo) & (gap <= hi)
            if not sel.any():
                continue
            for name, cols in per_row.items():
                rows.append({"split": split, "model": name, "gap_lo": lo, "gap_hi": hi,
                             "gap_mean": float(gap[sel].mean()), "frames": int(sel.sum()),
                             **{c: float(np.asarray(cols[c])[sel].mean()) for c in COLUMNS}})
    return rows


def markdown(rows: list[dict], column: str = "MPJPE") -> str:
    """One table per split: gap bins down, models across, ``column`` values."""
    out = []
    for split in dict.fromkeys(r["split"] for r in rows):
        sub = [r for r in rows if r["split"] == split]
        models = list(dict.fromkeys(r["model"] for r in sub))
        bins = list(dict.fromkeys((r["gap_lo"], r["gap_hi"]) for r in sub))
        unit = "" if column in HIGHER_IS_BETTER else " (mm)"
        out += [f"**{split}: {column}{unit} vs frame gap |u − N(u)|**", "",
                "| gap | frames | " + " | ".join(models) + " |", "|---|---:|" + "---:|" * len(models)]
        for lo, hi in bins:
            cells = {r["model"]: r[column] for r in sub if (r["gap_lo"], r["gap_hi"]) == (lo, hi)}
            n = next(r["frames"] for r in sub if (r["gap_lo"], r["gap_hi"]) == (lo, hi))
            label = str(lo) if lo == hi else f"{lo}–{hi}"
            out.append(f"| {label} | {n} | " + " | ".join(f"{cells[m]:.2f}" if m in cells else "–"
                                                          for m in models) + " |")
        out.append("")
    return "\n".join(out)


def plot(rows: list[dict], path: str | Path, column: str = "MPJPE") -> None:
    """PNG: ``column`` vs gap (log2 axis), one panel per split, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(dict.fromkeys(r["split"] for r in rows)) or ["(no data)"]
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        sub = [r for r in rows if r["split"] == split]
        for model in dict.fromkeys(r["model"] for r in sub):
            pts = [r for r in sub if r["model"] == model]
            x = [r["gap_mean"] for r in pts]  # mean gap of the bin's frames
            ax.plot(x, [r[column] for r in pts], marker="o", label=model)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("frame gap |u − N(u)| (mean of the bin)")
        ax.set_ylabel(column + ("" if column in HIGHER_IS_BETTER else " (mm)"))
        ax.set_title(split)
        ax.grid(alpha=0.3)
        if sub:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(results: dict[str, tuple[dict, np.ndarray]], out_dir: str | Path) -> list[dict]:
    """Write gap.csv (every column), gap.md and gap.png (MPJPE). Returns the rows."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = gap_rows(results)
    fields = ["split", "model", "gap_lo", "gap_hi", "gap_mean", "frames", *COLUMNS]
    with (out / "gap.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    (out / "gap.md").write_text(markdown(rows))
    plot(rows, out / "gap.png")
    return rows
