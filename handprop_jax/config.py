"""Experiment configuration: plain, frozen dataclasses, overridable from the command line.

A config file (``experiments/configs/*.py``) defines ``get_config() -> Config``. Any field can be
overridden with ``--set section.field=value`` (value parsed as a Python literal when possible),
e.g. ``--set train.lr=1e-4 --set data.label_stride=32``.

Each section is owned by one part of the code base; add fields to your own section only.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What data, how it is labelled and how it is sampled (owner: handprop_jax.data)."""

    name: str = "synthetic_hand_video"  # tfds dataset name
    data_dir: str = "data"  # tfds data_dir
    builder_config: str | None = None  # e.g. "v2"/"v3" for ho3d
    image_size: int = 64  # square crop side, pixels
    label_stride: int = 128  # K: every K-th frame is labelled, first and last included
    max_gap: int = 64  # stage 3: |u - s| < max_gap for unlabelled partners
    nearest_labelled: int = 3  # stage 2/3: partner among the n nearest labelled frames (self incl.)
    unlabelled_fraction: float = 0.5  # stage 3: probability that the partner is unlabelled
    rotation_range: float = 0.39269908169872414  # pi/8, radians, in-plane augmentation
    color_jitter: float = 0.2  # brightness/contrast/saturation jitter strength
    augment: bool = True
    num_workers: int = 0  # grain worker processes (0 = in-process)
    seed: int = 0
    z_off: float = 0.4  # metres, depth offset of the root parametrisation (per dataset)
    # synthetic_hand_video generation (ignored by the real-data builders)
    synth_videos: tuple[int, int, int] = (40, 6, 10)  # train, val, test videos
    synth_frames: int = 128  # frames per video
    synth_seed: int = 0  # generation seed of the synthetic videos (data.seed seeds the samplers)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Network shapes (owner: handprop_jax.model)."""

    z_r_stage: int = 3  # ResNet stage (1..4) whose pooled output, projected to 512-d, is z^r
    feature_dim: int = 512
    ncomps: int = 15  # MANO PCA components predicted by the regressor
    freeze_batchnorm: bool = False  # use running BatchNorm statistics in training too
    root_aligner_hidden: int = 128
    root_aligner_blocks: int = 2
    pose_aligner_hidden: int = 512
    pose_aligner_blocks: int = 2
    pose_aligner_scale: float = 3.141592653589793  # radians: Δθ = scale * tanh(.) (heads.py)
    root_depth_unit: float = 1e-3  # metres per pixel of one unit of the regressed d_f (heads.py)
    # "auto" (CPU: per-pass hybrid, GPU: xla), "xla", "im2col", "taps", "hybrid", or "bf16_cols"
    # (CPU only: bfloat16 convolution operands with float32 sums, compiled C++ column builders)
    conv_impl: str = "auto"
    dtype: str = "float32"  # compute dtype: "float32" or "bfloat16"
    encoder_width: int = 64  # ResNet base channels (64 = ResNet-18); tiny test networks use e.g. 8
    torchvision_checkpoint: str | None = None  # optional ResNet-18 .pth to initialise the encoder
    mano_model: str | None = None  # path to MANO_RIGHT.pkl / .npz; None = the synthetic hand


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping (owner: handprop_jax.training)."""

    batch_size: int = 64  # global batch, frames (stage 1) or pairs (stages 2, 3)
    lr: float = 5e-5
    stage1_steps: int = 40_000
    stage2_steps: int = 10_000
    stage3_steps: int = 40_000
    lambda_j: float = 0.5
    lambda_theta: float = 5e-6
    lambda_beta: float = 5e-7
    lambda_align: float = 0.1
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    val_batches: int = 4  # validation batches per evaluation (labelled val frames; best checkpoint)
    seed: int = 0
    distributed: bool = False  # call jax.distributed.initialize() (multi-host)
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation and propagation (owner: handprop_jax.evaluation)."""

    batch_size: int = 64
    splits: tuple[str, ...] = ("train", "test")
    max_frames: int | None = None  # cap per split, for quick looks; None = every unlabelled frame
    # also report the "Propagation (both sides)" row: both neighbouring labelled frames, slerp-blended
    both_sides: bool = True


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "default"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def override(config: Config, assignments: list[str] | tuple[str, ...]) -> Config:
    """Return ``config`` with ``section.field=value`` assignments applied.

    Raises ValueError naming the assignment when the key does not exist.
    """
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected section.field=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        value = _parse_value(text.strip())
        config = _replace_path(config, parts, value, key)
    return config


def _replace_path(obj: Any, parts: list[str], value: Any, key: str) -> Any:
    names = {f.name for f in dataclasses.fields(obj)}
    if parts[0] not in names:
        raise ValueError(f"override {key!r}: {type(obj).__name__} has no field {parts[0]!r}; "
                         f"fields are {sorted(names)}")
    if len(parts) == 1:
        current = getattr(obj, parts[0])
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        return dataclasses.replace(obj, **{parts[0]: value})
    child = getattr(obj, parts[0])
    if not dataclasses.is_dataclass(child):
        raise ValueError(f"override {key!r}: {parts[0]!r} is not a section")
    return dataclasses.replace(obj, **{parts[0]: _replace_path(child, parts[1:], value, key)})


CONFIG_DIR = Path(__file__).resolve().parent.parent / "experiments" / "configs"


def load(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a config by file path or by name (a file in ``experiments/configs``), then override."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.py"
    if not path.is_file():
        available = sorted(p.stem for p in CONFIG_DIR.glob("*.py")) if CONFIG_DIR.is_dir() else []
        raise FileNotFoundError(f"config {name_or_path!r}: no file {path}; available: {available}")
    spec = importlib.util.spec_from_file_location(f"handprop_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} defines no get_config()")
    return override(module.get_config(), overrides)


def to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def from_dict(d: dict) -> Config:
    """Inverse of to_dict (lists become tuples where the field is a tuple)."""

    def build(cls, values):
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in values:
                continue
            v = values[f.name]
            default = getattr(cls(), f.name)
            if dataclasses.is_dataclass(default):
                v = build(type(default), v)
            elif isinstance(default, tuple) and isinstance(v, list):
                v = tuple(v)
            kwargs[f.name] = v
        return cls(**kwargs)

    return build(Config, d)


def save_json(config: Config, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(config), indent=2))


def load_json(path: str | Path) -> Config:
    return from_dict(json.loads(Path(path).read_text()))
