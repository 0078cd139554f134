"""Real hand motions (joint sequences without images) for the adversarial motion prior (Spurr et al.,
:mod:`handprop_jax.training.adversarial_motion`), as :class:`~handprop_jax.data.clips.MotionBank`.

Two sources, one per Table I row:

- :func:`unpaired_synthetic` — **(a) unpaired motion**: the motions of extra synthetic videos that
  are generated but never rendered (``synthetic.video_motion``; the generator's seed is
  ``data.synth_seed + adversarial.motion_seed``, so no motion is one of the data set's videos) with
  the crop intrinsics the renderer would use. This is the paper's premise (hand motion data exists
  apart from the unlabelled videos) and it is *extra data*: on a real data set it would need other
  sequences' ground truth, so it exists for the synthetic set only.
- :func:`interpolated_labels` — **(b) labels only**: every training video's motion interpolated
  between its labelled frames (every K-th; root and betas linearly, each joint rotation by slerp,
  ``gamma.blend``, exactly the "Interpolation" reference row) with each frame's stored crop K. The
  label budget is exactly that of every other row. Bias: between keyframes K frames apart these
  motions are smoother than real motion (constant angular velocity per joint, velocity jumps at the
  keyframes, fast bursts shorter than K flattened), so the discriminator learns "smooth and
  interpolation-like" as real, which pulls the predictor towards the interpolation of the labels
  rather than towards true hand dynamics.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from handprop_jax.config import Config, DataConfig
from handprop_jax.data import synthetic
from handprop_jax.data.clips import MotionBank
from handprop_jax.data.sources import data_source, open_split
from handprop_jax.data.sparse import neighbours
from handprop_jax.gamma import Gamma, blend
from handprop_jax.hand import default_mano, hand_in_camera_jit

SOURCES = ("unpaired", "labels")


def unpaired_synthetic(data_config: DataConfig, videos: int, seed_offset: int) -> MotionBank:
    """(a): motions of ``videos`` synthetic train-split videos of the generator seeded with
    ``data.synth_seed + seed_offset`` (same frames per video and crop size as the data set)."""
    if data_config.name != "synthetic_hand_video":
        raise ValueError(f"unpaired synthetic motion needs the synthetic data set, not {data_config.name!r}: "
                         "on real data use the 'labels only' variant (adversarial_motion_labels) or "
                         "provide other sequences' ground truth")
    if seed_offset == 0:
        raise ValueError("adversarial.motion_seed must not be 0: the motions would be the data set's own")
    base = synthetic.spec_from_config(data_config)
    spec = dataclasses.replace(base, seed=base.seed + int(seed_offset))
    sequences = [synthetic.video_motion(spec, "train", v) for v in range(int(videos))]
    return MotionBank.of(sequences, name=f"unpaired:{spec.name}:{int(videos)}")


def interpolated_labels(config: Config, split: str = "train") -> MotionBank:
    """(b): each video of ``split`` with its unlabelled frames' γ interpolated between the labelled
    frames (nearest left and right, ``gamma.blend``); K of every frame as stored. Only the labelled
    frames' labels are read."""
    import tensorflow_datasets as tfds

    sp = open_split(config.data, split)
    source = data_source(config.data, split, decoders={"image": tfds.decode.SkipDecoding()})
    mano = default_mano(config)
    table = sp.table
    sequences = []
    for v in range(table.num_videos):
        start, T = int(table.starts[v]), int(table.lengths[v])
        positions = np.arange(start, start + T)
        records = [source[int(table.record[p])] for p in positions]
        K = np.stack([np.asarray(r["K"], np.float32) for r in records])
        lab = np.nonzero(sp.labelled[positions])[0]
        g_lab = Gamma(*(np.stack([np.asarray(records[i][k], np.float32) for i in lab])
                        for k in ("root", "pose", "betas")))
        nb = neighbours(T, lab, table.times(v))  # weights in source time (frame_time)
        rank = {int(f): i for i, f in enumerate(lab)}
        left = np.array([rank[int(f)] for f in np.where(nb["left"] >= 0, nb["left"], nb["right"])])
        right = np.array([rank[int(f)] for f in np.where(nb["right"] >= 0, nb["right"], nb["left"])])
        g = blend(g_lab.take(left), g_lab.take(right), jnp.asarray(nb["weight"], jnp.float32))
        _, joints = hand_in_camera_jit(mano, g.root, g.pose, g.betas)
        sequences.append({"joints3d": np.asarray(joints, np.float32), "K": K})
    return MotionBank.of(sequences, name=f"labels:{config.data.name}:{split}:K{sp.stride}")
