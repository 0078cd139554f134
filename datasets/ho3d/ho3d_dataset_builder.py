"""HO-3D (v2 and v3) as a tfds dataset of hand-centred video frames, with the Mini-HO-3D split.

Source layout (manual download, ``manual_dir`` = the folder where ``train/`` branches off, or its
parent holding ``HO3D_v2/`` / ``HO3D_v3/``)::

    train/<SEQ>/rgb/<frame>.png        (v2; v3 ships .jpg)   e.g. train/ABF10/rgb/0000.png
    train/<SEQ>/meta/<frame>.pkl       python-2 pickles (read with encoding="latin1")
    train.txt, evaluation.txt          optional; "SEQ/frame" per line

Per-frame annotation keys used (HO-3D convention: **OpenGL** camera frame, y up, z backward, metres):
``handPose`` (48,) full MANO axis-angle pose used with ``flat_hand_mean=True`` (hands mean
included) and ``use_pca=False``; ``handBeta`` (10,); ``handTrans`` (3,) MANO ``trans`` (unused, see
below); ``handJoints3D`` (21, 3) in MANO's kinematic order with the five fingertips appended
(wrist, index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3, then thumb/index/middle/ring/pinky tips);
``camMat`` (3, 3) intrinsics, pixels.

Conversion to handprop's conventions (docs/design.md):
- points: X_cv = diag(1, -1, -1) X_gl; global rotation R_cv = diag(1, -1, -1) R_gl (the other 45
  pose numbers are joint-local and unchanged; hands_mean is already included);
- joints reordered to manopth order (``HO3D_TO_MANOPTH``);
- ``root`` = the wrist joint in the OpenCV camera frame, taken from ``handJoints3D`` (which HO-3D
  computes from the MANO fit: wrist = J_0(betas) + handTrans), so no MANO model is needed and
  root, pose, betas and joints3d are mutually consistent;
- the frame is cropped around the projected joints (``handprop_jax.data.crop``), K adjusted.

Mini-HO-3D (paper, Appendix A): val = ABF11, BB12, GPMF13, GSF14; test = ABF10, MC1, MDF14, BB11,
GPMF12, GSF13, SB14, ShSu10, SM3, SMu1, SiBF11, SS2; train = every other ``train/`` sequence.
Videos of a split are sorted by name; frames by frame number.

Configs ``v2`` (default) and ``v3`` are named by layout only; the crop size and the other
``Ho3dOptions`` are builder options (``Builder(config="v3", image_size=64)`` or a ``Ho3dConfig``),
stored in the dataset metadata, so ``tfds.data_source("ho3d", data_dir=DIR, split=...)`` (or
``"ho3d/v3"``) reads whatever was built in DIR; a builder with other options refuses to reuse
those files (``stale_reason``).

Time: each example stores ``frame_time`` = its frame number (``0042`` → 42); K, the labelled
frames, N(u) and the gaps are measured in it (``handprop_jax.data.sparse``), so a frame that is
skipped, or left out of ``train.txt``, is a hole in time and shifts nothing. HO-3D v3's
``train.txt`` leaves out frames that are on disk (no reliable annotation): they are **not** stored —
the stored features need the ground truth of every frame (the evaluation scores every unlabelled
frame), so they are neither labelled nor scorable; they are counted in ``skipped.json`` ("info":
"frames on disk not in train.txt (not used)") and are holes in time.

Bad input — every field read is checked: the pickle is a dict with ``handPose``, ``handBeta``,
``handJoints3D``, ``camMat``; each numeric, of exactly its shape ((48,), (10,), (21, 3), (3, 3);
never reshaped), finite; ``camMat`` a pinhole matrix (fx, fy > 0, last row 0 0 1); every joint in
front of the camera; the frame id a number; plus missing/corrupt image or pickle and a hand outside
the image. With ``on_bad_input="skip"`` (default) the frame is dropped and counted, the message
naming the file (the frame); counts per split and reason are in ``Builder.skipped`` and
``<dataset dir>/skipped.json``. With ``on_bad_input="raise"`` the build stops at the first one with
a ValueError naming the file. A split left without any sequence (Mini-HO-3D's val/test names absent
from a partial download) or without any good frame stops the build with ``EmptySplitError``
naming the filter (``data.ho3d_val_sequences`` / ``data.ho3d_test_sequences`` name others).
"""

from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np
import tensorflow_datasets as tfds
from scipy.spatial.transform import Rotation

from handprop_jax.camera import OPENGL_TO_OPENCV
from handprop_jax.data import builder_support as support

# handJoints3D index for each manopth joint (wrist, thumb1-3, tip, index1-3, tip, middle..., ring...,
# pinky...).
HO3D_TO_MANOPTH = np.array([0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20])

MINI_HO3D_VAL = ("ABF11", "BB12", "GPMF13", "GSF14")
MINI_HO3D_TEST = ("ABF10", "MC1", "MDF14", "BB11", "GPMF12", "GSF13", "SB14", "ShSu10", "SM3", "SMu1",
                  "SiBF11", "SS2")
IMAGE_EXT = {"v2": ".png", "v3": ".jpg"}


def opengl_to_opencv(points: np.ndarray) -> np.ndarray:
    """(..., 3) points, OpenGL camera frame -> OpenCV camera frame (same units)."""
    return np.asarray(points, dtype=np.float64) @ OPENGL_TO_OPENCV.T


def rotate_global(pose: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """(48,) axis-angle pose with its global rotation R replaced by ``rotation @ R``."""
    pose = np.array(pose, dtype=np.float64)
    R = Rotation.from_rotvec(pose[:3]).as_matrix()
    pose[:3] = Rotation.from_matrix(rotation @ R).as_rotvec()
    return pose


def convert_annotation(meta: dict, path: str = "<meta>") -> dict:
    """HO-3D per-frame annotation (OpenGL) -> handprop labels (OpenCV, manopth order).

    Returns {"root" (3,), "pose" (48,), "betas" (10,), "joints3d" (21, 3), "K" (3, 3)}, metres /
    radians / pixels. Raises ``crop.BadInput`` naming ``path`` and the key on bad values.
    """
    if not isinstance(meta, dict):
        raise support.BadInput("bad annotation", path, f"expected a dict, got {type(meta).__name__}")
    for key in ("handPose", "handBeta", "handJoints3D", "camMat"):
        if key not in meta:
            raise support.BadInput("missing annotation", path, f"key {key!r} absent")
    # exact shapes (never reshaped), numbers only, finite; a pinhole camera; the hand in front of it
    pose_gl = support.checked_array(meta["handPose"], (48,), "handPose", path)
    betas = support.checked_array(meta["handBeta"], (10,), "handBeta", path)
    joints_gl = support.checked_array(meta["handJoints3D"], (21, 3), "handJoints3D", path)
    K = support.checked_intrinsics(support.checked_array(meta["camMat"], (3, 3), "camMat", path),
                                   "camMat", path)
    joints3d = support.checked_in_front(opengl_to_opencv(joints_gl)[HO3D_TO_MANOPTH], "handJoints3D",
                                        path)
    return {"root": joints3d[0].copy(), "pose": rotate_global(pose_gl, OPENGL_TO_OPENCV),
            "betas": betas, "joints3d": joints3d, "K": K}


def load_meta(path: str) -> dict:
    """Unpickle one ``meta/<frame>.pkl`` (python-2 pickles need latin1); ``BadInput`` if unusable."""
    if not os.path.isfile(path):
        raise support.BadInput("missing annotation", path)
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except Exception as e:  # truncated / corrupt pickles raise several types
        raise support.BadInput("corrupt annotation", path, f"{type(e).__name__}: {e}") from e


def find_root(manual_dir: str, layout: str) -> str:
    """The folder holding ``train/``: ``manual_dir`` itself or ``manual_dir/HO3D_v2|HO3D_v3``."""
    for candidate in (manual_dir, os.path.join(manual_dir, f"HO3D_{layout}")):
        if os.path.isdir(os.path.join(candidate, "train")):
            return candidate
    raise FileNotFoundError(
        f"HO-3D {layout}: no 'train/' folder in {manual_dir} (nor in {manual_dir}/HO3D_{layout}); "
        "point --manual-dir at the folder where train/ and evaluation/ branch off")


def _frame_sort_key(frame: str):
    return (0, int(frame), frame) if frame.isdigit() else (1, 0, frame)


def list_sequences(root: str, layout: str) -> dict[str, list[str]]:
    """{sequence: [frame ids in temporal order]} of the ``train`` subset.

    From ``train.txt`` when present (the official list), else from the ``rgb/`` and ``meta/``
    folders (the union, so a frame missing one of its files is reported, not silently dropped).
    A frame's id is its number in the sequence (``0042``), which the builder stores as its
    ``frame_time``: frames left out of ``train.txt`` or skipped as bad input are holes in time.
    """
    listing = os.path.join(root, "train.txt")
    frames: dict[str, set[str]] = {}
    if os.path.isfile(listing):
        with open(listing) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                if "/" not in line:
                    raise ValueError(f"{listing}: line {line!r} is not 'SEQ/frame'")
                seq, frame = line.split("/", 1)
                frames.setdefault(seq, set()).add(frame)
    else:
        train = os.path.join(root, "train")
        for seq in sorted(os.listdir(train)):
            ids: set[str] = set()
            for sub, ext in (("rgb", IMAGE_EXT[layout]), ("meta", ".pkl")):
                folder = os.path.join(train, seq, sub)
                if os.path.isdir(folder):
                    ids.update(n[: -len(ext)] for n in os.listdir(folder) if n.endswith(ext))
            if ids:
                frames[seq] = ids
    return {seq: sorted(ids, key=_frame_sort_key) for seq, ids in sorted(frames.items())}


def mini_ho3d_split(sequences, val=MINI_HO3D_VAL, test=MINI_HO3D_TEST) -> dict[str, list[str]]:
    """Mini-HO-3D: {"train", "val", "test"} -> sorted sequence names (Appendix A)."""
    sequences = sorted(sequences)
    held_out = set(val) | set(test)
    return {"train": [s for s in sequences if s not in held_out],
            "val": [s for s in sequences if s in set(val)],
            "test": [s for s in sequences if s in set(test)]}


@dataclasses.dataclass(frozen=True)
class Ho3dOptions:
    """What a build depends on besides the download (stored in the dataset metadata)."""

    layout: str = "v2"  # "v2" (png frames) or "v3" (jpg frames)
    image_size: int = 224  # crop side, pixels
    crop_scale: float = 1.5  # crop side / extent of the projected joints
    min_visible: float = 0.5  # fraction of joints that must project inside the frame
    val_sequences: tuple[str, ...] = MINI_HO3D_VAL
    test_sequences: tuple[str, ...] = MINI_HO3D_TEST


class Ho3dConfig(tfds.core.BuilderConfig):
    """Named by its layout ("v2" / "v3") whatever the other options, so that
    ``tfds.data_source("ho3d", ...)`` / ``("ho3d/v3", ...)`` read what was built."""

    def __init__(self, *, layout: str = "v2", image_size: int = 224, crop_scale: float = 1.5,
                 min_visible: float = 0.5, val_sequences=MINI_HO3D_VAL, test_sequences=MINI_HO3D_TEST,
                 **kwargs):
        if layout not in IMAGE_EXT:
            raise ValueError(f"HO-3D layout must be one of {sorted(IMAGE_EXT)}, got {layout!r}")
        kwargs.setdefault("name", layout)
        kwargs.setdefault("description", f"HO-3D {layout}, Mini-HO-3D split, {image_size} px crops")
        super().__init__(**kwargs)
        self.options = Ho3dOptions(layout, int(image_size), float(crop_scale), float(min_visible),
                                   tuple(val_sequences), tuple(test_sequences))


class Builder(support.OptionsBuilderMixin, tfds.core.GeneratorBasedBuilder):
    """HO-3D v2/v3 → Mini-HO-3D splits of hand-centred frames (see the module docstring)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Mini-HO-3D split, OpenCV camera frame, manopth joint order.",
                     "1.1.0": "frame_time (the frame number); exact shape/type/camera checks."}
    BUILDER_CONFIGS = [Ho3dConfig(layout="v2"), Ho3dConfig(layout="v3")]
    HOMEPAGE = "https://www.tugraz.at/index.php?id=40231"
    DEFAULT_CONFIG_NAME = "v2"
    CONFIG_CLASS = Ho3dConfig
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Register at https://www.tugraz.at/index.php?id=40231 (HO-3D), download HO3D_v2.zip or
    HO3D_v3.zip and extract it. Pass the folder where `train/` and `evaluation/` branch off
    (or its parent containing `HO3D_v2/` / `HO3D_v3/`) as the manual dir, e.g.
    `handprop data build ho3d --config v2 --manual-dir /data/HO3D_v2 --data-dir data`.
    """

    def __init__(self, *, on_bad_input: str = "skip", image_size: int | None = None,
                 crop_scale: float | None = None, min_visible: float | None = None,
                 val_sequences: tuple[str, ...] | None = None, test_sequences: tuple[str, ...] | None = None,
                 **kwargs):
        """Args: on_bad_input: "skip" (count and continue) or "raise"; image_size, crop_scale,
        min_visible, val_sequences, test_sequences: when given, override those of ``config``; other
        args as tfds (``data_dir``, ``config`` ("v2" default, "v3" or a ``Ho3dConfig``), ``version``,
        ``file_format`` — array_record by default)."""
        overrides = {k: v for k, v in dict(image_size=image_size, crop_scale=crop_scale,
                                           min_visible=min_visible, val_sequences=val_sequences,
                                           test_sequences=test_sequences).items() if v is not None}
        if overrides:
            base = kwargs.get("config") or self.DEFAULT_CONFIG_NAME
            if not isinstance(base, Ho3dConfig):
                base = Ho3dConfig(layout=str(base))
            kwargs["config"] = Ho3dConfig(**(dataclasses.asdict(base.options) | overrides))
        kwargs.setdefault("file_format", "array_record")
        self.skip_log = support.SkipLog(on_bad_input)
        super().__init__(**kwargs)

    @classmethod
    def config_for(cls, layout: str = "v2", image_size: int = 224, **options) -> Ho3dConfig:
        """A builder config for ``layout`` (its name) with the given options."""
        return Ho3dConfig(layout=layout, image_size=image_size, **options)

    @classmethod
    def config_from_data(cls, data_config, builder_config: str | None = None) -> Ho3dConfig:
        """The config for a ``handprop_jax.config.DataConfig``: layout from ``builder_config``
        ("v2" default, or "v3"), crop side from ``data_config.image_size``, and, where set (not
        None), ``data.crop_scale``, ``data.min_visible``, ``data.ho3d_val_sequences``,
        ``data.ho3d_test_sequences`` (hook used by ``handprop_jax.data.build``)."""
        layout = builder_config or "v2"
        if layout not in IMAGE_EXT:
            raise ValueError(f"ho3d: unknown builder config {builder_config!r}; use 'v2' or 'v3'")
        options = {"crop_scale": getattr(data_config, "crop_scale", None),
                   "min_visible": getattr(data_config, "min_visible", None),
                   "val_sequences": getattr(data_config, "ho3d_val_sequences", None),
                   "test_sequences": getattr(data_config, "ho3d_test_sequences", None)}
        return cls.config_for(layout, int(data_config.image_size),
                              **{k: v for k, v in options.items() if v is not None})

    def _split_generators(self, dl_manager):
        options = self.builder_config.options
        root = find_root(os.fspath(dl_manager.manual_dir), options.layout)
        sequences = list_sequences(root, options.layout)
        if not sequences:
            raise FileNotFoundError(f"HO-3D {options.layout}: no sequences found under {root}/train")
        split = mini_ho3d_split(sequences, options.val_sequences, options.test_sequences)
        for name, wanted in (("val", options.val_sequences), ("test", options.test_sequences)):
            for seq in wanted:
                if seq not in sequences:
                    self.skip_log.note(name, support.BadInput(
                        "missing sequence", os.path.join(root, "train", seq), "named by Mini-HO-3D"))
        self._count_unlisted(root, sequences, split, options.layout)
        for name, seqs in split.items():  # a split without examples: stop, naming the filter
            if seqs:
                continue
            if name == "train":
                raise support.EmptySplitError(
                    f"HO-3D {options.layout}: split 'train' is empty: every sequence under {root}/train "
                    f"({', '.join(sequences)}) is a val or test sequence; name fewer with --set "
                    "data.ho3d_val_sequences=(...) / data.ho3d_test_sequences=(...)")
            wanted = options.val_sequences if name == "val" else options.test_sequences
            raise support.EmptySplitError(
                f"HO-3D {options.layout}: split {name!r} is empty: none of its sequences "
                f"({', '.join(wanted)}) is under {root}/train; name ones you have with --set "
                f"data.ho3d_{name}_sequences=('SEQ', ...)")
        return {name: self._generate_examples(name, root, [(s, sequences[s]) for s in seqs])
                for name, seqs in split.items()}

    def _count_unlisted(self, root: str, sequences: dict, split: dict, layout: str) -> None:
        """Count (``info``) frames that exist on disk but are not in ``train.txt`` (HO-3D v3 leaves
        out frames without a reliable annotation): they are not stored; their frame numbers are
        holes in time."""
        if not os.path.isfile(os.path.join(root, "train.txt")):
            return
        ext = IMAGE_EXT[layout]
        for name, seqs in split.items():
            for seq in seqs:
                folder = os.path.join(root, "train", seq, "rgb")
                on_disk = {n[: -len(ext)] for n in os.listdir(folder) if n.endswith(ext)} \
                    if os.path.isdir(folder) else set()
                unlisted = len(on_disk - set(sequences[seq]))
                if unlisted:
                    self.skip_log.info(name, "frames on disk not in train.txt (not used)", unlisted)

    def _generate_examples(self, split, root, videos):
        options = self.builder_config.options
        ext = IMAGE_EXT[options.layout]

        def process(frame):
            seq, frame_id = frame
            folder = os.path.join(root, "train", seq)
            meta_path = os.path.join(folder, "meta", frame_id + ".pkl")
            image_path = os.path.join(folder, "rgb", frame_id + ext)
            labels = convert_annotation(load_meta(meta_path), meta_path)
            image = support.read_rgb(image_path)
            return support.make_example(
                image, labels["K"], labels["root"], labels["pose"], labels["betas"],
                labels["joints3d"], options.image_size, options.crop_scale, options.min_visible,
                image_path)

        def timed(seq, ids):  # (time = the frame number, frame) in temporal order
            out = []
            for f in ids:
                if f.isdigit():
                    out.append((int(f), (seq, f)))
                else:  # sorted after every numbered frame (list_sequences): a time past them
                    out.append((out[-1][0] + 1 if out else 0, support.BadInput(
                        "bad frame id", os.path.join(root, "train", seq, "meta", f + ".pkl"),
                        "frame ids are frame numbers (e.g. 0042)")))
            return out

        frames = [(seq, timed(seq, ids)) for seq, ids in videos]
        yield from support.video_examples(split, frames, process, self.skip_log)
