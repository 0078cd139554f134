"""hand_videos: your own sparsely labelled hand videos as a tfds dataset (docs/own_videos.md).

Source layout (``manual_dir``; the same files ``handprop propagate`` reads)::

    DIR/splits.json               optional: {"train": [video, ...], "val": [...], "test": [...]}
    DIR/<video>/                  one folder per video; its name is the video's name
        frames/                   the frames (png, jpg, ...; sorted with numbers compared numerically)
                                  — or, instead, one video file in <video>/ (animated gif/png/webp,
                                  multi-page tiff; mp4/avi/... with the optional imageio[ffmpeg]),
                                  or the images directly in <video>/
        labels.json | labels.npz  frame index -> root, pose (48), betas; optional "K" and "side"
        intrinsics.npy|.json|.txt one 3x3 K or one per frame (T, 3, 3), unless the labels hold "K"
        boxes.json|.npy|.txt      optional per-frame hand boxes (handprop_jax.data.boxes)

Splits: from ``splits.json`` (every video folder must be listed once; one not listed is counted as
"not in splits.json" and left out); without it a seeded video-level split of the sorted names
(``split_seed``): ``round(val_fraction * n)`` val and ``round(test_fraction * n)`` test videos, at least
one each when there are >= 3 videos (fewer: all train).

What is stored (docs/design.md, "Stored dataset features", plus ``has_label``): every readable frame
of a video, cropped to ``image_size`` around the hand with K adjusted (``handprop_jax.data.crop``),
with ``has_label`` True on the frames the labels file labels. Frames without a label store NaN in
root/pose/betas/joints3d/joints2d: nothing may read them (the pipeline never puts a label of a frame
outside S_V in a training batch, and the evaluation scores only frames with a label). Labelled
frames store the label, its MANO joints (``handprop_jax.data.boxes.label_geometry``, with the MANO
model of the run: ``mano_model``, or the synthetic hand) and their projection into the crop.

Per-frame hand boxes: ``handprop_jax.data.boxes.video_boxes`` — the box file's box where given, else
the labelled frame's projected mesh vertices (the synthetic training crops' rule: ``crop_scale``,
default 1.2, x their extent, at least 0.15 m at the wrist's depth), else linear interpolation between
the nearest frames with a box; ``handprop propagate`` uses the same function, so its first crops are
the stored crops (it then re-crops the interpolated ones around its propagated hands).

Bad input is named or counted, never silently dropped (``<dataset dir>/skipped.json`` lists counts
per split and reason and the first messages naming the files; ``on_bad_input="raise"`` stops at the
first): a frame that cannot be read or has another size than the first is left out (the later
frames move up one index, labels stay with their frames, and ``frame_time`` keeps each frame's number
in the video, so the hole stays a hole in time for K, N(u) and the gaps; reasons "unreadable frame",
"frame size differs"); a label for a frame the video does not have is left out ("label for a
missing frame"); a label whose hand is behind the camera or mostly outside the frame is left out,
its frame kept without a label ("hand outside the image"); a whole video is left out for: no frames
or an unreadable video file ("no frames", "unreadable video"), a missing or malformed labels file (bad
JSON, missing key, wrong lengths, NaN/inf, duplicates: "missing labels", "bad labels"), missing or
bad intrinsics ("missing intrinsics", "bad intrinsics"), a bad box file ("bad boxes"), a left hand
("left hand"), or no usable label left ("no usable label").

The options (crop size and scale, split seed and fractions, MANO model, a fingerprint of the source
files) are stored in the dataset metadata: ``handprop data build`` rebuilds when they change (e.g.
after you edit a labels file); reading (training) checks the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from handprop_jax.data import builder_support as support
from handprop_jax.data.boxes import BoxError, label_box, label_geometry, read_boxes, video_boxes
from handprop_jax.data.crop import Box, crop_image, crop_intrinsics, crop_points
from handprop_jax.data.features import encode_png, frame_features
from handprop_jax.hand import load_mano
from handprop_jax.propagation.inputs import (
    IMAGE_SUFFIXES,
    PropagationInputError,
    check_intrinsics,
    frame_size,
    iter_frames,
    label_side,
    list_frames,
    load_labels,
    parse_intrinsics,
)

SPLITS = ("train", "val", "test")
LABEL_FILES = ("labels.json", "labels.npz")
INTRINSICS_FILES = ("intrinsics.npy", "intrinsics.json", "intrinsics.txt")
BOX_FILES = ("boxes.json", "boxes.npy", "boxes.txt")
SPLIT_FILE = "splits.json"
UNASSIGNED = "not in splits.json"  # the pseudo-split under which unlisted videos are counted
SYNTHETIC = "synthetic"  # mano_model value: the embedded synthetic hand


@dataclasses.dataclass(frozen=True)
class HandVideosOptions:
    """What a build depends on besides the files (stored in the dataset metadata). ``mano`` and
    ``fingerprint`` are None when unknown (a builder opened to read the data): not compared then."""

    image_size: int = 224
    crop_scale: float | None = None  # None: data.boxes.VERTEX_SCALE (the training crops' rule)
    min_visible: float = 0.5
    split_seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    mano: str | None = None
    fingerprint: str | None = None


class HandVideosConfig(tfds.core.BuilderConfig):
    """One config name ("default") whatever the options, so that ``tfds.data_source("hand_videos",
    data_dir=DIR, ...)`` reads what was built in DIR."""

    def __init__(self, *, name: str = "default", **options):
        super().__init__(name=name, description="sparsely labelled hand videos (docs/own_videos.md)")
        self.options = HandVideosOptions(**options)


def fingerprint(manual_dir: str | os.PathLike) -> str:
    """A hash of the names, sizes and modification times of the files a build reads (splits.json and
    every video folder's frames, labels, intrinsics and boxes; not other sub-folders such as
    propagation outputs)."""
    root = Path(manual_dir)
    h = hashlib.sha256()
    if not root.is_dir():
        return "missing"

    def add(path: Path) -> None:
        st = path.stat()
        h.update(f"{path.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())

    if (root / SPLIT_FILE).is_file():
        add(root / SPLIT_FILE)
    for video in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(video.iterdir()):
            if f.is_file():
                add(f)
        if (video / "frames").is_dir():
            for f in sorted((video / "frames").iterdir()):
                if f.is_file():
                    add(f)
    return h.hexdigest()[:16]


def list_videos(root: Path) -> list[str]:
    """Names of the video folders of the manual dir (sorted; hidden folders ignored)."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def assign_splits(names: list[str], root: Path, seed: int, val_fraction: float, test_fraction: float,
                  skip_log: support.SkipLog) -> dict[str, list[str]]:
    """{split: [video names]} from ``splits.json`` or the seeded split (module docstring)."""
    path = root / SPLIT_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: malformed JSON ({e})") from e
        if not isinstance(data, dict) or not set(data) <= set(SPLITS) or \
                not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in data.values()):
            got = sorted(data) if isinstance(data, dict) else data
            raise ValueError(f"{path}: expected {{\"train\": [video names], \"val\": [...], \"test\": "
                             f"[...]}} (keys among {SPLITS}), got {got!r}")
        seen: dict[str, str] = {}
        out = {split: [] for split in SPLITS}
        for split, listed in data.items():
            for name in listed:
                if name in seen:
                    raise ValueError(f"{path}: video {name!r} is listed in both {seen[name]!r} and {split!r}")
                seen[name] = split
                if name in names:
                    out[split].append(name)
                else:
                    skip_log.handle(split, support.BadInput("missing video", root / name,
                                                            f"listed in {SPLIT_FILE}, no such folder"))
        for name in names:
            if name not in seen:
                skip_log.handle(UNASSIGNED, support.BadInput(UNASSIGNED, root / name, "left out"))
        return {split: sorted(v) for split, v in out.items()}
    n = len(names)
    order = [names[i] for i in np.random.default_rng(seed).permutation(n)]
    n_val = max(1, round(val_fraction * n)) if n >= 3 and val_fraction > 0 else 0
    n_test = max(1, round(test_fraction * n)) if n >= 3 and test_fraction > 0 else 0
    return {"val": sorted(order[:n_val]), "test": sorted(order[n_val:n_val + n_test]),
            "train": sorted(order[n_val + n_test:])}


def _one_of(folder: Path, candidates: tuple[str, ...], what: str) -> Path | None:
    found = [folder / c for c in candidates if (folder / c).is_file()]
    if len(found) > 1:
        raise support.BadInput(f"bad {what}", folder, f"several {what} files: {[p.name for p in found]}")
    return found[0] if found else None


def frames_source(folder: Path) -> Path:
    """Where a video folder's frames are: ``frames/``, else its one video file, else the folder
    itself when it holds images. ``BadInput("no frames")`` otherwise."""
    if (folder / "frames").is_dir():
        return folder / "frames"
    known = set(LABEL_FILES + INTRINSICS_FILES + BOX_FILES)
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name not in known
             and not p.name.startswith(".") and p.suffix.lower() not in (".json", ".npz", ".npy", ".txt")]
    if len(files) == 1:
        return files[0]
    if len(files) > 1 and all(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
        return folder
    detail = (f"several files that are not frames of one folder: {[p.name for p in files[:5]]}" if files
              else "no frames/ folder, video file or images")
    raise support.BadInput("no frames", folder, detail)


def first_frame_size(folder: Path, names: list[str]) -> tuple[int, int]:
    """(H, W) of the first readable frame of a frames folder (the others must match it)."""
    from PIL import Image

    for name in names:
        try:
            with Image.open(folder / name) as im:
                return im.size[1], im.size[0]
        except OSError:
            continue
    raise PropagationInputError(f"{folder}: no readable frame")


@dataclasses.dataclass
class VideoInputs:
    """A video folder, read and checked (everything but the frame pixels)."""

    name: str
    source: Path  # frames folder or video file
    names: list[str]  # frame names, in order
    height: int
    width: int
    K: np.ndarray  # (T, 3, 3) original frames
    labelled: np.ndarray  # (L,) frame indices with a usable label
    labels: object  # Gamma (L, ...)
    joints3d: np.ndarray  # (L, 21, 3)
    boxes: np.ndarray  # (T, 3) cx, cy, side


def read_video(folder: Path, split: str, mano, options: HandVideosOptions, skip_log: support.SkipLog
               ) -> VideoInputs:
    """Read and check one video folder (labels, intrinsics, boxes, frame list; module docstring).
    Raises ``BadInput`` for a video that cannot be used; drops (and counts) single bad labels."""
    source = frames_source(folder)
    try:
        names = list_frames(source)
        height, width = frame_size(source) if source.is_file() else first_frame_size(source, names)
    except PropagationInputError as e:
        raise support.BadInput("unreadable video" if source.is_file() else "no frames", source, str(e)) from e
    T = len(names)
    labels_path = _one_of(folder, LABEL_FILES, "labels")
    if labels_path is None:
        raise support.BadInput("missing labels", folder, f"no {' or '.join(LABEL_FILES)}")
    try:
        side = label_side(labels_path)
        frames, gamma, K_labels = load_labels(labels_path, None)
    except PropagationInputError as e:
        raise support.BadInput("bad labels", labels_path, str(e)) from e
    if side != "right":
        raise support.BadInput("left hand", labels_path, "the networks are trained on right hands: mirror "
                               "the video and its labels to a right hand first")
    intr_path = _one_of(folder, INTRINSICS_FILES, "intrinsics")
    try:
        if intr_path is not None:
            K = parse_intrinsics(str(intr_path))
        elif K_labels is not None:
            K = K_labels
        else:
            raise support.BadInput("missing intrinsics", folder,
                                   f"no {'/'.join(INTRINSICS_FILES)} and no 'K' in {labels_path.name}")
        K = np.broadcast_to(check_intrinsics(K, str(intr_path or labels_path), T), (T, 3, 3)).copy()
    except PropagationInputError as e:
        raise support.BadInput("bad intrinsics", intr_path or labels_path, str(e)) from e
    inside = (frames >= 0) & (frames < T)
    for f in frames[~inside]:
        skip_log.handle(split, support.BadInput("label for a missing frame", labels_path,
                                                f"frame {int(f)}; the video has frames 0..{T - 1}"))
    frames, gamma = frames[inside], gamma.take(np.nonzero(inside)[0])
    box_path = _one_of(folder, BOX_FILES, "boxes")
    try:
        file_boxes = read_boxes(box_path, T) if box_path is not None else None
    except BoxError as e:
        raise support.BadInput("bad boxes", box_path, str(e)) from e
    joints3d, vertices = label_geometry(mano, gamma)
    try:
        boxes, _ = video_boxes(T, height, width, K, frames, joints3d, file_boxes, options.crop_scale,
                               options.min_visible, vertices3d=vertices)
    except BoxError as e:
        raise support.BadInput("hand outside the image", folder, str(e)) from e
    visible = np.array([label_box(j, K[f], height, width, options.crop_scale, options.min_visible, v)
                        is not None for f, j, v in zip(frames, joints3d, vertices, strict=True)], bool)
    for f in frames[~visible]:
        skip_log.handle(split, support.BadInput("hand outside the image", labels_path,
                                                f"frame {int(f)}: its label is kept out, the frame stays"))
    keep = np.nonzero(visible)[0]
    if len(keep) == 0:
        raise support.BadInput("no usable label", labels_path, "no label left to train or evaluate on")
    return VideoInputs(folder.name, source, names, height, width, K, frames[keep], gamma.take(keep),
                       joints3d[keep], boxes)


class Builder(support.OptionsBuilderMixin, tfds.core.GeneratorBasedBuilder):
    """Your own sparsely labelled videos (module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Frames cropped around the hand, has_label flag, NaN labels elsewhere."}
    BUILDER_CONFIGS = [HandVideosConfig()]
    DEFAULT_CONFIG_NAME = "default"
    CONFIG_CLASS = HandVideosConfig
    HOMEPAGE = "docs/own_videos.md"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put one folder per video in a folder DIR (frames/, labels.json, intrinsics; docs/own_videos.md)
    and run `handprop data build hand_videos --manual-dir DIR --data-dir data --config own_videos`.
    """

    def __init__(self, *, on_bad_input: str = "skip", mano_model: str | None = None,
                 manual_dir: str | None = None, image_size: int | None = None, **kwargs):
        """Args: on_bad_input: "skip" (count and continue) or "raise"; mano_model: MANO_RIGHT.pkl/.npz
        or "synthetic" (the synthetic hand; needed to build, None when only reading); manual_dir: the
        source folder (for the fingerprint that triggers a rebuild when the files change);
        image_size: crop side (overrides ``config``'s); other args as tfds (``data_dir``, ``config``:
        a ``HandVideosConfig``; array_record by default)."""
        config = kwargs.get("config")
        options = config.options if isinstance(config, HandVideosConfig) else HandVideosOptions()
        updates = {"mano": str(mano_model) if mano_model is not None else options.mano,
                   "fingerprint": fingerprint(manual_dir) if manual_dir else options.fingerprint}
        if image_size is not None:
            updates["image_size"] = int(image_size)
        kwargs["config"] = HandVideosConfig(**(dataclasses.asdict(options) | updates))
        kwargs.setdefault("file_format", "array_record")
        self.skip_log = support.SkipLog(on_bad_input)
        super().__init__(**kwargs)

    @classmethod
    def config_from_data(cls, data_config, builder_config: str | None = None) -> HandVideosConfig:
        """Hook of ``handprop_jax.data.build``: the crop side from ``data_config.image_size``."""
        if builder_config not in (None, "default"):
            raise ValueError(f"hand_videos has one builder config ('default'), not {builder_config!r}")
        return HandVideosConfig(image_size=int(data_config.image_size))

    def _info(self):
        return self.dataset_info_from_configs(
            features=frame_features(None, has_label=True), disable_shuffling=True,
            homepage=self.HOMEPAGE, metadata=tfds.core.MetadataDict(options=self.options_json()))

    def stale_reason(self) -> str | None:
        """Why the prepared files differ from the requested options (unknown ones not compared)."""
        stored, wanted = self.stored_options(), self.options_json()
        if stored is None:
            return None
        diff = [f"{k}={stored.get(k)!r}->{v!r}" for k, v in wanted.items()
                if v is not None and stored.get(k) != v]
        return ("options differ (stored->requested): " + ", ".join(diff)) if diff else None

    def _split_generators(self, dl_manager):
        options = self.builder_config.options
        if options.mano is None:
            raise ValueError("hand_videos: give the MANO model (mano_model=PATH, or 'synthetic' for the "
                             "synthetic hand; handprop: model.mano_model)")
        if options.mano != SYNTHETIC and not os.path.isfile(options.mano):
            raise FileNotFoundError(
                f"hand_videos: MANO model {options.mano} not found. Download MANO_RIGHT.pkl from "
                "https://mano.is.tue.mpg.de (licence required) and put it there (--set model.mano_model=PATH "
                "for another place), or --set model.mano_model=None for the synthetic hand (only for "
                "labels made with it, e.g. the exported synthetic example)")
        self._mano = load_mano(None if options.mano == SYNTHETIC else options.mano)
        root = Path(os.fspath(dl_manager.manual_dir))
        if not root.is_dir():
            raise FileNotFoundError(f"hand_videos: no folder {root} (--manual-dir)")
        names = list_videos(root)
        if not names:
            raise FileNotFoundError(f"hand_videos: no video folders in {root} (one sub-folder per video: "
                                    "frames/, labels.json, intrinsics; docs/own_videos.md)")
        split = assign_splits(names, root, options.split_seed, options.val_fraction, options.test_fraction,
                              self.skip_log)
        empty = [s for s, v in split.items() if not v]
        if empty:
            logging.warning("hand_videos: no videos for split(s) %s; not written", empty)
        return {s: self._generate_examples(s, root, v) for s, v in split.items() if v}

    def _generate_examples(self, split, root, names):
        video_id = 0
        for name in names:
            try:
                video = read_video(root / name, split, self._mano, self.builder_config.options, self.skip_log)
            except support.BadInput as e:
                self.skip_log.handle(split, e)
                continue
            examples = self._video_examples(split, video)
            if not any(bool(e["has_label"]) for _, e in examples):
                self.skip_log.handle(split, support.BadInput("no usable label", root / name,
                                                             "every labelled frame was unreadable"))
                continue
            for index, (time, example) in enumerate(examples):
                example.update(video_id=video_id, video_name=name, frame_index=index, frame_time=time,
                               video_length=len(examples))
                yield f"{video_id:06d}_{index:06d}", example
            video_id += 1

    def _video_examples(self, split: str, video: VideoInputs) -> list[tuple[int, dict]]:
        """(source frame number, example) of the kept frames in order (bad frames counted and left
        out; the source number becomes the stored ``frame_time``)."""
        from concurrent.futures import ThreadPoolExecutor

        size = self.builder_config.options.image_size
        row = {int(f): i for i, f in enumerate(video.labelled)}

        def from_file(t: int):
            try:
                frame = support.read_rgb(video.source / video.names[t])
                return frame_example(video, t, frame, row, size), None
            except support.BadInput as e:
                if e.reason in ("missing image", "corrupt image"):
                    e = support.BadInput("unreadable frame", e.path, e.detail or e.reason)
                return None, e

        if video.source.is_dir():  # one file per frame, decoded in threads
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                results = list(pool.map(from_file, range(len(video.names))))
        else:  # a video file, decoded in order
            results = []
            try:
                for t, (_, frame) in enumerate(iter_frames(video.source)):
                    try:
                        results.append((frame_example(video, t, frame, row, size), None))
                    except support.BadInput as e:
                        results.append((None, e))
            except PropagationInputError as e:
                results += [(None, support.BadInput("unreadable frame", f"{video.source}#{t}", str(e)))
                            for t in range(len(results), len(video.names))]
        kept = []
        for t, (example, error) in enumerate(results):
            if error is not None:
                self.skip_log.handle(split, error)
            else:
                kept.append((t, example))
        return kept


def frame_example(video: VideoInputs, t: int, frame: np.ndarray, row: dict[int, int], size: int) -> dict:
    """The stored features (less the video keys) of frame t: its crop with the video's box for t, the
    crop's K, and the label (NaN without one) with its joints projected into the crop."""
    if frame.shape[:2] != (video.height, video.width):
        raise support.BadInput("frame size differs", f"{video.source}: {video.names[t]}",
                               f"{frame.shape[1]}x{frame.shape[0]}, the first frame is "
                               f"{video.width}x{video.height}")
    box = Box(*map(float, video.boxes[t]))
    f32 = np.float32
    example = {"image": encode_png(crop_image(frame, box, size)),
               "K": crop_intrinsics(video.K[t], box, size).astype(f32), "has_label": t in row}
    if t in row:
        i = row[t]
        joints = np.asarray(video.joints3d[i], np.float64)
        uvw = joints @ video.K[t].T
        example.update(root=np.asarray(video.labels.root[i], f32), pose=np.asarray(video.labels.pose[i], f32),
                       betas=np.asarray(video.labels.betas[i], f32), joints3d=joints.astype(f32),
                       joints2d=crop_points(uvw[:, :2] / uvw[:, 2:3], box, size).astype(f32))
    else:
        shapes = {"root": 3, "pose": 48, "betas": 10, "joints3d": (21, 3), "joints2d": (21, 2)}
        example.update({k: np.full(shape, np.nan, f32) for k, shape in shapes.items()})
    return example
