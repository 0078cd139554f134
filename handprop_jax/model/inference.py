"""Model API for evaluation, propagation and visualisation (docs/design.md, "Model API").

All functions are jit-compiled pure functions of arrays; ``config`` (a frozen, hashable
:class:`~handprop_jax.config.Config`) is static. ``variables`` = ``{"params", "batch_stats"}``.

- :func:`load_run` ``(workdir, model="align", which="latest") -> (config, variables)``
- :func:`features` ``(config, variables, images_uint8 (B,S,S,3)) -> (z_r (B,F), z_theta (B,F))``
  (inference mode: BatchNorm running statistics)
- :func:`regress` ``(config, variables, z_r, z_theta, K (B,3,3)) -> γ`` = ``{root (B,3) m,
  pose (B,48) rad full axis-angle incl. hands_mean, betas (B,10)}``
- :func:`align` ``(config, variables, gamma_b, z_a, z_b) -> γ_a`` with z_a/z_b ``(z_r, z_theta)``
  tuples: γ_a = (r_b + φ^r(r_b, z^r_a − z^r_b), θ_b + φ^θ(θ_b, z^θ_a − z^θ_b), β_b).
  Propagation (scenario 2): ``align(config, variables, gamma_s_gt, z_u, z_s)``.
- :func:`predict` ``(config, variables, images, K) -> γ`` = features + regress.
- :func:`hand` ``(config, gamma) -> (joints (B,21,3), verts (B,778,3))`` camera frame, metres.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp

from handprop_jax import config as config_lib
from handprop_jax.config import Config
from handprop_jax.hand import default_mano, hand_in_camera_jit
from handprop_jax.model import handprop as hp

MODELS = ("stage1", "baseline", "stage2", "align")


def load_run(workdir: str | Path, model: str = "align", which: str = "latest") -> tuple[Config, dict]:
    """Config and variables of a trained run.

    Args:
      workdir: the run folder (has ``config.json`` and ``checkpoints/<model>/``).
      model: "align" (stage 3, Baseline + Align), "baseline" (control), "stage1" or "stage2".
      which: "latest" (the last saved step, the end of the phase when it finished) or "best"
        (lowest validation error among the kept checkpoints; falls back to latest).
    Returns:
      (config, {"params", "batch_stats"}) with numpy/jax arrays.
    Raises:
      FileNotFoundError naming the missing file/folder; ValueError for a bad ``model``/``which``.
    """
    from handprop_jax.training.checkpoint import PhaseCheckpoints, phase_dir

    if model not in MODELS:
        raise ValueError(f"load_run: model {model!r} must be one of {MODELS}")
    if which not in ("latest", "best"):
        raise ValueError(f"load_run: which {which!r} must be 'latest' or 'best'")
    workdir = Path(workdir)
    cfg_path = workdir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"load_run: {cfg_path} not found (is {workdir} a handprop run folder?)")
    config = config_lib.load_json(cfg_path)
    directory = phase_dir(workdir, model)
    if not directory.is_dir():
        raise FileNotFoundError(f"load_run: no checkpoints for model {model!r} in {directory}; "
                                f"train it first (handprop train --workdir {workdir})")
    ckpt = PhaseCheckpoints(workdir, model, read_only=True)
    step = ckpt.best_step() if which == "best" else None
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"load_run: {directory} holds no finished checkpoint")
    state, _ = ckpt.restore(step)
    ckpt.close()
    return config, {"params": state["params"], "batch_stats": state["batch_stats"]}


@functools.partial(jax.jit, static_argnums=0)
def features(config: Config, variables: dict, images: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """uint8 (B,S,S,3) → (z_r, z_theta) float32 (B, feature_dim), BatchNorm in inference mode."""
    module = hp.from_config(config)
    return module.apply(variables, images, False, method=hp.HandProp.encode)


def regress(config: Config, variables: dict, z_r: jnp.ndarray, z_theta: jnp.ndarray,
            K: jnp.ndarray) -> dict:
    """Regressor (Eq. 1) + MANO PCA → full pose + root recovery: γ^reg (see module docstring)."""
    return _regress(config, variables, z_r, z_theta, K, default_mano(config))


@functools.partial(jax.jit, static_argnums=0)
def _regress(config, variables, z_r, z_theta, K, mano):
    module = hp.from_config(config)
    raw_root, raw_pose = module.apply({"params": variables["params"]}, z_r, z_theta,
                                      method=hp.HandProp.regress)
    return hp.regress_gamma(mano, raw_root, raw_pose, K, config.data.image_size,
                            config.data.z_off, config.model.ncomps, config.model.root_depth_unit)


@functools.partial(jax.jit, static_argnums=0)
def align(config: Config, variables: dict, gamma_b: dict, z_a: tuple, z_b: tuple) -> dict:
    """Pose Alignment (Eqs. 2–4): annotations of frame b → frame a; β copied."""
    gamma_b = {k: gamma_b[k] for k in ("root", "pose", "betas")}
    return hp.align(hp.from_config(config), variables["params"], gamma_b, z_a, z_b)


def predict(config: Config, variables: dict, images: jnp.ndarray, K: jnp.ndarray) -> dict:
    """Scenario 1: the Hand Predictor's γ^reg for uint8 images (B,S,S,3) with intrinsics K (B,3,3)."""
    z_r, z_theta = features(config, variables, images)
    return regress(config, variables, z_r, z_theta, K)


def hand(config: Config, gamma: dict) -> tuple[jnp.ndarray, jnp.ndarray]:
    """γ → (joints (B,21,3), vertices (B,778,3)), camera frame, metres, with the run's MANO model."""
    return hand_in_camera_jit(default_mano(config), gamma["root"], gamma["pose"], gamma["betas"])
