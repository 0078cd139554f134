"""The commands' refusals of folders and runs: one line on stderr, exit code 2, no traceback, nothing
written (the ``--set`` refusals: test_config.py; propagate's inputs: test_propagate.py)."""

import dataclasses
import os

import pytest

from handprop_jax import config as config_lib
from handprop_jax import errors
from handprop_jax.cli import main


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"handprop {command}: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture()
def read_only(monkeypatch):
    """Folders under the returned set are not writable (``os.access`` says so; the tests run as root
    too, for whom a chmod changes nothing)."""
    denied = set()
    real = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and any(str(path) == str(d) for d in denied):
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(errors.os, "access", access)
    return denied


def test_unwritable_folder_is_refused_before_any_work(tmp_path, capsys, read_only):
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only.add(locked)
    assert main(["train", "--config", "tiny", "--workdir", str(locked / "run")]) == 2
    assert f"--workdir {locked / 'run'}: {locked} is not writable" in _one_line(capsys, "train")
    assert main(["data", "build", "synthetic_hand_video", "--data-dir", str(locked), "--config", "tiny"]) == 2
    assert f"--data-dir {locked}: {locked} is not writable" in _one_line(capsys, "data")
    assert list(locked.iterdir()) == []


def _run_folder(path):
    path.mkdir()
    # data beside the run, never built: the checkout's own data/ (if any) must not change the outcome
    config = config_lib.load("tiny", [f"data.data_dir={str(path.parent / 'no_data')!r}"])
    config_lib.save_json(dataclasses.replace(config, name="x"), path / "config.json")
    return path


def test_evaluate_and_visualize_a_missing_run(tmp_path, capsys):
    for command in ("evaluate", "visualize"):
        assert main([command, "--workdir", str(tmp_path / "nothing")]) == 2
        assert f"{tmp_path / 'nothing' / 'config.json'} not found" in _one_line(capsys, command)
    assert not (tmp_path / "nothing").exists()


def test_evaluate_a_run_without_checkpoints(tmp_path, capsys):
    run = _run_folder(tmp_path / "run")
    assert main(["evaluate", "--workdir", str(run), "--no-progress"]) == 2
    err = _one_line(capsys, "evaluate")
    assert f"{run} has no checkpoint of " in err and "train it first" in err, err
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


#: exception classes of ours that are not the user's to fix, and why
NOT_USER_ERRORS = {
    "handprop_jax.training.loop.NonFiniteLossError": "a diverged training run (a FloatingPointError)",
    "handprop_jax.training.loop._DamagedFinal": "internal: the loop redoes a phase's damaged last step",
    "handprop_jax.data.builder_support.BadInput": "internal: a bad frame, counted and skipped by the build",
    "handprop_jax.native.NativeBuildError": "the machine's C++ compiler (the CPU convolution falls back)",
    "handprop_jax.errors.InterruptedRun": "Ctrl-C (a KeyboardInterrupt), exit code 130",
}


def test_one_root_for_user_errors():
    """Every exception class of handprop_jax and the data set builders is an ``errors.UserError`` (the
    one thing ``handprop`` reports in one line, exit code 2) unless listed above; those that callers
    catch as ValueError still are one."""
    import importlib
    import inspect
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_import_graph import PACKAGES, module_files

    found = {}
    for name in module_files({k: v for k, v in PACKAGES.items() if k != "mano_jax"}):
        module = importlib.import_module(name)
        for cls_name, cls in vars(module).items():
            if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == name:
                found[f"{name}.{cls_name}"] = cls
    assert {"handprop_jax.config.ConfigError", "handprop_jax.data.boxes.BoxError",
            "handprop_jax.data.builder_support.EmptySplitError"} <= set(found)
    assert set(NOT_USER_ERRORS) <= set(found)  # the exceptions above still exist
    not_user = sorted(n for n, c in found.items()
                      if not issubclass(c, errors.UserError) and n not in NOT_USER_ERRORS)
    assert not not_user, f"exception classes that are not errors.UserError: {not_user}"
    for name in ("handprop_jax.config.ConfigError", "handprop_jax.data.boxes.BoxError",
                 "handprop_jax.data.builder_support.EmptySplitError", "handprop_jax.data.export.ExportError",
                 "handprop_jax.propagation.inputs.PropagationInputError"):
        assert issubclass(found[name], ValueError), name


def test_bad_mano_file_is_a_user_error(tmp_path):
    """mano_jax's ManoFileError (mano_jax imports nothing of ours) reaches the commands as a UserError
    that still is a ManoFileError, naming the file."""
    import mano_jax
    from handprop_jax.hand import load_mano

    bad = tmp_path / "MANO_RIGHT.pkl"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(errors.UserError, match="MANO_RIGHT.pkl") as e:
        load_mano(str(bad))
    assert isinstance(e.value, mano_jax.ManoFileError)
    with pytest.raises(errors.UserError, match="model.noise.*no field"):  # a bad --set: ConfigError
        config_lib.override(config_lib.Config(), ["model.noise=1"])
