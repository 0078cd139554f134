"""Where the default propagation's error under the user protocol is (issue 25): root, depth, the rest.

Runs the tool's default propagation (both sides, re-cropping, the background floor) on the first
``--videos`` test videos of a synthetic data set under the user protocol, then scores its unlabelled
frames (MPJPE mm, overall and by gap to the nearest label) as they are and with parts replaced by
the ground truth: the true root; the true depth along the propagated root's ray (the same pixel);
and prints the root's and its depth's error. Then whether smoothing the propagated roots in time
helps: a Gaussian (σ frames) on their difference from the labels' linear interpolation (zero at
the labelled frames), applied to x, y, z or to z alone. Reads the unlabelled frames' ground truth for
scoring only.

    python benchmarks/user_error_parts.py --data-dir /abs/data --seed 2 --videos 4
"""

from __future__ import annotations

import argparse
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
from handprop_jax.propagation.core import Propagator
from handprop_jax.propagation.recrop import Recrop, propagate_recrop

GAPS = ((1, 1), (2, 3), (4, 7), (8, 10**6))
SIGMAS = (0.7, 1.0, 1.5, 2.0, 3.0)


def joint_error_mm(mano, gamma: Gamma, truth: Gamma) -> np.ndarray:
    """(M,) mean joint error in mm of hands γ (M, ...) against the truth's, camera frame."""
    _, j = hand_mesh(mano, gamma)
    _, t = hand_mesh(mano, truth)
    return 1000 * np.linalg.norm(np.asarray(j) - np.asarray(t), axis=-1).mean(-1)


def smoothed_roots(root: np.ndarray, truth_root: np.ndarray, lab: np.ndarray, sigma: float,
                   z_only: bool) -> np.ndarray:
    """(T, 3) propagated roots smoothed in time about the labels' linear interpolation."""
    T = len(root)
    lin = np.stack([np.interp(np.arange(T), lab, truth_root[lab, i]) for i in range(3)], 1)
    e = root - lin
    e[lab] = 0.0
    s = ndimage.gaussian_filter1d(e, sigma, axis=0, mode="nearest")
    if z_only:
        s[:, :2] = e[:, :2]
    out = lin + s
    out[lab] = root[lab]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder holding synthetic_hand_video/ (absolute path)")
    p.add_argument("--seed", type=int, default=0, help="the data set's generation seed (data.synth_seed)")
    p.add_argument("--videos", type=int, default=4, help="test videos")
    args = p.parse_args()
    config = config_lib.override(config_lib.load("synthetic"), [
        f"data.data_dir={str(Path(args.data_dir).resolve())!r}", f"data.synth_seed={args.seed}"])
    mano = default_mano(config)
    prop = Propagator.from_config(config, method="photometric")
    parts: dict[str, list[np.ndarray]] = {}
    add = lambda k, v: parts.setdefault(k, []).append(v)  # noqa: E731
    videos = itertools.islice(eval_data.iter_videos(config, "test"), args.videos)
    for v in protocol_lib.user_videos(config, "test", videos, mano, recrop=None):
        T = v["image"].shape[0]
        lab, unl = label_sets(T, config.data.label_stride, v.get("has_label"), v.get("frame_time"))
        gt = Gamma.of(v).numpy()
        res, _ = propagate_recrop(prop, v["crop"], v["box"], v["K_full"], lab, gt.take(lab), both_sides=True,
                                  recrop=Recrop(), images=v["image"], K=np.asarray(v["K"], np.float32))
        g, truth = res.gamma.take(unl), gt.take(unl)
        add("gap", np.min(np.abs(unl[:, None] - lab[None]), 1))
        add("as propagated", joint_error_mm(mano, g, truth))
        add("with the true root", joint_error_mm(mano, Gamma(truth.root, g.pose, g.betas), truth))
        ray = g.root * (truth.root[:, 2:] / g.root[:, 2:])
        add("with the true depth on its ray", joint_error_mm(mano, Gamma(ray, g.pose, g.betas), truth))
        add("root error", 1000 * np.linalg.norm(g.root - truth.root, axis=-1))
        add("root depth error", 1000 * np.abs(g.root[:, 2] - truth.root[:, 2]))
        for sigma, z_only in itertools.product(SIGMAS, (False, True)):
            root = smoothed_roots(res.gamma.root, gt.root, lab, sigma, z_only)[unl]
            add(f"smoothed σ {sigma} ({'z' if z_only else 'xyz'})",
                joint_error_mm(mano, Gamma(root, g.pose, g.betas), truth))
    gap = np.concatenate(parts.pop("gap"))
    print(f"data seed {args.seed}, {args.videos} test videos, {len(gap)} unlabelled frames (mm)\n")
    print("| | all | " + " | ".join(f"gap {a}–{b}" if b < 10**6 else f"gap ≥ {a}" for a, b in GAPS) + " |")
    print("|---|---:|" + "---:|" * len(GAPS))
    for name, vals in parts.items():
        x = np.concatenate(vals)
        print(f"| {name} | {x.mean():.2f} | "
              + " | ".join(f"{x[(gap >= a) & (gap <= b)].mean():.2f}" for a, b in GAPS) + " |")


if __name__ == "__main__":
    main()
