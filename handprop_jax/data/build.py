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
- skipped items: ``<dataset dir>/skipped.json`` = {"counts": {split: {reason: n}}, "examples": {split:
  [messages]}, "info": {split: {what: n}}}; keys other than the output splits (e.g. "official val")
  count what was skipped before an output split was known.
"""

from __future__ import annotations

import importlib
import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from handprop_jax.config import DataConfig
from handprop_jax.data.videos import video_table

BUILDERS: dict[str, str] = {
    "synthetic_hand_video": "handprop_datasets.synthetic_hand_video.synthetic_hand_video_dataset_builder",
    "ho3d": "handprop_datasets.ho3d.ho3d_dataset_builder",
    "interhand26m": "handprop_datasets.interhand26m.interhand26m_dataset_builder",
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


def read_skipped(builder: tfds.core.DatasetBuilder) -> dict[str, dict[str, int]]:
    """{split: {reason: count}} from ``<dataset dir>/skipped.json`` (empty when absent)."""
    path = Path(str(builder.data_path)) / "skipped.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data.get("counts", data) if isinstance(data, dict) else {}


def build(name: str, data_dir: str | Path, manual_dir: str | Path | None = None,
          builder_config: str | None = None, data_config: DataConfig | None = None,
          mano_model: str | None = None, verbose: bool = True) -> dict[str, Any]:
    """Prepare data set ``name`` in ``data_dir`` (no-op when already prepared and not stale) and
    summarise it.

    Returns {"name", "config", "data_dir", "path", "label_stride", "splits": {split: {"videos",
    "frames", "labelled", "skipped": {reason: n}}}}; prints it as a table when ``verbose``."""
    data_config = data_config or DataConfig(name=name)
    kwargs = {"mano_model": mano_model, "on_bad_input": data_config.on_bad_input}
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
    summary = {"name": name, "config": builder.builder_config.name if builder.builder_config else None,
               "data_dir": str(data_dir), "path": str(builder.data_path),
               "label_stride": data_config.label_stride, "splits": splits,
               "skipped_elsewhere": {k: dict(v) for k, v in skipped.items() if k not in splits},
               "skip_report": str(report) if report.is_file() else None}
    if verbose:
        print(format_summary(summary))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The build summary as a plain-text table."""
    labelled = f"labelled (K={summary['label_stride']})"
    lines = [f"{summary['name']} ({summary['config']}) in {summary['path']}",
             f"{'split':<8}{'videos':>8}{'frames':>10}{labelled:>18}  skipped"]
    for split, s in summary["splits"].items():
        skipped = ", ".join(f"{reason}: {n}" for reason, n in s["skipped"].items()) or "none"
        lines.append(f"{split:<8}{s['videos']:>8}{s['frames']:>10}{s['labelled']:>18}  {skipped}")
    for where, counts in summary.get("skipped_elsewhere", {}).items():
        lines.append(f"{where}: skipped " + ", ".join(f"{reason}: {n}" for reason, n in counts.items()))
    if summary.get("skip_report") and (any(s["skipped"] for s in summary["splits"].values())
                                        or summary.get("skipped_elsewhere")):
        lines.append(f"what was skipped and why (files, frames): {summary['skip_report']}")
    return "\n".join(lines)
