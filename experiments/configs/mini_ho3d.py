"""Mini-HO-3D (paper, Appendix A): HO-3D v2 train sequences split by name; K = 128; paper's
hyper-parameters (section IV). Needs the official MANO model and the HO-3D download."""
from handprop_jax.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="mini_ho3d",
        data=DataConfig(name="ho3d", builder_config="v2", data_dir="data", image_size=224,
                        label_stride=128, max_gap=64, z_off=0.4),
        # the paper starts from ImageNet: give torchvision's ResNet-18 weights (resnet18-f37072fd.pth, the
        # encoder) with --set model.init_checkpoint=PATH; None trains from a random initialisation
        model=ModelConfig(mano_model="mano/MANO_RIGHT.pkl", freeze_batchnorm=True, init_checkpoint=None),
        train=TrainConfig(batch_size=64, lr=5e-5, stage1_steps=40_000, stage2_steps=10_000,
                          stage3_steps=40_000),
        eval=EvalConfig(batch_size=64),
    )
