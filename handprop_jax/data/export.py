"""A built data set's videos written in the formats ``handprop propagate`` and the ``hand_videos``
builder read (frames, labels, intrinsics, boxes; :mod:`handprop_jax.propagation.inputs` reads them):
:func:`export_example` (one video), :func:`export_videos` (``handprop data export``: a ``hand_videos``
source folder), :func:`write_example` (one video given as arrays).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from handprop_jax.data.sources import open_split
from handprop_jax.data.sparse import label_sets
from handprop_jax.errors import UserError
from handprop_jax.gamma import Gamma


class ExportError(UserError, ValueError):
    """A bad export request (e.g. a video index the split does not have); ``handprop`` reports it in
    one line, exit code 2."""


def export_example(config, split: str, video: int, out: str | Path, stride: int | None = None
                   ) -> dict[str, Path]:
    """Write video ``video`` of a built data set's ``split`` in the tool's input formats, to try
    ``handprop propagate`` (see :func:`write_example`; ``stride`` defaults to
    ``config.data.label_stride``)."""
    sp = open_split(config.data, split)
    if not 0 <= video < sp.table.num_videos:
        raise ExportError(f"{split} has videos 0..{sp.table.num_videos - 1}, not {video}")
    return write_example(sp.video(video, with_labels=True), out, stride or config.data.label_stride)


def export_videos(config, out: str | Path, stride: int | None = None,
                  splits: tuple[str, ...] = ("train", "val", "test"), max_videos: int | None = None
                  ) -> dict[str, list[str]]:
    """Write the videos of a built data set's ``splits`` as a ``hand_videos`` source folder:
    OUT/<video name>/ (:func:`write_example`: frames/, labels.json with every ``stride``-th frame,
    intrinsics.npy, boxes.json, ground_truth.npz) and OUT/splits.json (the data set's splits).
    ``max_videos``: at most that many per split. Returns {split: [folder names]}."""
    out = Path(out)
    written: dict[str, list[str]] = {}
    for split in splits:
        sp = open_split(config.data, split)
        names = written.setdefault(split, [])
        for v in range(sp.table.num_videos if max_videos is None else min(max_videos, sp.table.num_videos)):
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", sp.table.names[v]).strip("._") or f"{split}_{v}"
            if any(name in n for n in written.values()):
                name = f"{split}_{v:04d}_{name}"
            write_example(sp.video(v, with_labels=True), out / name, stride or config.data.label_stride)
            names.append(name)
    (out / "splits.json").write_text(json.dumps(written, indent=1))
    return written


def write_example(video: dict, out: str | Path, stride: int) -> dict[str, Path]:
    """Write one whole video {image uint8 (T, S, S, 3), K (T, 3, 3), root, pose, betas, joints3d}
    in the tool's input formats: OUT/frames/000000.png..., OUT/labels.json (every ``stride``-th
    frame and the last, as the evaluation labels them, in source time when the video has a
    ``frame_time`` key; with a ``has_label`` key, the frames that rule keeps among those; frames are
    written in stored order, so a hole in source time is closed), OUT/intrinsics.npy (T, 3, 3: the
    crops' per-frame K), OUT/boxes.json (every frame's whole image as its hand box: the frames
    already are the data set's hand crops, so the ``hand_videos`` builder and ``handprop propagate
    --boxes`` use them as they are) and OUT/ground_truth.npz (γ and joints3d of every frame, to
    score the result)."""
    out = Path(out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    T, S = len(video["image"]), int(np.shape(video["image"])[2])
    for i, img in enumerate(video["image"]):
        Image.fromarray(np.asarray(img, np.uint8)).save(out / "frames" / f"{i:06d}.png")
    lab = label_sets(T, stride, video.get("has_label"), video.get("frame_time"))[0]
    box = [(S - 1) / 2, (np.shape(video["image"])[1] - 1) / 2, float(S)]
    (out / "boxes.json").write_text(json.dumps({"boxes": {str(t): box for t in range(T)}}))
    gamma = Gamma.of(video).numpy(np.float64)
    labels = {"labels": {str(int(f)): {k: v[f].tolist() for k, v in gamma.as_dict().items()} for f in lab}}
    (out / "labels.json").write_text(json.dumps(labels))
    np.save(out / "intrinsics.npy", np.asarray(video["K"], np.float64))
    np.savez(out / "ground_truth.npz", **Gamma.of(video).numpy().as_dict(),
             joints3d=np.asarray(video["joints3d"]))
    return {"frames": out / "frames", "labels": out / "labels.json", "intrinsics": out / "intrinsics.npy",
            "boxes": out / "boxes.json", "ground_truth": out / "ground_truth.npz"}
