"""How well a trained phase fits its own labelled training frames, at every kept checkpoint (issue 24,
"done when" 2: MPJPE (P) <= 5 mm there).

The labelled frames are the train split's every K-th frames (``data.sparse.label_sets``, as the
training pipeline picks them); each kept step of the phase predicts them and is scored as
``handprop evaluate`` scores a predictor (MPJPE, MPJPE (T), MPJPE (P) mm, median global-rotation
error), next to the step's validation MPJPE (what evaluation picks the checkpoint by).

    python benchmarks/labelled_fit.py --run runs/demo0 --phase baseline
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from finger_probe import FrameSet, whole_prediction  # noqa: E402

from handprop_jax.batching import batched  # noqa: E402
from handprop_jax.data.sparse import label_sets  # noqa: E402
from handprop_jax.evaluation import data as eval_data  # noqa: E402
from handprop_jax.hand import default_mano  # noqa: E402
from handprop_jax.model.api import HandPropModel  # noqa: E402
from handprop_jax.training import checkpoint as ckpt_lib  # noqa: E402


def labelled_frames(config) -> dict[str, np.ndarray]:
    """image, K, root, pose, betas of every labelled frame of the train split, concatenated."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("image", "K", "root", "pose", "betas")}
    for video in eval_data.iter_videos(config, "train"):
        lab, _ = label_sets(video["image"].shape[0], config.data.label_stride, video.get("has_label"),
                            video.get("frame_time"))
        for k, v in parts.items():
            v.append(np.asarray(video[k])[lab])
    return {k: np.concatenate(v) for k, v in parts.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a trained run folder")
    p.add_argument("--phase", default="baseline")
    args = p.parse_args()
    config = ckpt_lib.run_config(args.run)
    mano = default_mano(config)
    frames = labelled_frames(config)
    print(f"{args.run}, phase {args.phase}: {len(frames['image'])} labelled train frames\n")
    print("| step | MPJPE | MPJPE (T) | MPJPE (P) | rotation (median °) | val MPJPE |")
    print("|---:|---:|---:|---:|---:|---:|")
    ckpt = ckpt_lib.PhaseCheckpoints(args.run, args.phase, read_only=True)
    try:
        for step in ckpt.all_steps():
            state, meta = ckpt.restore(step)
            bound = HandPropModel.create(config).bind({"params": state["params"],
                                                       "batch_stats": state["batch_stats"]})
            f = batched(bound.features, frames["image"], batch_size=bound.batch_size)
            g = batched(bound.regress, f, frames["K"].astype(np.float32), batch_size=bound.batch_size)
            predicted = np.concatenate([np.asarray(g.root), np.asarray(g.pose), np.asarray(g.betas)], -1)
            m = whole_prediction(mano, FrameSet(None, None, predicted, np.zeros(0), frames["root"],
                                                frames["pose"], frames["betas"], np.zeros(0)))
            val = meta.get(ckpt_lib.VAL_KEY)
            print(f"| {step} | {m['MPJPE']:.2f} | {m['MPJPE (T)']:.2f} | {m['MPJPE (P)']:.2f} | "
                  f"{m['rotation (median °)']:.1f} | {'' if val is None else f'{val:.2f}'} |", flush=True)
    finally:
        ckpt.close()


if __name__ == "__main__":
    main()
