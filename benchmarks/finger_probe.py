"""Where the predictor's finger error comes from (issue 24): a truncation table and a linear probe.

Two measurements on the synthetic set, both scored as MPJPE (P) (mm, Procrustes-aligned joints)
of a hand that takes the TRUE root, global rotation and betas from the label and only its finger
articulation from the thing measured, so that nothing but the fingers is compared:

1. ``--truncation``: the finger pose's first k MANO PCA coefficients (of all 45) from the label, the
   others at the mean of the fit set — how many components a predictor must get right to reach a
   given MPJPE (P). Needs no model.
2. The probe (``--run`` or ``--npz``): the 15 PCA coefficients (``model.ncomps``) of each frame
   are predicted (a) by the model's own pose head, (b) by a ridge regression fitted on the model's
   features ψ(I) = [z^r; z^θ] of the ``--fit`` frames, (c) by a ridge regression on the raw pixels
   (the crop averaged to 32 × 32 × 3) — plus the correlation of the first coefficient with the truth.
   If (b) beats the mean fingers by much more than (a), the features hold finger information the
   head does not use; if neither does, the encoder never learned the fingers.

Frame sets are ``CONFIG:SPLIT[:FIELD=VALUE...]`` (e.g. ``synthetic:test``, ``synthetic_source:val``,
``synthetic:test:data.data_dir=data/seed1:data.synth_seed=1``); every frame with a label is used,
up to ``--max-frames`` per set.

Examples:
  python benchmarks/finger_probe.py --truncation --score synthetic:test
  python benchmarks/finger_probe.py --run runs/demo0 --phase baseline --fit synthetic:train \\
      --score synthetic:test --score synthetic:val
  python benchmarks/finger_probe.py --npz pretrained/synthetic_source.npz \\
      --fit synthetic_source:train --score synthetic_source:val --score synthetic:test
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import mano_jax
from handprop_jax import config as config_lib
from handprop_jax import metrics
from handprop_jax.batching import batched
from handprop_jax.evaluation import data as eval_data
from handprop_jax.hand import default_mano, hand_in_camera_jit
from handprop_jax.model.api import HandPropModel
from handprop_jax.training.checkpoint import load_run

TRUNCATIONS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 45)
RIDGE_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0)


@dataclasses.dataclass
class FrameSet:
    """Frames of one set: ``features`` (N, 2F) or None, ``head`` (N, ncomps) the model's coefficients or
    None, ``predicted`` (N, 61) its whole prediction (root m, pose rad, betas) or None, ``pixels``
    (N, 3072) in [0, 1], and the labels ``root`` (N, 3) m, ``pose`` (N, 48) rad, ``betas`` (N, 10),
    ``joints3d`` (N, 21, 3) m."""

    features: np.ndarray | None
    head: np.ndarray | None
    predicted: np.ndarray | None  # (N, 3 + 48 + 10) the model's root, pose, betas
    pixels: np.ndarray
    root: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    joints3d: np.ndarray


def collect(spec: str, model_config, bound, mano, max_frames: int) -> FrameSet:
    name, split, *sets = spec.split(":")
    config = dataclasses.replace(model_config, data=config_lib.load(name, sets).data)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("features", "head", "predicted", "pixels", "root",
                                                          "pose", "betas", "joints3d")}
    n = 0
    for video in eval_data.iter_videos(config, split):
        keep = np.isfinite(video["pose"]).all(-1)
        images = video["image"][keep]
        s = images.shape[1]
        if bound is not None:
            f = batched(bound.features, images, batch_size=bound.batch_size)
            intrinsics = np.asarray(video["K"], np.float32)[keep]
            g = batched(bound.regress, f, intrinsics, batch_size=bound.batch_size)
            parts["features"].append(np.concatenate([np.asarray(f.z_r), np.asarray(f.z_theta)], -1))
            parts["head"].append(coefficients(mano, np.asarray(g.pose), model_config.model.ncomps))
            parts["predicted"].append(np.concatenate([np.asarray(g.root), np.asarray(g.pose),
                                                      np.asarray(g.betas)], -1))
        small = images.reshape(len(images), 32, s // 32, 32, s // 32, 3).mean((2, 4)) / 255.0
        parts["pixels"].append(small.reshape(len(images), -1))
        for k in ("root", "pose", "betas", "joints3d"):
            parts[k].append(np.asarray(video[k][keep]))
        n += len(images)
        if n >= max_frames:
            break
    cat = {k: (np.concatenate(v)[:max_frames] if v else None) for k, v in parts.items()}
    return FrameSet(**cat)


def coefficients(mano, pose: np.ndarray, ncomps: int) -> np.ndarray:
    """(N, 48) axis-angle pose -> (N, ncomps) least-squares PCA coefficients of its finger part."""
    return np.asarray(mano_jax.axis_angle_to_pca(mano, jnp.asarray(pose[:, 3:], jnp.float32), ncomps=ncomps))


def p_error_mm(mano, frames: FrameSet, coeffs: np.ndarray) -> float:
    """MPJPE (P) in mm of the hand with the labels' root, global rotation and betas and finger PCA
    coefficients ``coeffs`` (N, k), against the labels' joints."""
    fingers = np.asarray(mano_jax.pca_to_axis_angle(mano, jnp.asarray(coeffs, jnp.float32)))
    pose = np.concatenate([frames.pose[:, :3], fingers], 1).astype(np.float32)
    _, joints = hand_in_camera_jit(mano, jnp.asarray(frames.root, jnp.float32), jnp.asarray(pose),
                                   jnp.asarray(frames.betas, jnp.float32))
    joints = np.asarray(joints)
    return float(1000 * metrics.point_error(metrics.align_procrustes(joints, frames.joints3d),
                                            frames.joints3d).mean())


def whole_prediction(mano, frames: FrameSet) -> dict[str, float]:
    """The model's own prediction against the labels: MPJPE, MPJPE (T), MPJPE (P) in mm and the median
    global-rotation error in degrees (``metrics.per_frame_with_rotation``, as ``handprop evaluate``)."""
    p = frames.predicted.astype(np.float32)
    pv, pj = (np.asarray(a) for a in hand_in_camera_jit(mano, jnp.asarray(p[:, :3]), jnp.asarray(p[:, 3:51]),
                                                        jnp.asarray(p[:, 51:])))
    tv, tj = (np.asarray(a) for a in hand_in_camera_jit(mano, jnp.asarray(frames.root, jnp.float32),
                                                        jnp.asarray(frames.pose, jnp.float32),
                                                        jnp.asarray(frames.betas, jnp.float32)))
    m = metrics.per_frame_with_rotation(pj, tj, pv, tv, p[:, 3:51], frames.pose)
    return {"MPJPE": float(m["MPJPE"].mean()), "MPJPE (T)": float(m["MPJPE (T)"].mean()),
            "MPJPE (P)": float(m["MPJPE (P)"].mean()),
            "rotation (median °)": float(np.median(m[metrics.ROTATION]))}


def ridge(x: np.ndarray, y: np.ndarray, lam: float):
    """Ridge regression on standardised inputs (penalty ``lam`` per sample); returns the predictor."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xs = (x - mu) / sd
    w = np.linalg.solve(xs.T @ xs + lam * len(x) * np.eye(x.shape[1]), xs.T @ (y - y.mean(0)))
    return lambda z: ((z - mu) / sd) @ w + y.mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a trained run folder (its checkpoint of --phase, best on validation)")
    parser.add_argument("--phase", default="baseline")
    parser.add_argument("--npz", help="a predictor file (model.init_checkpoint), "
                                      "e.g. pretrained/synthetic_source.npz")
    parser.add_argument("--fit", action="append", default=[], help="frame set to fit on (repeatable)")
    parser.add_argument("--score", action="append", required=True, help="frame set to score (repeatable)")
    parser.add_argument("--truncation", action="store_true", help="the truncation table (no model)")
    parser.add_argument("--max-frames", type=int, default=6000)
    args = parser.parse_args()

    if args.run:
        config, variables = load_run(args.run, args.phase, "best")
    else:
        config = config_lib.load("synthetic", [f"model.init_checkpoint={args.npz}"] if args.npz else [])
        variables = HandPropModel.create(config).init(jax.random.PRNGKey(0)) if args.npz else None
    bound = HandPropModel.create(config).bind(variables) if variables is not None else None
    mano = default_mano(config)
    ncomps = config.model.ncomps
    fit = [collect(s, config, bound, mano, args.max_frames) for s in (args.fit or args.score[:1])]
    fit_pose = np.concatenate([f.pose for f in fit])
    mean45 = coefficients(mano, fit_pose, 45).mean(0)

    for spec in args.score:
        frames = collect(spec, config, bound, mano, args.max_frames)
        truth45 = coefficients(mano, frames.pose, 45)
        print(f"\n{spec}: {len(frames.pose)} frames; MPJPE (P) mm with the labels' root, rotation and betas")
        if args.truncation:
            print("| true components k | " + " | ".join(map(str, TRUNCATIONS)) + " |")
            print("|---|" + "---:|" * len(TRUNCATIONS))
            row = []
            for k in TRUNCATIONS:
                c = np.broadcast_to(mean45, truth45.shape).copy()
                c[:, :k] = truth45[:, :k]
                row.append(f"{p_error_mm(mano, frames, c):.2f}")
            print("| MPJPE (P) | " + " | ".join(row) + " |")
            print("coefficient std (first 15): " + " ".join(f"{s:.2f}" for s in truth45.std(0)[:15]))
        if bound is None:
            continue
        whole = whole_prediction(mano, frames)
        print("the model's prediction: " + ", ".join(f"{k} {v:.2f}" for k, v in whole.items()))
        truth = truth45[:, :ncomps]
        fit_c = coefficients(mano, fit_pose, ncomps)
        print("| fingers from | MPJPE (P) | corr. of 1st coefficient |")
        print("|---|---:|---:|")
        print(f"| the label, {ncomps} components | {p_error_mm(mano, frames, truth):.2f} | 1 |")
        mean_c = np.broadcast_to(fit_c.mean(0), truth.shape)
        print(f"| the fit set's mean | {p_error_mm(mano, frames, mean_c):.2f} | - |")
        print(f"| the model's head | {p_error_mm(mano, frames, frames.head):.2f} | "
              f"{np.corrcoef(frames.head[:, 0], truth[:, 0])[0, 1]:.2f} |")
        for name, attr in (("ridge on features", "features"), ("ridge on 32x32 pixels", "pixels")):
            x_fit = np.concatenate([getattr(f, attr) for f in fit])
            best = min((p_error_mm(mano, frames, c := ridge(x_fit, fit_c, lam)(getattr(frames, attr))),
                         np.corrcoef(c[:, 0], truth[:, 0])[0, 1], lam) for lam in RIDGE_LAMBDAS)
            print(f"| {name} (best λ {best[2]:g}) | {best[0]:.2f} | {best[1]:.2f} |")


if __name__ == "__main__":
    main()
