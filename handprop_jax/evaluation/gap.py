"""Error as a function of the frame gap |u - N(u)| (``workdir/eval/gap.{csv,md,png}``).

The gap is measured in source frames, |t_u - t_N(u)| of the stored ``frame_time``s, so frames missing
from a video (skipped bad input) do not shrink it. Gaps are grouped in powers of two: 1, 2-3, 4-7,
8-15, ... (the largest gap is about K/2, up to K next to a missing labelled frame).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from handprop_jax.evaluation.rows import MODEL_ROWS
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


#: line style by Table I scenario: predictors (1) solid, propagation (2) dashed, references dotted
SCENARIO_STYLE = {1: ("-", "predictor (scenario 1)"), 2: ("--", "propagation (scenario 2)"),
                  "ref": (":", "reference")}


def _style(model: str) -> str:
    """The line style of a Table I row (dash-dot for a name that is no row)."""
    return SCENARIO_STYLE.get(MODEL_ROWS.get(model), ("-.", ""))[0]


def colours(models: list[str]) -> dict[str, tuple]:
    """One distinct colour per model name (tab20's 20 colours, dark shades first, then tab20b's)."""
    import matplotlib

    palette = [matplotlib.colormaps["tab20"](i) for i in (*range(0, 20, 2), *range(1, 20, 2))]
    palette += [matplotlib.colormaps["tab20b"](i) for i in range(20)]
    return {m: palette[i % len(palette)] for i, m in enumerate(models)}


def plot(rows: list[dict], path: str | Path, column: str = "MPJPE") -> None:
    """PNG: ``column`` vs gap (log2 axis), one panel per split (a protocol's split, e.g. "test (user
    crops)", is a panel of its own), one line per model: a distinct colour per model (the same in
    every panel), the line style by scenario (:data:`SCENARIO_STYLE`), one legend outside the axes;
    errors on a log axis (the mean pose is ~10x the propagation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    from matplotlib.lines import Line2D

    splits = list(dict.fromkeys(r["split"] for r in rows)) or ["(no data)"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    colour = colours(models)
    fig, axes = plt.subplots(1, len(splits), figsize=(5.0 * len(splits) + 3.2, 4.2), squeeze=False,
                             sharey=True)
    for ax, split in zip(axes[0], splits, strict=True):
        sub = [r for r in rows if r["split"] == split]
        for model in dict.fromkeys(r["model"] for r in sub):
            pts = [r for r in sub if r["model"] == model]
            x = [r["gap_mean"] for r in pts]  # mean gap of the bin's frames
            ax.plot(x, [r[column] for r in pts], marker="o", markersize=3.5, linestyle=_style(model),
                    color=colour[model], label=model)
        ax.set_xscale("log", base=2)
        if column not in HIGHER_IS_BETTER:  # errors from ~5 mm (propagation) to ~150 (mean pose)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("frame gap |u − N(u)| (mean of the bin)")
        ax.set_title(split)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(column + ("" if column in HIGHER_IS_BETTER else " (mm)"))
    handles = [Line2D([], [], color=colour[m], marker="o", markersize=3.5, linestyle=_style(m), label=m)
               for m in models]
    handles += [Line2D([], [], color="grey", linestyle=st, label=text)
                for st, text in SCENARIO_STYLE.values()]
    if models:
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
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
