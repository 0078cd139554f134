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
    config_lib.save_json(dataclasses.replace(config_lib.load("tiny"), name="x"), path / "config.json")
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
