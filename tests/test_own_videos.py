"""Own videos end to end: the walkthrough of docs/own_videos.md run as written (sizes and step counts
shrunk by appended --set values, the stand-in encoder of the training tests) on synthetic videos
exported into the user layout; the hand_videos records and the propagated annotations equal those of
the synthetic_hand_video path; the README's commands are the walkthrough's."""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from test_training_fakes import TinyEncoder

from handprop_jax import config as config_lib
from handprop_jax.cli import main
from handprop_jax.gamma import Gamma
from handprop_jax.model import encoder as encoder_lib

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # builds, trains (stand-in encoder), evaluates, propagates: ~1-2 min

MARKER = "<!-- walkthrough: tests/test_own_videos.py runs this block -->"
SYNTH = ["--set", "data.synth_videos=(2,1,1)", "--set", "data.synth_frames=17", "--set", "data.image_size=32"]
TRAIN = ["--set", "data.image_size=32", "--set", "model.encoder_width=4", "--set", "model.feature_dim=16",
         "--set", "model.z_r_stage=2", "--set", "data.augment=False", "--set", "train.batch_size=4",
         "--set", "train.stage1_steps=1", "--set", "train.stage2_steps=1", "--set", "train.stage3_steps=1",
         "--set", "train.eval_every=50", "--set", "train.checkpoint_every=50", "--set", "train.val_batches=1",
         "--set", "train.log_every=1", "--set", "eval.batch_size=4", "--set", "data.max_gap=8",
         "--set", "propagation.steps=2", "--set", "propagation.pixels=16",
         "--set", "propagation.batch_size=4"]


def walkthrough_commands(text: str) -> list[list[str]]:
    """The ``handprop`` commands of the marked bash block: comments dropped, continuation lines
    joined, ``NAME="..."`` assignments expanded where ``$NAME`` appears."""
    block = text.split(MARKER, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines, variables = [], {}
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Z_]+)=(.*)", line)
        if m:
            variables[m.group(1)] = shlex.split(m.group(2))[0]
            continue
        line = re.sub(r"\$([A-Z_]+)", lambda v: variables[v.group(1)], line)
        lines.append(shlex.split(line))
    return lines


def shrink(argv: list[str]) -> list[str]:
    """The --set values that make a walkthrough command test-sized (appended: later values win)."""
    if argv[:2] == ["data", "build"] and argv[2] == "synthetic_hand_video" or argv[:2] == ["data", "export"]:
        return SYNTH
    if argv[:3] == ["data", "build", "hand_videos"]:
        return ["--set", "data.image_size=32"]
    if argv[0] == "train":
        return TRAIN
    return []


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    """Run every walkthrough command in a fresh folder; yield (folder, commands)."""
    work = tmp_path_factory.mktemp("own")
    commands = walkthrough_commands((ROOT / "docs" / "own_videos.md").read_text())
    assert [c[0] for c in commands] == ["handprop"] * 7
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setattr(encoder_lib, "from_config", lambda m: TinyEncoder(m.feature_dim))
        for command in commands:
            argv = command[1:] + shrink(command[1:])
            assert main(argv) == 0, argv
        yield work, commands


def _configs(work):
    run = config_lib.load_json(work / "example" / "run" / "config.json")
    data_dir = str(work / "example" / "data")
    run = config_lib.override(run, [f"data.data_dir={data_dir!r}"])
    synth = config_lib.load("synthetic", [*SYNTH[1::2], f"data.data_dir={data_dir!r}",
                                          "data.label_stride=16"])
    return run, synth


def test_exported_videos_build_into_the_synthetic_records(walkthrough):
    work, _ = walkthrough
    import handprop_datasets.hand_videos.hand_videos_dataset_builder  # noqa: F401  (registers it)

    data = str(work / "example" / "data")
    for split, videos in json.loads((work / "example" / "my_videos" / "splits.json").read_text()).items():
        mine = tfds.data_source("hand_videos", data_dir=data, split=split)
        theirs = tfds.data_source("synthetic_hand_video", data_dir=data, split=split)
        assert len(mine) == len(theirs) == 17 * len(videos)
        for i in range(len(mine)):
            a, b = mine[i], theirs[i]
            assert (int(a["video_id"]), int(a["frame_index"])) == (int(b["video_id"]), int(b["frame_index"]))
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["K"], b["K"])
            assert bool(a["has_label"]) == (int(a["frame_index"]) % 8 == 0)  # --label-every 8
            if a["has_label"]:
                for k in ("root", "pose", "betas", "joints3d"):
                    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
                np.testing.assert_allclose(a["joints2d"], b["joints2d"], atol=1e-4)
            else:
                assert np.all(np.isnan(a["root"])) and np.all(np.isnan(a["joints3d"]))


def test_evaluation_scores_the_held_back_labels(walkthrough):
    work, _ = walkthrough
    rows = json.loads((work / "example" / "run" / "eval" / "table1.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    # 17 frames, a label every 8 (0, 8, 16), K = 16 keeps 0 and 16: frame 8 of each video is held back
    frames = {(r["split"], r["model"]): r["frames"] for r in rows}
    assert frames[("train", "Propagation")] == 2 and frames[("test", "Propagation")] == 1
    assert frames[("test", "Copy")] == 1
    assert (work / "example" / "run" / "report" / "overlays.png").is_file()


def test_propagated_annotations_equal_the_synthetic_path(walkthrough):
    """The tool on the exported test video (all its labels; the default photometric method with the
    run's settings) = ``propagate_video`` on the synthetic builder's test video with the same run and
    the same labelled frames."""
    from handprop_jax.data.sources import open_split
    from handprop_jax.propagation.core import Propagator, propagate_video
    from handprop_jax.training.checkpoint import bound_from_run

    work, _ = walkthrough
    out = dict(np.load(work / "example" / "annotations" / "test_0000" / "annotations.npz"))
    assert len(list((work / "example" / "annotations" / "test_0000" / "overlays").glob("*.png"))) == 17
    run, synth = _configs(work)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(encoder_lib, "from_config", lambda m: TinyEncoder(m.feature_dim))
        cfg, _ = bound_from_run(work / "example" / "run")
        net = Propagator.from_config(cfg, "photometric")
        video = open_split(synth.data, "test").video(0)
        lab = np.array([0, 8, 16])
        ref = propagate_video(net, video["image"], video["K"], lab, Gamma.of(video).take(lab),
                              both_sides=True)
        # and the same through the hand_videos records (the data the run trained on)
        own = open_split(run.data, "test").video(0)
        ref_own = propagate_video(net, own["image"], own["K"], lab, Gamma.of(own).take(lab), both_sides=True)
    np.testing.assert_array_equal(out["labelled"], np.isin(np.arange(17), lab))
    for k, v in ref.gamma.as_dict().items():
        np.testing.assert_allclose(out[k], v, rtol=1e-6, atol=1e-6, err_msg=k)
        np.testing.assert_array_equal(getattr(ref_own.gamma, k), v, err_msg=k)
    np.testing.assert_array_equal(out["box"], np.tile([15.5, 15.5, 32.0], (17, 1)))  # boxes.json: whole crops


def _head(argv: list[str]) -> str:
    return " ".join(a for a in argv[:next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))])


def test_readme_commands_are_the_walkthroughs():
    """The README section (<= 1.5 KB) uses the walkthrough's commands, with arguments they accept."""
    from handprop_jax.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Annotate your own videos", 1)[1].split("\n## ", 1)[0]
    assert len(section.encode()) <= 1600
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    doc = {_head(c) for c in walkthrough_commands((ROOT / "docs" / "own_videos.md").read_text())}
    assert {_head(c) for c in commands} <= doc and len(commands) == 5
    parser = build_parser()
    for command in commands:
        parser.parse_args(command[1:])  # exits (SystemExit) on an unknown or missing argument
