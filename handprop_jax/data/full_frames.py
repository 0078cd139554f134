"""Synthetic whole-frame videos with known ground truth, in the layout of your own videos
(``handprop data synth-videos``): what a user of ``handprop propagate`` has — full frames in which the
hand moves across the image, labels on every K-th frame, the intrinsics, no boxes — plus the dense
ground truth to score the propagation against (``handprop score``).

Per video, ``OUT/video_0000/``:

- ``frames/000000.png ...``: whole frames (H x W, 4:3) of the synthetic camera
  (:func:`handprop_jax.data.synthetic.render_full_frames`);
- ``labels.json``: ``{"K": 3x3, "labels": {"<frame>": {"root", "pose", "betas"}}}`` on every K-th frame
  and the last (:func:`handprop_jax.data.sparse.label_sets`, the rule of the evaluation and of
  ``handprop data export``), the schema ``handprop propagate`` and the ``hand_videos`` builder read;
- ``truth/annotations.json`` and ``truth/annotations.npz``: every frame's ground truth in the format
  ``handprop propagate --out`` writes (:func:`write_truth`), ``labelled`` marking the labelled frames.
  The builder ignores ``truth/`` (it reads ``frames/`` and the files of the video folder).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from handprop_jax.data import annotation_files, synthetic
from handprop_jax.data.sparse import label_sets

#: where a synthetic video's ground truth lies inside its folder
TRUTH = "truth"


def write_truth(folder: str | Path, names: list[str], video: dict, labelled: np.ndarray, meta: dict) -> None:
    """Ground truth of every frame in ``handprop propagate``'s output format: ``folder/annotations.json``
    (``meta``, then ``frames_out``: one entry per frame with index, file, labelled, K, root, pose,
    betas, joints3d, joints2d) and ``folder/annotations.npz`` (the same as arrays with a leading frame
    axis: frame_index, labelled, root, pose, betas, joints3d, joints2d, K). ``video``: root (T, 3) m,
    pose (T, 48) rad, betas (T, 10), joints3d (T, 21, 3) m, joints2d (T, 21, 2) px, K (3, 3) px;
    ``labelled`` (T,) bool."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    T = len(names)
    arrays = {"frame_index": np.arange(T), "labelled": np.asarray(labelled, bool),
              **{k: np.asarray(video[k], np.float32) for k in annotation_files.ARRAY_KEYS},
              "K": np.broadcast_to(np.asarray(video["K"], np.float32), (T, 3, 3))}
    np.savez(folder / "annotations.npz", **arrays)
    entries = [annotation_files.frame_entry(i, names[i], arrays["labelled"][i], arrays["K"][i], arrays)
               for i in range(T)]
    doc = {**meta, "num_frames": T, "num_labelled": int(arrays["labelled"].sum()),
           "units": annotation_files.UNITS, "frames_out": entries}
    (folder / "annotations.json").write_text(json.dumps(doc, allow_nan=False))


def write_video(video: dict, out: str | Path, every: int, meta: dict) -> np.ndarray:
    """One :func:`~handprop_jax.data.synthetic.render_full_frames` video into ``out`` (module
    docstring): frames/, labels.json (every ``every``-th frame and the last, with "K") and truth/.
    Returns the labelled frames (L,)."""
    out = Path(out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    T = len(video["image"])
    names = [f"{i:06d}.png" for i in range(T)]
    for name, img in zip(names, video["image"], strict=True):
        Image.fromarray(img).save(out / "frames" / name)
    lab = label_sets(T, every)[0]
    gamma = {k: np.asarray(video[k], np.float64) for k in ("root", "pose", "betas")}
    labels = {"K": np.asarray(video["K"], np.float64).tolist(),
              "labels": {str(int(f)): {k: v[f].tolist() for k, v in gamma.items()} for f in lab}}
    (out / "labels.json").write_text(json.dumps(labels))
    write_truth(out / TRUTH, names, video, np.isin(np.arange(T), lab), {**meta, "method": "ground truth",
                                                                         "frames": str(out / "frames")})
    return lab


def synth_videos(out: str | Path, videos: int, frames: int, size: tuple[int, int], every: int, seed: int = 0,
                 travel: float = 0.5, depth_scale: float = 1.6, progress: bool = True) -> list[str]:
    """Render ``videos`` whole-frame videos of ``frames`` frames at ``size`` (H, W) into
    ``out/video_0000/``, ... (module docstring); the test split of the synthetic generator with
    ``seed`` (:class:`~handprop_jax.data.synthetic.SynthSpec`), the hand swept by ``travel`` x the
    image width at ``depth_scale`` x the generator's depth (:func:`~handprop_jax.data.synthetic.swept_roots`).
    Returns the folder names."""
    from tqdm import tqdm

    synthetic.frame_geometry(size)  # the aspect, before anything is rendered
    spec = synthetic.SynthSpec(videos=(0, 0, videos), frames=frames, image_size=int(size[1]), seed=seed)
    names = []
    for v in tqdm(range(videos), desc="render", unit="video", disable=not progress):
        name = f"video_{v:04d}"
        video = synthetic.render_full_frames(spec, "test", v, size, travel, depth_scale)
        meta = {"generator": {"seed": seed, "split": "test", "video": v, "frames": frames,
                              "size": [int(size[0]), int(size[1])], "every": every, "travel": travel,
                              "depth_scale": depth_scale}}
        write_video(video, Path(out) / name, every, meta)
        names.append(name)
    return names
