"""Meshes rendered over the crops with the project renderer (``handprop_jax.render``): the
``--overlays`` of ``handprop propagate`` and the cells of the visual report."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from handprop_jax.batching import batched
from handprop_jax.render import render_batch, splat_window


def render_overlays(crops: np.ndarray, verts: np.ndarray, K: np.ndarray, faces, alpha: float = 0.6,
                    batch_size: int = 16, color=(0.95, 0.75, 0.6)) -> np.ndarray:
    """The meshes rendered over the images with the project renderer (Lambert + ambient, blended).

    crops uint8 (T, S, S, 3), verts (T, 778, 3) metres, K (T, 3, 3) of the crops, color RGB in [0, 1]
    → uint8 (T, S, S, 3)."""
    T, S = crops.shape[0], crops.shape[1]
    color = np.broadcast_to(np.asarray(color, np.float32), verts.shape[1:])
    # the splat rasteriser when exact for every face, else (close-ups) the dense one
    window = splat_window(verts, faces, K) if T else None

    def one(v, k, img):
        bg = img.astype(np.float32) / 255.0
        B = v.shape[0]
        r = render_batch(jnp.asarray(v, jnp.float32), jnp.asarray(faces), jnp.asarray(k, jnp.float32),
                         jnp.broadcast_to(color, (B,) + color.shape),
                         jnp.tile(jnp.array([[0.0, -0.3, -1.0]]), (B, 1)),
                         (S, S), jnp.asarray(bg), jnp.full((B,), 0.35), splat_window=window)
        m = np.asarray(r["mask"])[..., None]
        blended = np.where(m, alpha * np.asarray(r["image"]) + (1 - alpha) * bg, bg)
        return (np.clip(blended, 0, 1) * 255 + 0.5).astype(np.uint8)

    return batched(one, verts, K, crops, batch_size=batch_size) if T else crops


def write_overlays(folder: Path, crops, verts, K, faces, names) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    images = render_overlays(crops, verts, K, faces)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:06d}.png")
