"""torchvision ResNet-18 state dict -> Flax Encoder variables."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from handprop_jax.model.encoder import Encoder
from handprop_jax.model.torchvision_import import (
    flax_path,
    import_state_dict,
    load_torchvision_resnet18,
    read_pth,
)

WIDTH = 8


def torchvision_shapes(width: int) -> dict[str, tuple[int, ...]]:
    """The state dict layout of torchvision.models.resnet18 scaled to ``width`` base channels,
    written out from torchvision's definition (not derived from the Flax module)."""
    shapes = {"conv1.weight": (width, 3, 7, 7)}
    for f in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"bn1.{f}"] = (width,)
    shapes["bn1.num_batches_tracked"] = ()
    cin = width
    for s in range(1, 5):
        cout = width * 2 ** (s - 1)
        for b in range(2):
            p = f"layer{s}.{b}."
            shapes[p + "conv1.weight"] = (cout, cin if b == 0 else cout, 3, 3)
            shapes[p + "conv2.weight"] = (cout, cout, 3, 3)
            bns = ["bn1", "bn2"]
            if b == 0 and s > 1:
                shapes[p + "downsample.0.weight"] = (cout, cin, 1, 1)
                bns.append("downsample.1")
            for bn in bns:
                for f in ("weight", "bias", "running_mean", "running_var"):
                    shapes[f"{p}{bn}.{f}"] = (cout,)
                shapes[f"{p}{bn}.num_batches_tracked"] = ()
        cin = cout
    shapes["fc.weight"] = (1000, 8 * width)
    shapes["fc.bias"] = (1000,)
    return shapes


@pytest.fixture(scope="module")
def encoder_and_vars():
    enc = Encoder(width=WIDTH, feature_dim=8 * WIDTH, conv_impl="im2col")  # z_theta = pooled layer4
    shapes = jax.eval_shape(lambda: enc.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False))
    variables = jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype), shapes)
    return enc, variables


def random_state_dict(width, seed=0):
    rng = np.random.RandomState(seed)
    sd = {}
    for k, shape in torchvision_shapes(width).items():
        if k.endswith("num_batches_tracked"):
            sd[k] = np.array(7, np.int64)
        elif k.endswith("running_var"):
            sd[k] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif len(shape) == 4:
            sd[k] = (rng.randn(*shape) * np.sqrt(2.0 / (shape[1] * shape[2] * shape[3]))).astype(np.float32)
        else:
            sd[k] = (rng.randn(*shape) * 0.1 + (1.0 if k.endswith("weight") else 0.0)).astype(np.float32)
    return sd


def test_key_mapping_examples():
    assert flax_path("conv1.weight") == ("params", "conv1", "kernel")
    assert flax_path("module.bn1.running_var") == ("batch_stats", "bn1", "var")
    assert flax_path("layer2.0.downsample.0.weight") == ("params", "layer2_0", "downsample_conv", "kernel")
    assert flax_path("layer4.1.bn2.weight") == ("params", "layer4_1", "bn2", "scale")
    assert flax_path("layer3.0.downsample.1.running_mean") == ("batch_stats", "layer3_0", "downsample_bn",
                                                               "mean")
    assert flax_path("fc.weight") is None and flax_path("layer1.0.bn1.num_batches_tracked") is None
    with pytest.raises(ValueError, match="layer9.0.conv3.weight"):
        flax_path("layer9.0.conv3.weight")


def test_numpy_state_dict_mapping(encoder_and_vars):
    _, variables = encoder_and_vars
    sd = random_state_dict(WIDTH)
    out = import_state_dict(sd, variables)
    # OIHW -> HWIO, element by element at a hand-picked index
    w = sd["layer3.0.conv1.weight"]
    assert out["params"]["layer3_0"]["conv1"]["kernel"][2, 0, 5, 7] == w[7, 5, 2, 0]
    np.testing.assert_array_equal(out["params"]["layer2_0"]["downsample_conv"]["kernel"][0, 0],
                                  sd["layer2.0.downsample.0.weight"][:, :, 0, 0].T)
    np.testing.assert_array_equal(out["batch_stats"]["layer4_1"]["bn2"]["var"],
                                  sd["layer4.1.bn2.running_var"])
    np.testing.assert_array_equal(out["params"]["bn1"]["scale"], sd["bn1.weight"])
    # the projection heads are kept
    np.testing.assert_array_equal(out["params"]["z_r_proj"]["kernel"],
                                  variables["params"]["z_r_proj"]["kernel"])
    # every leaf of the encoder (except the heads) came from the state dict
    n_sd = sum(v.size for k, v in sd.items() if not k.startswith("fc.") and "num_batches" not in k)
    n_vars = sum(v.size for p, v in jax.tree_util.tree_leaves_with_path(out)
                 if "proj" not in jax.tree_util.keystr(p))
    assert n_sd == n_vars


def test_errors_name_the_key(encoder_and_vars):
    _, variables = encoder_and_vars
    sd = random_state_dict(WIDTH)
    bad = dict(sd)
    bad["layer2.1.conv2.weight"] = np.zeros((3, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"layer2\.1\.conv2\.weight.*\(3, 3, 3, 3\)"):
        import_state_dict(bad, variables)
    missing = dict(sd)
    del missing["layer1.1.bn1.running_mean"]
    with pytest.raises(KeyError, match="batch_stats/layer1_1/bn1/mean"):
        import_state_dict(missing, variables)
    with pytest.raises(ValueError, match="has shape"):
        import_state_dict(random_state_dict(2 * WIDTH), variables)


# ----------------------------------------------------------------------------- with torch
def _torch_resnet18(width):
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.downsample is None else self.downsample(x)))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = width
            for s in range(1, 5):
                cout = width * 2 ** (s - 1)
                setattr(self, f"layer{s}", nn.Sequential(BasicBlock(cin, cout, 1 if s == 1 else 2),
                                                          BasicBlock(cout, cout, 1)))
                cin = cout
            self.fc = nn.Linear(cin, 1000)

        def forward(self, x):
            x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
            for s in range(1, 5):
                x = getattr(self, f"layer{s}")(x)
            return x.mean((2, 3))

    return torch, ResNet()


def test_equal_outputs_with_torch(encoder_and_vars, tmp_path):
    torch, net = _torch_resnet18(WIDTH)
    enc, variables = encoder_and_vars
    torch.manual_seed(0)
    sd = {k: torch.from_numpy(v) for k, v in random_state_dict(WIDTH, seed=3).items()}
    net.load_state_dict(sd)
    x = np.random.RandomState(0).randn(4, 32, 32, 3).astype(np.float32)
    path = tmp_path / "resnet.pth"
    torch.save(net.state_dict(), path)
    imported = import_state_dict(read_pth(path), variables, source=str(path))
    apply = jax.jit(enc.apply, static_argnames=("train", "mutable"))
    # eval: running statistics
    net.eval()
    with torch.no_grad():
        want = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    _, z_theta = apply(imported, jnp.asarray(x), train=False)
    np.testing.assert_allclose(z_theta, want, rtol=1e-4, atol=1e-4)
    # train: batch statistics and the running-statistics update (torch: unbiased variance)
    net.train()
    with torch.no_grad():
        want = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    (_, z_theta), upd = apply(imported, jnp.asarray(x), train=True, mutable=("batch_stats",))
    np.testing.assert_allclose(z_theta, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(upd["batch_stats"]["layer2_0"]["downsample_bn"]["var"],
                               net.layer2[0].downsample[1].running_var.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["layer4_1"]["bn2"]["mean"],
                               net.layer4[1].bn2.running_mean.numpy(), rtol=1e-4, atol=1e-5)


def test_read_pth_without_torch(tmp_path, monkeypatch):
    """The built-in zip/pickle reader gives the same arrays as torch.load (file written by torch)."""
    torch = pytest.importorskip("torch")
    sd = {k: torch.from_numpy(v) for k, v in random_state_dict(WIDTH).items()}
    sd["layer1.0.conv1.weight"] = sd["layer1.0.conv1.weight"].transpose(2, 3).contiguous().transpose(2, 3)
    path = tmp_path / "sd.pth"
    torch.save(sd, path)
    with_torch = read_pth(path)
    import builtins
    real_import = builtins.__import__

    def no_torch(name, *a, **kw):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch hidden for this test")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    without = read_pth(path)
    assert set(without) == set(with_torch)
    for k in with_torch:
        np.testing.assert_array_equal(without[k], with_torch[k], err_msg=k)


def test_load_into_parent_scope(encoder_and_vars, tmp_path):
    """A parent module's variables: only the ``encoder`` subtree changes."""
    torch = pytest.importorskip("torch")
    _, variables = encoder_and_vars
    sd = random_state_dict(WIDTH, seed=5)
    path = tmp_path / "r18.pth"
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
    parent = {"params": {"encoder": variables["params"], "head": {"w": np.ones(3)}},
              "batch_stats": {"encoder": variables["batch_stats"]}}
    out = load_torchvision_resnet18(path, parent, scope="encoder")
    np.testing.assert_array_equal(out["params"]["head"]["w"], np.ones(3))
    np.testing.assert_array_equal(out["batch_stats"]["encoder"]["bn1"]["mean"], sd["bn1.running_mean"])
    with pytest.raises(KeyError, match="'backbone'"):
        load_torchvision_resnet18(path, parent, scope="backbone")


def test_init_variables_loads_checkpoint(tmp_path):
    """``model.init_checkpoint``: HandPropModel.init puts the torch.save'd weights in the encoder."""
    import dataclasses

    torch = pytest.importorskip("torch")
    from test_training_fakes import tiny_config

    from handprop_jax.model import handprop as hp
    from handprop_jax.model.api import HandPropModel

    sd = random_state_dict(WIDTH, seed=7)
    path = tmp_path / "r18.pth"
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
    config = tiny_config()
    config = dataclasses.replace(config, model=dataclasses.replace(
        config.model, encoder_width=WIDTH, init_checkpoint=str(path)))
    variables = HandPropModel.create(config).init(jax.random.PRNGKey(0))
    enc_p, enc_s = variables["params"]["encoder"], variables["batch_stats"]["encoder"]
    np.testing.assert_array_equal(enc_p["layer3_0"]["conv1"]["kernel"],
                                  sd["layer3.0.conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(enc_s["layer4_1"]["bn2"]["var"], sd["layer4.1.bn2.running_var"])
    np.testing.assert_array_equal(enc_p["bn1"]["scale"], sd["bn1.weight"])
    assert set(variables["params"]) == set(hp.PREDICTOR_KEYS + hp.ALIGNER_KEYS)  # heads kept
