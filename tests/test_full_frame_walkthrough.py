"""The full-frame walkthrough of README ("Propagating your own labels"), shrunk: ``handprop data
synth-videos`` → ``handprop propagate`` (default, copy, interpolate) → ``handprop score``; the
generated videos against independent truths (labels = ground truth, the frame's intrinsics from the
camera's, the hand drawn where its joints project, over a still background); the scores against
numpy on the arrays."""

import glob
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from handprop_jax.cli import main
from handprop_jax.data import synthetic

ROOT = Path(__file__).resolve().parent.parent
SIZE = ("160x120", 120, 160)
FRAMES, EVERY = 17, 8
#: |u - N(u)| for labels at 0, 8, 16 (ties to the earlier label): 1 2 3 4 3 2 1 on each side
GAPS = np.array([0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    out = tmp_path_factory.mktemp("walk") / "my_videos"
    assert main(["data", "synth-videos", "--out", str(out), "--videos", "1", "--frames", str(FRAMES),
                 "--size", SIZE[0], "--every", str(EVERY), "--seed", "3"]) == 0
    return out


def test_frame_intrinsics_are_the_cameras_scaled():
    """A W-px frame of the 640x480 camera: focal x W/640, principal point (c + 0.5) W/640 - 0.5
    (pixel centres), from video_parameters' camera."""
    spec = synthetic.SynthSpec(videos=(0, 0, 1), frames=3, image_size=160, seed=5)
    out = synthetic.render_full_frames(spec, "test", 0, (120, 160))
    K_full = synthetic.video_parameters(spec, "test", 0)["K_full"].astype(np.float64)
    s = 160 / 640
    expected = np.array([[K_full[0, 0] * s, 0, (K_full[0, 2] + 0.5) * s - 0.5],
                         [0, K_full[1, 1] * s, (K_full[1, 2] + 0.5) * s - 0.5], [0, 0, 1]])
    np.testing.assert_allclose(out["K"], expected, rtol=1e-12, atol=1e-9)
    assert out["image"].shape == (3, 120, 160, 3) and out["image"].dtype == np.uint8
    with pytest.raises(ValueError, match="4:3"):
        synthetic.frame_geometry((100, 160))


def test_synth_videos_bad_options_are_one_line(tmp_path, capsys):
    for args, expected in ((["--size", "160x100"], "4:3"), (["--size", "big"], "WIDTHxHEIGHT"),
                           (["--every", "0"], "--every: expected an integer >= 1"),
                           (["--travel", "2"], "--travel: expected a number in [0, 1]")):
        assert main(["data", "synth-videos", "--out", str(tmp_path / "o"), *args]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main(["data", "synth-videos", "--out", str(tmp_path / "full")]) == 2
    assert "the folder is not empty" in capsys.readouterr().err


def test_generated_videos(videos):
    """The own-videos layout, no boxes; labels every EVERY-th frame and the last, equal to the ground
    truth exactly; the hand inside every frame, drawn where its joints project over a still
    background; joints2d = K joints3d by hand."""
    video = videos / "video_0000"
    assert sorted(p.name for p in video.iterdir()) == ["frames", "labels.json", "truth"]
    frames = sorted((video / "frames").iterdir())
    assert [p.name for p in frames] == [f"{i:06d}.png" for i in range(FRAMES)]
    images = np.stack([np.asarray(Image.open(p), np.float64) for p in frames])
    assert images.shape == (FRAMES, SIZE[1], SIZE[2], 3)
    labels = json.loads((video / "labels.json").read_text())
    truth = np.load(video / "truth" / "annotations.npz")
    doc = json.loads((video / "truth" / "annotations.json").read_text())
    assert sorted(map(int, labels["labels"])) == [0, 8, 16]
    assert list(np.nonzero(truth["labelled"])[0]) == [0, 8, 16]
    assert [e["labelled"] for e in doc["frames_out"]] == list(truth["labelled"])
    for k in ("root", "pose", "betas", "joints3d", "joints2d"):  # the JSON reads back to the npz exactly
        np.testing.assert_array_equal(np.float32([e[k] for e in doc["frames_out"]]), truth[k], err_msg=k)
    for key, label in labels["labels"].items():
        for k in ("root", "pose", "betas"):
            np.testing.assert_array_equal(np.float32(label[k]), truth[k][int(key)], err_msg=f"{k} of {key}")
    K = np.asarray(labels["K"])
    np.testing.assert_allclose(truth["K"], np.broadcast_to(K, (FRAMES, 3, 3)), rtol=1e-6)
    cam = truth["joints3d"].astype(np.float64) @ K.T
    uv = cam[..., :2] / cam[..., 2:]
    np.testing.assert_allclose(truth["joints2d"], uv, atol=1e-3)
    assert (uv >= 0).all() and (uv[..., 0] <= SIZE[2] - 1).all() and (uv[..., 1] <= SIZE[1] - 1).all()
    travel = np.linalg.norm(uv[-1].mean(0) - uv[0].mean(0))
    assert travel > 0.25 * SIZE[2], travel  # the hand crosses the frame (--travel 0.5 by default)
    # pixels far from the hand in the first and the last frame: the same background (camera noise
    # sigma 1.5); pixels at the first frame's joints, far from the last frame's hand: the hand
    yy, xx = np.mgrid[:SIZE[1], :SIZE[2]]
    dist = [np.min(np.hypot(xx[..., None] - j[:, 0], yy[..., None] - j[:, 1]), -1) for j in uv[[0, -1]]]
    diff = np.abs(images[0] - images[-1]).mean(-1)
    still = (dist[0] > 20) & (dist[1] > 20)
    on_hand = (dist[0] < 1.0) & (dist[1] > 20)
    assert still.sum() > 1000 and on_hand.sum() >= 5
    assert diff[still].mean() < 3.0, diff[still].mean()
    assert diff[on_hand].mean() > 15.0, diff[on_hand].mean()


MARKER = "<!-- walkthrough: tests/test_full_frame_walkthrough.py runs this block -->"
#: the sizes of the README's commands, shrunk for the test (later values win)
SHRINK = {"synth-videos": ["--videos", "1", "--frames", str(FRAMES), "--size", SIZE[0], "--every", str(EVERY),
                           "--seed", "3"]}


def readme_commands() -> list[str]:
    """The lines of README's marked bash block (each a ``handprop`` command or a one-line
    ``for v in GLOB; do handprop ...; done``)."""
    text = (ROOT / "README.md").read_text()
    block = text.split(MARKER, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def run_line(line: str) -> None:
    """One line of the block in this process, as bash would run it: ``for v in GLOB; do CMD; done``
    runs CMD with ``$v`` and ``${v##*/}`` (its last path part) for each match of GLOB, sorted; an
    argument holding ``*`` is expanded to its sorted matches."""
    loop = re.fullmatch(r"for v in (\S+); do (.*); done", line)
    if loop:
        for v in sorted(glob.glob(loop.group(1))):
            run_line(loop.group(2).replace("${v##*/}", Path(v).name).replace("$v", v))
        return
    argv = shlex.split(line)
    assert argv[0] == "handprop", line
    argv = [x for a in argv[1:] for x in (sorted(glob.glob(a)) if "*" in a else [a])]
    argv += SHRINK.get(argv[1], []) if argv[0] == "data" else []
    assert main(argv) == 0, argv


@pytest.mark.slow  # the default propagation on 17 frames (~1 min on 2 busy cores)
def test_readme_walkthrough_generate_propagate_score(tmp_path, monkeypatch):
    """README's commands (one 17-frame 160x120 video, labels at 0, 8, 16): the truth scores 0 against
    itself; copy's and interpolate's scores equal numpy on the arrays (overall and per gap bucket,
    gaps counted by hand); labelled frames keep their labels; the default beats copy."""
    lines = readme_commands()
    assert [line.split()[0] for line in lines] == ["handprop"] + ["for"] * 3 + ["handprop"] * 3
    monkeypatch.chdir(tmp_path)
    for line in lines:
        run_line(line)
    ff = tmp_path / "ff"
    truth = ff / "my_videos" / "video_0000" / "truth"
    assert main(["score", "--pred", str(truth), "--truth", str(truth), "--out", "itself"]) == 0
    itself = json.loads((tmp_path / "itself" / "summary.json").read_text())["overall"]
    assert max(itself[c] for c in ("MPJPE", "MPVPE", "MPJPE (P)", "MPJPE (T)", "MPJPE (SD)")) < 1e-6
    assert itself["frames"] == FRAMES - 3

    t = np.load(truth / "annotations.npz")
    unl = ~t["labelled"]
    scores = {m: json.loads((ff / "scores" / m / "summary.json").read_text())
              for m in ("default", "interpolate", "copy")}
    for method in ("copy", "interpolate"):
        pred = np.load(ff / method / "video_0000" / "annotations.npz")
        for k in ("root", "pose", "betas"):  # labelled frames keep their labels
            np.testing.assert_array_equal(pred[k][~unl], t[k][~unl])
        err = 1000 * np.linalg.norm(pred["joints3d"].astype(np.float64) - t["joints3d"], axis=-1).mean(-1)
        np.testing.assert_allclose(scores[method]["overall"]["MPJPE"], err[unl].mean(), rtol=1e-4)
        by_gap = {r["gap"]: r for r in scores[method]["by_gap"]}
        for label, sel in (("1", GAPS == 1), ("2–3", (GAPS >= 2) & (GAPS <= 3)), ("4–7", GAPS >= 4)):
            assert by_gap[label]["frames"] == sel.sum()
            np.testing.assert_allclose(by_gap[label]["MPJPE"], err[sel].mean(), rtol=1e-4)
    copy, default = scores["copy"]["overall"], scores["default"]["overall"]
    assert copy["MPJPE"] > 1.0  # the hand moves: copying is wrong
    assert scores["default"]["method"] == "photometric" and scores["interpolate"]["method"] == "interpolate"
    assert default["MPJPE"] < copy["MPJPE"], (default, copy)
