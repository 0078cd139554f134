"""What the real-data tfds builders (HO-3D, InterHand2.6M) share besides cropping.

``BadInput`` / ``SkipLog`` (skip with a count, or raise naming the file), ``read_rgb``, the field
checks (``checked_array`` — exact shapes, never reshaped —, ``checked_flags``, ``checked_intrinsics``,
``checked_rotation``, ``checked_in_front``), ``make_example``, ``video_examples`` (records grouped by
video in frame order, each with its source ``frame_time``), ``EmptySplitError`` and
``OptionsBuilderMixin`` (options in the dataset metadata, ``stale_reason``, ``skipped.json``, the
shared ``_info``). Numpy/PIL only; runs while a dataset is built.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import threading

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from handprop_jax.data.crop import crop_frame
from handprop_jax.data.features import encode_png, frame_features
from handprop_jax.errors import UserError


class BadInput(Exception):
    """A frame (or file) that cannot be used. ``reason`` is a short category used for the skip
    counts (e.g. "missing image"); ``path`` names the offending file."""

    def __init__(self, reason: str, path: object, detail: str = ""):
        self.reason, self.path, self.detail = reason, str(path), detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


class SkipLog:
    """Counts skipped items per split and reason; or raises, with ``on_bad_input="raise"``.

    ``counts``: {split: {reason: n}}; ``examples``: {split: [first ``keep`` messages naming files]}.
    """

    def __init__(self, on_bad_input: str = "skip", keep: int = 20):
        if on_bad_input not in ("skip", "raise"):
            raise ValueError(f"on_bad_input must be 'skip' or 'raise', got {on_bad_input!r}")
        self.on_bad_input = on_bad_input
        self.keep = keep
        self.counts: dict[str, dict[str, int]] = {}
        self.examples: dict[str, list[str]] = {}
        self.infos: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def handle(self, split: str, error: BadInput) -> None:
        """Record (or raise, as ValueError naming the file) one bad item of ``split``."""
        if self.on_bad_input == "raise":
            raise ValueError(str(error)) from error
        self.note(split, error)

    def note(self, split: str, error: BadInput) -> None:
        """Count ``error`` under ``split`` without raising (for things that are not an error of
        the data, e.g. a split's named sequence absent from a partial download)."""
        counts = self.counts.setdefault(split, {})
        counts[error.reason] = counts.get(error.reason, 0) + 1
        examples = self.examples.setdefault(split, [])
        if len(examples) < self.keep:
            examples.append(str(error))

    def info(self, split: str, what: str, n: int = 1) -> None:
        """Count a repair that did not skip anything (e.g. joints filled from a MANO fit)."""
        with self._lock:  # called from the frame-processing threads
            infos = self.infos.setdefault(split, {})
            infos[what] = infos.get(what, 0) + n

    def to_json(self) -> dict:
        """{"counts": {split: {reason: n}}, "examples": {split: [messages]}, "info": {split:
        {repair: n}}} — what ``skipped.json`` holds."""
        return {"counts": self.counts, "examples": self.examples, "info": self.infos}

    def summary(self) -> str:
        """One line per split: ``split: n skipped (reason: n, ...)``; empty when nothing skipped."""
        lines = []
        for split, counts in self.counts.items():
            detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))
            lines.append(f"{split}: {sum(counts.values())} skipped ({detail})")
        return "\n".join(lines)


def read_rgb(path) -> np.ndarray:
    """uint8 (H, W, 3) RGB image from a file; ``BadInput`` ("missing image" / "corrupt image")."""
    if not os.path.isfile(path):
        raise BadInput("missing image", path)
    try:
        with Image.open(path) as pil:
            return np.asarray(pil.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # PIL raises several types for truncated/corrupt files
        raise BadInput("corrupt image", path, f"{type(e).__name__}: {e}") from e


def _numeric(value, key: str, path, where: str, kinds: str = "iuf") -> np.ndarray:
    """``value`` as a numpy array of a numeric kind in ``kinds`` (never text, objects or None)."""
    prefix = f"{where}: " if where else ""
    if value is None:
        raise BadInput("missing annotation", path, f"{prefix}{key} is None")
    if isinstance(value, str | bytes | dict):
        raise BadInput("bad annotation", path, f"{prefix}{key} is {type(value).__name__}, expected numbers")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as e:  # ragged nested lists
        raise BadInput("bad annotation", path, f"{prefix}{key}: {e}") from e
    if array.dtype.kind not in kinds:
        raise BadInput("bad annotation", path, f"{prefix}{key} holds {array.dtype} values, expected numbers")
    return array


def checked_array(value, shape: tuple[int, ...], key: str, path, where: str = "") -> np.ndarray:
    """``value`` as a float64 array of exactly ``shape`` (never reshaped: a (3, 21) array for a
    (21, 3) field is refused), numeric (not text/objects/bool) and finite; else ``BadInput`` naming
    ``path`` (the annotation file), ``where`` (the frame/image id) and ``key``."""
    array = _numeric(value, key, path, where).astype(np.float64)
    prefix = f"{where}: " if where else ""
    if array.shape != shape:
        raise BadInput("bad annotation", path, f"{prefix}{key} has shape {array.shape}, expected {shape}")
    if not np.all(np.isfinite(array)):
        raise BadInput("non-finite values", path, f"{prefix}{key} contains NaN or inf")
    return array


def checked_flags(value, shapes: tuple[tuple[int, ...], ...], key: str, path, where: str = "") -> np.ndarray:
    """Validity flags: an array of exactly one of ``shapes``, every value 0/1 or False/True; returned
    as bool, flattened. ``BadInput`` otherwise (as :func:`checked_array`)."""
    array = _numeric(value, key, path, where, kinds="biuf")
    prefix = f"{where}: " if where else ""
    if array.shape not in shapes:
        raise BadInput("bad annotation", path, f"{prefix}{key} has shape {array.shape}, expected "
                                               f"{' or '.join(map(str, shapes))}")
    if not np.all((array == 0) | (array == 1)):
        raise BadInput("bad annotation", path, f"{prefix}{key} holds values other than 0/1")
    return array.astype(bool).reshape(-1)


def checked_intrinsics(K: np.ndarray, key: str, path, where: str = "") -> np.ndarray:
    """A (3, 3) pinhole matrix (already :func:`checked_array`-ed): positive focal lengths, zero skew
    row entries below the diagonal and last row (0, 0, 1); ``BadInput`` otherwise."""
    prefix = f"{where}: " if where else ""
    if K[0, 0] <= 0 or K[1, 1] <= 0 or K[1, 0] != 0 or not np.allclose(K[2], [0, 0, 1]):
        raise BadInput("bad annotation", path, f"{prefix}{key} is not a pinhole camera matrix "
                                               f"(fx, fy > 0, last row 0 0 1): {K.tolist()}")
    return K


def checked_rotation(R: np.ndarray, key: str, path, where: str = "", atol: float = 1e-3) -> np.ndarray:
    """A (3, 3) rotation matrix (orthonormal, det +1 within ``atol``); ``BadInput`` otherwise."""
    prefix = f"{where}: " if where else ""
    if not np.allclose(R @ R.T, np.eye(3), atol=atol) or not np.isclose(np.linalg.det(R), 1.0, atol=atol):
        raise BadInput("bad annotation", path, f"{prefix}{key} is not a rotation matrix")
    return R


def checked_in_front(points: np.ndarray, key: str, path, where: str = "") -> np.ndarray:
    """(..., 3) camera-frame points (OpenCV) with every depth z > 0; ``BadInput`` otherwise (a point
    behind the camera would project to a mirrored, plausible-looking place)."""
    if np.any(points[..., 2] <= 0):
        prefix = f"{where}: " if where else ""
        raise BadInput("bad annotation", path, f"{prefix}{key}: points behind the camera "
                                               f"(min depth {float(points[..., 2].min()):.3g} m)")
    return points


class EmptySplitError(UserError, ValueError):
    """A build that would write a split without any example; the message names the split and the
    filter (or the skip reasons) that emptied it, and how to relax it."""


def make_example(image: np.ndarray, K: np.ndarray, root: np.ndarray, pose: np.ndarray,
                 betas: np.ndarray, joints3d: np.ndarray, size: int, scale: float,
                 min_visible: float, image_path) -> dict:
    """Crop a frame and assemble the label part of an example (see ``features.frame_features``;
    the video keys are added by the builder). Arrays are camera frame (OpenCV), metres.

    Raises ``BadInput("hand outside the image", image_path)``.
    """
    try:
        crop, K_crop, joints2d = crop_frame(image, K, joints3d, size, scale=scale,
                                            min_visible=min_visible)
    except ValueError as e:
        raise BadInput("hand outside the image", image_path, str(e)) from e
    f32 = np.float32
    return {"image": encode_png(crop), "K": K_crop.astype(f32), "root": np.asarray(root, f32),
            "pose": np.asarray(pose, f32), "betas": np.asarray(betas, f32),
            "joints3d": np.asarray(joints3d, f32), "joints2d": joints2d.astype(f32)}


def video_examples(split: str, videos, process_frame, skip_log: SkipLog, workers: int | None = None):
    """Yield ``(key, example)`` of a split, grouped by video in frame order.

    Args:
      split: split name (for the skip counts).
      videos: sequence of ``(video_name, frames)``; ``frames`` a sequence of ``(time, frame)`` in
        temporal order: ``time`` the frame's number in the source video (int, strictly increasing),
        ``frame`` whatever ``process_frame`` takes, or a ``BadInput`` found before (e.g. while
        grouping the annotations), which is handled like one raised by ``process_frame``.
      process_frame: ``frame -> example dict`` (labels + image), raising ``BadInput``; run in a
        thread pool (image decoding/encoding release the GIL), results kept in frame order.
      skip_log: where bad frames go (handled in frame order, so "raise" stops at the first).
        Skipped frames are dropped from their video: ``frame_index`` counts the kept frames (0-based
        positions), ``frame_time`` keeps each frame's source time, so a hole stays a hole in time
        (``handprop_jax.data.sparse``). A video without any good frame is dropped (reason "empty
        video") and does not take a ``video_id``.
      workers: threads; default ``min(8, cpu count)``.
    Raises:
      EmptySplitError when no video of the split has a good frame (the counts per reason named).
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    def guarded(frame):
        if isinstance(frame, BadInput):
            return None, frame
        try:
            return process_frame(frame), None
        except BadInput as e:
            return None, e

    workers = workers or min(8, os.cpu_count() or 1)
    video_id = 0
    videos = list(videos)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for name, frames in tqdm(videos, desc=f"{split} videos", leave=False):
            frames = list(frames)
            times = [int(t) for t, _ in frames]
            if any(b <= a for a, b in zip(times, times[1:], strict=False)):
                raise ValueError(f"{split} video {name}: frame times {times[:8]}... are not increasing")
            kept = []
            for time, (example, error) in zip(times, pool.map(guarded, [f for _, f in frames]), strict=True):
                if error is not None:
                    skip_log.handle(split, error)
                else:
                    kept.append((time, example))
            if not kept:
                skip_log.handle(split, BadInput("empty video", name, "no usable frame"))
                continue
            for index, (time, example) in enumerate(kept):
                example.update(video_id=video_id, video_name=name, frame_index=index, frame_time=time,
                               video_length=len(kept))
                yield f"{video_id:06d}_{index:06d}", example
            video_id += 1
    if video_id == 0:
        counts = skip_log.counts.get(split, {})
        detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items())) or "no frames listed"
        raise EmptySplitError(f"split {split!r} is empty: every frame of its {len(videos)} video(s) was "
                              f"skipped ({detail}); first reasons: {skip_log.examples.get(split, [])[:3]}")


class OptionsBuilderMixin:
    """Shared by the real-data tfds builders (mix in before ``tfds.core.GeneratorBasedBuilder``).

    A builder config keeps its name ("v2", "mini", ...) whatever its options (crop size, split
    filter), so that ``tfds.data_source(NAME, data_dir=DIR, split=...)`` reads what was built in DIR;
    the options are stored in the dataset metadata (``metadata.json``, key "options"). Provides:
    ``stale_reason()`` (hook of ``handprop_jax.data.build``: why the prepared files differ from the
    requested options), a refusal to silently reuse files prepared with other options, and the
    skip report (``skipped`` property, ``<dataset dir>/skipped.json``).
    Subclasses set ``CONFIG_CLASS`` and ``HOMEPAGE``, give their config an ``options`` dataclass and set
    ``self.skip_log`` in ``__init__``.
    """

    CONFIG_CLASS: type = object
    HOMEPAGE: str = ""

    # tfds resolves `code_path` through `importlib_resources`, absent from this environment: the
    # builder's own source file.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(inspect.getfile(cls))

    def _info(self):
        return self.dataset_info_from_configs(
            features=frame_features(None),  # one config name for every crop size
            disable_shuffling=True,  # records stay grouped by video, in frame order
            homepage=self.HOMEPAGE,
            metadata=tfds.core.MetadataDict(options=self.options_json()),
        )

    def _create_builder_config(self, builder_config, version):
        # Our config objects may share a registered name (options differ, files are one folder).
        if isinstance(builder_config, self.CONFIG_CLASS):
            return builder_config
        return super()._create_builder_config(builder_config, version)

    def options_json(self) -> dict:
        """The config's options as stored in the metadata (JSON types)."""
        return json.loads(json.dumps(dataclasses.asdict(self.builder_config.options)))

    def stored_options(self) -> dict | None:
        """Options of the files prepared in ``data_dir`` (None when nothing is prepared)."""
        path = os.path.join(os.fspath(self.data_path), "metadata.json")
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f).get("options")

    def stale_reason(self) -> str | None:
        """Why the prepared files in ``data_dir`` do not match this builder's options, or None."""
        stored, wanted = self.stored_options(), self.options_json()
        if stored is None or stored == wanted:
            return None
        diff = [f"{k}={stored.get(k)!r}->{v!r}" for k, v in wanted.items() if stored.get(k) != v]
        return "options differ (stored->requested): " + ", ".join(diff)

    def download_and_prepare(self, *args, **kwargs):
        reason = self.stale_reason()
        if reason:
            raise ValueError(f"{self.data_path} was prepared with other options ({reason}); delete it "
                             "or use another data_dir (handprop data build rebuilds automatically)")
        return super().download_and_prepare(*args, **kwargs)

    def _download_and_prepare(self, dl_manager, download_config=None):
        import logging

        super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
        with open(os.path.join(os.fspath(self.data_path), "skipped.json"), "w") as f:
            json.dump(self.skip_log.to_json(), f, indent=1)
        summary = self.skip_log.summary()
        if summary:
            logging.warning("%s: skipped items:\n%s", self.name, summary)

    @property
    def skipped(self) -> dict[str, dict[str, int]]:
        """{split: {reason: count}} of the items skipped by the last build (also in skipped.json)."""
        return self.skip_log.counts
