"""The image encoder psi: a ResNet-18 (torchvision layout, NHWC) giving z = [z^r; z^theta].

Architecture (exactly torchvision's ``resnet18`` without its ``fc``): 7x7/2 convolution (pad 3),
BatchNorm, ReLU, 3x3/2 max-pool (pad 1); four stages of two BasicBlocks with ``width * (1, 2, 4, 8)``
channels (first block of stages 2-4 has stride 2 and a 1x1/2 convolution + BatchNorm shortcut);
convolutions have no bias; BatchNorm eps 1e-5, momentum 0.1 in torch terms (running = 0.9 running
+ 0.1 batch, the running variance updated with the *unbiased* batch variance as torch does).

Features:
- ``z_theta``: global average pool of the last stage (``8 * width`` = 512 channels for ResNet-18).
- ``z_r``: the paper asks for a "lower-level" feature without saying which. We take the global
  average pool of stage ``z_r_stage`` (default 3: 256 channels at ResNet-18 width, i.e. the
  output of ``layer3``) and bring it to ``feature_dim`` with a learned Dense layer (``z_r_proj``,
  with bias). Stage 3 still has a spatial extent at 64 px (4x4) and is less pose-invariant than
  the last stage, which is what the root (translation/scale) regressor needs. Configurable via
  ``ModelConfig.z_r_stage`` (1..4).
- When ``8 * width != feature_dim`` (tiny test networks), ``z_theta`` is also projected to
  ``feature_dim`` by a Dense (``z_theta_proj``); at ResNet-18 width (64) with feature_dim 512 it is
  the pooled features themselves, as in the paper.
Both outputs are float32 ``(B, feature_dim)`` whatever the compute dtype.

``width`` (base channels, 64 = ResNet-18) lets tests build tiny networks, e.g.
``Encoder(width=8, feature_dim=32)``. Variables: ``params`` and ``batch_stats`` (running
``mean``/``var`` of every BatchNorm). In training (``train=True`` and not ``freeze_batchnorm``)
call ``apply(..., mutable=["batch_stats"])``.

Parameter names follow torchvision's so that :mod:`handprop_jax.model.torchvision_import` is a
direct mapping: ``conv1``, ``bn1``, ``layer{1..4}_{0,1}/{conv1,bn1,conv2,bn2,downsample_conv,
downsample_bn}``; convolution kernels are HWIO (torch OIHW transposed).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from handprop_jax.model.conv import IMPLS, conv2d
from handprop_jax.model.pool import max_pool

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

Dtype = Any


def normalize_images(images: jax.Array, dtype: Dtype = jnp.float32) -> jax.Array:
    """uint8 RGB images (..., H, W, 3) in [0, 255] -> float (x/255 - ImageNet mean) / std."""
    if images.shape[-1] != 3:
        raise ValueError(f"normalize_images: expected (..., H, W, 3) RGB images, got {images.shape}")
    x = images.astype(jnp.float32) * (1.0 / 255.0)
    return ((x - IMAGENET_MEAN) / IMAGENET_STD).astype(dtype)


def as_dtype(dtype: Dtype) -> jnp.dtype:
    """Accept "float32"/"bfloat16" strings (config) or jnp dtypes."""
    return jnp.dtype(dtype)


class Conv(nn.Module):
    """Bias-free 2D convolution, NHWC x HWIO, through :func:`handprop_jax.model.conv.conv2d`.

    Kernel init: He normal with fan_out (torchvision's ``kaiming_normal_(mode="fan_out")``).
    Parameters are float32; the computation runs in ``dtype``.
    """

    features: int
    kernel_size: int
    strides: int = 1
    padding: int = 0  # symmetric explicit padding, pixels
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
                            (k, k, x.shape[-1], self.features), jnp.float32)
        p = self.padding
        return conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.strides,
                      ((p, p), (p, p)), self.conv_impl)


class BatchNorm(nn.Module):
    """BatchNorm over (B, H, W) of NHWC activations with torch semantics.

    Variables: params ``scale`` (init 1), ``bias`` (init 0); batch_stats ``mean`` (init 0),
    ``var`` (init 1). With ``use_running_average`` the running statistics normalise; otherwise the
    batch's (biased) mean/variance normalise and, when the ``batch_stats`` collection is mutable,
    the running statistics are updated with momentum (torch's 0.1) and the *unbiased* variance.
    Statistics are accumulated in float32 (one pass: mean and mean of squares); the output is
    ``scale * (x - mean) * rsqrt(var + eps) + bias`` applied as one multiply-add in ``dtype``.
    Under ``jit`` with a batch sharded over devices the batch statistics are already global
    (synchronised BatchNorm, see :mod:`handprop_jax.training.parallel`).
    """

    use_running_average: bool
    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if self.use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            xf = x.astype(jnp.float32)
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(xf, axes)
            mean_sq = jnp.mean(lax.square(xf), axes)
            n = int(np.prod([x.shape[a] for a in axes]))
            var = jnp.maximum(mean_sq - lax.square(mean), 0.0)
            if not self.is_initializing() and self.is_mutable_collection("batch_stats"):
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                ra_mean.value = (1 - m) * ra_mean.value + m * lax.stop_gradient(mean)
                ra_var.value = (1 - m) * ra_var.value + m * lax.stop_gradient(unbiased)
        mul = scale * lax.rsqrt(var + self.epsilon)
        add = bias - mean * mul
        return x * mul.astype(self.dtype) + add.astype(self.dtype)


class BasicBlock(nn.Module):
    """torchvision BasicBlock: conv3x3(s)-BN-ReLU-conv3x3-BN + shortcut, ReLU."""

    features: int
    strides: int
    use_running_average: bool
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = lambda f, k, s, p, name: Conv(f, k, s, p, self.conv_impl, self.dtype, name=name)
        bn = lambda name: BatchNorm(self.use_running_average, dtype=self.dtype, name=name)
        y = conv(self.features, 3, self.strides, 1, "conv1")(x)
        y = nn.relu(bn("bn1")(y))
        y = conv(self.features, 3, 1, 1, "conv2")(y)
        y = bn("bn2")(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = conv(self.features, 1, self.strides, 0, "downsample_conv")(x)
            x = bn("downsample_bn")(x)
        return nn.relu(y + x)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """torchvision's MaxPool2d(3, stride=2, padding=1) on NHWC (padding with -inf)."""
    return max_pool(x, 3, 2, 1)


class Encoder(nn.Module):
    """ResNet-18 encoder psi: normalised images -> (z_r, z_theta), both float32 (B, feature_dim).

    Attributes:
      z_r_stage: stage (1..4) whose pooled output, projected by a Dense, is z_r.
      feature_dim: size of z_r and z_theta (512 in the paper).
      conv_impl: "auto" | "xla" | "im2col" | "taps" | "hybrid" | "bf16_cols" (see
        :mod:`handprop_jax.model.conv`; "auto" = per-pass native/im2col hybrid on CPU, native
        convolution on GPU; "bf16_cols" = CPU, bfloat16 operands, float32 sums).
      dtype: compute dtype (float32 or bfloat16); params and BatchNorm statistics stay float32.
      width: base channels (64 = ResNet-18); tests use e.g. 8.
      freeze_batchnorm: use the running statistics in training too (the baseline froze them).
    """

    z_r_stage: int = 3
    feature_dim: int = 512
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32
    width: int = 64
    freeze_batchnorm: bool = False

    @nn.compact
    def __call__(self, images: jax.Array, train: bool, stem: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array]:
        """images: float (B, H, W, 3), already normalised (see :func:`normalize_images`). ``stem``:
        optional (B, H/2, W/2, width) added to the output of ``conv1`` before ``bn1`` — the response
        of extra input channels to their own conv1 weights (a 7x7/2 convolution with padding 3 of
        those channels), i.e. conv1 over the image with the extra channels concatenated.

        Returns (z_r, z_theta), float32 (B, feature_dim) each.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"Encoder: expected normalised images (B, H, W, 3), got {images.shape}")
        if not 1 <= self.z_r_stage <= 4:
            raise ValueError(f"Encoder: z_r_stage must be in 1..4, got {self.z_r_stage}")
        dtype = as_dtype(self.dtype)
        if self.conv_impl not in IMPLS:
            raise ValueError(f"Encoder: conv_impl {self.conv_impl!r} not in {IMPLS}")
        impl = self.conv_impl
        ura = (not train) or self.freeze_batchnorm
        x = Conv(self.width, 7, 2, 3, impl, dtype, name="conv1")(images)
        if stem is not None:
            x = x + stem.astype(x.dtype)
        x = nn.relu(BatchNorm(ura, dtype=dtype, name="bn1")(x))
        x = max_pool_3x3_s2(x)
        pooled = []
        for stage in range(4):
            features = self.width * 2 ** stage
            for b in range(2):
                strides = 2 if (stage > 0 and b == 0) else 1
                x = BasicBlock(features, strides, ura, impl, dtype, name=f"layer{stage + 1}_{b}")(x)
            pooled.append(jnp.mean(x.astype(jnp.float32), axis=(1, 2)))
        z_theta = pooled[3]
        if z_theta.shape[-1] != self.feature_dim:
            z_theta = nn.Dense(self.feature_dim, name="z_theta_proj")(z_theta)
        z_r = nn.Dense(self.feature_dim, name="z_r_proj")(pooled[self.z_r_stage - 1])
        return z_r, z_theta


def from_config(model_config) -> Encoder:
    """Build the Encoder from ``handprop_jax.config.ModelConfig``."""
    return Encoder(z_r_stage=model_config.z_r_stage, feature_dim=model_config.feature_dim,
                   conv_impl=model_config.conv_impl, dtype=as_dtype(model_config.dtype),
                   width=model_config.encoder_width,
                   freeze_batchnorm=model_config.freeze_batchnorm)
