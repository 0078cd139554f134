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
  fingers), its box side and sqrt of its area;

as the log-ratio to the truth (0.01 = 1 % too large), and the best blend of the two. Numpy and the
project's renderer; reads the unlabelled frames' ground truth for scoring only.

    python benchmarks/scale_cue_probe.py --data-dir /abs/data --seed 0 --videos 3 [--threshold 20]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from handprop_jax import config as config_lib
from handprop_jax.camera import project
from handprop_jax.data.sparse import label_sets
from handprop_jax.evaluation import data as eval_data
from handprop_jax.evaluation import protocol as protocol_lib
from handprop_jax.gamma import Gamma
from handprop_jax.hand import default_mano, hand_mesh
from handprop_jax.propagation.core import Propagator
from handprop_jax.propagation.recrop import Recrop, propagate_recrop
from handprop_jax.render import rasterize


def box_side(verts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(T,) larger side of the projected vertices' bounding box, crop pixels (verts (T, V, 3))."""
    uv = np.asarray(project(jnp.asarray(verts), jnp.asarray(K)))
    return (uv.max(1) - uv.min(1)).max(1)


def silhouettes(verts: np.ndarray, faces, K: np.ndarray, size: int) -> np.ndarray:
    """(T, S, S) bool rendered silhouettes."""
    fn = jax.jit(jax.vmap(lambda v, k: rasterize(v, faces, k, (size, size))[0]))
    return np.asarray(fn(jnp.asarray(verts, jnp.float32), jnp.asarray(K, jnp.float32))) >= 0


def resample(image: np.ndarray, box_from: np.ndarray, box_to: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A crop (S, S, C) cut at ``box_from`` (cx, cy, side, full-frame pixels) seen through ``box_to``:
    (S, S, C) bilinear samples and (S, S) bool where the sample lies inside the source crop
    (``data.crop.crop_intrinsics``' pixel convention)."""
    size = image.shape[0]
    half = (size - 1) / 2
    p = np.arange(size, dtype=np.float64)
    full_x = (p - half) * box_to[2] / size + box_to[0]
    full_y = (p - half) * box_to[2] / size + box_to[1]
    qx, qy = np.meshgrid((full_x - box_from[0]) * size / box_from[2] + half,
                         (full_y - box_from[1]) * size / box_from[2] + half)
    inside = (qx >= 0) & (qx <= size - 1) & (qy >= 0) & (qy <= size - 1)
    out = np.stack([ndimage.map_coordinates(image[..., c].astype(np.float32), [qy, qx], order=1,
                                            mode="nearest") for c in range(image.shape[-1])], -1)
    return out, inside


def hand_mask(image: np.ndarray, box: np.ndarray, refs: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
              threshold: float) -> np.ndarray:
    """(S, S) bool: where ``image`` (at ``box``) differs from the background model of ``refs``
    [(labelled crop, its box, its background pixels (S, S) bool)], opened by the 4-neighbour cross."""
    samples, valid = [], []
    for ref_image, ref_box, background in refs:
        colour, inside = resample(ref_image, ref_box, box)
        keep, _ = resample(background[..., None].astype(np.float32), ref_box, box)
        samples.append(colour)
        valid.append(inside & (keep[..., 0] > 0.99))
    samples, valid = np.stack(samples), np.stack(valid)
    known = valid.any(0)
    model = np.nanmedian(np.where(valid[..., None], samples, np.nan), 0)
    diff = np.abs(image.astype(np.float32) - np.where(known[..., None], model, 0)).max(-1)
    return ndimage.binary_opening((diff > threshold) & known)  # the 4-neighbour cross


def probe_video(video: dict, prop: Propagator, mano, stride: int, threshold: float) -> np.ndarray:
    """(U, 4) log-ratios to the truth of the unlabelled frames: propagated box side, propagated
    sqrt area, mask box side, mask sqrt area."""
    T = video["image"].shape[0]
    lab, unl = label_sets(T, stride, video.get("has_label"), video.get("frame_time"))
    gt = Gamma.of(video).numpy()
    res, boxes = propagate_recrop(prop, video["crop"], video["box"], video["K_full"], lab, gt.take(lab),
                                  both_sides=True, recrop=Recrop(), images=video["image"],
                                  K=np.asarray(video["K"], np.float32))
    images, K = video["crop"](boxes)
    size = images.shape[1]
    faces = jnp.asarray(mano.faces)
    true_v, _ = hand_mesh(mano, gt)
    prop_v, _ = hand_mesh(mano, res.gamma)
    true_sil, prop_sil = silhouettes(true_v, faces, K, size), silhouettes(prop_v, faces, K, size)
    # the labelled frames' background pixels: outside their label's silhouette, dilated by 2 pixels
    refs = [(images[s], boxes[s], ~ndimage.binary_dilation(true_sil[s], iterations=2)) for s in lab]
    true_side, prop_side = box_side(true_v, K), box_side(prop_v, K)
    rows = []
    for u in unl:
        mask = hand_mask(images[u], boxes[u], refs, threshold)
        ys, xs = np.nonzero(mask)
        mask_side = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1 if len(xs) else np.nan
        true_area = true_sil[u].sum()
        rows.append([np.log(prop_side[u] / true_side[u]), 0.5 * np.log(prop_sil[u].sum() / true_area),
                     np.log(mask_side / true_side[u]), 0.5 * np.log(max(mask.sum(), 1) / true_area)])
    return np.asarray(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder holding synthetic_hand_video/ (absolute path)")
    p.add_argument("--seed", type=int, default=0, help="the data set's generation seed (data.synth_seed)")
    p.add_argument("--videos", type=int, default=3, help="test videos probed")
    p.add_argument("--threshold", type=float, default=20.0, help="mask threshold, grey levels (0-255)")
    args = p.parse_args()
    config = config_lib.override(config_lib.load("synthetic"), [
        f"data.data_dir={str(Path(args.data_dir).resolve())!r}", f"data.synth_seed={args.seed}"])
    mano = default_mano(config)
    prop = Propagator.from_config(config, method="photometric")
    videos = itertools.islice(eval_data.iter_videos(config, "test"), args.videos)
    r = np.concatenate([probe_video(v, prop, mano, config.data.label_stride, args.threshold)
                        for v in protocol_lib.user_videos(config, "test", videos, mano, recrop=None)])
    r = r[np.isfinite(r).all(1)]
    print(f"{len(r)} unlabelled frames; log-ratio of the hand's size to the truth's (0.01 = 1 %)\n")
    print("| estimate | mean abs | median abs | mean (bias) | 5th / 95th percentile |")
    print("|---|---:|---:|---:|---|")
    names = ("propagated, box side", "propagated, sqrt area", "background mask, box side",
             "background mask, sqrt area")
    for name, col in zip(names, r.T, strict=True):
        lo, hi = np.percentile(col, [5, 95])
        print(f"| {name} | {np.abs(col).mean():.4f} | {np.median(np.abs(col)):.4f} | {col.mean():+.4f} | "
              f"{lo:+.4f} / {hi:+.4f} |")
    for k, what in ((0, "box side"), (1, "sqrt area")):
        best = min((np.abs(w * r[:, k + 2] + (1 - w) * r[:, k]).mean(), w) for w in np.linspace(0, 1, 11))
        print(f"| best blend, {what} (mask weight {best[1]:.1f}) | {best[0]:.4f} | | | |")
    print(f"\ncorrelation of the two errors: box side {np.corrcoef(r[:, 0], r[:, 2])[0, 1]:.2f}, "
          f"sqrt area {np.corrcoef(r[:, 1], r[:, 3])[0, 1]:.2f}")


if __name__ == "__main__":
    main()
