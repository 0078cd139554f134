"""Table I as Markdown, CSV and JSON (``workdir/eval/table1.{md,csv,json}``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from handprop_jax.metrics import COLUMNS, HIGHER_IS_BETTER, ROTATION

META = ("split", "scenario", "model", "frames")


def format_value(column: str, value) -> str:
    """A table cell: F-scores to 3 decimals, errors to 2, "–" for a missing (None or NaN) value."""
    if value is None or value != value:  # NaN
        return "–"
    return f"{value:.3f}" if column in HIGHER_IS_BETTER else f"{value:.2f}"


def markdown(rows: list[dict], title: str | None = None) -> str:
    """A Markdown table: split, scenario, model, frames, then the Table I columns (F@ as fractions,
    errors in mm, arrows say which way is better); the best value per split and column in bold
    (among the rows of scenarios 1 and 2, not the references); last, the side column ``Rot. (°)``: the
    median geodesic error of the global rotation, degrees."""
    header = ["Split", "Scenario", "Model", "Frames"] + [
        f"{c} {'↑' if c in HIGHER_IS_BETTER else '↓'}" for c in COLUMNS] + [f"{ROTATION} ↓"]
    best = {}
    for split in dict.fromkeys(r["split"] for r in rows):
        cands = [r for r in rows if r["split"] == split and r.get("scenario") in (1, 2)]
        for c in COLUMNS:
            vals = [r[c] for r in cands if r[c] == r[c]]
            if vals:
                best[split, c] = max(vals) if c in HIGHER_IS_BETTER else min(vals)
    lines = []
    if title:
        lines += [f"**{title}** (errors in mm; F-scores as fractions)", ""]
    align = ["---"] * 4 + ["---:"] * (len(COLUMNS) + 1)
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for r in rows:
        cells = [str(r["split"]), str(r.get("scenario", "")), str(r["model"]), str(r.get("frames", ""))]
        for c in COLUMNS:
            text = format_value(c, r.get(c))
            if r.get("scenario") in (1, 2) and best.get((r["split"], c)) == r.get(c):
                text = f"**{text}**"
            cells.append(text)
        cells.append(format_value(ROTATION, r.get(ROTATION)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(rows: list[dict], out_dir: str | Path) -> dict[str, Path]:
    """Write table1.md, table1.csv (full precision) and table1.json (the rows as given)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "table1.md", "csv": out / "table1.csv", "json": out / "table1.json"}
    paths["md"].write_text(markdown(rows) + "\n")
    with paths["csv"].open("w", newline="") as f:
        fields = list(META) + list(COLUMNS) + [ROTATION]
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in fields})
    paths["json"].write_text(json.dumps(rows, indent=2))
    return paths
