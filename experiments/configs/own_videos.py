"""Your own sparsely labelled hand videos (builder ``hand_videos``; walkthrough: docs/own_videos.md).

- K from the labels: ``label_stride = 1`` trains on every label you gave (S_V = your labelled
  frames, at whatever spacing). To measure the propagation, hold labels back:
  ``--set data.label_stride=2N`` for labels every N frames keeps every other label for training
  and scores the others in ``handprop evaluate`` (``handprop data build`` prints the spacing).
- ``max_gap``: stage 3 pairs a labelled frame with unlabelled ones fewer than ``max_gap`` frames
  away; about half your label spacing (16: labels every ~32 frames).
- 224 px crops (the paper's, what a torchvision ResNet-18 expects: ``--set
  model.init_checkpoint=resnet18.pth`` is recommended for real videos); batch 32 and
  shorter schedules than the paper's (own data sets are small: a few thousand labels); tune them.
- The official MANO model is required (``mano/MANO_RIGHT.pkl``, or ``--set model.mano_model=PATH``):
  your labels are MANO parameters. ``--set model.mano_model=None`` uses the embedded synthetic hand —
  only for labels made with it (the exported synthetic example of the walkthrough).
"""
import dataclasses

from handprop_jax.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="own_videos",
        data=DataConfig(name="hand_videos", data_dir="data", image_size=224, label_stride=1, max_gap=16,
                        nearest_labelled=3, unlabelled_fraction=0.5),
        model=ModelConfig(mano_model="mano/MANO_RIGHT.pkl", pose_aligner_scale=1.0),
        train=dataclasses.replace(TrainConfig(), batch_size=32, lr=1e-4, stage1_steps=10_000,
                                  stage2_steps=2_000, stage3_steps=10_000, eval_every=500,
                                  checkpoint_every=500),
        eval=EvalConfig(batch_size=32, splits=("train", "test")),
    )
