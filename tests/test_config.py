"""Type-checked configuration: ``--set`` values against each field's declared type, allowed values and
range, refused by every command in one line (exit code 2) before anything is written."""

import dataclasses

import pytest

from handprop_jax import config as config_lib
from handprop_jax.cli import main

BAD = [
    ("train.lr=1e-4x", "--set train.lr: expected a number > 0, got '1e-4x'"),
    ("data.image_size=64.5", "--set data.image_size: expected an integer >= 16, got '64.5'"),
    ("model.conv_impl=fast",
     "--set model.conv_impl: expected one of xla, im2col, taps, hybrid, bf16_cols, auto, got 'fast'"),
    ("train.stage1_steps=-5", "--set train.stage1_steps: expected an integer >= 0, got '-5'"),
    ("model.dtype=float16", "expected one of float32, bfloat16, got 'float16'"),
    ("train.batch_size=0", "expected an integer >= 1, got '0'"),
    ("data.label_stride=0", "expected an integer >= 1"),
    ("data.synth_videos=[4,1]", "expected a tuple of 3 integers >= 0"),
    ("eval.splits=test", "expected a tuple of strings"),
    ("train.distributed=yes", "expected True/False, got 'yes'"),
    ("eval.max_frames=0", "expected an integer >= 1 or None"),
    ("data.augment=1", "expected True/False"),
    ("data.unlabelled_fraction=2", "expected a number >= 0 and <= 1"),
    ("data.nosuchfield=3", "DataConfig has no field 'nosuchfield'"),
]


@pytest.mark.parametrize("assignment, message", BAD)
def test_bad_values_are_refused_with_the_field_and_the_text(assignment, message):
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.override(config_lib.Config(), [assignment])
    assert message in str(e.value)


def test_good_values_are_converted_to_the_field_type():
    c = config_lib.override(config_lib.Config(), [
        "train.lr=1", "data.synth_videos=[4, 1, 1]", "eval.splits=('test',)", "model.mano_model=None",
        "model.init_checkpoint=/models/r18.pth", "train.coordinator_address=10.0.0.1:1234",
        "data.builder_config=v2", "train.distributed=true", "eval.max_frames=None", "data.name=123",
        "model.conv_impl=bf16_cols", "data.image_size=16"])
    assert c.train.lr == 1.0 and isinstance(c.train.lr, float)
    assert c.data.synth_videos == (4, 1, 1) and c.eval.splits == ("test",)
    assert c.model.mano_model is None and c.model.init_checkpoint == "/models/r18.pth"
    assert c.train.coordinator_address == "10.0.0.1:1234" and c.data.builder_config == "v2"
    assert c.train.distributed is True and c.eval.max_frames is None and c.data.name == "123"
    assert c.model.conv_impl == "bf16_cols" and c.data.image_size == 16


def test_every_shipped_config_passes_and_a_bad_file_is_named(tmp_path):
    for name in ("synthetic", "tiny", "mini_ho3d", "mini_interhand"):
        config = config_lib.load(name)
        assert config_lib.validate(config) == config
    bad = tmp_path / "bad.py"
    bad.write_text("from handprop_jax.config import Config, DataConfig\n"
                   "def get_config():\n    return Config(data=DataConfig(image_size=8))\n")
    with pytest.raises(config_lib.ConfigError, match=r"bad.py: data.image_size: expected an integer >= 16"):
        config_lib.load(str(bad))


@pytest.mark.parametrize("assignment", [a for a, _ in BAD[:4]])
def test_every_command_refuses_before_writing(tmp_path, capsys, assignment):
    run = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--workdir", str(run), "--set", assignment]) == 2
    assert not run.exists()
    err = capsys.readouterr().err
    assert err.startswith("handprop train: --set ") and err.count("\n") == 1, err
    # evaluate: an existing run folder; nothing new appears in it
    run.mkdir()
    config_lib.save_json(dataclasses.replace(config_lib.load("tiny"), name="x"), run / "config.json")
    assert main(["evaluate", "--workdir", str(run), "--set", assignment]) == 2
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]
    err = capsys.readouterr().err
    assert err.startswith("handprop evaluate: --set ") and err.count("\n") == 1, err
    data = tmp_path / "data"
    assert main(["data", "build", "synthetic_hand_video", "--data-dir", str(data), "--config", "tiny",
                 "--set", assignment]) == 2
    assert not data.exists()
    err = capsys.readouterr().err
    assert err.startswith("handprop data: --set ") and err.count("\n") == 1, err
