"""Evaluation protocols: which crop each frame of a test video is seen through.

- ``paper`` (the paper's, and the data sets'): every frame, labelled or not, is the stored crop,
  cut around its own ground-truth hand. The crop-aware transfer and the photometric refinement's
  box and centre terms therefore know where the hand is in every unlabelled frame.
- ``user`` (what ``handprop propagate`` gives a user): every frame is cropped with the box the tool
  would give it — :func:`handprop_jax.data.boxes.video_boxes` (the one rule of the tool and the
  ``hand_videos`` builder) from the labelled frames' labels alone: each labelled frame the box of
  its label, every other frame the labelled frames' boxes interpolated linearly in time. No ground
  truth of an unlabelled frame is read to make its box; the frame's pixels are drawn by the
  synthetic renderer (``handprop_jax.data.synthetic.render_video_at``: the same scene — hand,
  light, background, camera noise — seen through another crop of the full 640x480 camera).
  Labelled frames' boxes follow the renderer's rule (``data.boxes`` uses it), so their crops are
  the stored ones (to the rounding of the box).
- ``both``: the two, one after the other.

Under ``user`` only the rows that look at the crops through the labelled frames are reported
(scenario 2 and the Copy / Interpolation references, ``kind == "propagate"``); their split is
labelled ``"<split> (user crops)"`` in Table I and the gap table (:func:`user_split`).

Only the synthetic data set can be re-cropped (its scenes are regenerated from the seed,
``data.synthetic.video_parameters``); for the others ``user`` is unavailable (:func:`available`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

import numpy as np

from handprop_jax.data import boxes as boxes_lib
from handprop_jax.data import synthetic
from handprop_jax.data.sparse import label_sets
from handprop_jax.errors import UserError
from handprop_jax.evaluation.rows import Row
from handprop_jax.gamma import Gamma
from handprop_jax.propagation.recrop import Recrop

PROTOCOLS = ("paper", "user", "both")
#: the synthetic data set's name (``config.data.name``): the one whose crops can be re-rendered
SYNTHETIC = "synthetic_hand_video"
USER_SUFFIX = " (user crops)"
#: label box rules of ``data.boxes``: the renderer's (mesh vertices, 1.2x, the default) or the joints'
RULES = ("vertices", "joints")
#: the default propagation's re-cropping on the user's crops (``propagation.recrop``)
DEFAULT_RECROP = Recrop()


def user_split(split: str) -> str:
    """The label of a split's rows under the user protocol, e.g. ``"test (user crops)"``."""
    return f"{split}{USER_SUFFIX}"


def available(config) -> bool:
    """Whether the user protocol can be run on the run's data (the synthetic set)."""
    return config.data.name == SYNTHETIC


def resolve(protocol: str | None, config, injected_videos: bool = False) -> tuple[str, ...]:
    """The protocols to run, in order: ``"paper"``, ``"user"``, ``"both"`` or None (= both where the
    user protocol is available, else paper). UserError for an unknown name or ``user``/``both``
    asked where unavailable (another data set, or videos given by the caller)."""
    can = available(config) and not injected_videos
    if protocol is None:
        return ("paper", "user") if can else ("paper",)
    if protocol not in PROTOCOLS:
        raise UserError(f"eval protocol {protocol!r}: expected one of {PROTOCOLS}")
    if protocol != "paper" and not can:
        raise UserError(f"eval protocol {protocol!r}: the user protocol re-renders the crops and needs the "
                        f"synthetic data set ({SYNTHETIC}); this run's data is {config.data.name!r}")
    return {"paper": ("paper",), "user": ("user",), "both": ("paper", "user")}[protocol]


def user_rows(rows: tuple[Row, ...]) -> tuple[Row, ...]:
    """The rows reported under the user protocol: those that move labels to the frame (scenario 2
    and the Copy / Interpolation references)."""
    return tuple(r for r in rows if r.kind == "propagate")


def tool_boxes(mano, labelled: np.ndarray, labels: Gamma, K_full: np.ndarray, num_frames: int,
               height: int = synthetic.FULL_SIZE[0], width: int = synthetic.FULL_SIZE[1],
               rule: str = "vertices") -> np.ndarray:
    """The box ``handprop propagate`` gives every frame of a video from its labels (no box file).

    Args:
      mano: the MANO model of the labels.
      labelled: (L,) sorted frame indices with labels. labels: γ* of those frames (L, ...) only.
      K_full: (3, 3) or (T, 3, 3) intrinsics of the full frames, pixels.
      num_frames: T; height, width: of the full frames, pixels.
      rule: "vertices" (the labels' mesh, the renderer's rule) or "joints" (1.5 x the joints' box).
    Returns:
      (T, 3) float64 boxes cx, cy, side in full-frame pixels (``data.boxes.video_boxes``).
    """
    if rule not in RULES:
        raise ValueError(f"box rule {rule!r}: expected one of {RULES}")
    joints, verts = boxes_lib.label_geometry(mano, Gamma.of(labels).numpy())
    out, _ = boxes_lib.video_boxes(num_frames, height, width, K_full, labelled, joints,
                                   vertices3d=verts if rule == "vertices" else None)
    return out


def user_video(video: dict, spec: synthetic.SynthSpec, split: str, stride: int, mano,
               rule: str = "vertices", recrop: Recrop | None = DEFAULT_RECROP) -> dict:
    """A synthetic test video as the user protocol sees it: ``image`` and ``K`` of every frame
    replaced by the crops at :func:`tool_boxes` (other keys, the ground truth included, unchanged:
    for scoring only). Reads the labels of the labelled frames S_V only.

    Args:
      video: the evaluation's video dict (``evaluation.data.iter_videos``): image (T, S, S, 3),
        K (T, 3, 3), root/pose/betas (T, ...), video_id (T,), optional frame_time, has_label.
      spec: the data set's ``SynthSpec``; split: its split name; stride: label stride K.
      rule: the labels' box rule (:func:`tool_boxes`).
      recrop: how the photometric propagation re-crops the unlabelled frames
        (``propagation.recrop``; None: it does not, it runs on the interpolated crops as given).
    Returns:
      the dict with image uint8 (T, S, S, 3), K float32 (T, 3, 3) of the tool's crops, ``box``
      (T, 3) float64 those crops' boxes and ``K_full`` (T, 3, 3) the full camera's intrinsics, in
      full-frame pixels, ``crop`` the function cutting the frames at other boxes
      (``crop(boxes (T, 3)) -> (image, K)``) and ``recrop``.
    """
    T = int(np.shape(video["image"])[0])
    vid = int(np.asarray(video["video_id"])[0])
    if T != spec.frames:
        raise ValueError(f"user protocol: video {vid} has {T} frames, the data set's spec {spec.frames} "
                         "(a truncated video cannot be re-rendered)")
    lab, _ = label_sets(T, stride, video.get("has_label"), video.get("frame_time"))
    labels = Gamma(*(np.asarray(video[k], np.float32)[lab] for k in ("root", "pose", "betas")))
    params = synthetic.video_parameters(spec, split, vid)
    if not np.allclose(params["root"][lab], labels.root, atol=1e-5):
        raise ValueError(f"user protocol: the regenerated scene of {split} video {vid} is not the stored "
                         f"one (data seed {spec.seed}?): check data.synth_seed")
    box = tool_boxes(mano, lab, labels, params["K_full"], T, rule=rule)
    image, K = synthetic.render_video_at(spec, split, vid, box)
    return {**video, "image": image, "K": K, "box": box, "K_full": np.tile(params["K_full"], (T, 1, 1)),
            "crop": functools.partial(_render_at, spec, split, vid), "recrop": recrop}


def _render_at(spec: synthetic.SynthSpec, split: str, video: int, boxes: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """The first len(boxes) frames of a video cropped with ``boxes`` (M, 3), M <= T (a video cut by
    ``eval.max_frames``: the missing rows are padded with the last box and dropped again)."""
    boxes = np.asarray(boxes, np.float64)
    full = np.concatenate([boxes, np.repeat(boxes[-1:], spec.frames - len(boxes), 0)])
    image, K = synthetic.render_video_at(spec, split, video, full)
    return image[:len(boxes)], K[:len(boxes)]


def user_videos(config, split: str, videos: Iterable[dict], mano, rule: str = "vertices",
                recrop: Recrop | None = DEFAULT_RECROP) -> Iterator[dict]:
    """:func:`user_video` of every video of a split of the run's synthetic data set."""
    spec = synthetic.spec_from_config(config.data)
    for video in videos:
        yield user_video(video, spec, split, config.data.label_stride, mano, rule, recrop)
