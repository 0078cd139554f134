"""Mini-InterHand (paper, Appendix A): right-hand sequences of >= 1000 frames from InterHand2.6M
val/test; K = 128; paper's hyper-parameters. Needs the official MANO model and the download."""
from handprop_jax.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="mini_interhand",
        data=DataConfig(name="interhand26m", data_dir="data", image_size=224, label_stride=128,
                        max_gap=64, z_off=0.4),
        # the paper starts from ImageNet: give torchvision's ResNet-18 weights (resnet18-f37072fd.pth, the
        # encoder) with --set model.init_checkpoint=PATH; None trains from a random initialisation
        model=ModelConfig(mano_model="mano/MANO_RIGHT.pkl", freeze_batchnorm=True, init_checkpoint=None),
        train=TrainConfig(batch_size=64, lr=5e-5, stage1_steps=40_000, stage2_steps=10_000,
                          stage3_steps=40_000),
        eval=EvalConfig(batch_size=64),
    )
