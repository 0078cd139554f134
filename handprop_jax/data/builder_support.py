"""What the real-data tfds builders (HO-3D, InterHand2.6M) share besides cropping.

``BadInput`` / ``SkipLog`` (skip with a count, or raise naming the file), ``read_rgb``,
``checked_array``, ``make_example``, ``video_examples`` (records grouped by video in frame order) and
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


def checked_array(value, shape: tuple[int, ...], key: str, path) -> np.ndarray:
    """``value`` as a float64 array of exactly ``shape``, finite; else ``BadInput`` naming the key."""
    if value is None:
        raise BadInput("missing annotation", path, f"{key} is None")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise BadInput("bad annotation", path, f"{key}: {e}") from e
    if array.size == int(np.prod(shape)) and array.shape != shape:
        array = array.reshape(shape)
    if array.shape != shape:
        raise BadInput("bad annotation", path, f"{key} has shape {array.shape}, expected {shape}")
    if not np.all(np.isfinite(array)):
        raise BadInput("non-finite values", path, f"{key} contains NaN or inf")
    return array


def make_example(image: np.ndarray, K: np.ndarray, root: np.ndarray, pose: np.ndarray,
                 betas: np.ndarray, joints3d: np.ndarray, size: int, scale: float,
                 min_visible: float, image_path) -> dict:
    """Crop a frame and assemble the label part of an example (see ``features.frame_features``;
    the video keys are added by the builder). Arrays are camera frame (OpenCV), metres.

    Raises ``BadInput("hand outside the image", image_path)``.
    """
    from handprop_jax.data.features import encode_png

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
      videos: sequence of ``(video_name, frames)``; ``frames`` a sequence of whatever
        ``process_frame`` takes, in temporal order.
      process_frame: ``frame -> example dict`` (labels + image), raising ``BadInput``; run in a
        thread pool (image decoding/encoding release the GIL), results kept in frame order.
      skip_log: where bad frames go (handled in frame order, so "raise" stops at the first).
        Skipped frames are dropped from their video (``frame_index`` counts the kept frames,
        0-based); a video without any good frame is dropped (reason "empty video") and does not
        take a ``video_id``.
      workers: threads; default ``min(8, cpu count)``.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    def guarded(frame):
        try:
            return process_frame(frame), None
        except BadInput as e:
            return None, e

    workers = workers or min(8, os.cpu_count() or 1)
    video_id = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for name, frames in tqdm(list(videos), desc=f"{split} videos", leave=False):
            kept = []
            for example, error in pool.map(guarded, frames):
                if error is not None:
                    skip_log.handle(split, error)
                else:
                    kept.append(example)
            if not kept:
                skip_log.handle(split, BadInput("empty video", name, "no usable frame"))
                continue
            for index, example in enumerate(kept):
                example.update(video_id=video_id, video_name=name, frame_index=index,
                               video_length=len(kept))
                yield f"{video_id:06d}_{index:06d}", example
            video_id += 1


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
        from handprop_jax.data.features import frame_features

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
