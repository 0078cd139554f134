"""Could a background model tell the hand's size in a user's crops better than the propagation? (issue 25)

Under the user protocol most of the default propagation's error is the root's depth, i.e. the hand's
size in the crop (docs/results.md, "Why <= 0.8 x is not reached"). With a static camera, the
labelled frames give a background model: their pixels outside the (dilated) silhouette of their
label's mesh, mapped into any other crop of the same camera. Where a frame differs from that model is
the hand; the size of that mask is a scale cue independent of the photometric refinement.

For each unlabelled frame of the first ``--videos`` test videos this runs the tool's default
propagation (the user protocol: interpolated crops, re-crop, second pass), then, in the frame's final
crop, compares two estimates of the hand's size with the ground truth's (the label's mesh projected
into the same crop):

- the propagated hand's: its projected vertices' box side, and sqrt of its rendered silhouette area;
- the background mask's: pixels whose colour differs from the background model (median over the
  labelled frames that see the pixel) by more than ``--threshold`` grey levels, opened by the
  4-neighbour cross (speckle from resampling the textured background; a 3 x 3 square erases
  fingers), its box side and sqrt of its area (``handprop_jax.propagation.background``);

as the log-ratio to the truth (0.01 = 1 % too large), the best blend of the two, and the larger of
the two box sides (the mask as a lower bound: what ``propagation.background_floor`` does). The
propagation probed is the one without the cue. Reads the unlabelled frames' ground truth for
scoring only.

A second table scores the floors by what they would do to the hand's **depth**: s = −log(z / z*) the
propagated root's true log depth error (positive: too close, i.e. too large), and to first order a
floor f on a size estimate e moves it to s + max(0, f − e): "side" (f the mask's box side against
the propagated box side, ``propagation.floor_measure="side"``) and "area" (f the mask's sqrt area
against the propagated silhouette's: the default second-pass floor).

    python benchmarks/scale_cue_probe.py --data-dir /abs/data --seed 0 --videos 3 [--threshold 20] \
        [--save rows.npy]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from pathlib import Path

import numpy as np
from scipy import ndimage

from handprop_jax import config as config_lib
from handprop_jax.data.sparse import label_sets
from handprop_jax.evaluation import data as eval_data
from handprop_jax.evaluation import protocol as protocol_lib
from handprop_jax.gamma import Gamma
from handprop_jax.hand import default_mano, hand_mesh
from handprop_jax.propagation import background
from handprop_jax.propagation.core import Propagator
from handprop_jax.propagation.recrop import Recrop, propagate_recrop


def probe_video(video: dict, prop: Propagator, mano, stride: int, threshold: float) -> np.ndarray:
    """(U, 5) log-ratios to the truth of the unlabelled frames: propagated box side, propagated
    sqrt area, mask box side, mask sqrt area; and the propagated root's −log(z / z*)."""
    T = video["image"].shape[0]
    lab, unl = label_sets(T, stride, video.get("has_label"), video.get("frame_time"))
    gt = Gamma.of(video).numpy()
    # the propagation as it was before the cue: the comparison is of the two estimates
    prop = dataclasses.replace(prop, settings=dataclasses.replace(prop.settings, background_floor=False))
    res, boxes = propagate_recrop(prop, video["crop"], video["box"], video["K_full"], lab, gt.take(lab),
                                  both_sides=True, recrop=Recrop(), images=video["image"],
                                  K=np.asarray(video["K"], np.float32))
    images, K = video["crop"](boxes)
    size = images.shape[1]
    true_v, _ = hand_mesh(mano, gt)
    prop_v, _ = hand_mesh(mano, res.gamma)
    true_sil = background.silhouettes(mano, true_v, K, size)
    prop_sil = background.silhouettes(mano, prop_v, K, size)
    # the labelled frames' background pixels: outside their label's silhouette, dilated
    refs = [(images[s], boxes[s], ~ndimage.binary_dilation(true_sil[s], iterations=background.DILATE))
            for s in lab]
    true_side, prop_side = background.box_sides(true_v, K), background.box_sides(prop_v, K)
    rows = []
    for u in unl:
        mask = background.hand_mask(images[u], boxes[u], refs, threshold)
        mask_side = background.mask_side(mask) or np.nan
        true_area = true_sil[u].sum()
        rows.append([np.log(prop_side[u] / true_side[u]), 0.5 * np.log(prop_sil[u].sum() / true_area),
                     np.log(mask_side / true_side[u]), 0.5 * np.log(max(mask.sum(), 1) / true_area),
                     -np.log(res.gamma.root[u, 2] / gt.root[u, 2])])
    return np.asarray(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder holding synthetic_hand_video/ (absolute path)")
    p.add_argument("--seed", type=int, default=0, help="the data set's generation seed (data.synth_seed)")
    p.add_argument("--videos", type=int, default=3, help="test videos probed")
    p.add_argument("--threshold", type=float, default=20.0, help="mask threshold, grey levels (0-255)")
    p.add_argument("--save", help="also write the per-frame log-ratios (U, 5) to this .npy")
    args = p.parse_args()
    config = config_lib.override(config_lib.load("synthetic"), [
        f"data.data_dir={str(Path(args.data_dir).resolve())!r}", f"data.synth_seed={args.seed}"])
    mano = default_mano(config)
    prop = Propagator.from_config(config, method="photometric")
    videos = itertools.islice(eval_data.iter_videos(config, "test"), args.videos)
    r = np.concatenate([probe_video(v, prop, mano, config.data.label_stride, args.threshold)
                        for v in protocol_lib.user_videos(config, "test", videos, mano, recrop=None)])
    r = r[np.isfinite(r).all(1)]
    if args.save:
        np.save(args.save, r)
    print(f"{len(r)} unlabelled frames; log-ratio of the hand's size to the truth's (0.01 = 1 %)\n")
    print("| estimate | mean abs | median abs | mean (bias) | 5th / 95th percentile |")
    print("|---|---:|---:|---:|---|")
    names = ("propagated, box side", "propagated, sqrt area", "background mask, box side",
             "background mask, sqrt area")
    for name, col in zip(names, r[:, :4].T, strict=True):
        lo, hi = np.percentile(col, [5, 95])
        print(f"| {name} | {np.abs(col).mean():.4f} | {np.median(np.abs(col)):.4f} | {col.mean():+.4f} | "
              f"{lo:+.4f} / {hi:+.4f} |")
    for k, what in ((0, "box side"), (1, "sqrt area")):
        best = min((np.abs(w * r[:, k + 2] + (1 - w) * r[:, k]).mean(), w) for w in np.linspace(0, 1, 11))
        print(f"| best blend, {what} (mask weight {best[1]:.1f}) | {best[0]:.4f} | | | |")
    larger = np.maximum(r[:, 0], r[:, 2])
    print(f"| the larger of the two box sides | {np.abs(larger).mean():.4f} | "
          f"{np.median(np.abs(larger)):.4f} | {larger.mean():+.4f} | |")
    print(f"\ncorrelation of the two errors: box side {np.corrcoef(r[:, 0], r[:, 2])[0, 1]:.2f}, "
          f"sqrt area {np.corrcoef(r[:, 1], r[:, 3])[0, 1]:.2f}")
    depth = r[:, 4]
    floors = (("no floor", depth), ("side floor", depth + np.maximum(0.0, r[:, 2] - r[:, 0])),
              ("area floor", depth + np.maximum(0.0, r[:, 3] - r[:, 1])))
    print("\nthe root's depth, −log(z / z*), with each floor to first order\n")
    print("| floor | mean abs | mean (bias) |")
    print("|---|---:|---:|")
    for name, col in floors:
        print(f"| {name} | {np.abs(col).mean():.4f} | {col.mean():+.4f} |")


if __name__ == "__main__":
    main()
