"""tfds dataset ``synthetic_hand_video`` (importing this registers the builder with tfds)."""
from handprop_datasets.synthetic_hand_video.synthetic_hand_video_dataset_builder import (  # noqa: F401
    Builder,
)
