"""InterHand2.6M builder on tiny fixtures in the official layout (tests/fixtures/interhand_layout.py)."""

import json
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from fixtures import interhand_layout as il
from handprop_datasets.interhand26m import interhand26m_dataset_builder as ib
from scipy.spatial.transform import Rotation

from handprop_jax.hand import hand_in_camera

SIZE = 32
V = il.VideoSpec
# Filter: right-hand only, >= 3 frames. Val survivors (sorted): Capture0/ROM03 cams 400262, 400263,
# Capture0/ROM04 cam 400262 -> the last one (num_val=1) is val, the rest train.
SPECS = [
    V("val", 0, "ROM03_RT_No_Occlusion", ("400262", "400263"), 4),
    V("val", 0, "ROM04_RT_Occlusion", ("400262",), 3),
    V("val", 0, "ROM01_No_Interaction_2_Hand", ("400262",), 4, hand_type="interacting"),
    V("val", 0, "ROM07_LT_Occlusion", ("400262",), 4, hand_type="left"),
    V("val", 0, "ROM08_RT_Wrist_ROM", ("400262",), 2),  # too short
    V("test", 1, "ROM03_RT_No_Occlusion", ("400262", "400264", "400265"), 3),
    V("test", 2, "ROM04_RT_Occlusion", ("400262",), 2),  # too short
]
CONFIG = dict(min_length=3, num_val=1, num_test=2, test_seed=0)


def build(raw, out, model, as_kwargs=False, **kwargs):
    if as_kwargs:  # options as builder kwargs
        builder = ib.Builder(data_dir=out, mano_model=model, image_size=SIZE, **CONFIG, **kwargs)
    else:
        config = ib.Builder.config_for(SIZE, **CONFIG)
        builder = ib.Builder(data_dir=out, config=config, mano_model=model, **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=raw))
    return builder


def read(out, split, name="interhand26m"):
    ds = tfds.data_source(name, data_dir=out, split=split)
    return [ds[i] for i in range(len(ds))]


@pytest.fixture(scope="module")
def model():
    return il.fixture_mano()


@pytest.fixture(scope="module")
def built(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("interhand")
    raw, out = str(root / "InterHand2.6M"), str(root / "out")
    truth = il.write_interhand(raw, model, SPECS)
    builder = build(raw, out, model, as_kwargs=True)
    assert builder.builder_config.name == "mini"
    assert builder.builder_config.options == ib.InterHandOptions(image_size=SIZE, **CONFIG)
    return truth, builder, out


def test_config_from_data_config():
    import dataclasses

    from handprop_jax.config import DataConfig

    config = ib.Builder.config_from_data(DataConfig(name="interhand26m", image_size=64), None)
    assert config.name == "mini" and config.options == ib.InterHandOptions(image_size=64)

    @dataclasses.dataclass(frozen=True)
    class WithFilter(DataConfig):  # optional fields a DataConfig may carry
        interhand_min_length: int | None = 3
        interhand_num_test: int | None = 2

    config = ib.Builder.config_from_data(WithFilter(image_size=32), "mini")
    assert config.options == ib.InterHandOptions(image_size=32, min_length=3, num_test=2)
    with pytest.raises(ValueError, match="unknown builder config"):
        ib.Builder.config_from_data(DataConfig(), "v2")


def test_joint_map_inverts_the_fixture_order():
    np.testing.assert_array_equal(il.IH_FROM_MANOPTH[ib.IH_TO_MANOPTH], np.arange(21))
    assert ib.IH_TO_MANOPTH[0] == 20  # InterHand's right wrist is joint 20


def test_split_videos_and_frame_order(built):
    truth, _, out = built
    chosen = sorted(np.random.default_rng(0).choice(3, size=2, replace=False).tolist())
    test_cams = [f"Capture1/ROM03_RT_No_Occlusion/cam{c}" for c in ("400262", "400264", "400265")]
    expected = {"train": ["Capture0/ROM03_RT_No_Occlusion/cam400262",
                          "Capture0/ROM03_RT_No_Occlusion/cam400263"],
                "val": ["Capture0/ROM04_RT_Occlusion/cam400262"],
                "test": [test_cams[i] for i in chosen]}
    for split, names in expected.items():
        got = [(int(e["video_id"]), e["video_name"].decode(), int(e["frame_index"]),
                int(e["video_length"])) for e in read(out, split)]
        assert got == [(v, n, i, len(truth[n])) for v, n in enumerate(names) for i in range(len(truth[n]))]


def test_labels_in_camera_frame(built, model):
    truth, _, out = built
    examples = read(out, "train") + read(out, "test")
    fk = jax.jit(hand_in_camera)
    for e in examples:
        t = truth[e["video_name"].decode()][int(e["frame_index"])]
        np.testing.assert_allclose(e["joints3d"], t["joints3d"], atol=1e-5)
        np.testing.assert_allclose(e["root"], t["root"], atol=1e-5)
        np.testing.assert_allclose(e["betas"], t["betas"], atol=1e-6)
        np.testing.assert_allclose(e["pose"][3:], t["pose"][3:], atol=1e-6)  # hands_mean added
        np.testing.assert_allclose(Rotation.from_rotvec(e["pose"][:3]).as_matrix(),
                                   Rotation.from_rotvec(t["pose"][:3]).as_matrix(), atol=1e-5)
        uvw = e["joints3d"].astype(np.float64) @ e["K"].T
        np.testing.assert_allclose(uvw[:, :2] / uvw[:, 2:], e["joints2d"], atol=1e-3)
        u, v = np.round(e["joints2d"][0]).astype(int)
        r, g, b = e["image"][v, u].astype(int)
        assert r > 130 and r > g + 50 and r > b + 50
    # gamma (root, pose, betas) through MANO reproduces the stored joints (independent check)
    batch = {k: np.stack([e[k] for e in examples]) for k in ("root", "pose", "betas", "joints3d")}
    _, joints = fk(model, batch["root"], batch["pose"], batch["betas"])
    np.testing.assert_allclose(np.asarray(joints), batch["joints3d"], atol=1e-5)


def _fake_annotations(videos):
    """Annotations with images only: videos = [(capture, seq, camera, n_frames, hand_type)]."""
    images, by_image = [], {}
    for capture, seq, camera, n, hand_type in videos:
        for f in range(n):
            image_id = len(images)
            images.append({"id": image_id, "capture": capture, "seq_name": seq, "camera": camera,
                           "frame_idx": 1000 - f})
            by_image[image_id] = {"hand_type": hand_type}
    return ib.Annotations("val", "/nowhere", images, by_image, {}, {}, {})


def test_filter_keeps_long_right_only_videos_sorted_by_capture_seq_camera():
    ann = _fake_annotations([(10, "b_RT", "400300", 5, "right"), (2, "z_RT", "400262", 5, "right"),
                             (2, "a_RT", "410001", 5, "right"), (2, "a_RT", "400262", 4, "right"),
                             (2, "c_LT", "400262", 9, "left"), (2, "d_IH", "400262", 9, "interacting")])
    kept = ib.right_hand_videos(ann, min_length=5)
    assert [ib.video_name(k) for k, _ in kept] == [
        "Capture2/a_RT/cam410001", "Capture2/z_RT/cam400262", "Capture10/b_RT/cam400300"]
    assert all([im["frame_idx"] for im in ims] == sorted(im["frame_idx"] for im in ims) for _, ims in kept)


def test_mini_interhand_split_sizes_and_seed():
    val, test = list(range(30)), list(range(100, 250))
    split = ib.mini_interhand_split(val, test)
    assert split["train"] == list(range(5)) and split["val"] == list(range(5, 30))
    assert len(split["test"]) == 100 and split["test"] == sorted(split["test"])
    assert len(set(split["test"])) == 100 and set(split["test"]) <= set(test)
    assert ib.mini_interhand_split(val, test)["test"] == split["test"]  # deterministic
    assert ib.mini_interhand_split(val, test, seed=1)["test"] != split["test"]
    assert ib.mini_interhand_split(val[:10], test[:7])["test"] == test[:7]
    assert ib.mini_interhand_split(val[:10], test[:7])["train"] == []


def _load(raw, split, kind):
    path = os.path.join(raw, "annotations", split, f"InterHand2.6M_{split}_{kind}.json")
    with open(path) as f:
        return path, json.load(f)


def _save(path, value):
    with open(path, "w") as f:
        json.dump(value, f)


@pytest.fixture()
def small(tmp_path, model):
    raw = str(tmp_path / "raw")
    specs = [V("val", 0, "ROM03_RT_No_Occlusion", ("400262",), 8),
             V("val", 0, "ROM04_RT_Occlusion", ("400262",), 3),
             V("test", 1, "ROM03_RT_No_Occlusion", ("400262",), 3)]
    return raw, str(tmp_path / "out"), il.write_interhand(raw, model, specs, seed=2)


def test_bad_frames_skipped_and_counted_invalid_joints_filled(small, model):
    raw, out, truth = small
    video = truth["Capture0/ROM03_RT_No_Occlusion/cam400262"]
    frames = [str(t["frame_idx"]) for t in video]
    os.remove(video[1]["image_path"])  # missing image
    data = open(video[2]["image_path"], "rb").read()
    open(video[2]["image_path"], "wb").write(data[:200])  # corrupt (truncated) jpeg
    path, mano = _load(raw, "val", "MANO_NeuralAnnot")
    mano["0"][frames[3]]["right"]["pose"][7] = float("nan")  # NaN
    mano["0"][frames[4]]["right"] = None  # no right-hand fit
    _save(path, mano)
    path, joints = _load(raw, "val", "joint_3d")
    joints["0"][frames[5]]["world_coord"] = [[x + 3000.0, y, z] for x, y, z in
                                             joints["0"][frames[5]]["world_coord"]]  # off-image
    joints["0"][frames[6]]["world_coord"][4] = [9e3, 9e3, 9e3]  # garbage, but marked invalid:
    joints["0"][frames[6]]["joint_valid"][4] = [False]  # InterHand joint 4 = right index tip
    joints["0"][frames[7]]["joint_valid"][20] = [False]  # the right wrist: frame unusable
    _save(path, joints)

    builder = build(raw, out, model)
    assert builder.skipped["train"] == {"missing image": 1, "corrupt image": 1, "non-finite values": 1,
                                        "missing MANO fit": 1, "hand outside the image": 1,
                                        "invalid wrist": 1}
    assert builder.skip_log.infos["train"] == {"joints filled from the MANO fit": 1}
    train = read(out, "train", "interhand26m/mini")
    kept = [0, 6]
    assert [int(e["frame_index"]) for e in train] == [0, 1]
    assert {int(e["video_length"]) for e in train} == {2}
    for e, i in zip(train, kept, strict=True):
        np.testing.assert_allclose(e["joints3d"], video[i]["joints3d"], atol=1e-5)  # filled = truth
    report = json.loads((builder.data_path / "skipped.json").read_text())
    assert any(video[1]["image_path"] + ": missing image" in m for m in report["examples"]["train"])


def test_bad_frame_raises_naming_the_file(small, model):
    raw, out, truth = small
    image = truth["Capture0/ROM04_RT_Occlusion/cam400262"][1]["image_path"]
    open(image, "wb").write(b"not a jpeg")
    with pytest.raises(ValueError, match=f"{image}: corrupt image"):
        build(raw, out, model, on_bad_input="raise")


def test_truncated_annotation_file_is_a_clear_error(small, model):
    raw, out, _ = small
    path = os.path.join(raw, "annotations", "test", "InterHand2.6M_test_camera.json")
    text = open(path).read()
    open(path, "w").write(text[: len(text) // 2])
    with pytest.raises(ValueError, match="InterHand2.6M_test_camera.json.*truncated"):
        build(raw, out, model)


def test_missing_mano_model_is_a_clear_error(small):
    raw, out, _ = small
    with pytest.raises(FileNotFoundError, match="MANO_RIGHT.pkl"):
        build(raw, out, None)


def test_annotation_folder_v1_or_older_all_layout(tmp_path):
    for split, sub in (("val", "val"), ("test", "all")):
        folder = tmp_path / "annotations" / sub
        folder.mkdir(parents=True)
        (folder / f"InterHand2.6M_{split}_data.json").write_text("{}")
    assert ib.annotation_dir(str(tmp_path), "val") == str(tmp_path / "annotations" / "val")
    assert ib.annotation_dir(str(tmp_path), "test") == str(tmp_path / "annotations" / "all")
    with pytest.raises(FileNotFoundError, match="InterHand2.6M_train_data.json"):
        ib.annotation_dir(str(tmp_path), "train")


def _annotations_of(raw, split, video):
    """data.json (path, content) and the annotation records of one video, in frame order."""
    path, data = _load(raw, split, "data")
    ids = [im["id"] for im in sorted(data["images"], key=lambda im: im["frame_idx"])
           if f"Capture{im['capture']}/{im['seq_name']}/cam{im['camera']}" == video]
    by_id = {a["image_id"]: a for a in data["annotations"]}
    return path, data, [by_id[i] for i in ids]


def test_missing_or_unexpected_hand_type_skips_the_frame_not_the_video(small, model):
    """One annotation without hand_type and one with "Right" used to drop the whole camera video
    silently (exit 0, no skip): now those two frames are skipped and counted, naming data.json and the
    image ids, and the video keeps its other frames at their source times."""
    raw, out, truth = small
    path, data, records = _annotations_of(raw, "val", "Capture0/ROM03_RT_No_Occlusion/cam400262")
    del records[2]["hand_type"]
    records[5]["hand_type"] = "Right"
    _save(path, data)
    builder = build(raw, out, model)
    assert builder.skipped["train"] == {"bad annotation": 2}
    messages = builder.skip_log.examples["train"]
    assert messages[0] == (f"{path}: bad annotation (image id {records[2]['image_id']} (capture 0 frame "
                           f"{truth['Capture0/ROM03_RT_No_Occlusion/cam400262'][2]['frame_idx']} camera "
                           "400262): hand_type missing, expected one of right, left, interacting)")
    assert f"image id {records[5]['image_id']} " in messages[1] and "hand_type 'Right'" in messages[1]
    train = read(out, "train")
    assert {e["video_name"].decode() for e in train} == {"Capture0/ROM03_RT_No_Occlusion/cam400262"}
    assert [int(e["frame_time"]) for e in train] == [0, 1, 3, 4, 6, 7]  # 5 fps: frame_idx step 6
    assert [int(e["video_length"]) for e in train] == [6] * 6
    with pytest.raises(ValueError, match=f"{path}: bad annotation .image id {records[2]['image_id']} "):
        build(raw, out + "_raise", model, on_bad_input="raise")


def test_a_video_without_any_valid_hand_type_is_reported_and_an_empty_split_named(small, model):
    raw, out, _ = small
    path, data, records = _annotations_of(raw, "val", "Capture0/ROM04_RT_Occlusion/cam400262")
    for r in records:
        r["hand_type"] = None
    _save(path, data)
    builder = ib.Builder(data_dir=out, config=ib.Builder.config_for(SIZE, **CONFIG), mano_model=model)
    with pytest.raises(ValueError, match=r"split 'train' is empty: 1 of the 2 official val videos pass "
                                         r"the Mini-InterHand filter .*1 no valid hand_type.*num_val=1.*"
                                         r"data.interhand_num_val"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=raw))
    assert builder.skip_log.counts["official val"] == {"no valid hand_type": 1}
    assert "video Capture0/ROM04_RT_Occlusion/cam400262: none of its 3 images" in \
        builder.skip_log.examples["official val"][0]


@pytest.mark.parametrize("edit, reason, detail", [
    (lambda r: r.update(world_coord=np.asarray(r["world_coord"]).T.tolist()), "bad annotation",
     "world_coord has shape (3, 42), expected (42, 3)"),
    (lambda r: r.update(joint_valid=[[2]] * 42), "bad annotation", "joint_valid holds values other than 0/1"),
    (lambda r: r.update(world_coord="[[0, 0, 0]]"), "bad annotation", "world_coord is str"),
])
def test_frame_fields_are_checked_exactly(small, model, edit, reason, detail):
    raw, out, truth = small
    video = truth["Capture0/ROM03_RT_No_Occlusion/cam400262"]
    path, joints = _load(raw, "val", "joint_3d")
    edit(joints["0"][str(video[3]["frame_idx"])])
    _save(path, joints)
    builder = build(raw, out, model)
    assert builder.skipped["train"] == {reason: 1}
    assert builder.skip_log.examples["train"][0].startswith(f"{path}: {reason} (image id ")
    assert f"frame {video[3]['frame_idx']} camera 400262): {detail}" in builder.skip_log.examples["train"][0]


def test_a_bad_camera_skips_its_video_once(tmp_path, model):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    il.write_interhand(raw, model, [V("val", 0, "ROM03_RT_No_Occlusion", ("400262", "400263"), 4),
                                    V("val", 0, "ROM04_RT_Occlusion", ("400262",), 3),
                                    V("test", 1, "ROM03_RT_No_Occlusion", ("400262",), 3)], seed=4)
    path, cameras = _load(raw, "val", "camera")
    cameras["0"]["camrot"]["400263"] = (2 * np.asarray(cameras["0"]["camrot"]["400263"])).tolist()
    _save(path, cameras)
    builder = build(raw, out, model)
    assert builder.skipped["official val"] == {"bad annotation": 1}
    assert builder.skip_log.examples["official val"][0] == (
        f"{path}: bad annotation (capture 0 camera 400263: camrot is not a rotation matrix; video "
        "Capture0/ROM03_RT_No_Occlusion/cam400263 (4 frames) skipped)")
    assert [e["video_name"].decode() for e in read(out, "train")] == \
        ["Capture0/ROM03_RT_No_Occlusion/cam400262"] * 4


def test_cli_filter_options_and_the_paper_filter_on_a_small_download(small, model, tmp_path, capsys):
    """The Mini-InterHand filter options are declared DataConfig fields: the paper's >= 1000 frames on a
    small download stops with the filter named (exit code 2, one line; it used to build nothing and
    exit 0); --set data.interhand_min_length=... relaxes it."""
    import mano_jax
    from handprop_jax.cli import main

    raw, out, _ = small
    mano = str(tmp_path / "mano.npz")
    mano_jax.save_npz(model, mano)
    args = ["data", "build", "interhand26m", "--manual-dir", raw, "--data-dir", out, "--mano-model", mano,
            "--set", f"data.image_size={SIZE}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("handprop data: InterHand2.6M: split 'train' is empty: 0 of the 2 official val "
                          "videos pass the Mini-InterHand filter (right hand only, >= min_length=1000 "
                          "frames; left out: 2 shorter than min_length=1000)"), err
    assert "--set data.interhand_min_length=N" in err and err.count("\n") == 1
    assert main(args + ["--set", "data.interhand_min_length=3", "--set", "data.interhand_num_val=1",
                        "--set", "data.interhand_num_test=1"]) == 0
    assert "train" in capsys.readouterr().out
    assert ib.Builder(data_dir=out).stored_options()["min_length"] == 3
