"""Pretraining source set (``handprop pretrain``): the stand-in for the paper's ImageNet start.

Densely labelled (every frame, K = 1) synthetic hand videos in the *source* style — other skins
(gloves, paint), other backgrounds (stripes, checkerboards), other lighting and cameras than the
demo's target videos, drawn from random streams no target video uses — on which stage 1 trains the
whole single-frame predictor. ``handprop pretrain`` then stores the predictor's weights, which
``model.init_checkpoint`` of the demo config starts from. Many short videos: the predictor's test
error depends on the number of distinct hands, backgrounds and cameras, not on frames per video
(README, "Pretraining").
"""
import dataclasses

from handprop_jax.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig
from handprop_jax.model.conv import fast_cpu_impl


def get_config() -> Config:
    return Config(
        name="synthetic_source",
        data=DataConfig(name="synthetic_hand_video", data_dir="data/source", image_size=64, label_stride=1,
                        max_gap=8, synth_videos=(640, 16, 0), synth_frames=32, synth_style="source",
                        synth_seed=0),
        model=ModelConfig(pose_aligner_scale=1.0, conv_impl=fast_cpu_impl(), root_z_off=0.0),
        train=dataclasses.replace(TrainConfig(), phases=("stage1",), batch_size=32, lr=5e-4,
                                  stage1_steps=2500, log_every=100, eval_every=500,
                                  checkpoint_every=500, val_batches=8),
        eval=EvalConfig(splits=("val",)),
    )
