"""Issue 27, items 2, 4, 5, 10, 11 and 12: a user's typo is one line (exit code 2, no traceback) and
is refused before anything is written; Ctrl-C during ``propagate`` is never lost to a callback; a
full disk during ``data build`` is one line and leaves no unfinished folder behind."""

import dataclasses
import errno
import gc
import json
import os
import signal

import numpy as np
import pytest
from PIL import Image

from handprop_jax import config as config_lib
from handprop_jax.cli import main


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"handprop {command}: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def _snapshot(folder):
    """Every path under ``folder`` with its size: equal before and after = nothing written."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size if p.is_file() else -1)
                  for p in folder.rglob("*"))


def _run_folder(path):
    path.mkdir()
    config = config_lib.load("tiny")
    data = dataclasses.replace(config.data, data_dir=str(path.parent / "never_built"))
    config_lib.save_json(dataclasses.replace(config, name="x", data=data), path / "config.json")
    return path


def test_evaluate_unknown_row_and_split_are_one_line(tmp_path, capsys):
    run = _run_folder(tmp_path / "run")
    before = _snapshot(tmp_path)
    assert main(["evaluate", "--workdir", str(run), "--set", 'eval.rows=["NoSuchRow"]']) == 2
    err = _one_line(capsys, "evaluate")
    assert "eval.rows: " in err and "NoSuchRow" in err, err
    assert main(["evaluate", "--workdir", str(run), "--splits", "nosuch", "--no-progress"]) == 2
    _one_line(capsys, "evaluate")
    assert _snapshot(tmp_path) == before


def test_data_export_from_a_never_built_data_dir(tmp_path, capsys):
    assert main(["data", "export", "synthetic_hand_video", "--data-dir", str(tmp_path / "never"), "--config",
                 "tiny", "--out", str(tmp_path / "out")]) == 2
    assert "is not prepared in" in _one_line(capsys, "data")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_data_export_into_an_earlier_export_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "old_video" / "frames").mkdir(parents=True)
    (out / "splits.json").write_text("{}")
    before = _snapshot(tmp_path)
    assert main(["data", "export", "synthetic_hand_video", "--data-dir", str(tmp_path / "data"), "--config",
                 "tiny", "--out", str(out)]) == 2
    assert _one_line(capsys, "data") == (f"handprop data: --out {out}: the folder is not empty (old_video, "
                                         "splits.json); choose an absent or empty folder")
    assert _snapshot(tmp_path) == before


def test_data_build_hand_videos_refuses_before_writing(tmp_path, capsys):
    manual, data = tmp_path / "videos", tmp_path / "data"
    manual.mkdir()
    data.mkdir()
    before = _snapshot(tmp_path)
    assert main(["data", "build", "hand_videos", "--manual-dir", str(manual), "--data-dir", str(data),
                 "--set", "model.mano_model=None"]) == 2
    assert f"--manual-dir {manual}: the folder is empty" in _one_line(capsys, "data")
    (manual / "clip").mkdir()
    assert main(["data", "build", "hand_videos", "--manual-dir", str(manual), "--data-dir", str(data),
                 "--set", f"model.mano_model='{tmp_path / 'no' / 'MANO_RIGHT.pkl'}'"]) == 2
    assert f"MANO model {tmp_path / 'no' / 'MANO_RIGHT.pkl'} not found" in _one_line(capsys, "data")
    assert _snapshot(tmp_path) == before + [("videos/clip", -1)]


def test_train_without_data_refuses_before_writing(tmp_path, capsys):
    """No data set built: ``train`` says which and how to build it, and writes nothing (no run folder,
    lock, config.json or checkpoints)."""
    before = _snapshot(tmp_path)
    data = tmp_path / "nodata"
    assert main(["train", "--config", "tiny", "--workdir", str(tmp_path / "run"), "--no-progress",
                 "--set", f"data.data_dir={data}"]) == 2
    assert f"is not prepared in '{data}'" in _one_line(capsys, "train")
    assert _snapshot(tmp_path) == before


def test_data_build_on_a_full_disk_is_one_line_and_cleans_up(tmp_path, capsys, monkeypatch):
    from handprop_datasets.synthetic_hand_video import synthetic_hand_video_dataset_builder as synth

    def full(self, split):
        raise RuntimeError("the writer failed") from OSError(errno.ENOSPC, "No space left on device")
        yield  # a generator, as tfds expects

    monkeypatch.setattr(synth.Builder, "_generate_examples", full)
    data = tmp_path / "data"
    assert main(["data", "build", "synthetic_hand_video", "--data-dir", str(data), "--config", "tiny"]) == 2
    err = capsys.readouterr().err.rsplit("\r", 1)[-1]  # after tfds' progress bars
    assert err.startswith("handprop data: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "disk full while writing" in err and "No space left on device" in err, err
    assert not [p for p in data.rglob("*") if "incomplete" in p.name], list(data.rglob("*"))


def test_train_with_a_broken_config_file(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("from handprop_jax.config import Config\nCONFIG = Config(\n")
    assert main(["train", "--config", str(broken), "--workdir", str(tmp_path / "run")]) == 2
    assert _one_line(capsys, "train").startswith(f"handprop train: {broken}, line 2: ")
    assert not (tmp_path / "run").exists()


def test_visualize_with_no_rows_is_refused(tmp_path, capsys):
    run = _run_folder(tmp_path / "run")
    before = _snapshot(tmp_path)
    for frames in ("-2", "0"):
        assert main(["visualize", "--workdir", str(run), "--frames", frames]) == 2
        assert _one_line(capsys, "visualize") == (f"handprop visualize: --frames {frames}: the number of "
                                                  "rows of the overlay grid must be at least 1")
    assert _snapshot(tmp_path) == before


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ctrl_c_swallowed_by_a_callback_still_stops_propagate(tmp_path, capsys, monkeypatch):
    """A SIGINT whose KeyboardInterrupt is raised inside a garbage-collection callback (as JAX's are)
    is printed as "Exception ignored" by Python and lost; propagate must still stop with 130 and
    leave the earlier results as they were."""
    from handprop_jax.propagation import cli as pcli

    # Python's own SIGINT handler for this test: a test run started in the background (nohup, &) has
    # SIGINT ignored, and propagate rightly leaves an ignored SIGINT ignored
    monkeypatch.setattr(signal, "getsignal", lambda sig: signal.default_int_handler)

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(frames / f"f_{i}.png")
    entry = {"root": [0.0, 0.0, 0.5], "pose": [0.0] * 48, "betas": [0.0] * 10}
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"labels": {"0": entry, "3": entry}}))
    out = tmp_path / "out"
    argv = ["propagate", "--frames", str(frames), "--labels", str(labels), "--out", str(out), "--intrinsics",
            "30,30,12,10", "--crop", "12", "10", "20", "--set", "data.image_size=16", "--method", "copy"]
    assert main(argv) == 0
    first = (out / "annotations.json").read_text()
    real = pcli.propagate_video

    def interrupted(*args, **kwargs):
        def callback(phase, info):
            if phase == "start":
                os.kill(os.getpid(), signal.SIGINT)
                sum(range(1000))  # Python code: the handler runs here, inside the callback

        gc.callbacks.append(callback)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(callback)
        return real(*args, **kwargs)

    monkeypatch.setattr(pcli, "propagate_video", interrupted)
    assert main([*argv, "--overwrite", "--method", "interpolate"]) == 130
    assert "handprop propagate: interrupted" in capsys.readouterr().err
    assert (out / "annotations.json").read_text() == first
