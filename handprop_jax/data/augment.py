"""Training augmentation as a pure JAX function, called inside the jitted train step.

``augment(batch, key, data_config)`` draws, per sample, an in-plane rotation angle
a ~ U[-rotation_range, rotation_range] and colour-jitter factors, and applies them to a frame dict or
to both frames of a pair dict (``{"s": frame, "u": frame, ...}``; the SAME angle and colours for s and
u, so that the pair's relative motion is unchanged).

In-plane rotation = a roll R of the camera by angle a about the viewing ray of the crop's centre pixel
(``data.rotate_about="crop_centre"``, the default: the hand, centred in its crop, turns in place) or
about the optical axis (``"principal_point"``, R = R_z(a)); a pair or a clip shares one R:
- 3D: root -> R root, joints3d -> joints3d R^T, global rotation pose[:3] -> log(R exp(pose[:3]))
  (finger joints and betas are unchanged; the MANO hand of the new γ is exactly the rotated hand,
  because the wrist joint is the rotation centre of the global rotation and the root is the wrist);
- 2D: with the intrinsics K unchanged, pixels move by the homography A = K R K^-1 (a rotation about
  the crop centre, or about the principal point for R_z, when fx = fy): joints2d -> A joints2d, and
  the image is resampled bilinearly
  at A^-1 q, reflecting at the borders (no black corners);
- colour: brightness, contrast (about the image mean) and saturation factors in [1-c, 1+c],
  c = ``data_config.color_jitter``; the image keeps its dtype (uint8 stays uint8).
Keys other than image/root/pose/joints3d/joints2d pass through unchanged (frames without labels
simply have fewer keys). In a pair dict, any other entry that is itself a frame dict (has an
``image``; e.g. the labelled batch that a comparison phase carries beside its pairs) gets its own
draw. With ``padding_masks=True`` every augmented frame also gets ``inside`` (B, S, S) bool: the
pixels whose content comes from inside the original image, not from the reflected border (the
augmentation's padding). Clips (``image`` (B, n, S, S, 3)) get one rotation and one colour
change per clip (``augment_clip``); a batch of named parts ({"frames": ..., "clips": ...}) is
augmented part by part.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import mano_jax


def rotation_z(angle: jnp.ndarray) -> jnp.ndarray:
    """(...,) radians -> (..., 3, 3) rotation about the camera z axis (x towards y)."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    z, o = jnp.zeros_like(angle), jnp.ones_like(angle)
    return jnp.stack([jnp.stack([c, -s, z], -1), jnp.stack([s, c, z], -1), jnp.stack([z, z, o], -1)], -2)


def _bilinear_reflect(image: jnp.ndarray, u: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    """Sample image (H, W, C) float at pixel coordinates u, v (H', W'), reflecting at the borders."""
    H, W = image.shape[:2]

    def reflect(x, n):
        if n == 1:
            return jnp.zeros_like(x)
        period = 2.0 * (n - 1)
        m = jnp.mod(x, period)
        return (n - 1) - jnp.abs(m - (n - 1))

    u, v = reflect(u, W), reflect(v, H)
    u0 = jnp.clip(jnp.floor(u), 0, W - 1)
    v0 = jnp.clip(jnp.floor(v), 0, H - 1)
    u1, v1 = jnp.minimum(u0 + 1, W - 1), jnp.minimum(v0 + 1, H - 1)
    du, dv = (u - u0)[..., None], (v - v0)[..., None]
    u0, u1, v0, v1 = (x.astype(jnp.int32) for x in (u0, u1, v0, v1))
    top = image[v0, u0] * (1 - du) + image[v0, u1] * du
    bottom = image[v1, u0] * (1 - du) + image[v1, u1] * du
    return top * (1 - dv) + bottom * dv


def rotation_about_pixel(K: jnp.ndarray, angle: jnp.ndarray, pixel: jnp.ndarray) -> jnp.ndarray:
    """(3, 3) rotation by ``angle`` radians about the viewing ray of ``pixel`` (2,) (u, v): the camera
    roll that turns the image about that pixel, which stays fixed (K (3, 3) pixels). For the principal
    point this is ``rotation_z(angle)``."""
    ray = jnp.linalg.solve(K, jnp.concatenate([pixel, jnp.ones((1,), K.dtype)]))
    return mano_jax.rodrigues(angle * ray / jnp.linalg.norm(ray))


def rotate_image(image: jnp.ndarray, K: jnp.ndarray, angle: jnp.ndarray,
                 R: jnp.ndarray | None = None) -> jnp.ndarray:
    """Image (H, W, C) float seen by the camera rotated by R (3, 3) (K fixed); default
    ``R = rotation_z(angle)``, a roll about the optical axis. Pixels map by the homography K R K^-1."""
    H, W = image.shape[:2]
    R = rotation_z(angle) if R is None else R
    A_inv = K @ R.T @ jnp.linalg.inv(K)
    vv, uu = jnp.meshgrid(jnp.arange(H, dtype=image.dtype), jnp.arange(W, dtype=image.dtype), indexing="ij")
    src = jnp.einsum("ij,hwj->hwi", A_inv, jnp.stack([uu, vv, jnp.ones_like(uu)], -1))
    return _bilinear_reflect(image, src[..., 0] / src[..., 2], src[..., 1] / src[..., 2])


def rotation_inside(K: jnp.ndarray, angle: jnp.ndarray, image_size: tuple[int, int],
                    R: jnp.ndarray | None = None) -> jnp.ndarray:
    """(H, W) bool: the pixels of :func:`rotate_image`'s output sampled inside the original image (the
    others are reflected border content)."""
    H, W = image_size
    R = rotation_z(angle) if R is None else R
    A_inv = K @ R.T @ jnp.linalg.inv(K)
    vv, uu = jnp.meshgrid(jnp.arange(H, dtype=K.dtype), jnp.arange(W, dtype=K.dtype), indexing="ij")
    src = jnp.einsum("ij,hwj->hwi", A_inv, jnp.stack([uu, vv, jnp.ones_like(uu)], -1))
    u, v = src[..., 0] / src[..., 2], src[..., 1] / src[..., 2]
    eps = 1e-3  # the identity rotation's own pixel centres count as inside
    return (u >= -eps) & (u <= W - 1 + eps) & (v >= -eps) & (v <= H - 1 + eps)


def _color(image: jnp.ndarray, factors: jnp.ndarray) -> jnp.ndarray:
    """image (H, W, 3) float 0..255; factors (3,) = brightness, contrast, saturation."""
    luma = jnp.array([0.299, 0.587, 0.114], image.dtype)
    image = image * factors[0]
    mean = (image @ luma).mean()
    image = mean + (image - mean) * factors[1]
    gray = (image @ luma)[..., None]
    return gray + (image - gray) * factors[2]


def camera_rolls(K: jnp.ndarray, angle: jnp.ndarray, image_size: int, about: str = "crop_centre"
                 ) -> jnp.ndarray:
    """(B, 3, 3) camera rotations of the in-plane augmentation: angles (B,) radians about the ray of
    each crop's centre pixel ((S − 1) / 2, which then stays where it is; K (B, 3, 3)) for ``about`` =
    "crop_centre", or about the optical axis (the principal point) for "principal_point"."""
    angle = angle.astype(jnp.float32)
    if about == "principal_point":
        return rotation_z(angle)
    centre = jnp.full((2,), (image_size - 1) / 2.0, jnp.float32)
    return jax.vmap(rotation_about_pixel, in_axes=(0, 0, None))(K.astype(jnp.float32), angle, centre)


def augment_frame(frame: dict, angle: jnp.ndarray, color: jnp.ndarray | None, padding_masks: bool = False,
                  about: str = "crop_centre", R: jnp.ndarray | None = None) -> dict:
    """Apply per-sample rotation angles (B,) and colour factors (B, 3) (or None) to a frame dict
    (with ``padding_masks``, also ``inside`` (B, S, S) bool: see the module docstring). ``about``: the
    roll's axis (:func:`camera_rolls`); ``R`` (B, 3, 3): the camera rotations to apply instead (a pair
    shares its labelled frame's)."""
    out = dict(frame)
    K = frame["K"].astype(jnp.float32)
    angle = angle.astype(jnp.float32)
    image = frame["image"]
    R = camera_rolls(K, angle, image.shape[2], about) if R is None else R
    if padding_masks:
        out["inside"] = jax.vmap(lambda k, a, r: rotation_inside(k, a, image.shape[1:3], r))(K, angle, R)
    img = image.astype(jnp.float32)
    img = jax.vmap(rotate_image)(img, K, angle, R)
    if color is not None:
        img = jax.vmap(_color)(img, color)
    if jnp.issubdtype(image.dtype, jnp.integer):
        img = jnp.clip(jnp.round(img), 0, 255).astype(image.dtype)
    else:
        img = jnp.clip(img, 0, 255).astype(image.dtype)
    out["image"] = img
    if "root" in frame:
        out["root"] = jnp.einsum("bij,bj->bi", R, frame["root"])
    if "joints3d" in frame:
        out["joints3d"] = jnp.einsum("bij,bnj->bni", R, frame["joints3d"])
    if "pose" in frame:
        glob = mano_jax.matrix_to_axis_angle(R @ mano_jax.rodrigues(frame["pose"][:, :3]))
        out["pose"] = jnp.concatenate([glob.astype(frame["pose"].dtype), frame["pose"][:, 3:]], axis=1)
    if "joints2d" in frame:
        A = K @ R @ jnp.linalg.inv(K)
        j = frame["joints2d"]
        h = jnp.einsum("bij,bnj->bni", A, jnp.concatenate([j, jnp.ones_like(j[..., :1])], -1))
        out["joints2d"] = h[..., :2] / h[..., 2:3]
    return out


def sample_params(key: jax.Array, batch_size: int, rotation_range: float, color_jitter: float):
    """Angles (B,) uniform in [-rotation_range, rotation_range] and colour factors (B, 3) uniform in
    [1 - color_jitter, 1 + color_jitter] (None when color_jitter is 0)."""
    k_rot, k_col = jax.random.split(key)
    angle = jax.random.uniform(k_rot, (batch_size,), minval=-rotation_range, maxval=rotation_range)
    color = None
    if color_jitter > 0:
        color = jax.random.uniform(k_col, (batch_size, 3), minval=1 - color_jitter, maxval=1 + color_jitter)
    return angle, color


def augment_clip(clip: dict, angle: jnp.ndarray, color: jnp.ndarray | None, about: str = "crop_centre"
                 ) -> dict:
    """Apply per-clip rotation angles (B,) and colour factors (B, 3) (or None) to every frame of a
    clip dict (``image`` (B, n, S, S, 3), ``K`` (B, n, 3, 3), optional per-frame labels (B, n, ...)):
    one camera roll and one colour change per clip, so its motion is unchanged. Entries without the
    (B, n) leading axes (e.g. ``angle`` (B,)) pass through."""
    b, n = clip["image"].shape[:2]
    per_frame = {k: v for k, v in clip.items() if getattr(v, "ndim", 0) >= 2 and v.shape[:2] == (b, n)}
    flat = {k: v.reshape((b * n,) + v.shape[2:]) for k, v in per_frame.items()}
    # one camera rotation per clip (about its first frame's crop centre), so the motion is unchanged
    R = jnp.repeat(camera_rolls(clip["K"][:, 0], angle, clip["image"].shape[3], about), n, axis=0)
    out = augment_frame(flat, jnp.repeat(angle, n), None if color is None else jnp.repeat(color, n, axis=0),
                        R=R)
    return {**clip, **{k: out[k].reshape(per_frame[k].shape) for k in per_frame}}


def augment(batch: dict, key: jax.Array, data_config, padding_masks: bool = False) -> dict:
    """Augment a frame batch or a pair batch (see the module doc). Pure; jit-able (config static).

    Args:
      batch: frame dict (``image`` (B, S, S, 3), ``K`` (B, 3, 3), optional labels), a pair dict
        {"s": frame, "u": frame, other frame dicts (own draw), other keys passed through}, or a dict of
        named parts (e.g. {"frames": frame dict, "clips": clip dict}, the comparison methods' batches):
        every part holding an ``image`` is augmented on its own draws (frames (B, S, S, 3) per sample,
        clips (B, n, S, S, 3) per clip, :func:`augment_clip`), the other parts pass through.
      key: a ``jax.random`` key.
      data_config: ``handprop_jax.config.DataConfig`` (rotation_range radians, color_jitter).
      padding_masks: also return each frame's ``inside`` mask (static).
    Returns:
      the batch with the same keys, shapes and dtypes (plus ``inside`` per frame with ``padding_masks``).
    """
    pair = "s" in batch and "u" in batch
    if not pair and "image" not in batch:
        out = dict(batch)
        for i, name in enumerate(sorted(batch)):
            part = batch[name]
            if isinstance(part, dict) and "image" in part:
                out[name] = augment(part, jax.random.fold_in(key, i), data_config)
        return out
    first = batch["s"] if pair else batch
    about = getattr(data_config, "rotate_about", "crop_centre")

    def draw(k):
        return sample_params(k, first["image"].shape[0], float(data_config.rotation_range),
                             float(data_config.color_jitter))

    angle, color = draw(key)
    if not pair:
        if batch["image"].ndim == 5:  # a clip: one draw per clip
            return augment_clip(batch, angle, color, about)
        return augment_frame(batch, angle, color, padding_masks, about)
    out = dict(batch)
    # s and u turn with ONE camera rotation (about s's crop centre): the pair's relative motion is kept
    R = camera_rolls(batch["s"]["K"], angle, batch["s"]["image"].shape[2], about)
    out["s"] = augment_frame(batch["s"], angle, color, padding_masks, R=R)
    out["u"] = augment_frame(batch["u"], angle, color, padding_masks, R=R)
    others = [k for k, v in batch.items() if k not in ("s", "u") and isinstance(v, dict) and "image" in v]
    for i, name in enumerate(others):
        out[name] = augment_frame(batch[name], *draw(jax.random.fold_in(key, i + 1)), padding_masks, about)
    return out
