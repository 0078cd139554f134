"""Speed and accuracy of the default (photometric) propagation against its iteration counts, on a
built synthetic data set: frames/s (compilation excluded: each setting runs once untimed first) and
MPJPE of the unlabelled frames, both sides.

    python benchmarks/propagation_speed.py --data-dir /abs/data --seed 0 [--videos 2] \
        [--paper 60 30 20] [--user 60,60 60,10 40,10] [--without-floor] [--without-cover]

- ``--paper S ...``: the paper protocol's path (the data set's ground-truth-centred crops, one pass of
  S = ``propagation.steps`` iterations with the box terms), e.g. ``handprop evaluate``'s rows or
  ``handprop propagate --boxes``;
- ``--user S,R ...``: the tool's path on a user's video (``handprop_jax.evaluation.protocol``'s user
  crops: the first pass of S iterations on interpolated crops, re-crop, R =
  ``propagation.recrop_steps`` iterations), what ``handprop propagate`` runs without a box file;
- ``--without-floor``: each user setting also with ``propagation.background_floor=False`` (the cost of
  the background cue: its masks, its check on the labelled frames, the second pass's silhouettes);
- ``--without-cover``: each user setting also with ``propagation.cover_weight=0`` (the cost of the
  mask-outline term alone).

Prints a Markdown table (setting, frames, frames/s, MPJPE mm).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from pathlib import Path

import numpy as np

from handprop_jax import config as config_lib
from handprop_jax.data.sparse import label_sets
from handprop_jax.evaluation import data as eval_data
from handprop_jax.evaluation import protocol as protocol_lib
from handprop_jax.gamma import Gamma
from handprop_jax.hand import default_mano, hand_mesh
from handprop_jax.propagation.core import Propagator, propagate_video
from handprop_jax.propagation.recrop import Recrop, propagate_recrop


def _mpjpe_mm(mano, gamma: Gamma, joints: np.ndarray) -> np.ndarray:
    _, j = hand_mesh(mano, gamma)
    return 1000 * np.linalg.norm(np.asarray(j) - joints, axis=-1).mean(-1)


def _run(prop: Propagator, videos: list[dict], stride: int, mano, user: bool) -> tuple[float, int, float]:
    """(seconds, unlabelled frames, MPJPE mm) of one setting over the videos."""
    seconds, errors = 0.0, []
    for video in videos:
        T = video["image"].shape[0]
        lab, unl = label_sets(T, stride, video.get("has_label"), video.get("frame_time"))
        labels = Gamma.of(video).numpy().take(lab)
        K = np.asarray(video["K"], np.float32)
        t = time.perf_counter()
        if user:
            res, _ = propagate_recrop(prop, video["crop"], video["box"], video["K_full"], lab, labels,
                                      both_sides=True, recrop=Recrop(), images=video["image"], K=K)
        else:
            res = propagate_video(prop, video["image"], K, lab, labels, both_sides=True)
        seconds += time.perf_counter() - t
        errors.append(_mpjpe_mm(mano, res.gamma.take(unl), np.asarray(video["joints3d"])[unl]))
    e = np.concatenate(errors)
    return seconds, len(e), float(e.mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder holding synthetic_hand_video/ (absolute path)")
    p.add_argument("--seed", type=int, default=0, help="the data set's generation seed (data.synth_seed)")
    p.add_argument("--videos", type=int, default=2, help="test videos timed")
    p.add_argument("--paper", type=int, nargs="*", default=[60, 30, 20], help="steps of the paper path")
    p.add_argument("--user", nargs="*", default=["60,60", "60,10", "40,10"],
                   help="steps,recrop_steps of the tool's path")
    p.add_argument("--without-floor", action="store_true",
                   help="each user setting also without the background cue (propagation.background_floor)")
    p.add_argument("--without-cover", action="store_true",
                   help="each user setting also without the mask-outline term (propagation.cover_weight=0)")
    args = p.parse_args()
    config = config_lib.override(config_lib.load("synthetic"), [
        f"data.data_dir={str(Path(args.data_dir).resolve())!r}", f"data.synth_seed={args.seed}"])
    mano = default_mano(config)
    stride = config.data.label_stride
    paper_videos = list(itertools.islice(eval_data.iter_videos(config, "test"), args.videos))
    user_videos = list(protocol_lib.user_videos(config, "test", paper_videos, mano, recrop=None))
    base = Propagator.from_config(config, method="photometric")
    settings = [(f"paper, steps {s}", (s, 0), False, {}) for s in args.paper]
    for pair in args.user:
        first, second = (int(x) for x in pair.split(","))
        name = f"user, steps {first} + recrop_steps {second}"
        settings.append((name, (first, second), True, {}))
        if args.without_cover:
            settings.append((f"{name}, no mask-outline term", (first, second), True, {"cover_weight": 0.0}))
        if args.without_floor:
            settings.append((f"{name}, no background cue", (first, second), True,
                             {"background_floor": False}))
    print("| setting | frames | frames/s | MPJPE (mm) |\n|---|---:|---:|---:|")
    for name, (steps, recrop_steps), user, changes in settings:
        prop = dataclasses.replace(base, settings=dataclasses.replace(
            base.settings, steps=steps, recrop_steps=recrop_steps, **changes))
        vids = user_videos if user else paper_videos
        _run(prop, vids[:1], stride, mano, user)  # compile
        seconds, frames, mpjpe = _run(prop, vids, stride, mano, user)
        print(f"| {name} | {frames} | {frames / seconds:.1f} | {mpjpe:.2f} |", flush=True)


if __name__ == "__main__":
    main()
