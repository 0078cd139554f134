"""Demo default: the rendered synthetic hand-video set at 64 px (what `make demo` runs).

Step counts and label stride are sized for the 20-minute CPU budget of the demo; see README.
"""
import dataclasses

from handprop_jax.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="synthetic",
        data=DataConfig(name="synthetic_hand_video", data_dir="data", image_size=64, label_stride=16,
                        max_gap=16, synth_videos=(40, 6, 10), synth_frames=128),
        model=ModelConfig(),
        train=dataclasses.replace(TrainConfig(), batch_size=64, lr=1e-3, stage1_steps=400,
                                  stage2_steps=100, stage3_steps=300, log_every=20,
                                  eval_every=100, checkpoint_every=100),
        eval=EvalConfig(),
    )
