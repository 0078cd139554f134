"""Demo default: the rendered synthetic hand-video set at 64 px (what `make demo` runs).

Step counts, batch size (32, the paper uses 64) and label stride (K = 16, the paper uses 128;
max_gap = K/2, the paper's ratio) are sized for the 20-minute budget of the demo on a 2-core CPU;
the predictor starts from ``pretrained/synthetic_source.npz`` (``handprop pretrain``, docs/predictor.md);
the test split alone is evaluated (the train split: ``--set eval.splits=train,test``). On a CPU with
native bfloat16 the convolutions use bfloat16 operands (``handprop_jax.model.conv.fast_cpu_impl``).
See README.
"""
import dataclasses

from handprop_jax.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig
from handprop_jax.model.conv import fast_cpu_impl


def get_config() -> Config:
    return Config(
        name="synthetic",
        data=DataConfig(name="synthetic_hand_video", data_dir="data", image_size=64, label_stride=16,
                        max_gap=8, synth_videos=(40, 6, 10), synth_frames=128),
        # The paper leaves the aligner's Tanh output scale open; 1 rad per axis-angle component is
        # ample for frames < max_gap apart and keeps early, saturated outputs from wrecking a pose.
        # The predictor starts from the one pretrained on the synthetic source set (handprop pretrain,
        # the stand-in for ImageNet; docs/predictor.md), fine-tuned at a lower learning rate.
        model=ModelConfig(pose_aligner_scale=1.0, conv_impl=fast_cpu_impl(), root_z_off=0.0,
                          init_checkpoint="pretrained/synthetic_source.npz"),
        train=dataclasses.replace(TrainConfig(), batch_size=32, lr=1e-4, stage1_steps=600,
                                  stage2_steps=100, stage3_steps=200, log_every=50,
                                  eval_every=100, checkpoint_every=100),
        eval=EvalConfig(splits=("test",)),
    )
