"""Build a tfds data set by name and summarise it (used by ``handprop data build`` and the demo).

Registry: ``BUILDERS`` maps a data set name to the module that defines its tfds ``Builder`` (the
``tfds new`` layout under ``datasets/``, installed as ``handprop_datasets``). Importing that module
registers the builder with tfds, so afterwards ``tfds.data_source(NAME, data_dir=DIR, split=...)``
works; it also works without the import (tfds then reads the prepared files).

Hooks a builder may define (all optional):
- ``Builder.builder_kwargs_from_data(data_config, builder_config) -> dict``: constructor arguments
  for a ``DataConfig`` (e.g. {"spec": ...}), or
  ``Builder.config_from_data(data_config, builder_config) -> tfds.core.BuilderConfig | str``: the
  builder config for it; default: {"config": builder_config} (the tfds config name, None = the
  builder's default);
- ``Builder.stale_reason(self) -> str | None``: why prepared files in ``data_dir`` do not match the
  requested config (they are then deleted and rebuilt);
- ``__init__(mano_model=...)``: receives the MANO model path of the run config;
- ``__init__(on_bad_input=...)``: receives ``data.on_bad_input`` ("skip" or "raise");
- ``__init__(manual_dir=...)``: receives the manual dir when building (e.g. to notice changed files);
- skipped items: ``<dataset dir>/skipped.json`` = {"counts": {split: {reason: n}}, "examples": {split:
  [messages]}, "info": {split: {what: n}}}; keys other than the output splits (e.g. "official val",
  "not in splits.json") count what was skipped before an output split was known; the summary gives
  each of them a row of its own.
"""

from __future__ import annotations

import importlib
import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from handprop_jax.config import DataConfig
from handprop_jax.data.videos import video_table

BUILDERS: dict[str, str] = {
    "synthetic_hand_video": "handprop_datasets.synthetic_hand_video.synthetic_hand_video_dataset_builder",
    "ho3d": "handprop_datasets.ho3d.ho3d_dataset_builder",
    "interhand26m": "handprop_datasets.interhand26m.interhand26m_dataset_builder",
    "hand_videos": "handprop_datasets.hand_videos.hand_videos_dataset_builder",
}


def builder_class(name: str) -> type:
    """The tfds Builder class of a registered data set (importing it registers it with tfds)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown data set {name!r}; known: {sorted(BUILDERS)}")
    try:
        module = importlib.import_module(BUILDERS[name])
    except ImportError as e:
        raise ImportError(f"data set {name!r}: cannot import its builder module {BUILDERS[name]}: {e}") from e
    return module.Builder


def make_builder(name: str, data_dir: str | Path, builder_config: str | None = None,
                 data_config: DataConfig | None = None, **builder_kwargs: Any) -> tfds.core.DatasetBuilder:
    """Instantiate the builder of ``name`` writing/reading ``data_dir``.

    Constructor arguments come from the builder's ``builder_kwargs_from_data`` or ``config_from_data``
    hook (module doc) when it defines one, else {"config": builder_config} (the tfds config name;
    None = the builder's default). Extra keyword arguments go to the builder (None values and those its
    ``__init__`` does not take are dropped)."""
    cls = builder_class(name)
    kwargs: dict[str, Any] = {"data_dir": str(data_dir)}
    data_config = data_config or DataConfig(name=name)
    if hasattr(cls, "builder_kwargs_from_data"):
        kwargs.update(cls.builder_kwargs_from_data(data_config, builder_config))
    elif hasattr(cls, "config_from_data"):
        kwargs["config"] = cls.config_from_data(data_config, builder_config)
    elif builder_config is not None:
        kwargs["config"] = builder_config
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in builder_kwargs.items():
        if value is not None and (key in params or (takes_any and key in ("file_format",))):
            kwargs[key] = value
    return cls(**kwargs)


def read_skipped(builder: tfds.core.DatasetBuilder, key: str = "counts") -> dict:
    """{split: {reason: count}} from ``<dataset dir>/skipped.json`` (empty when absent); ``key=
    "examples"``: {split: [the first messages naming the skipped files]}."""
    path = Path(str(builder.data_path)) / "skipped.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        return {}
    return data.get(key, data if key == "counts" else {})


def label_spacing(table) -> float | None:
    """Median number of source frames (``frame_time``) between consecutive labelled frames of a
    video, over a split's videos (None without two labels in one video)."""
    gaps = []
    for v in range(table.num_videos):
        s, n = int(table.starts[v]), int(table.lengths[v])
        flags = table.has_label[s:s + n] if table.has_label is not None else np.ones(n, bool)
        gaps.append(np.diff(table.times(v)[np.nonzero(flags)[0]]))
    gaps = np.concatenate(gaps) if gaps else np.zeros(0)
    return float(np.median(gaps)) if len(gaps) else None


def build(name: str, data_dir: str | Path, manual_dir: str | Path | None = None,
          builder_config: str | None = None, data_config: DataConfig | None = None,
          mano_model: str | None = None, verbose: bool = True) -> dict[str, Any]:
    """Prepare data set ``name`` in ``data_dir`` (no-op when already prepared and not stale) and
    summarise it.

    Returns {"name", "config", "data_dir", "path", "label_stride", "splits": {split: {"videos",
    "frames", "labelled", "skipped": {reason: n}}}}; prints it as a table when ``verbose``. Data sets
    where only some frames carry a label (``has_label``: hand_videos) add per split "labels" (frames
    with a label) and "held_back" (labels outside S_V, scored by the evaluation), and a builder's
    ``summary_notes()`` (if defined) is printed under the table."""
    data_config = data_config or DataConfig(name=name)
    manual = str(manual_dir) if manual_dir else None
    kwargs = {"mano_model": mano_model, "on_bad_input": data_config.on_bad_input, "manual_dir": manual}
    builder = make_builder(name, data_dir, builder_config, data_config, **kwargs)
    stale = builder.stale_reason() if hasattr(builder, "stale_reason") else None
    if stale:
        if verbose:
            print(f"{name}: existing files in {builder.data_path} are stale ({stale}); rebuilding")
        shutil.rmtree(str(builder.data_path))
        builder = make_builder(name, data_dir, builder_config, data_config, **kwargs)
    download_config = tfds.download.DownloadConfig(manual_dir=str(manual_dir) if manual_dir else None)
    builder.download_and_prepare(download_config=download_config)

    skipped = read_skipped(builder)
    report = Path(str(builder.data_path)) / "skipped.json"
    splits = {}
    for split in builder.info.splits:
        source = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
        table = video_table(source, where=f"{name} {split}")
        splits[split] = {"videos": table.num_videos, "frames": table.num_frames,
                         "labelled": int(table.labelled_mask(data_config.label_stride).sum()),
                         "skipped": dict(skipped.get(split, {}))}
        if table.has_label is not None:
            splits[split]["labels"] = int(table.has_label.sum())
            splits[split]["held_back"] = int(table.evaluated_mask(data_config.label_stride).sum())
            splits[split]["label_spacing"] = label_spacing(table)
    summary = {"name": name, "config": builder.builder_config.name if builder.builder_config else None,
               "data_dir": str(data_dir), "path": str(builder.data_path),
               "label_stride": data_config.label_stride, "splits": splits,
               "skip_report": str(report) if report.is_file() else None}
    for split in skipped:  # a split whose every video was skipped is not written, and keys such as
        if split not in splits:  # "official val" count what had no output split yet: still report them
            splits[split] = {"videos": 0, "frames": 0, "labelled": 0, "skipped": dict(skipped[split])}
    summary["examples"] = read_skipped(builder, "examples")
    if verbose:
        print(format_summary(summary))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The build summary as a plain-text table."""
    labelled = f"labelled (K={summary['label_stride']})"
    partial = any("labels" in s for s in summary["splits"].values())
    extra = f"{'labels':>8}{'held back':>11}" if partial else ""
    lines = [f"{summary['name']} ({summary['config']}) in {summary['path']}",
             f"{'split':<8}{'videos':>8}{'frames':>10}{extra}{labelled:>18}  skipped"]
    for split, s in summary["splits"].items():
        skipped = ", ".join(f"{reason}: {n}" for reason, n in s["skipped"].items()) or "none"
        cells = f"{s.get('labels', 0):>8}{s.get('held_back', 0):>11}" if partial else ""
        lines.append(f"{split:<8}{s['videos']:>8}{s['frames']:>10}{cells}{s['labelled']:>18}  {skipped}")
    if partial:
        spacing = [s["label_spacing"] for s in summary["splits"].values() if s.get("label_spacing")]
        if spacing:
            k = summary["label_stride"]
            every = f"{min(spacing):g}" + (f"-{max(spacing):g}" if max(spacing) > min(spacing) else "")
            lines.append(f"labels every {every} frames (median per split); "
                         f"K = {k} keeps " + ("every label for training" if k == 1 else
                                              "labels >= K frames apart, the others held back for "
                                              "`handprop evaluate`"))
    examples = [(split, m) for split, ms in summary.get("examples", {}).items() for m in ms[:5]]
    if examples:
        lines.append(f"skipped (the first per split; all counted in {summary['path']}/skipped.json):")
        lines += [f"  {split}: {message}" for split, message in examples]
    if not examples and summary.get("skip_report") and any(s["skipped"] for s in summary["splits"].values()):
        lines.append(f"what was skipped and why (files, frames): {summary['skip_report']}")
    return "\n".join(lines)
