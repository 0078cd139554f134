"""HO-3D builder on tiny fixtures written in the official layout (tests/fixtures/ho3d_layout.py)."""

import json
import os
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds
from fixtures import ho3d_layout
from handprop_datasets.ho3d import ho3d_dataset_builder as hb

SIZE = 32


def build(raw, out, layout="v2", **kwargs):
    builder = hb.Builder(data_dir=out, config=hb.Builder.config_for(layout, SIZE), **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=raw))
    return builder


def read(out, split, layout="v2"):
    ds = tfds.data_source(f"ho3d/{layout}", data_dir=out, split=split)
    return [ds[i] for i in range(len(ds))]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("ho3d")
    raw, out = str(root / "HO3D_v2"), str(root / "out")
    truth = ho3d_layout.write_ho3d(raw, "v2", {"SM2": 2, "MC2": 3, "ABF11": 2, "GSF14": 1,
                                               "ABF10": 3})
    # manual_dir may also be the parent folder holding HO3D_v2/
    builder = build(str(root), out)
    return truth, builder, out


def test_opengl_to_opencv_known_point_and_rotation():
    np.testing.assert_allclose(hb.opengl_to_opencv(np.array([0.1, 0.2, -0.5])), [0.1, -0.2, 0.5])
    # identity rotation in OpenGL = the camera flip itself in OpenCV: 180 degrees about x
    pose = hb.rotate_global(np.zeros(48), hb.OPENGL_TO_OPENCV)
    assert np.isclose(np.linalg.norm(pose[:3]), np.pi) and np.allclose(np.abs(pose[:3]), [np.pi, 0, 0])
    np.testing.assert_array_equal(pose[3:], 0)


def test_joint_order_matches_the_toolkit_names():
    # derived independently from joint names in the fixture (MANO order + tips, as HO-3D stores)
    np.testing.assert_array_equal(hb.HO3D_TO_MANOPTH, ho3d_layout.MANOPTH_TO_HO3D_SLOT)


def test_config_from_data_config():
    from handprop_jax.config import DataConfig

    config = hb.Builder.config_from_data(DataConfig(name="ho3d", image_size=64), "v3")
    assert (config.name, config.options.layout, config.options.image_size) == ("v3", "v3", 64)
    assert hb.Builder.config_from_data(DataConfig(name="ho3d", image_size=224), None).name == "v2"


def test_mini_ho3d_split_names():
    seqs = ["ABF10", "ABF11", "ABF12", "BB11", "BB12", "MC1", "MC2", "SS2", "SM5", "SMu1", "SMu40"]
    split = hb.mini_ho3d_split(seqs)
    assert split["val"] == ["ABF11", "BB12"]
    assert split["test"] == ["ABF10", "BB11", "MC1", "SMu1", "SS2"]
    assert split["train"] == ["ABF12", "MC2", "SM5", "SMu40"]
    assert set(hb.MINI_HO3D_VAL) == {"ABF11", "BB12", "GPMF13", "GSF14"}
    assert len(hb.MINI_HO3D_TEST) == 12 and "MC1" in hb.MINI_HO3D_TEST


def test_splits_grouped_by_video_in_frame_order(built):
    truth, builder, out = built
    expected = {"train": ["MC2", "SM2"], "val": ["ABF11", "GSF14"], "test": ["ABF10"]}
    for split, names in expected.items():
        examples = read(out, split)
        got = [(int(e["video_id"]), e["video_name"].decode(), int(e["frame_index"]),
                int(e["video_length"])) for e in examples]
        want = [(v, name, i, len(truth[name])) for v, name in enumerate(names)
                for i in range(len(truth[name]))]
        assert got == want


def test_name_only_read_back_and_options_guard(built, tmp_path):
    """``tfds.data_source("ho3d", ...)`` reads the default (v2) build whatever its crop size; a
    builder with other options refuses to reuse those files and says why."""
    truth, builder, out = built
    ds = tfds.data_source("ho3d", data_dir=out, split="train")
    assert len(ds) == 5 and ds[0]["image"].shape == (SIZE, SIZE, 3)
    assert builder.stale_reason() is None
    other = hb.Builder(data_dir=out, config="v2", image_size=SIZE + 8)
    assert "image_size=32->40" in other.stale_reason()
    with pytest.raises(ValueError, match="prepared with other options"):
        other.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path)))


def test_labels_are_converted_to_opencv_and_manopth(built):
    truth, _, out = built
    for e in read(out, "train") + read(out, "test"):
        t = truth[e["video_name"].decode()][int(e["frame_index"])]
        np.testing.assert_allclose(e["joints3d"], t["joints3d"], atol=1e-6)
        np.testing.assert_allclose(e["root"], t["joints3d"][0], atol=1e-6)
        np.testing.assert_allclose(e["betas"], t["betas"], atol=1e-6)
        np.testing.assert_allclose(e["pose"][3:], t["pose"][3:], atol=1e-6)
        R = lambda aa: __import__("scipy.spatial.transform", fromlist=["R"]).Rotation.from_rotvec(
            aa).as_matrix()
        np.testing.assert_allclose(R(e["pose"][:3]), R(t["pose"][:3]), atol=1e-5)
        # stored 2D joints = stored 3D joints through the stored crop intrinsics
        uvw = e["joints3d"].astype(np.float64) @ e["K"].T
        np.testing.assert_allclose(uvw[:, :2] / uvw[:, 2:], e["joints2d"], atol=1e-3)
        # ... and the crop shows the fixture's red wrist dot there
        u, v = np.round(e["joints2d"][0]).astype(int)
        assert e["image"].shape == (SIZE, SIZE, 3)
        r, g, b = e["image"][v, u].astype(int)
        assert r > 150 and r > g + 60 and r > b + 60, (e["video_name"], e["image"][v, u])


def test_crop_intrinsics_closed_form(built):
    truth, _, out = built
    e = read(out, "test")[1]
    t = truth["ABF10"][1]
    uv = t["joints2d_full"]
    lo, hi = uv.min(0), uv.max(0)
    s = SIZE / (1.5 * np.max(hi - lo))
    centre = (lo + hi) / 2
    expected = np.array([[s * t["K"][0, 0], 0, s * (t["K"][0, 2] - centre[0]) + (SIZE - 1) / 2],
                         [0, s * t["K"][1, 1], s * (t["K"][1, 2] - centre[1]) + (SIZE - 1) / 2],
                         [0, 0, 1]])
    np.testing.assert_allclose(e["K"], expected, rtol=1e-5, atol=1e-4)


def test_skip_report_written_and_missing_named_sequences_counted(built):
    _, builder, out = built
    report = json.loads((builder.data_path / "skipped.json").read_text())
    assert report["counts"]["test"] == {"missing sequence": 11}  # ABF10 is the only one present
    assert report["counts"]["val"] == {"missing sequence": 2}
    assert "train" not in report["counts"]
    assert os.path.isfile(os.path.join(out, "ho3d", "v2", "1.1.0", "skipped.json"))


def test_v3_layout_reads_jpg_without_train_txt(tmp_path):
    raw = str(tmp_path / "raw")
    truth = ho3d_layout.write_ho3d(raw, "v3", {"SM2": 2, "ABF11": 1, "ABF10": 1}, seed=3,
                                   write_lists=False)
    builder = hb.Builder(data_dir=str(tmp_path / "out"), config="v3", image_size=SIZE)
    assert builder.builder_config.name == "v3" and builder.builder_config.options.image_size == SIZE
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=raw))
    train = read(str(tmp_path / "out"), "train", "v3")
    assert [e["video_name"].decode() for e in train] == ["SM2", "SM2"]
    np.testing.assert_allclose(train[1]["joints3d"], truth["SM2"][1]["joints3d"], atol=1e-6)
    assert len(read(str(tmp_path / "out"), "test", "v3")) == 1


def _corrupt(raw, seq, frame, what, ext=".png"):
    meta = os.path.join(raw, "train", seq, "meta", frame + ".pkl")
    rgb = os.path.join(raw, "train", seq, "rgb", frame + ext)
    if what == "missing image":
        os.remove(rgb)
    elif what == "corrupt image":
        data = open(rgb, "rb").read()
        open(rgb, "wb").write(data[: len(data) // 3])
    elif what == "missing annotation":
        os.remove(meta)
    elif what == "corrupt annotation":
        data = open(meta, "rb").read()
        open(meta, "wb").write(data[: len(data) // 2])
    else:
        with open(meta, "rb") as f:
            m = pickle.load(f, encoding="latin1")
        if what == "non-finite values":
            m["handJoints3D"][3, 1] = np.nan
        elif what == "hand outside the image":
            m["handJoints3D"][:, 0] += 2.0  # 2 m to the side: projects far off the image
        elif what == "bad annotation":
            m["handPose"] = m["handPose"][:45]
        with open(meta, "wb") as f:
            pickle.dump(m, f, protocol=2)
    return rgb, meta


BAD = ["missing image", "corrupt image", "missing annotation", "corrupt annotation",
       "non-finite values", "hand outside the image", "bad annotation"]


def test_bad_frames_are_skipped_and_counted(tmp_path):
    raw = str(tmp_path / "raw")
    ho3d_layout.write_ho3d(raw, "v2", {"MC2": len(BAD) + 2, "ABF11": 1, "ABF10": 1}, seed=5)
    for i, what in enumerate(BAD):
        _corrupt(raw, "MC2", f"{i + 1:04d}", what)
    builder = build(raw, str(tmp_path / "out"))
    assert builder.skipped["train"] == {what: 1 for what in BAD}
    train = read(str(tmp_path / "out"), "train")
    assert [int(e["frame_index"]) for e in train] == [0, 1]
    assert {int(e["video_length"]) for e in train} == {2}
    report = json.loads((builder.data_path / "skipped.json").read_text())
    assert any("MC2/rgb/0001.png: missing image" in m for m in report["examples"]["train"])


@pytest.mark.parametrize("what,name", [("corrupt image", "rgb/0001.png"),
                                       ("non-finite values", "meta/0001.pkl")])
def test_bad_frames_raise_naming_the_file(tmp_path, what, name):
    raw = str(tmp_path / "raw")
    ho3d_layout.write_ho3d(raw, "v2", {"MC2": 2, "ABF11": 1, "ABF10": 1}, seed=6)
    _corrupt(raw, "MC2", "0001", what)
    with pytest.raises(ValueError, match=f"MC2/{name}: {what}"):
        build(raw, str(tmp_path / "out"), on_bad_input="raise")


def test_missing_train_folder_is_a_clear_error(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "README").write_text("not HO-3D")
    with pytest.raises(FileNotFoundError, match="no 'train/' folder"):
        build(str(tmp_path / "raw"), str(tmp_path / "out"))


def _edit_meta(raw, seq, frame, edit):
    path = os.path.join(raw, "train", seq, "meta", frame + ".pkl")
    with open(path, "rb") as f:
        m = pickle.load(f, encoding="latin1")
    edit(m)
    with open(path, "wb") as f:
        pickle.dump(m, f, protocol=2)
    return path


@pytest.mark.parametrize("edit, detail", [
    (lambda m: m.update(handJoints3D=m["handJoints3D"].T.copy()),
     "handJoints3D has shape (3, 21), expected (21, 3)"),
    (lambda m: m.update(handBeta=m["handBeta"].reshape(2, 5)), "handBeta has shape (2, 5), expected (10,)"),
    (lambda m: m.update(handPose=[str(x) for x in m["handPose"]]), "handPose holds <U"),
    (lambda m: m.update(camMat=m["camMat"] * [[0], [1], [1]]), "camMat is not a pinhole camera matrix"),
    (lambda m: m.update(handJoints3D=m["handJoints3D"] * [1, 1, -1]), "points behind the camera"),
])
def test_fields_are_checked_exactly_never_reshaped(tmp_path, edit, detail):
    """A transposed (3, 21) handJoints3D used to be reshaped into garbage (21, 3): now every field is
    checked for its exact shape, numeric type, a pinhole camera and depth, and the frame skipped with
    the file named."""
    raw = str(tmp_path / "raw")
    ho3d_layout.write_ho3d(raw, "v2", {"MC2": 3, "ABF11": 1, "ABF10": 1}, seed=7)
    meta = _edit_meta(raw, "MC2", "0001", edit)
    builder = build(raw, str(tmp_path / "out"))
    assert builder.skipped["train"] == {"bad annotation": 1}
    message = builder.skip_log.examples["train"][0]
    assert message.startswith(f"{meta}: bad annotation") and detail in message, message
    assert [int(e["frame_time"]) for e in read(str(tmp_path / "out"), "train")] == [0, 2]
    with pytest.raises(ValueError, match=f"{meta}: bad annotation"):
        build(raw, str(tmp_path / "out2"), on_bad_input="raise")


def test_frame_time_keeps_holes_and_k_nu_gaps_use_it(tmp_path):
    """Frames 4 (bad) and 7 (left out of train.txt, as HO-3D v3 does with frames on disk) are holes in
    time: the stored frame_time keeps the frame numbers, and K, the labelled set, N(u) and the gaps
    are measured in them (before, the frames after a hole were renumbered)."""
    from handprop_jax.config import DataConfig
    from handprop_jax.data.eval_batches import eval_items
    from handprop_jax.data.sources import Split

    raw = str(tmp_path / "raw")
    ho3d_layout.write_ho3d(raw, "v3", {"MC2": 11, "ABF11": 1, "ABF10": 1}, seed=8)
    os.remove(os.path.join(raw, "train", "MC2", "rgb", "0004.jpg"))
    listing = os.path.join(raw, "train.txt")
    lines = open(listing).read().split()
    open(listing, "w").write("\n".join(ln for ln in lines if ln != "MC2/0007") + "\n")
    builder = build(raw, str(tmp_path / "out"), "v3")
    assert builder.skipped["train"] == {"missing image": 1}
    assert builder.skip_log.infos["train"] == {"frames on disk not in train.txt (not used)": 1}
    train = read(str(tmp_path / "out"), "train", "v3")
    assert [int(e["frame_time"]) for e in train] == [0, 1, 2, 3, 5, 6, 8, 9, 10]
    assert [int(e["frame_index"]) for e in train] == list(range(9))
    sp = Split(DataConfig(name="ho3d", builder_config="v3", label_stride=4), "train",
               source=tfds.data_source("ho3d/v3", data_dir=str(tmp_path / "out"), split="train"))
    time = sp.table.time
    # labelled: times 0 and 8 on the K = 4 grid (time 4 is missing: no other frame is promoted), the last
    assert time[sp.labelled].tolist() == [0, 8, 10]
    assert time[sp.nearest].tolist() == [0, 0, 0, 0, 8, 8, 8, 8, 10]  # 5, 6 nearer to 8 than to 0
    items = eval_items(sp, 2)
    assert time[items["u"]].tolist() == [1, 2, 3, 5, 6, 9]
    assert items["gap"].tolist() == [1, 2, 3, 3, 2, 1]  # in frames of the source video


def test_a_split_left_empty_stops_the_build_naming_the_filter(tmp_path):
    raw = str(tmp_path / "raw")
    ho3d_layout.write_ho3d(raw, "v2", {"MC2": 2, "SM2": 1, "ABF10": 1}, seed=9)
    with pytest.raises(ValueError, match=r"split 'val' is empty: none of its sequences \(ABF11, BB12, "
                                         r"GPMF13, GSF14\).*data.ho3d_val_sequences"):
        build(raw, str(tmp_path / "out"))
    assert not (tmp_path / "out" / "ho3d" / "v2" / "1.1.0").exists()  # nothing half-written
    builder = hb.Builder(data_dir=str(tmp_path / "out"), config=hb.Builder.config_for(
        "v2", SIZE, val_sequences=("SM2",)))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=raw))
    assert [e["video_name"].decode() for e in read(str(tmp_path / "out"), "val")] == ["SM2"]


def test_cli_options_and_empty_split_exit_code(tmp_path, capsys):
    """Builder options are declared DataConfig fields (--set data....); an emptied split is one line
    on stderr, exit code 2; a --data-dir that cannot be a folder is refused before any work."""
    from handprop_jax.cli import main

    raw, data = str(tmp_path / "raw"), tmp_path / "data"
    ho3d_layout.write_ho3d(raw, "v2", {"MC2": 2, "SM2": 1, "ABF10": 1}, seed=9)
    args = ["data", "build", "ho3d", "--manual-dir", raw, "--data-dir", str(data), "--config", "v2",
            "--set", f"data.image_size={SIZE}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("handprop data: HO-3D v2: split 'val' is empty") and err.count("\n") == 1, err
    assert main(args + ["--set", "data.ho3d_val_sequences=('SM2',)", "--set", "data.crop_scale=2.0"]) == 0
    out = capsys.readouterr().out
    assert "val" in out and "ho3d (v2)" in out
    stored = hb.Builder(data_dir=str(data), config="v2").stored_options()
    assert stored["val_sequences"] == ["SM2"] and stored["crop_scale"] == 2.0
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for target in (a_file, a_file / "data"):  # a file, or under a file: refused before any work
        assert main(args[:6] + [str(target)] + args[7:]) == 2
        err = capsys.readouterr().err
        assert f"--data-dir {target}: {a_file} is a file" in err and err.count("\n") == 1, err
    assert main(["data", "build", "ho3d", "--manual-dir", raw, "--data-dir", str(data), "--set",
                 "data.on_bad_input=maybe"]) == 2
    assert "expected one of skip, raise" in capsys.readouterr().err
