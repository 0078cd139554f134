"""The per-frame tfds feature spec shared by every dataset builder (see docs/design.md)."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

LABEL_KEYS = ("root", "pose", "betas", "joints3d", "joints2d")
META_KEYS = ("video_id", "video_name", "frame_index", "frame_time", "video_length")
#: optional bool feature: the frame carries a label (data sets where only some frames do: hand_videos;
#: its label features are NaN where it is False). Absent = every frame has a label.
HAS_LABEL = "has_label"


def frame_features(image_size: int | None, has_label: bool = False) -> tfds.features.FeaturesDict:
    """FeaturesDict of one frame: a square uint8 crop of side ``image_size`` plus its labels.

    ``image_size=None`` leaves the side unspecified in the spec (the synthetic builder: one builder
    config holds data sets of any resolution; every image of a data set still has the same size).
    ``has_label``: add the ``HAS_LABEL`` flag (builders of sparsely labelled videos)."""
    f32 = np.float32
    extra = {HAS_LABEL: tfds.features.Scalar(dtype=np.bool_)} if has_label else {}
    return tfds.features.FeaturesDict({**extra,
        "image": tfds.features.Image(shape=(image_size, image_size, 3), dtype=np.uint8,
                                     encoding_format="png"),
        "K": tfds.features.Tensor(shape=(3, 3), dtype=f32),
        "root": tfds.features.Tensor(shape=(3,), dtype=f32),
        "pose": tfds.features.Tensor(shape=(48,), dtype=f32),
        "betas": tfds.features.Tensor(shape=(10,), dtype=f32),
        "joints3d": tfds.features.Tensor(shape=(21, 3), dtype=f32),
        "joints2d": tfds.features.Tensor(shape=(21, 2), dtype=f32),
        "video_id": tfds.features.Scalar(dtype=np.int32),
        "video_name": tfds.features.Text(),
        "frame_index": tfds.features.Scalar(dtype=np.int32),  # position in the stored video
        "frame_time": tfds.features.Scalar(dtype=np.int32),  # frame number in the source video
        "video_length": tfds.features.Scalar(dtype=np.int32),
    })


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W, 3) image, encoded with PIL (tfds would need TensorFlow for a
    numpy array; it passes encoded bytes through unchanged)."""
    import io

    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
