"""InterHand2.6M as a tfds dataset of right-hand video frames, with the Mini-InterHand split.

Source layout (manual download, ``manual_dir`` = the ``InterHand2.6M`` folder)::

    images/<split>/Capture<N>/<seq_name>/cam<id>/image<frame_idx>.jpg
    annotations/<split>/InterHand2.6M_<split>_data.json           (v1.0 layout; the older
    annotations/<split>/InterHand2.6M_<split>_camera.json          ``annotations/all/`` layout
    annotations/<split>/InterHand2.6M_<split>_joint_3d.json        is accepted too)
    annotations/<split>/InterHand2.6M_<split>_MANO_NeuralAnnot.json

with <split> in {train, val, test}; only ``val`` and ``test`` are read (Mini-InterHand).

- ``_data.json`` (COCO style): ``images`` [{id, file_name ("Capture0/<seq>/cam<id>/image<f>.jpg",
  relative to images/<split>), width, height, capture (int), seq_name, camera (str), frame_idx}],
  ``annotations`` [{id, image_id, bbox [x, y, w, h], joint_valid (42 x [0|1]), hand_type
  ("right" | "left" | "interacting"), hand_type_valid}].
- ``_camera.json``: {capture: {"campos": {cam: (3,) mm}, "camrot": {cam: (3, 3)}, "focal": {cam:
  [fx, fy]}, "princpt": {cam: [cx, cy]}}}; world -> camera: X_cam = camrot (X_world - campos).
- ``_joint_3d.json``: {capture: {frame_idx: {"world_coord": (42, 3) mm, "joint_valid" (42 x [bool]),
  "hand_type", ...}}}; joints 0-20 right hand, 21-41 left, each hand ordered thumb tip..thumb1,
  index tip..1, middle, ring, pinky, wrist (``IH_TO_MANOPTH`` maps to manopth order). Its
  ``joint_valid`` is the 3D validity used here (data.json's is used only when it is absent).
- ``_MANO_NeuralAnnot.json``: {capture: {frame_idx: {"right": {"pose" (48,), "shape" (10,),
  "trans" (3,) metres} | null, "left": ...}}} fitted in **world** coordinates with smplx's MANO
  (``use_pca=False``, ``flat_hand_mean=False``: the finger pose excludes ``hands_mean``; the global
  rotation turns about the rest wrist J_0(betas), then ``trans`` is added).

Conversion to handprop's conventions (docs/design.md), per camera (R = camrot, c = campos / 1000):
- ``pose[:3]`` = axis-angle(R . R_world), ``pose[3:]`` = NeuralAnnot ``pose[3:]`` + ``hands_mean``;
- ``root`` = R (J_0(betas) + trans - c), the MANO wrist in the camera frame (metres);
- ``joints3d`` = R (world_coord / 1000 - c) of the right hand, manopth order (the dataset's joint
  annotation). Joints marked invalid are replaced by the MANO fit's joints (counted in ``info``);
  a frame whose right wrist is invalid, or without a right-hand MANO fit, is skipped.
Hence the builder needs the official right MANO model (``hands_mean``, ``J_0``): pass
``mano_model=`` (path or ``mano_jax.ManoModel``), or put ``MANO_RIGHT.pkl`` in ``manual_dir`` or
``manual_dir/mano/``.

Mini-InterHand (paper, Appendix A): one video = one (capture, sequence, camera); keep videos whose
frames are all right-hand-only (``hand_type == "right"``) with at least ``min_length`` (1000)
frames, from the official val and test splits, sorted by (capture, seq_name, camera). Of the
filtered val videos the last ``num_val`` (25) form our val split and the rest our train split;
``num_test`` (100) of the filtered test videos, drawn with ``np.random.default_rng(test_seed)``
(then kept in sorted order), form our test split.

The single config ``mini`` holds every option set (``InterHandOptions``: crop size and the filter
above, as builder kwargs or a ``InterHandConfig``), stored in the dataset metadata, so
``tfds.data_source("interhand26m", data_dir=DIR, split=...)`` reads whatever was built in DIR.

Bad input is skipped and counted (``Builder.skipped``, ``<dataset dir>/skipped.json``) or, with
``on_bad_input="raise"``, stops the build with a ValueError naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import numpy as np
import tensorflow_datasets as tfds
from scipy.spatial.transform import Rotation

from handprop_jax.data import builder_support as support

# InterHand right-hand joint index of each manopth joint (wrist, thumb1-3, tip, index..., pinky...).
IH_TO_MANOPTH = np.array([20, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 19, 18, 17, 16])
IH_RIGHT_WRIST = 20
SOURCE_SPLITS = ("val", "test")


@dataclasses.dataclass(frozen=True)
class InterHandOptions:
    """What a build depends on besides the download (stored in the dataset metadata)."""

    image_size: int = 224  # crop side, pixels
    crop_scale: float = 1.5  # crop side / extent of the projected joints
    min_visible: float = 0.5  # fraction of joints that must project inside the frame
    min_length: int = 1000  # frames a video needs to enter Mini-InterHand
    num_val: int = 25  # last filtered val videos forming our val split
    num_test: int = 100  # filtered test videos drawn for our test split
    test_seed: int = 0  # seed of that draw


class InterHandConfig(tfds.core.BuilderConfig):
    """Always named ``mini`` (whatever the options), so that ``tfds.data_source("interhand26m",
    ...)`` reads what was built; the options are in the dataset metadata."""

    def __init__(self, *, name: str = "mini", **options):
        self.options = InterHandOptions(**options)
        o = self.options
        super().__init__(name=name, description=f"Mini-InterHand (>= {o.min_length} frames, right "
                                                f"hand only, {o.num_val} val / {o.num_test} test "
                                                f"videos), {o.image_size} px crops")


# ------------------------------------------------------------------------------------- annotations

def annotation_dir(root: str, split: str) -> str:
    """``annotations/<split>`` (v1.0) or ``annotations/all`` (older releases), whichever holds
    ``InterHand2.6M_<split>_data.json``."""
    tried = []
    for sub in (split, "all"):
        folder = os.path.join(root, "annotations", sub)
        tried.append(folder)
        if os.path.isfile(os.path.join(folder, f"InterHand2.6M_{split}_data.json")):
            return folder
    raise FileNotFoundError(f"InterHand2.6M: no InterHand2.6M_{split}_data.json in {' or '.join(tried)}")


def load_json(path: str):
    """Parse a JSON annotation file; a missing or truncated file is a ValueError naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"InterHand2.6M: missing annotation file {path}")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"InterHand2.6M: cannot parse {path} (truncated or corrupt?): {e}") from e


@dataclasses.dataclass
class Annotations:
    """The four JSON files of one official split."""

    split: str
    folder: str
    images: list
    by_image: dict  # image id -> annotation
    cameras: dict
    joints: dict
    mano: dict

    def path(self, kind: str) -> str:
        return os.path.join(self.folder, f"InterHand2.6M_{self.split}_{kind}.json")


def load_annotations(root: str, split: str) -> Annotations:
    folder = annotation_dir(root, split)
    name = lambda kind: os.path.join(folder, f"InterHand2.6M_{split}_{kind}.json")
    data = load_json(name("data"))
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{name('data')}: expected COCO-style keys 'images' and 'annotations'")
    for i, image in enumerate(data["images"]):
        missing = [k for k in ("id", "file_name", "capture", "seq_name", "camera", "frame_idx")
                   if not isinstance(image, dict) or k not in image]
        if missing:
            raise ValueError(f"{name('data')}: images[{i}] lacks {missing}")
    by_image = {}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise ValueError(f"{name('data')}: annotations[{i}] lacks 'image_id'")
        by_image[ann["image_id"]] = ann
    return Annotations(split, folder, data["images"], by_image, load_json(name("camera")),
                       load_json(name("joint_3d")), load_json(name("MANO_NeuralAnnot")))


def video_key(image: dict) -> tuple:
    """Sort key / identity of a video: (capture, seq_name, camera)."""
    camera = str(image["camera"])
    return (int(image["capture"]), str(image["seq_name"]), int(camera) if camera.isdigit() else camera)


def video_name(key: tuple) -> str:
    capture, seq, camera = key
    return f"Capture{capture}/{seq}/cam{camera}"


def right_hand_videos(ann: Annotations, min_length: int) -> list[tuple[tuple, list[dict]]]:
    """Videos (sorted by key) whose every annotated image has ``hand_type == "right"`` and that have
    at least ``min_length`` frames; each with its image records sorted by ``frame_idx``."""
    videos: dict[tuple, list[dict]] = {}
    for image in ann.images:
        videos.setdefault(video_key(image), []).append(image)
    kept = []
    for key in sorted(videos):
        images = sorted(videos[key], key=lambda im: int(im["frame_idx"]))
        # Images without an annotation do not decide the filter; they are skipped (and counted)
        # when the frames are read.
        types = {ann.by_image[im["id"]].get("hand_type") for im in images if im["id"] in ann.by_image}
        if types == {"right"} and len(images) >= min_length:
            kept.append((key, images))
    return kept


def mini_interhand_split(val_videos: list, test_videos: list, num_val: int = 25, num_test: int = 100,
                         seed: int = 0) -> dict[str, list]:
    """Mini-InterHand: last ``num_val`` filtered val videos -> val, the rest -> train; ``num_test``
    test videos drawn without replacement with ``default_rng(seed)``, kept in their sorted order."""
    cut = max(len(val_videos) - num_val, 0)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(test_videos), size=min(num_test, len(test_videos)), replace=False)
    return {"train": list(val_videos[:cut]), "val": list(val_videos[cut:]),
            "test": [test_videos[i] for i in sorted(chosen.tolist())]}


class RestWrist:
    """J_0(betas), the MANO wrist in the rest pose (metres), from ``mano_jax`` — affine in betas,
    so evaluated once at betas = 0 and the unit vectors."""

    def __init__(self, model):
        import mano_jax

        basis = np.concatenate([np.zeros((1, 10)), np.eye(10)])
        j0 = np.asarray(mano_jax.regress_joints(model, mano_jax.blend_shapes(model, basis))[:, 0],
                        np.float64)
        self.template, self.dirs = j0[0], (j0[1:] - j0[0]).T  # (3,), (3, 10)
        self.hands_mean = np.asarray(model.hands_mean, np.float64)
        self.model = model
        import jax

        from handprop_jax.hand import hand_in_camera

        self.hand_in_camera = jax.jit(hand_in_camera)  # for filling invalid joints

    def __call__(self, betas: np.ndarray) -> np.ndarray:
        return self.template + self.dirs @ betas


def convert_frame(ann: Annotations, image: dict, wrist: RestWrist) -> dict:
    """Labels of one image in its camera frame (handprop convention); ``BadInput`` on bad values.

    Returns {"root", "pose", "betas", "joints3d", "K", "filled"} (filled = number of invalid
    joints replaced by the MANO fit's).
    """
    capture, frame, camera = str(image["capture"]), str(image["frame_idx"]), str(image["camera"])
    where = f"capture {capture} frame {frame} camera {camera}"
    try:
        cam = ann.cameras[capture]
        campos = support.checked_array(cam["campos"][camera], (3,), "campos", ann.path("camera"))
        camrot = support.checked_array(cam["camrot"][camera], (3, 3), "camrot", ann.path("camera"))
        focal = support.checked_array(cam["focal"][camera], (2,), "focal", ann.path("camera"))
        princpt = support.checked_array(cam["princpt"][camera], (2,), "princpt", ann.path("camera"))
    except (KeyError, TypeError) as e:
        raise support.BadInput("missing annotation", ann.path("camera"), f"{where}: {e!r}") from e
    try:
        mano = ann.mano[capture][frame]["right"]
    except (KeyError, TypeError) as e:
        raise support.BadInput("missing MANO fit", ann.path("MANO_NeuralAnnot"), where) from e
    if mano is None:
        raise support.BadInput("missing MANO fit", ann.path("MANO_NeuralAnnot"), f"{where}: null")
    try:
        joint_record = ann.joints[capture][frame]
        world = joint_record["world_coord"]
    except (KeyError, TypeError) as e:
        raise support.BadInput("missing annotation", ann.path("joint_3d"), where) from e
    mano_path = ann.path("MANO_NeuralAnnot")
    pose_w = support.checked_array(mano.get("pose"), (48,), "pose", mano_path)
    betas = support.checked_array(mano.get("shape"), (10,), "shape", mano_path)
    trans = support.checked_array(mano.get("trans"), (3,), "trans", mano_path)
    world = support.checked_array(world, (42, 3), "world_coord", ann.path("joint_3d"))
    record = ann.by_image.get(image["id"])
    if record is None:
        raise support.BadInput("missing annotation", ann.path("data"), f"no annotation for image "
                                f"id {image['id']} ({image.get('file_name')})")
    # 3D validity: joint_3d.json's joint_valid (v1.0; data.json's per-image joint_valid marks
    # truncation there), else data.json's (older releases, as the original dataset.py reads it).
    if isinstance(joint_record, dict) and joint_record.get("joint_valid") is not None:
        valid = support.checked_array(joint_record["joint_valid"], (42, 1), "joint_valid",
                                       ann.path("joint_3d"))
    else:
        valid = support.checked_array(record.get("joint_valid"), (42, 1), "joint_valid",
                                       ann.path("data"))
    valid = valid[:21, 0] > 0
    if not valid[IH_RIGHT_WRIST]:
        raise support.BadInput("invalid wrist", ann.path("joint_3d"), f"{where}: right wrist not valid")

    R = camrot
    c = campos / 1000.0
    pose = pose_w.copy()
    pose[:3] = Rotation.from_matrix(R @ Rotation.from_rotvec(pose_w[:3]).as_matrix()).as_rotvec()
    pose[3:] = pose_w[3:] + wrist.hands_mean
    root = R @ (wrist(betas) + trans - c)
    joints3d = ((world[:21] / 1000.0 - c) @ R.T)[IH_TO_MANOPTH]
    invalid = ~valid[IH_TO_MANOPTH]
    if invalid.any():
        _, fit = wrist.hand_in_camera(wrist.model, root[None], pose[None], betas[None])
        joints3d[invalid] = np.asarray(fit[0], np.float64)[invalid]
    K = np.array([[focal[0], 0.0, princpt[0]], [0.0, focal[1], princpt[1]], [0.0, 0.0, 1.0]])
    return {"root": root, "pose": pose, "betas": betas, "joints3d": joints3d, "K": K,
            "filled": int(invalid.sum())}


def resolve_mano(mano_model, manual_dir: str | None):
    """A ``mano_jax.ManoModel`` from a model, a path, or ``MANO_RIGHT.pkl`` in ``manual_dir``."""
    import mano_jax

    if isinstance(mano_model, mano_jax.ManoModel):
        return mano_model
    candidates = [mano_model] if mano_model else []
    if manual_dir and not mano_model:
        candidates += [os.path.join(manual_dir, "MANO_RIGHT.pkl"),
                       os.path.join(manual_dir, "mano", "MANO_RIGHT.pkl")]
    for path in candidates:
        if os.path.isfile(path):
            if not hasattr(mano_jax, "load"):
                raise RuntimeError("mano_jax.load is not available to read " + path)
            model = mano_jax.load(path)
            if getattr(model, "side", "right") != "right":
                raise ValueError(f"{path}: InterHand2.6M builder needs the RIGHT MANO model")
            return model
    raise FileNotFoundError(
        "InterHand2.6M builder needs the official right-hand MANO model (hands_mean and the rest "
        "wrist convert NeuralAnnot's world MANO fits); pass mano_model=PATH (handprop: "
        "--set model.mano_model=...) or put MANO_RIGHT.pkl in the manual dir. Tried: "
        + (", ".join(candidates) or "nothing"))


# ------------------------------------------------------------------------------------------ builder

class Builder(support.OptionsBuilderMixin, tfds.core.GeneratorBasedBuilder):
    """InterHand2.6M → Mini-InterHand splits of hand-centred frames (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Mini-InterHand split, NeuralAnnot MANO in the camera frame."}
    BUILDER_CONFIGS = [InterHandConfig()]
    HOMEPAGE = "https://mks0601.github.io/InterHand2.6M/"
    DEFAULT_CONFIG_NAME = "mini"
    CONFIG_CLASS = InterHandConfig
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download InterHand2.6M (v1.0, 5 fps or 30 fps) from https://mks0601.github.io/InterHand2.6M/:
    the val and test images and annotations, including InterHand2.6M_<split>_MANO_NeuralAnnot.json.
    Pass the folder holding `images/` and `annotations/` as the manual dir, and the official
    right-hand MANO model (https://mano.is.tue.mpg.de) as mano_model (or put MANO_RIGHT.pkl in the
    manual dir), e.g. `handprop data build interhand26m --manual-dir /data/InterHand2.6M ...`.
    """

    def __init__(self, *, on_bad_input: str = "skip", mano_model=None, image_size: int | None = None,
                 crop_scale: float | None = None, min_visible: float | None = None,
                 min_length: int | None = None, num_val: int | None = None, num_test: int | None = None,
                 test_seed: int | None = None, **kwargs):
        """Args: on_bad_input: "skip" (count and continue) or "raise"; mano_model: path to
        MANO_RIGHT.pkl / .npz or a ``mano_jax.ManoModel``; image_size ... test_seed: when given,
        override those of ``config`` (see ``InterHandOptions``); other args as tfds (``data_dir``,
        ``config``, ``version``, ``file_format`` — array_record by default)."""
        overrides = {k: v for k, v in dict(
            image_size=image_size, crop_scale=crop_scale, min_visible=min_visible, min_length=min_length,
            num_val=num_val, num_test=num_test, test_seed=test_seed).items() if v is not None}
        if overrides:
            base = kwargs.get("config")
            if base not in (None, "mini") and not isinstance(base, InterHandConfig):
                raise ValueError(f"interhand26m: unknown builder config {base!r}; use 'mini'")
            base = base if isinstance(base, InterHandConfig) else InterHandConfig()
            kwargs["config"] = InterHandConfig(**(dataclasses.asdict(base.options) | overrides))
        kwargs.setdefault("file_format", "array_record")
        self.skip_log = support.SkipLog(on_bad_input)
        self.mano_model = mano_model
        super().__init__(**kwargs)

    @classmethod
    def config_for(cls, image_size: int = 224, **options) -> InterHandConfig:
        """A ``mini`` builder config with the given options (``InterHandOptions`` fields)."""
        return InterHandConfig(image_size=image_size, **options)

    @classmethod
    def config_from_data(cls, data_config, builder_config: str | None = None) -> InterHandConfig:
        """The Mini-InterHand config at ``data_config.image_size`` (hook used by
        ``handprop_jax.data.build``); ``builder_config`` other than None/"mini" is rejected.
        The filter follows the paper unless the DataConfig has (optional) fields
        ``interhand_min_length``, ``interhand_num_val``, ``interhand_num_test``,
        ``interhand_test_seed`` set (not None)."""
        if builder_config not in (None, "mini"):
            raise ValueError(f"interhand26m: unknown builder config {builder_config!r}; use 'mini'")
        options = {key: getattr(data_config, f"interhand_{key}", None)
                   for key in ("min_length", "num_val", "num_test", "test_seed")}
        return cls.config_for(int(data_config.image_size),
                              **{k: int(v) for k, v in options.items() if v is not None})

    def _split_generators(self, dl_manager):
        options = self.builder_config.options
        root = os.fspath(dl_manager.manual_dir)
        wrist = RestWrist(resolve_mano(self.mano_model, root))
        annotations = {s: load_annotations(root, s) for s in SOURCE_SPLITS}
        filtered = {s: [(a, key, images) for key, images in right_hand_videos(a, options.min_length)]
                    for s, a in annotations.items()}
        split = mini_interhand_split(filtered["val"], filtered["test"], options.num_val,
                                     options.num_test, options.test_seed)
        empty = [name for name, videos in split.items() if not videos]
        if empty:  # tfds cannot write a split without examples: leave it out, and say so
            logging.warning("InterHand2.6M: no video passes the Mini-InterHand filter for split(s) "
                            "%s (min_length=%d); not written", empty, options.min_length)
        return {name: self._generate_examples(name, root, videos, wrist)
                for name, videos in split.items() if videos}

    def _generate_examples(self, split, root, videos, wrist):
        options = self.builder_config.options

        def process(frame):
            ann, image = frame
            labels = convert_frame(ann, image, wrist)
            image_path = os.path.join(root, "images", ann.split, image["file_name"])
            pixels = support.read_rgb(image_path)
            example = support.make_example(
                pixels, labels["K"], labels["root"], labels["pose"], labels["betas"],
                labels["joints3d"], options.image_size, options.crop_scale, options.min_visible,
                image_path)
            if labels["filled"]:
                self.skip_log.info(split, "joints filled from the MANO fit", labels["filled"])
            return example

        frames = [(video_name(key), [(ann, im) for im in images]) for ann, key, images in videos]
        yield from support.video_examples(split, frames, process, self.skip_log)
