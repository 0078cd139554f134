"""A temporal input for the single-frame predictor: Chen et al.'s TASSN (PME module input) adapted to
our ResNet-18 + MANO predictor (comparison method 3, :mod:`handprop_jax.training.temporal_consistency`).

TASSN's pose-and-mesh estimator sees, for frame t+1, the image I_{t+1}, the optical flow o_{t+1}
(FlowNet2) and the heat maps H_t of its previous prediction. Here the predictor's first convolution
gets ``CHANNELS`` = 24 extra input channels (:func:`temporal_input`):

- a motion cue: the normalised frame difference ``(I_{t+1} − I_t) / 255 / std`` (3 channels) in place
  of FlowNet2's flow (no flow network here; with the image channels beside it, a linear first layer
  sees exactly what it would see given I_t itself);
- 21 Gaussian heat maps (σ = ``temporal.heatmap_sigma`` pixels, peak 1) of the previous prediction's
  joints projected with the current frame's crop intrinsics K_{t+1}.

The extra channels have their own conv1 weights, params group ``temporal`` ``{"kernel": (7, 7, 24,
width)}``, **initialised to zero**: their response (a 7x7/2 convolution, padding 3, like conv1) is
added to conv1's output (``HandPropModel.encode(..., stem=)``), which is conv1 over the 27-channel
input; at initialisation the network is the stage-1 predictor exactly. At the first frame of a pass
there is no previous frame: the temporal input is zero (``valid`` False), the same rule in training
and at test time.

Recurrence (:func:`recurrence`, :func:`predict_video`): frame t's temporal input comes from frame
t − 1 and the prediction on it; BatchNorm on the running statistics (inference mode).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from handprop_jax.camera import project
from handprop_jax.gamma import Gamma
from handprop_jax.model.conv import conv2d
from handprop_jax.model.encoder import IMAGENET_STD

KEY = "temporal"  # the top-level params group of the temporal input's conv1 weights
CHANNELS = 3 + 21  # motion cue + joint heat maps


def init_params(config) -> dict:
    """The temporal input's conv1 weights, all zero: {"kernel": (7, 7, CHANNELS, encoder_width)}."""
    return {"kernel": jnp.zeros((7, 7, CHANNELS, config.model.encoder_width), jnp.float32)}


def heatmaps(joints: jnp.ndarray, K: jnp.ndarray, size: int, sigma: float) -> jnp.ndarray:
    """Gaussian heat maps (B, S, S, 21), peak 1, of joints (B, 21, 3) projected with K (B, 3, 3) into
    an S x S crop (pixel centres at integer coordinates); joints not in front of the camera give 0."""
    uv = project(joints, K)  # (B, 21, 2)
    grid = jnp.arange(size, dtype=jnp.float32)
    du = jnp.square(grid[None, None, :] - uv[..., 0:1]) / (2 * sigma ** 2)  # (B, 21, S) along u
    dv = jnp.square(grid[None, None, :] - uv[..., 1:2]) / (2 * sigma ** 2)  # (B, 21, S) along v
    maps = jnp.exp(-dv[..., :, None] - du[..., None, :])  # (B, 21, S_v, S_u)
    maps = jnp.where((joints[..., 2] > 1e-3)[..., None, None], maps, 0.0)
    return jnp.transpose(maps, (0, 2, 3, 1))


def motion_cue(images: jnp.ndarray, prev_images: jnp.ndarray) -> jnp.ndarray:
    """(I_t − I_{t−1}) / 255 / ImageNet std, float32 (B, S, S, 3), from uint8 images."""
    diff = images.astype(jnp.float32) - prev_images.astype(jnp.float32)
    return diff * (1.0 / 255.0) / IMAGENET_STD


def temporal_input(images, prev_images, prev_joints, K, valid, sigma: float) -> jnp.ndarray:
    """The 24 extra channels (B, S, S, CHANNELS) of frames ``images`` given the previous frames, the
    previous predictions' joints (B, 21, 3) and the current K; rows with ``valid`` False are zero."""
    size = images.shape[1]
    x = jnp.concatenate([motion_cue(images, prev_images), heatmaps(prev_joints, K, size, sigma)], -1)
    return x * valid.astype(jnp.float32)[:, None, None, None]


def stem(model, kernel: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """Response of the extra channels x (B, S, S, CHANNELS) to their conv1 weights (7x7, stride 2,
    padding 3 — conv1's geometry), in the model's compute dtype."""
    m = model.config.model
    dtype = jnp.dtype(m.dtype)
    return conv2d(x.astype(dtype), kernel.astype(dtype), 2, ((3, 3), (3, 3)), m.conv_impl)


def predict(model, variables: dict, images, K, prev_images, prev_joints, valid, train: bool = False):
    """The predictor with its temporal input: → (Gamma, batch_stats, stem) (``train`` as in
    ``HandPropModel.encode``)."""
    x = temporal_input(images, prev_images, prev_joints, K, valid, model.config.temporal.heatmap_sigma)
    offset = stem(model, variables["params"][KEY]["kernel"], x)
    _, gamma, stats = model.predict(variables, images, K, train=train, stem=offset)
    return gamma, stats, offset


def _scan(model, variables: dict, images_tm, K_tm, carry):
    """Recurrence over time-major frames images_tm (n, B, S, S, 3), K_tm (n, B, 3, 3) from ``carry`` =
    (previous images (B, S, S, 3), previous joints (B, 21, 3), valid (B,)) → (carry, (Gamma (n, B, ...),
    joints (n, B, 21, 3)))."""

    def step(c, frame):
        prev_images, prev_joints, valid = c
        images, K = frame
        gamma, _, _ = predict(model, variables, images, K, prev_images, prev_joints, valid)
        (joints,) = model.joints(gamma)
        return (images, joints, jnp.ones_like(valid)), (gamma, joints)

    return lax.scan(step, carry, (images_tm, K_tm))


def start_carry(images: jnp.ndarray) -> tuple:
    """The carry of a pass's first frame (no previous frame: temporal input zero)."""
    b = images.shape[0]
    return (jnp.zeros_like(images), jnp.zeros((b, 21, 3), jnp.float32), jnp.zeros((b,), bool))


def recurrence(model, variables: dict, images: jnp.ndarray, K: jnp.ndarray) -> jnp.ndarray:
    """Joints (B, n, 21, 3) predicted recurrently over clips images (B, n, S, S, 3), K (B, n, 3, 3),
    in clip order, the first frame without temporal input."""
    tm = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    _, (_, joints) = _scan(model, variables, tm(images), tm(K), start_carry(images[:, 0]))
    return tm(joints)


@jax.jit
def _video_chunk(model, variables, images, K, carry):
    carry, (gamma, _) = _scan(model, variables, images[:, None], K[:, None], carry)
    return carry, jax.tree.map(lambda x: x[:, 0], gamma)


def predict_video(model, variables: dict, images, K, chunk: int = 32) -> Gamma:
    """γ (T, ...) of every frame of one video (images (T, S, S, 3) uint8, K (T, 3, 3)) in frame order,
    predicted recurrently from frame 0 (temporal input zero there). Compiled once per ``chunk``
    frames whatever T (the last chunk is padded by repeating the last frame; padding is dropped)."""
    import numpy as np

    images, K = np.asarray(images), np.asarray(K, np.float32)
    T = images.shape[0]
    carry = start_carry(jnp.asarray(images[:1]))
    parts = []
    for start in range(0, T, chunk):
        idx = np.minimum(np.arange(start, start + chunk), T - 1)
        carry, gamma = _video_chunk(model, variables, jnp.asarray(images[idx]), jnp.asarray(K[idx]), carry)
        parts.append(Gamma(*(np.asarray(x)[:min(chunk, T - start)] for x in gamma)))
    return Gamma(*(np.concatenate(f) for f in zip(*parts, strict=True)))


def video_predictor(model, variables: dict):
    """``sequence(images (T, S, S, 3), K (T, 3, 3)) -> Gamma (T)`` of a model with a temporal input
    (what :class:`~handprop_jax.model.api.BoundModel` ``.sequence`` holds)."""
    return functools.partial(predict_video, model, variables)
