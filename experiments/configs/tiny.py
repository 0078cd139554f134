"""Smallest config that runs every code path: used by the tests (seconds per stage on CPU)."""
from handprop_jax.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="tiny",
        data=DataConfig(name="synthetic_hand_video", data_dir="data", image_size=32, label_stride=4,
                        max_gap=4, synth_videos=(2, 1, 1), synth_frames=9, augment=True),
        model=ModelConfig(encoder_width=8),  # a narrow ResNet-18 (same layers, 8..64 channels)
        train=TrainConfig(batch_size=4, lr=1e-3, stage1_steps=3, stage2_steps=2, stage3_steps=3,
                          log_every=1, eval_every=2, checkpoint_every=2, keep_checkpoints=2),
        eval=EvalConfig(batch_size=4),
    )
