"""handprop score: the metrics against a numpy computation on hand-made annotation folders, the gap
buckets against hand-counted gaps, labelled frames left out by default, and one-line errors naming
the file, frame and key for every kind of bad input."""

import csv
import json

import numpy as np
import pytest

from handprop_jax import config as config_lib
from handprop_jax.cli import main
from handprop_jax.gamma import Gamma
from handprop_jax.hand import default_mano, hand_mesh

T = 12
LABELLED = [0, 5, 11]
#: |u - N(u)| counted by hand for labels at 0, 5, 11 (frame 8: 3 from 5 and from 11, either way 3)
GAPS = [0, 1, 2, 2, 1, 0, 1, 2, 3, 2, 1, 0]


def _gamma(rng, n):
    return Gamma((rng.normal(size=(n, 3)) * 0.03 + [0, 0, 0.6]).astype(np.float32),
                 (rng.normal(size=(n, 48)) * 0.3).astype(np.float32),
                 (rng.normal(size=(n, 10)) * 0.5).astype(np.float32))


def _write(folder, gamma, labelled=LABELLED, joints=None, files=True, **meta):
    """An annotations.json in handprop propagate's format (the keys score reads; optional joints3d)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(len(gamma.root)):
        e = {"index": i, "labelled": i in labelled, **{k: v[i].astype(float).tolist()
                                                       for k, v in gamma.as_dict().items()}}
        if files:
            e["file"] = f"{i:06d}.png"
        if joints is not None:
            e["joints3d"] = joints[i].astype(float).tolist()
        entries.append(e)
    (folder / "annotations.json").write_text(json.dumps({"method": "copy", **meta, "frames_out": entries}))
    return folder


@pytest.fixture(scope="module")
def mano():
    return default_mano(config_lib.load("synthetic"))


@pytest.fixture()
def pair(tmp_path):
    rng = np.random.default_rng(0)
    truth, pred = _gamma(rng, T), _gamma(rng, T)
    for i in LABELLED:  # the labelled frames keep their labels
        for a, b in zip(pred, truth, strict=True):
            a[i] = b[i]
    return _write(tmp_path / "pred", pred), _write(tmp_path / "truth", truth), pred, truth


def test_metrics_and_gaps_match_numpy(tmp_path, pair, mano, capsys):
    p, t, pred, truth = pair
    assert main(["score", "--pred", str(p), "--truth", str(t), "--out", str(tmp_path / "s")]) == 0
    assert "unlabelled frames of 1 video" in capsys.readouterr().out
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    pv, pj = hand_mesh(mano, pred)
    tv, tj = hand_mesh(mano, truth)
    err_j = 1000 * np.sqrt(((np.float64(pj) - tj) ** 2).sum(-1)).mean(-1)  # (T,) mm, by hand
    err_v = 1000 * np.sqrt(((np.float64(pv) - tv) ** 2).sum(-1)).mean(-1)
    unl = np.setdiff1d(np.arange(T), LABELLED)
    assert summary["overall"]["frames"] == len(unl) == 9
    np.testing.assert_allclose(summary["overall"]["MPJPE"], err_j[unl].mean(), rtol=1e-5)
    np.testing.assert_allclose(summary["overall"]["MPVPE"], err_v[unl].mean(), rtol=1e-5)
    # MPJPE (T): root-aligned, by hand
    aligned = pj - pj[:, :1] + tj[:, :1]
    np.testing.assert_allclose(summary["overall"]["MPJPE (T)"],
                               1000 * np.linalg.norm(aligned - tj, axis=-1).mean(-1)[unl].mean(), rtol=1e-5)
    gaps = np.array(GAPS)
    by_gap = {r["gap"]: r for r in summary["by_gap"]}
    assert set(by_gap) == {"1", "2–3"}
    for label, sel in (("1", gaps == 1), ("2–3", (gaps >= 2) & (gaps <= 3))):
        assert by_gap[label]["frames"] == sel.sum()
        np.testing.assert_allclose(by_gap[label]["MPJPE"], err_j[sel].mean(), rtol=1e-5)
    rows = list(csv.DictReader((tmp_path / "s" / "frames.csv").open()))
    assert [int(r["gap"]) for r in rows] == GAPS
    assert [r["scored"] == "True" for r in rows] == [i not in LABELLED for i in range(T)]
    np.testing.assert_allclose([float(r["MPJPE"]) for r in rows], err_j, rtol=1e-5, atol=1e-9)


def test_all_frames_scores_the_labelled_ones_at_gap_zero(tmp_path, pair, capsys):
    p, t, _, _ = pair
    out = tmp_path / "s"
    assert main(["score", "--pred", str(p), "--truth", str(t), "--all-frames", "--out", str(out)]) == 0
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["overall"]["frames"] == T
    zero = summary["by_gap"][0]
    assert zero["gap"] == "0 (labelled)" and zero["frames"] == 3 and zero["MPJPE"] < 1e-6
    assert "| 0 (labelled) | 3 |" in capsys.readouterr().out


def test_truth_against_itself_is_zero(tmp_path, pair, capsys):
    _, t, _, _ = pair
    assert main(["score", "--pred", str(t), "--truth", str(t), "--out", str(tmp_path / "s")]) == 0
    overall = json.loads((tmp_path / "s" / "summary.json").read_text())["overall"]
    for column in ("MPJPE", "MPVPE", "MPJPE (P)", "MPVPE (P)", "MPJPE (T)", "MPJPE (SD)"):
        assert overall[column] < 1e-6, column
    assert overall["F@5"] == overall["F@15"] == 1.0


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("handprop score: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def _edit(folder, edit):
    path = folder / "annotations.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["frames_out"][2].pop("pose"), "frame 2: missing key 'pose'"),
    (lambda d: d["frames_out"][3].update(betas=[0.0] * 9), "frame 3: 'betas' has shape (9,), expected (10,)"),
    (lambda d: d["frames_out"][4]["root"].__setitem__(2, "0.5"), "frame 4: 'root': '0.5' is not a number"),
    (lambda d: d["frames_out"][1]["root"].__setitem__(0, float("nan")), "frame 1: 'root' holds NaN or inf"),
    (lambda d: d["frames_out"][5].update(index=7), "frame 5: 'index' is 7, expected 5"),
    (lambda d: d.pop("frames_out"), "missing key 'frames_out'"),
    (lambda d: d["frames_out"].pop(), "has 11 frames"),
    (lambda d: d["frames_out"][6].update(file="other.png"), "frame 6 is 000006.png"),
    (lambda d: [e.update(labelled=False) for e in d["frames_out"]], "no frame is 'labelled'"),
])
def test_bad_annotations_are_one_line_naming_file_frame_and_key(pair, capsys, edit, expected):
    p, t, _, _ = pair
    changed = p if "labelled" in expected else t
    path = _edit(changed, edit)
    assert main(["score", "--pred", str(p), "--truth", str(t)]) == 2
    err = _error(capsys)
    assert expected in err and str(path) in err, err


def test_missing_folders_and_files(tmp_path, pair, capsys):
    p, t, _, _ = pair
    assert main(["score", "--pred", str(tmp_path / "nope"), "--truth", str(t)]) == 2
    assert f"--pred {tmp_path / 'nope'}: no such folder" in _error(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["score", "--pred", str(p), "--truth", str(tmp_path / "empty")]) == 2
    assert f"--truth {tmp_path / 'empty'}: no annotations.json" in _error(capsys)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "annotations.json").write_text('{"frames_out": [')
    assert main(["score", "--pred", str(tmp_path / "broken"), "--truth", str(t)]) == 2
    assert "broken/annotations.json: not readable JSON" in _error(capsys)
    assert main(["score", "--pred", str(p), str(p), "--truth", str(t)]) == 2
    assert "2 --pred folder(s) but 1 --truth folder(s)" in _error(capsys)
    (tmp_path / "file").write_text("")
    assert main(["score", "--pred", str(p), "--truth", str(t), "--out", str(tmp_path / "file" / "x")]) == 2
    assert "is a file, not a folder" in _error(capsys)


def test_joints_of_another_mano_model_are_refused(tmp_path, pair, mano, capsys):
    """Stored joints3d that the MANO model of --config does not give for the frame's γ: the
    annotations were made with another model; within 1 mm they are accepted."""
    p, _, pred, truth = pair
    _, joints = hand_mesh(mano, truth)
    good = _write(tmp_path / "good", truth, joints=np.asarray(joints) + 0.0004)
    assert main(["score", "--pred", str(p), "--truth", str(good)]) == 0
    capsys.readouterr()
    bad = _write(tmp_path / "bad", truth, joints=np.asarray(joints) * 1.01)
    assert main(["score", "--pred", str(p), "--truth", str(bad)]) == 2
    err = _error(capsys)
    assert "bad/annotations.json: frame" in err and "'joints3d' is" in err and "model.mano_model" in err


def test_several_videos_are_pooled(tmp_path, pair, capsys):
    p, t, _, _ = pair
    rng = np.random.default_rng(1)
    p2 = _write(tmp_path / "v2" / "pred", _gamma(rng, 6), labelled=[0, 5])
    t2 = _write(tmp_path / "v2" / "truth", _gamma(rng, 6), labelled=[0, 5])
    out = tmp_path / "s"
    assert main(["score", "--pred", str(p), str(p2), "--truth", str(t), str(t2), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["frames"] == 9 + 4
    per_video = [v["frames"] for v in summary["by_video"].values()]
    assert per_video == [9, 4]
    frames = list(csv.DictReader((out / "frames.csv").open()))
    mean = np.mean([float(r["MPJPE"]) for r in frames if r["scored"] == "True"])
    np.testing.assert_allclose(summary["overall"]["MPJPE"], mean, rtol=1e-9)


def test_every_frame_labelled_scores_nothing(tmp_path, capsys):
    """No unlabelled frame: nothing to score, said so; the summary's means are null, not NaN."""
    rng = np.random.default_rng(2)
    g = _gamma(rng, 4)
    p = _write(tmp_path / "p", g, labelled=[0, 1, 2, 3])
    assert main(["score", "--pred", str(p), "--truth", str(p), "--out", str(tmp_path / "s")]) == 0
    assert "no frame to score" in capsys.readouterr().out
    overall = json.loads((tmp_path / "s" / "summary.json").read_text())["overall"]
    assert overall["frames"] == 0 and overall["MPJPE"] is None


@pytest.mark.parametrize("meta, name", [
    ({"method": "interpolate", "both_sides": True}, "interpolate"),
    ({"method": "crop", "both_sides": True}, "crop"),  # not renamed: propagate records what it was given
    ({"method": "crop"}, "crop"),
    ({"method": "photometric", "both_sides": False}, "photometric (nearest)"),
    ({"method": None}, "annotations"),
])
def test_method_is_named_as_recorded(tmp_path, meta, name, capsys):
    """The table's title and summary.json name the annotations by their recorded method."""
    g = _gamma(np.random.default_rng(3), T)
    p = _write(tmp_path / "p", g, **meta)
    assert main(["score", "--pred", str(p), "--truth", str(p), "--out", str(tmp_path / "s")]) == 0
    assert capsys.readouterr().out.startswith(f"**{name}: unlabelled frames of 1 video(s)")
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["name"] == name and summary["method"] == (None if name == "annotations" else name)
