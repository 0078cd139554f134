"""Experiment configuration: plain, frozen dataclasses, overridable from the command line.

A config file (``experiments/configs/*.py``) defines ``get_config() -> Config``. Any field can be
overridden with ``--set section.field=value``, e.g. ``--set train.lr=1e-4 --set data.label_stride=32``.
The value is parsed as a Python literal (``1e-4``, ``(40, 6, 10)``, ``None``, ``True``; text fields
take the text as it is) and checked against the field's declared type — ``int``, ``float`` (an int
is accepted), ``bool``, ``str``, ``X | None``, tuples of ints or strings — and against the allowed
values or range declared next to the field (``field(..., choices=...)`` / ``ge=`` / ``gt=`` /
``le=``). A wrong value raises a ValueError naming the field, what it expects and the given text;
:func:`load` checks every field of a config file the same way.

Each section is owned by one part of the code base; add fields to your own section only.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from handprop_jax.errors import UserError


class ConfigError(UserError, ValueError):
    """A config value or ``--set`` assignment that does not fit its field (the message names the field,
    what it expects and the given text). The ``handprop`` command reports it in one line, exit code 2."""


#: ``model.conv_impl`` values (handprop_jax.model.conv)
CONV_IMPLS = ("xla", "im2col", "taps", "hybrid", "bf16_cols", "auto")
#: ``model.global_rotation`` values (handprop_jax.model.heads)
GLOBAL_ROTATIONS = ("6d", "axis_angle")
#: ``train.pred_objective`` values (handprop_jax.losses): the decoupled default, the paper's Eq. 6
PRED_OBJECTIVES = ("decoupled", "paper")
#: ``model.dtype`` values
DTYPES = ("float32", "bfloat16")


def field(default: Any, *, choices: tuple | None = None, ge: float | None = None, gt: float | None = None,
          le: float | None = None) -> Any:
    """A config field with its allowed values (``choices``) or range (``ge``: >=, ``gt``: >, ``le``:
    <=; for tuples, every element) — checked by :func:`override` and :func:`validate`."""
    rules = {k: v for k, v in (("choices", choices), ("ge", ge), ("gt", gt), ("le", le)) if v is not None}
    return dataclasses.field(default=default, metadata=rules)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What data, how it is labelled and how it is sampled (owner: handprop_jax.data)."""

    name: str = "synthetic_hand_video"  # tfds dataset name
    data_dir: str = "data"  # tfds data_dir
    builder_config: str | None = None  # e.g. "v2"/"v3" for ho3d
    image_size: int = field(64, ge=16)  # square crop side, pixels
    label_stride: int = field(128, ge=1)  # K: every K-th frame is labelled, first and last included
    max_gap: int = field(64, ge=1)  # stage 3: |u - s| < max_gap for unlabelled partners
    nearest_labelled: int = field(3, ge=1)  # stage 2/3: partner among the n nearest labelled frames
    unlabelled_fraction: float = field(0.5, ge=0, le=1)  # stage 3: probability of an unlabelled partner
    rotation_range: float = field(0.39269908169872414, ge=0)  # pi/8, radians, in-plane augmentation
    # the in-plane rotation turns the image about the crop centre, or (the earlier rule) the principal point
    rotate_about: str = field("crop_centre", choices=("crop_centre", "principal_point"))
    color_jitter: float = field(0.2, ge=0)  # brightness/contrast/saturation jitter strength
    augment: bool = True
    num_workers: int = field(0, ge=0)  # grain worker processes (0 = in-process)
    seed: int = 0
    z_off: float = field(0.4, gt=0)  # metres, depth offset of the root parametrisation (per dataset)
    # synthetic_hand_video generation (ignored by the real-data builders)
    synth_videos: tuple[int, int, int] = field((40, 6, 10), ge=0)  # train, val, test videos
    synth_frames: int = field(128, ge=1)  # frames per video
    synth_seed: int = 0  # generation seed of the synthetic videos (data.seed seeds the samplers)
    # "target" (the demo's videos) or "source" (the differently styled pretraining set, handprop pretrain)
    synth_style: str = field("target", choices=("target", "source"))
    # real-data builders (handprop data build ho3d / interhand26m; None = the builder's default, which
    # follows the paper). Stored in the built data set's metadata: a data set built with other values
    # is refused (rebuilt by `handprop data build`).
    on_bad_input: str = field("skip", choices=("skip", "raise"))  # a bad frame: skip and count, or stop
    # crop side / extent; None: the builder's default (HO-3D, InterHand2.6M: 1.5 x the projected joints'
    # extent; hand_videos: 1.2 x the projected mesh's, the synthetic crops' rule, data.boxes)
    crop_scale: float | None = field(None, gt=0)
    min_visible: float | None = field(None, ge=0, le=1)  # joints that must project inside the frame (0.5)
    ho3d_val_sequences: tuple[str, ...] | None = None  # Mini-HO-3D val sequences (ABF11, BB12, GPMF13, GSF14)
    ho3d_test_sequences: tuple[str, ...] | None = None  # Mini-HO-3D test sequences (12 named)
    interhand_min_length: int | None = field(None, ge=1)  # Mini-InterHand: frames a video needs (1000)
    interhand_num_val: int | None = field(None, ge=1)  # last filtered official-val videos forming val (25)
    interhand_num_test: int | None = field(None, ge=1)  # filtered official-test videos drawn for test (100)
    interhand_test_seed: int | None = None  # seed of that draw (0)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Network shapes (owner: handprop_jax.model)."""

    z_r_stage: int = field(3, choices=(1, 2, 3, 4))  # ResNet stage whose pooled output, projected, is z^r
    feature_dim: int = field(512, ge=1)
    ncomps: int = field(15, ge=1, le=45)  # MANO PCA components predicted by the regressor
    freeze_batchnorm: bool = False  # use running BatchNorm statistics in training too
    root_aligner_hidden: int = field(128, ge=1)
    root_aligner_blocks: int = field(2, ge=0)
    pose_aligner_hidden: int = field(512, ge=1)
    pose_aligner_blocks: int = field(2, ge=0)
    pose_aligner_scale: float = field(3.141592653589793, gt=0)  # radians: Δθ = scale * tanh(.) (heads.py)
    root_depth_unit: float = field(1e-3, gt=0)  # metres per pixel of one unit of the regressed d_f (heads.py)
    # the predictor's depth offset (metres) in Z = f·d_f + z_off; None = data.z_off (the paper's/baseline's).
    # 0 makes d_f the hand's metric extent per crop pixel, which a scale-normalised crop shows (heads.py)
    root_z_off: float | None = field(None, ge=0)
    # π^θ's global rotation: "6d" (continuous 6-D representation, any orientation) or "axis_angle" (paper)
    global_rotation: str = field("6d", choices=GLOBAL_ROTATIONS)
    # "auto" (CPU: per-pass hybrid, GPU: xla), "xla", "im2col", "taps", "hybrid", or "bf16_cols"
    # (CPU only: bfloat16 convolution operands with float32 sums, compiled C++ column builders)
    conv_impl: str = field("auto", choices=CONV_IMPLS)
    dtype: str = field("float32", choices=DTYPES)  # compute dtype
    encoder_width: int = field(64, ge=1)  # ResNet base channels (64 = ResNet-18); tests use e.g. 8
    # where the predictor starts (handprop_jax.model.pretrained): None (random), a torchvision ResNet-18
    # .pth (the encoder, e.g. ImageNet weights) or a predictor .npz written by `handprop pretrain`
    init_checkpoint: str | None = None
    mano_model: str | None = None  # path to MANO_RIGHT.pkl / .npz; None = the synthetic hand


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping (owner: handprop_jax.training)."""

    # phases trained by default, in the registry's order (handprop_jax.training.registry)
    phases: tuple[str, ...] = ("stage1", "baseline", "stage2", "align", "pseudo")
    batch_size: int = field(64, ge=1)  # global batch, frames (stage 1) or pairs (stages 2, 3)
    lr: float = field(5e-5, gt=0)
    stage1_steps: int = field(40_000, ge=0)
    stage2_steps: int = field(10_000, ge=0)
    stage3_steps: int = field(40_000, ge=0)
    lambda_j: float = field(0.5, ge=0)
    lambda_theta: float = field(5e-6, ge=0)
    lambda_beta: float = field(5e-7, ge=0)
    lambda_align: float = field(0.1, ge=0)
    # L_pred: "decoupled" (root + global rotation, articulation and shape each with their own term;
    # losses.decoupled_pred_loss) or "paper" (Eq. 6: one joint term in the camera frame + priors)
    pred_objective: str = field("decoupled", choices=PRED_OBJECTIVES)
    lambda_articulation: float = field(5.0, ge=0)  # decoupled: joints of (r*, R*, predicted fingers, β)
    lambda_rotation: float = field(1e-3, ge=0)  # decoupled: geodesic global-rotation error, per radian
    lambda_params: float = field(1e-4, ge=0)  # decoupled: PCA coefficients and β against the label's
    # phase "pseudo": share of examples that are unlabelled frames with propagated labels
    pseudo_fraction: float = field(0.5, ge=0, le=1)
    log_every: int = field(50, ge=1)
    eval_every: int = field(1000, ge=1)
    checkpoint_every: int = field(1000, ge=1)
    keep_checkpoints: int = field(3, ge=1)
    val_batches: int = field(4, ge=0)  # validation batches per evaluation (labelled val frames)
    seed: int = 0
    distributed: bool = False  # call jax.distributed.initialize() (multi-host)
    coordinator_address: str | None = None
    num_processes: int | None = field(None, ge=1)
    process_id: int | None = field(None, ge=0)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation and propagation (owner: handprop_jax.evaluation)."""

    batch_size: int = field(64, ge=1)
    splits: tuple[str, ...] = ("train", "test")
    max_frames: int | None = field(None, ge=1)  # cap per split (quick looks); None = every unlabelled frame
    # also report the both-sides rows: both neighbouring labelled frames, blended by temporal distance
    both_sides: bool = True
    rows: tuple[str, ...] = ()  # Table I rows to compute (handprop_jax.evaluation.rows); () = every row
    # each phase's checkpoint read: "best" (lowest validation MPJPE among the kept ones) or "latest"
    checkpoint: str = field("best", choices=("best", "latest"))


#: ``propagation.method`` values (handprop_jax.propagation.core): the default, the paper's learned aligner,
#: and the geometric transfers without any image evidence
PROPAGATION_METHODS = ("photometric", "paper", "crop", "copy")


@dataclasses.dataclass(frozen=True)
class PropagationConfig:
    """How labels are propagated to unlabelled frames (owner: handprop_jax.propagation).

    ``method``: "photometric" (crop-aware interpolation refined against the labelled frames by
    analysis-by-synthesis; needs no training), "paper" (the trained Pose Alignment network), "crop"
    (crop-aware copy / interpolation), "copy" (plain copy / interpolation). The other fields set the
    photometric refinement (handprop_jax.propagation.refine)."""

    method: str = field("photometric", choices=PROPAGATION_METHODS)
    steps: int = field(60, ge=0)  # Adam iterations per frame (split evenly over the blur levels)
    # Adam iterations per frame of the pass after re-cropping (propagation.recrop: frames whose crops
    # were interpolated, a user's video without a box file); the first pass there runs ``steps``
    recrop_steps: int = field(10, ge=0)
    lr: float = field(0.1, gt=0)
    blur: tuple[float, ...] = field((2.0, 1.0), ge=0)  # coarse-to-fine Gaussian blur sigmas, pixels
    pixels: int = field(256, ge=1)  # silhouette pixels drawn per labelled reference frame
    prior_weight: float = field(0.1, ge=0)  # pull towards the geometric prior (mean of squared steps)
    box_weight: float = field(10.0, ge=0)  # the hand's projected extent in the crop vs the references'
    centre_weight: float = field(10.0, ge=0)  # the hand's projected box centre vs the references'
    depth_step: float = field(0.05, gt=0)  # one unit of the update: root d_f (root_depth_unit m/px)
    pixel_step: float = field(1.0, gt=0)  # ... root offset in the crop, pixels
    rotation_step: float = field(0.05, gt=0)  # ... rotation of the hand about the wrist, radians
    finger_step: float = field(0.02, ge=0)  # ... finger joint axis-angle, radians (0: fingers fixed)
    visibility_tolerance: float = field(0.02, ge=0)  # relative inverse-depth tolerance of the warp
    batch_size: int = field(64, ge=1)  # frames refined at once
    seed: int = 0  # draws of the reference pixels
    # crops that do not follow the hand (propagation.recrop, a user's video without a box file): the
    # second pass's box term aims at least at the hand's extent against the background that the
    # labelled frames show (a static camera; checked on the labelled frames, else off;
    # propagation.background)
    background_floor: bool = True
    # with the box terms off (the first pass on such crops), the floor alone: weight of
    # max(log(floor / side), 0)^2
    floor_weight: float = field(10.0, ge=0)
    # how the second pass turns the background mask into a floor on the box side: "area", the side
    # the first pass's hand has when scaled to the mask's pixel area; "side", the mask's box side
    # (the first pass always uses the mask's side; docs/results.md, "The floor from the mask's area")
    floor_measure: str = field("area", choices=("side", "area"))
    # on such crops, the background mask's outline must lie on the hand: weight of the mean squared
    # pixel distance (beyond cover_tolerance, capped at cover_cap) from up to cover_points outline
    # pixels of the mask to the nearest projected vertex (0: off; propagation.refine.uncovered)
    cover_weight: float = field(0.02, ge=0)
    cover_points: int = field(64, ge=1)
    cover_tolerance: float = field(1.0, ge=0)  # pixels
    cover_cap: float = field(6.0, gt=0)  # pixels: farther outline pixels are outliers (no gradient)


@dataclasses.dataclass(frozen=True)
class HassonConfig:
    """Hasson et al.'s photometric-consistency phase ``photometric`` (owner:
    handprop_jax.training.hasson). The defaults are the official code's (hassony2/handobjectconsist):
    L = λ_d (L_pred + L_reg(u)) + λ_c L_photo with λ_c = lambda_consist · min(t / ramp_steps, 1) at the
    phase's step t and λ_d = lambda_data − λ_c."""

    lambda_consist: float = field(1e-3, ge=0)  # λ_c once ramped up
    lambda_data: float = field(0.999, ge=0)  # λ_d + λ_c
    ramp_steps: int = field(1000, ge=0)  # steps over which λ_c rises linearly from 0 (0: no ramp)
    cycle_threshold: float = field(2.0, gt=0)  # pixels: forward-backward check of the warp (App. C)
    # rasteriser window (handprop_jax.render.rasterize_splat): None = the smallest splat window >=
    # image_size / 4 (the dense rasteriser when that exceeds render.SPLAT_WINDOWS), 0 = dense
    splat_window: int | None = field(None, ge=0)


@dataclasses.dataclass(frozen=True)
class AdversarialConfig:
    """Spurr et al.'s adversarial motion prior, phases ``adversarial_motion`` (unpaired motion) and
    ``adversarial_motion_labels`` (labels only) (owner: handprop_jax.training.adversarial_motion).
    The paper leaves λ_MM, D's width and optimiser open: width and optimiser are the spec's choices
    (papers/comparison-methods.md, section 2); λ_MM = 1e-4 was chosen on the validation split of the
    synthetic demo (seed 0, 300 steps from stage 1; val MPJPE 103.1 / 156.3 / 133.0 mm for λ_MM =
    1e-4 / 1e-3 / 1e-2, Baseline 99.2; docs/comparison.md)."""

    clip_length: int = field(16, ge=2)  # frames per motion sequence (the paper's best length)
    clips: int = field(2, ge=1)  # unlabelled clips, and real motions, per step (global)
    lambda_mm: float = field(1e-4, ge=0)  # λ_MM, weight of the adversarial term L_MM (Eq. 6)
    d_width: int = field(256, ge=1)  # channels of the discriminator's temporal convolutions
    d_blocks: int = field(2, ge=0)  # residual blocks of the discriminator (the paper's best: 2)
    d_lr: float = field(1e-4, gt=0)  # Adam learning rate of the discriminator
    d_rotation: float = field(3.141592653589793, ge=0)  # D augmentation: rotation angle ~ U[-r, r], rad
    motion_videos: int = field(40, ge=1)  # (a) unpaired motion: synthetic motion videos, never rendered
    motion_seed: int = 1_000_003  # (a): added to data.synth_seed, so no motion is one of a data split's


@dataclasses.dataclass(frozen=True)
class TemporalConfig:
    """Chen et al.'s temporal-aware self-supervision (TASSN) adapted to MANO, phase
    ``temporal_consistency`` (owner: handprop_jax.training.temporal_consistency and
    handprop_jax.model.temporal)."""

    clip_length: int = field(16, ge=2)  # n: frames per clip, run forward and reversed
    clips: int = field(1, ge=1)  # clips per step (global)
    lambda_pose: float = field(10.0, ge=0)  # λ_c^p (Eq. 3 weight; the paper's 10)
    lambda_mesh: float = field(10.0, ge=0)  # λ_c^m (Eq. 4 weight; the paper's 10)
    heatmap_sigma: float = field(2.0, gt=0)  # pixels: Gaussian heat maps of the previous prediction
    # BatchNorm of the clip passes: False = the running statistics (as at test time), True = the
    # clips' own batch statistics (the running statistics still follow the labelled frames only)
    clip_batch_stats: bool = False


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "default"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    propagation: PropagationConfig = PropagationConfig()
    hasson: HassonConfig = HassonConfig()
    adversarial: AdversarialConfig = AdversarialConfig()
    temporal: TemporalConfig = TemporalConfig()


# ------------------------------------------------------------------------------------ checking


_NAMES = {bool: ("True/False", "True/False values"), int: ("an integer", "integers"),
          float: ("a number", "numbers"), str: ("text", "strings")}


def _describe(tp: Any, bound: str = "") -> str:
    """What a field of type ``tp`` accepts, as the user writes it (``bound``: its range, e.g. ">= 1")."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bound = f" {bound}" if bound else ""
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a, bound.strip()) if a is not type(None) else "None" for a in args)
    if origin is tuple:
        example = "('a', 'b')" if args[0] is str else "(1, 2)"
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {_NAMES[args[0]][1]}{bound}, e.g. {example}"
        return f"a tuple of {len(args)} {_NAMES[args[0]][1]}{bound}, e.g. {tuple(range(1, len(args) + 1))}"
    return _NAMES.get(tp, (getattr(tp, "__name__", str(tp)),))[0] + bound


def _to_bool(value: Any, text: str | None) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise TypeError


def _to_int(value: Any, text: str | None) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError


def _to_float(value: Any, text: str | None) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError


def _to_str(value: Any, text: str | None) -> str:
    if isinstance(value, str):
        return value
    if text is not None and value is not None:  # e.g. a numeric-looking name
        return text
    raise TypeError


#: the scalar field types and their conversions: (value, raw text or None) → value, else TypeError
_SCALARS: dict[Any, Callable[[Any, str | None], Any]] = {
    bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def _convert(tp: Any, value: Any, text: str | None) -> Any:
    """``value`` as type ``tp`` (raw ``text`` for text fields), or raise TypeError: a union tries its
    members in order, a tuple converts each item, a scalar goes through :data:`_SCALARS`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, text)
            except TypeError:
                pass
        raise TypeError
    if origin is tuple:
        if not isinstance(value, tuple | list):
            raise TypeError
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise TypeError
        return tuple(_convert(a, v, None) for a, v in zip(items, value, strict=True))
    if tp in _SCALARS:
        return _SCALARS[tp](value, text)
    raise TypeError


def _bound(rules: dict) -> str:
    ops = (("ge", ">="), ("gt", ">"), ("le", "<="))
    return " and ".join(f"{op} {rules[k]}" for k, op in ops if k in rules)


def _within(rules: dict, value: Any) -> bool:
    """``value`` (every element of a tuple) meets the declared choices and range (None always does)."""
    if value is None:
        return True
    if "choices" in rules:
        return value in rules["choices"]
    return all(("ge" not in rules or x >= rules["ge"]) and ("gt" not in rules or x > rules["gt"])
               and ("le" not in rules or x <= rules["le"])
               for x in (value if isinstance(value, tuple) else (value,)))


def check_field(section: type, name: str, value: Any, text: str | None = None, where: str = "") -> Any:
    """``value`` for field ``name`` of dataclass ``section``, converted to its declared type and checked
    against its choices/range; ``text`` is what the user wrote (for text fields and messages).
    Raises ValueError naming ``where`` (the key), the expected type or values and the given text."""
    f = next(f for f in dataclasses.fields(section) if f.name == name)
    tp = typing.get_type_hints(section)[name]
    rules = f.metadata
    try:
        out = _convert(tp, value, text)
    except TypeError:
        out = _convert  # a marker: not of the type
    if out is _convert or not _within(rules, out):
        expected = (f"one of {', '.join(map(str, rules['choices']))}" if "choices" in rules
                    else _describe(tp, _bound(rules)))
        raise ConfigError(f"{where or f'{section.__name__}.{name}'}: expected {expected}, got "
                         f"{text if text is not None else repr(value)!r}")
    return out


def validate(config: Config) -> Config:
    """Check every field of every section (types, choices, ranges); returns the config (with ints
    in float fields and lists in tuple fields converted). Raises ValueError like :func:`override`."""
    sections = {}
    for sec in dataclasses.fields(config):
        obj = getattr(config, sec.name)
        if not dataclasses.is_dataclass(obj):
            sections[sec.name] = check_field(Config, sec.name, obj, where=sec.name)
            continue
        sections[sec.name] = dataclasses.replace(obj, **{
            f.name: check_field(type(obj), f.name, getattr(obj, f.name), where=f"{sec.name}.{f.name}")
            for f in dataclasses.fields(obj)})
    return dataclasses.replace(config, **sections)


# ------------------------------------------------------------------------------------ overrides


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def override(config: Config, assignments: list[str] | tuple[str, ...]) -> Config:
    """Return ``config`` with ``section.field=value`` assignments applied, each value checked
    (module docstring).

    Raises ConfigError (a ValueError) naming the assignment when the key does not exist or the value
    does not fit the field (its type, allowed values or range).
    """
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.field=value")
        key, text = item.split("=", 1)
        key, text = key.strip(), text.strip()
        config = _replace_path(config, key.split("."), text, key)
    return config


def _replace_path(obj: Any, parts: list[str], text: str, key: str) -> Any:
    names = {f.name for f in dataclasses.fields(obj)}
    if parts[0] not in names:
        raise ConfigError(f"override {key!r}: {type(obj).__name__} has no field {parts[0]!r}; "
                         f"fields are {sorted(names)}")
    if len(parts) == 1:
        if dataclasses.is_dataclass(getattr(obj, parts[0])):
            raise ConfigError(f"override {key!r}: {parts[0]!r} is a section; set one of its fields")
        value = check_field(type(obj), parts[0], _parse_value(text), text, where=f"--set {key}")
        return dataclasses.replace(obj, **{parts[0]: value})
    child = getattr(obj, parts[0])
    if not dataclasses.is_dataclass(child):
        raise ConfigError(f"override {key!r}: {parts[0]!r} is not a section")
    return dataclasses.replace(obj, **{parts[0]: _replace_path(child, parts[1:], text, key)})


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
    try:
        config = validate(module.get_config())
    except ConfigError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    return override(config, overrides)


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
    """The Config recorded in a run folder's ``config.json``, checked like a config file; raises
    ConfigError naming the file when it is not JSON, not a config, or holds a bad value."""
    try:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        config = from_dict(data)
    except (ValueError, TypeError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{path}: not a handprop config ({type(e).__name__}: {e})") from None
    try:
        return validate(config)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
