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

Time: each example stores ``frame_time``, the frame's number in its video on the video's own frame
grid: (frame_idx - first frame_idx) / step, step = the gcd of the video's frame_idx differences (6
in the 5 fps release, whose frame_idx counts 30 fps frames). K, the labelled frames, N(u) and the gaps
are measured in it (``handprop_jax.data.sparse``), so a skipped or absent frame is a hole in time.

Bad input. Every field read is checked — image records (``id``, ``file_name``, ``capture``,
``seq_name``, ``camera``, ``frame_idx``: present, of their types), annotations (``image_id``;
``hand_type`` one of right/left/interacting; ``joint_valid`` 0/1 of shape (42, 1) or (42,)), cameras
(numbers of exactly their shapes, finite, ``camrot`` a rotation, focal lengths > 0), MANO fits
(``pose`` (48,), ``shape`` (10,), ``trans`` (3,)), ``world_coord`` (42, 3); shapes are never reshaped;
joints and wrist in front of the camera. With ``on_bad_input="skip"`` (default) a bad frame is
skipped and counted under its output split; a bad camera skips its whole video; an image or
annotation record that cannot be placed in a video, a duplicate frame, a video whose frames all lack
a valid ``hand_type``, and the bad records of videos the filter leaves out are counted under
"official val" / "official test" — each message naming the annotation file and the image id (or the
video). How many videos the filter left out and why is in the report's "info". Counts:
``Builder.skipped``, ``<dataset dir>/skipped.json``. With ``on_bad_input="raise"`` the first bad record
stops the build with a ValueError naming the file. A missing or unparsable annotation file, or an
output split that would be empty, stops the build (``EmptySplitError`` names the filter and the
``--set data.interhand_*`` option that relaxes it).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import tensorflow_datasets as tfds
from scipy.spatial.transform import Rotation

import mano_jax
from handprop_jax.data import builder_support as support
from handprop_jax.hand import hand_in_camera

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


HAND_TYPES = ("right", "left", "interacting")
IMAGE_FIELDS = {"id": int, "file_name": str, "capture": int, "seq_name": str, "camera": (str, int),
                "frame_idx": int}


@dataclasses.dataclass
class Annotations:
    """The four JSON files of one official split, with the records that failed a check.

    ``bad``: image id -> ``BadInput`` found while grouping (a missing/unexpected ``hand_type``, a
    duplicate annotation or frame); such a frame is skipped (and counted) when its video is built.
    """

    split: str
    folder: str
    images: list
    by_image: dict  # image id -> annotation
    cameras: dict
    joints: dict
    mano: dict
    bad: dict = dataclasses.field(default_factory=dict)

    def path(self, kind: str) -> str:
        return os.path.join(self.folder, f"InterHand2.6M_{self.split}_{kind}.json")

    @property
    def source(self) -> str:
        """The skip-report key for what cannot be given an output split yet ("official val")."""
        return f"official {self.split}"


def image_problem(image) -> str | None:
    """Why a ``_data.json`` image record is unusable (a field missing or of the wrong type), or None."""
    if not isinstance(image, dict):
        return f"expected an object, got {type(image).__name__}"
    for key, types in IMAGE_FIELDS.items():
        if key not in image:
            return f"{key!r} missing"
        value = image[key]
        if isinstance(value, bool) or not isinstance(value, types):
            return f"{key!r} is {value!r}, expected {getattr(types, '__name__', 'text or an integer')}"
    if image["frame_idx"] < 0:
        return f"'frame_idx' is {image['frame_idx']}, expected >= 0"
    return None


def _file_object(path: str, value, kind: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"InterHand2.6M: {path}: expected a JSON object ({kind}), "
                         f"got {type(value).__name__}")
    return value


def load_annotations(root: str, split: str, skip_log: support.SkipLog | None = None) -> Annotations:
    """The annotation files of official ``split``. A file that is missing, unparsable or of the wrong
    structure stops the build (ValueError/FileNotFoundError naming it); an unusable image or
    annotation record is skipped and counted under "official <split>" (``skip_log``; raises with
    ``on_bad_input="raise"``)."""
    skip_log = skip_log or support.SkipLog()
    folder = annotation_dir(root, split)
    name = lambda kind: os.path.join(folder, f"InterHand2.6M_{split}_{kind}.json")
    data = load_json(name("data"))
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{name('data')}: expected COCO-style lists 'images' and 'annotations'")
    ann = Annotations(split, folder, [], {}, {}, {}, {})
    seen_ids = set()
    for i, image in enumerate(data["images"]):
        problem = image_problem(image)
        if problem is None and image["id"] in seen_ids:
            problem = f"image id {image['id']} listed twice"
        if problem is not None:
            ident = f"id {image['id']}" if isinstance(image, dict) and "id" in image else "no id"
            skip_log.handle(ann.source, support.BadInput("bad image record", name("data"),
                                                         f"images[{i}] ({ident}): {problem}"))
            continue
        seen_ids.add(image["id"])
        ann.images.append(image)
    duplicated = set()
    for i, record in enumerate(data["annotations"]):
        if not isinstance(record, dict) or "image_id" not in record \
                or isinstance(record["image_id"], bool) or not isinstance(record["image_id"], int):
            skip_log.handle(ann.source, support.BadInput("bad annotation record", name("data"),
                                                         f"annotations[{i}]: no integer 'image_id'"))
            continue
        if record["image_id"] in ann.by_image:
            duplicated.add(record["image_id"])
        ann.by_image[record["image_id"]] = record
    for image_id in sorted(duplicated):
        ann.bad[image_id] = support.BadInput("duplicate annotation", name("data"),
                                             f"image id {image_id} has more than one annotation")
        if skip_log.on_bad_input == "raise":
            skip_log.handle(ann.source, ann.bad[image_id])
    ann.cameras = _file_object(name("camera"), load_json(name("camera")), "capture -> camera parameters")
    ann.joints = _file_object(name("joint_3d"), load_json(name("joint_3d")), "capture -> frame -> joints")
    ann.mano = _file_object(name("MANO_NeuralAnnot"), load_json(name("MANO_NeuralAnnot")),
                            "capture -> frame -> MANO fits")
    return ann


def video_key(image: dict) -> tuple:
    """Sort key / identity of a video: (capture, seq_name, camera)."""
    camera = str(image["camera"])
    return (int(image["capture"]), str(image["seq_name"]), int(camera) if camera.isdigit() else camera)


def video_name(key: tuple) -> str:
    capture, seq, camera = key
    return f"Capture{capture}/{seq}/cam{camera}"


def where(image: dict) -> str:
    """How messages name an image: its id, capture, frame and camera."""
    return (f"image id {image['id']} (capture {image['capture']} frame {image['frame_idx']} "
            f"camera {image['camera']})")


def frame_times(images: list[dict]) -> list[int]:
    """Source times of a video's image records (sorted by ``frame_idx``): (frame_idx - first) / step,
    step = the gcd of the differences (6 in the 5 fps release, where frame_idx counts the 30 fps
    frames; 1 at 30 fps). Missing frames are holes in time."""
    import math

    idx = [int(im["frame_idx"]) for im in images]
    step = 0
    for a, b in zip(idx, idx[1:], strict=False):
        step = math.gcd(step, b - a)
    step = step or 1
    return [(f - idx[0]) // step for f in idx]


def right_hand_videos(ann: Annotations, min_length: int, skip_log: support.SkipLog | None = None
                      ) -> list[tuple[tuple, list[dict]]]:
    """Videos (sorted by key) whose every annotated image has ``hand_type == "right"`` and that have
    at least ``min_length`` image records; each with its image records sorted by ``frame_idx``.

    Images without an annotation, with a missing or unexpected ``hand_type`` (anything but "right",
    "left", "interacting") or a duplicate annotation do not decide the filter: they go to
    ``ann.bad`` (skipped and counted when a kept video is built; reported under "official <split>"
    when the video is left out) or, with
    ``on_bad_input="raise"``, stop the build. A second image of one ``frame_idx`` in a video is
    skipped (reported under "official <split>"). A video none of whose images has a valid
    ``hand_type`` is skipped with the reason "no valid hand_type" (never silently). How many videos
    the filter left out, and why, is counted in the skip report's "info"."""
    skip_log = skip_log or support.SkipLog()
    videos: dict[tuple, list[dict]] = {}
    for image in ann.images:
        videos.setdefault(video_key(image), []).append(image)
    kept = []
    for key in sorted(videos):
        images, types = [], set()
        for im in sorted(videos[key], key=lambda im: (int(im["frame_idx"]), im["id"])):
            if images and images[-1]["frame_idx"] == im["frame_idx"]:  # one time, one frame
                skip_log.handle(ann.source, support.BadInput(
                    "duplicate frame", ann.path("data"), f"{where(im)}: frame_idx also has image id "
                    f"{images[-1]['id']} in video {video_name(key)}; the first is kept"))
                continue
            images.append(im)
        for im in images:
            record = ann.by_image.get(im["id"])
            if record is None or im["id"] in ann.bad:
                continue
            hand_type = record.get("hand_type")
            if hand_type not in HAND_TYPES:
                what = "missing" if "hand_type" not in record else f"{hand_type!r}"
                error = support.BadInput("bad annotation", ann.path("data"),
                                         f"{where(im)}: hand_type {what}, expected one of "
                                         f"{', '.join(HAND_TYPES)}")
                if skip_log.on_bad_input == "raise":
                    skip_log.handle(ann.source, error)
                ann.bad[im["id"]] = error
                continue
            types.add(hand_type)
        if not types:
            skip_log.handle(ann.source, support.BadInput(
                "no valid hand_type", ann.path("data"), f"video {video_name(key)}: none of its "
                f"{len(images)} images has an annotation with a valid hand_type; video skipped"))
            continue
        if types == {"right"} and len(images) >= min_length:
            kept.append((key, images))
            continue
        reason = ("videos not right-hand only" if types != {"right"}
                  else f"videos shorter than min_length={min_length}")
        skip_log.info(ann.source, reason)
        for im in images:  # the filter leaves this video out: report its bad records here
            if im["id"] in ann.bad:
                skip_log.note(ann.source, ann.bad[im["id"]])
    skip_log.info(ann.source, "videos passing the Mini-InterHand filter", len(kept))
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
        basis = np.concatenate([np.zeros((1, 10)), np.eye(10)])
        j0 = np.asarray(mano_jax.regress_joints(model, mano_jax.blend_shapes(model, basis))[:, 0],
                        np.float64)
        self.template, self.dirs = j0[0], (j0[1:] - j0[0]).T  # (3,), (3, 10)
        self.hands_mean = np.asarray(model.hands_mean, np.float64)
        self.model = model
        import jax

        self.hand_in_camera = jax.jit(hand_in_camera)  # for filling invalid joints

    def __call__(self, betas: np.ndarray) -> np.ndarray:
        return self.template + self.dirs @ betas


def video_camera(ann: Annotations, image: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R (3, 3), campos (3,) metres, K (3, 3)) of an image's camera, checked (numbers of exactly
    their shapes, finite, R a rotation, focal lengths > 0); ``BadInput`` naming ``_camera.json``,
    the capture and the camera. A camera serves a whole video: a bad one skips the video."""
    capture, camera = str(image["capture"]), str(image["camera"])
    path, at = ann.path("camera"), f"capture {capture} camera {camera}"
    cam = ann.cameras.get(capture)
    if not isinstance(cam, dict):
        raise support.BadInput("missing camera", path, f"{at}: no entry for the capture")
    values = {}
    for key in ("campos", "camrot", "focal", "princpt"):
        table = cam.get(key)
        if not isinstance(table, dict) or camera not in table:
            raise support.BadInput("missing camera", path, f"{at}: no {key!r}")
        values[key] = table[camera]
    campos = support.checked_array(values["campos"], (3,), "campos", path, at)
    R = support.checked_rotation(support.checked_array(values["camrot"], (3, 3), "camrot", path, at),
                                 "camrot", path, at)
    focal = support.checked_array(values["focal"], (2,), "focal", path, at)
    princpt = support.checked_array(values["princpt"], (2,), "princpt", path, at)
    K = np.array([[focal[0], 0.0, princpt[0]], [0.0, focal[1], princpt[1]], [0.0, 0.0, 1.0]])
    return R, campos / 1000.0, support.checked_intrinsics(K, "focal", path, at)


def convert_frame(ann: Annotations, image: dict, wrist: RestWrist, camera=None) -> dict:
    """Labels of one image in its camera frame (handprop convention); ``BadInput`` on bad values,
    naming the annotation file and the image (id, capture, frame, camera).

    ``camera``: the video's checked ``video_camera`` (computed when None).
    Returns {"root", "pose", "betas", "joints3d", "K", "filled"} (filled = number of invalid
    joints replaced by the MANO fit's).
    """
    if image["id"] in ann.bad:
        raise ann.bad[image["id"]]
    R, c, K = video_camera(ann, image) if camera is None else camera
    capture, frame = str(image["capture"]), str(image["frame_idx"])
    at = where(image)
    record = ann.by_image.get(image["id"])
    if record is None:
        raise support.BadInput("missing annotation", ann.path("data"),
                               f"{at}: no annotation for this image ({image.get('file_name')})")
    if record.get("hand_type") != "right":  # kept videos are right-hand only: guards the contract
        raise support.BadInput("bad annotation", ann.path("data"),
                               f"{at}: hand_type {record.get('hand_type')!r} in a right-hand video")
    mano_path = ann.path("MANO_NeuralAnnot")
    fits = ann.mano.get(capture)
    fits = fits.get(frame) if isinstance(fits, dict) else None
    if not isinstance(fits, dict) or fits.get("right") is None:
        raise support.BadInput("missing MANO fit", mano_path, f"{at}: no right-hand fit")
    mano = fits["right"]
    if not isinstance(mano, dict):
        raise support.BadInput("bad annotation", mano_path, f"{at}: the right-hand fit is "
                                                            f"{type(mano).__name__}, expected an object")
    joints_path = ann.path("joint_3d")
    joint_record = ann.joints.get(capture)
    joint_record = joint_record.get(frame) if isinstance(joint_record, dict) else None
    if not isinstance(joint_record, dict) or "world_coord" not in joint_record:
        raise support.BadInput("missing annotation", joints_path, f"{at}: no world_coord")
    pose_w = support.checked_array(mano.get("pose"), (48,), "pose", mano_path, at)
    betas = support.checked_array(mano.get("shape"), (10,), "shape", mano_path, at)
    trans = support.checked_array(mano.get("trans"), (3,), "trans", mano_path, at)
    world = support.checked_array(joint_record["world_coord"], (42, 3), "world_coord", joints_path, at)
    # 3D validity: joint_3d.json's joint_valid (v1.0; data.json's per-image joint_valid marks
    # truncation there), else data.json's (older releases, as the original dataset.py reads it);
    # (42, 1) as released, or (42,)
    if joint_record.get("joint_valid") is not None:
        valid = support.checked_flags(joint_record["joint_valid"], ((42, 1), (42,)), "joint_valid",
                                      joints_path, at)
    else:
        valid = support.checked_flags(record.get("joint_valid"), ((42, 1), (42,)), "joint_valid",
                                      ann.path("data"), at)
    valid = valid[:21]
    if not valid[IH_RIGHT_WRIST]:
        raise support.BadInput("invalid wrist", joints_path, f"{at}: right wrist not valid")

    pose = pose_w.copy()
    pose[:3] = Rotation.from_matrix(R @ Rotation.from_rotvec(pose_w[:3]).as_matrix()).as_rotvec()
    pose[3:] = pose_w[3:] + wrist.hands_mean
    root = R @ (wrist(betas) + trans - c)
    joints3d = ((world[:21] / 1000.0 - c) @ R.T)[IH_TO_MANOPTH]
    invalid = ~valid[IH_TO_MANOPTH]
    if invalid.any():
        _, fit = wrist.hand_in_camera(wrist.model, root[None], pose[None], betas[None])
        joints3d[invalid] = np.asarray(fit[0], np.float64)[invalid]
    support.checked_in_front(joints3d, "world_coord", joints_path, at)
    support.checked_in_front(root[None], "trans", mano_path, at)
    return {"root": root, "pose": pose, "betas": betas, "joints3d": joints3d, "K": K,
            "filled": int(invalid.sum())}


def resolve_mano(mano_model, manual_dir: str | None):
    """A ``mano_jax.ManoModel`` from a model, a path, or ``MANO_RIGHT.pkl`` in ``manual_dir``."""
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

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Mini-InterHand split, NeuralAnnot MANO in the camera frame.",
                     "1.1.0": "frame_time (source frame grid); every annotation field checked."}
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
        The filter follows the paper unless the DataConfig's ``interhand_min_length``,
        ``interhand_num_val``, ``interhand_num_test``, ``interhand_test_seed`` (and the crop's
        ``crop_scale``, ``min_visible``) are set (not None)."""
        if builder_config not in (None, "mini"):
            raise ValueError(f"interhand26m: unknown builder config {builder_config!r}; use 'mini'")
        options = {key: getattr(data_config, f"interhand_{key}", None)
                   for key in ("min_length", "num_val", "num_test", "test_seed")}
        options = {k: int(v) for k, v in options.items() if v is not None}
        for key in ("crop_scale", "min_visible"):
            if getattr(data_config, key, None) is not None:
                options[key] = float(getattr(data_config, key))
        return cls.config_for(int(data_config.image_size), **options)

    def _split_generators(self, dl_manager):
        options = self.builder_config.options
        root = os.fspath(dl_manager.manual_dir)
        wrist = RestWrist(resolve_mano(self.mano_model, root))
        annotations = {s: load_annotations(root, s, self.skip_log) for s in SOURCE_SPLITS}
        filtered = {}
        for s, a in annotations.items():
            filtered[s] = []
            for key, images in right_hand_videos(a, options.min_length, self.skip_log):
                try:  # the camera serves the whole video: a bad one skips it
                    camera = video_camera(a, images[0])
                except support.BadInput as e:
                    self.skip_log.handle(a.source, support.BadInput(
                        e.reason, e.path, f"{e.detail}; video {video_name(key)} ({len(images)} frames) "
                                          "skipped"))
                    continue
                filtered[s].append((a, key, images, camera))
        split = mini_interhand_split(filtered["val"], filtered["test"], options.num_val,
                                     options.num_test, options.test_seed)
        for name in ("train", "val", "test"):
            if not split[name]:
                raise support.EmptySplitError(self._empty_message(name, annotations, filtered))
        return {name: self._generate_examples(name, root, videos, wrist) for name, videos in split.items()}

    def _empty_message(self, name: str, annotations: dict, filtered: dict) -> str:
        """Why output split ``name`` is empty: the filter's counts and the options to relax it."""
        o = self.builder_config.options
        source = "test" if name == "test" else "val"
        info = self.skip_log.infos.get(annotations[source].source, {})
        dropped = ", ".join(f"{n} {what.removeprefix('videos ')}" for what, n in sorted(info.items())
                            if what != "videos passing the Mini-InterHand filter") or "none left out"
        skipped = self.skip_log.counts.get(annotations[source].source, {})
        bad = (" and skipped " + ", ".join(f"{n} {r}" for r, n in sorted(skipped.items()))) if skipped else ""
        total = len({video_key(im) for im in annotations[source].images})
        head = (f"InterHand2.6M: split {name!r} is empty: {len(filtered[source])} of the {total} official "
                f"{source} videos pass the Mini-InterHand filter (right hand only, >= min_length="
                f"{o.min_length} frames; left out: {dropped}{bad})")
        if name == "train" and filtered[source]:
            return (f"{head}, and the last num_val={o.num_val} of them form val; lower it with --set "
                    "data.interhand_num_val=N")
        return f"{head}; relax it with --set data.interhand_min_length=N"

    def _generate_examples(self, split, root, videos, wrist):
        options = self.builder_config.options

        def process(frame):
            ann, image, camera = frame
            labels = convert_frame(ann, image, wrist, camera)
            image_path = os.path.join(root, "images", ann.split, image["file_name"])
            pixels = support.read_rgb(image_path)
            example = support.make_example(
                pixels, labels["K"], labels["root"], labels["pose"], labels["betas"],
                labels["joints3d"], options.image_size, options.crop_scale, options.min_visible,
                image_path)
            if labels["filled"]:
                self.skip_log.info(split, "joints filled from the MANO fit", labels["filled"])
            return example

        frames = [(video_name(key), [(t, (ann, im, camera)) for t, im in zip(frame_times(images), images,
                                                                             strict=True)])
                  for ann, key, images, camera in videos]
        yield from support.video_examples(split, frames, process, self.skip_log)
