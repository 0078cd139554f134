"""The hand_videos builder on hand-made folders: every kind of bad input named or counted, labels
only where given (has_label, NaN elsewhere), the S_V rule over irregular labels, the per-frame box
rule, rebuilds when the files change, and ``handprop propagate`` cropping exactly as the builder."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from handprop_jax.config import DataConfig
from handprop_jax.data import boxes as boxes_lib
from handprop_jax.data import sparse
from handprop_jax.data.build import build, make_builder
from handprop_jax.data.crop import Box
from handprop_jax.data.sources import open_split
from handprop_jax.gamma import Gamma

W, H, S = 48, 40, 16
K = [[60.0, 0, 23.5], [0, 60.0, 19.5], [0, 0, 1]]


def _gamma(rng, n):
    return Gamma((rng.normal(size=(n, 3)) * [0.01, 0.01, 0.02] + [0, 0, 0.5]).astype(np.float32),
                 (rng.normal(size=(n, 48)) * 0.2).astype(np.float32),
                 (rng.normal(size=(n, 10)) * 0.3).astype(np.float32))


def _labels(path, frames, seed=0, **top):
    g = _gamma(np.random.default_rng(seed), len(frames))
    path.write_text(json.dumps({**top, "labels": {str(f): {k: v[i].tolist() for k, v in g.as_dict().items()}
                                                  for i, f in enumerate(frames)}}))
    return g


def _frames(folder, n, seed=0, size=(W, H)):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"f_{i}.png")
    return folder


def _video(root, name, n, labels=(), seed=0, intrinsics=True, **top):
    folder = root / name
    _frames(folder / "frames", n, seed)
    if labels is not None:
        _labels(folder / "labels.json", labels, seed, **top)
    if intrinsics:
        np.save(folder / "intrinsics.npy", np.array(K))
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    good1 = _video(root, "good1", 10, [0, 4, 9, 12])  # 12: a label for a missing frame
    (good1 / "frames" / "f_6.png").write_bytes(b"not a png")  # unreadable frame
    # good2: an animated GIF, K in the labels file, a box file for frame 3
    g2 = root / "good2"
    g2.mkdir()
    rng = np.random.default_rng(2)
    pics = [Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)) for _ in range(8)]
    pics[0].save(g2 / "clip.gif", save_all=True, append_images=pics[1:], duration=40)
    _labels(g2 / "labels.json", [0, 2, 7], 2, K=K)
    (g2 / "boxes.json").write_text(json.dumps({"boxes": {"3": [20.0, 18.0, 30.0]}}))
    good3 = _video(root, "good3", 6, [0, 5], seed=3)
    data = json.loads((good3 / "labels.json").read_text())
    data["labels"]["5"]["root"] = [0.0, 0.0, -0.5]  # behind the camera
    (good3 / "labels.json").write_text(json.dumps(data))
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(good3 / "frames" / "f_2.png")  # another size
    nan = _video(root, "nan", 4, [0, 3])
    data = json.loads((nan / "labels.json").read_text())
    data["labels"]["3"]["pose"][5] = float("nan")
    (nan / "labels.json").write_text(json.dumps(data))  # json writes NaN, which load_labels refuses
    short = _video(root, "short_pose", 4, [0, 3])
    data = json.loads((short / "labels.json").read_text())
    data["labels"]["0"]["pose"] = data["labels"]["0"]["pose"][:47]
    (short / "labels.json").write_text(json.dumps(data))
    _video(root, "noK", 4, [0, 3], intrinsics=False)
    _video(root, "nolabels", 4, None)
    _video(root, "left", 4, [0, 3], side="left")
    (root / "empty").mkdir()
    badk = _video(root, "badK", 6, [0, 5])
    np.save(badk / "intrinsics.npy", np.tile(np.array(K), (5, 1, 1)))
    _video(root, "unlisted", 4, [0, 3])
    splits = {"train": ["good1", "good3", "nan", "short_pose", "noK", "nolabels", "left", "empty", "badK",
                        "ghost"], "val": ["good2"]}
    (root / "splits.json").write_text(json.dumps(splits))
    return root


@pytest.fixture(scope="module")
def built(source, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    config = DataConfig(name="hand_videos", data_dir=str(data_dir), image_size=S, label_stride=1)
    summary = build("hand_videos", data_dir, manual_dir=source, data_config=config, mano_model="synthetic",
                    verbose=False)
    return config, summary


def test_bad_input_is_named_or_counted(built):
    config, summary = built
    train = summary["splits"]["train"]
    assert train["skipped"] == {"unreadable frame": 1, "label for a missing frame": 1,
                                "frame size differs": 1, "hand outside the image": 1, "bad labels": 2,
                                "missing intrinsics": 1,
                                "missing labels": 1, "left hand": 1, "no frames": 1, "bad intrinsics": 1,
                                "missing video": 1}
    assert summary["splits"]["not in splits.json"]["skipped"] == {"not in splits.json": 1}
    # good1: 9 readable frames, labels 0, 4, 9 -> 8; good3: 5 frames, label 0 (5 is behind the camera)
    assert (train["videos"], train["frames"], train["labels"], train["labelled"]) == (2, 14, 4, 4)
    assert summary["splits"]["val"] == {**summary["splits"]["val"], "videos": 1, "frames": 8, "labels": 3}
    messages = "\n".join(summary["examples"]["train"])
    for needle in ("f_6.png", "frame 12", "f_2.png", "'pose' has shape (47,)", "NaN", "noK",
                   "nolabels", "left", "empty", "badK", "ghost"):
        assert needle in messages, needle
    from handprop_jax.data.build import format_summary

    text = format_summary(summary)
    assert "unreadable frame: 1" in text and "f_6.png" in text and "held back" in text


def test_records_carry_labels_only_where_given(built):
    config, _ = built
    sp = open_split(config, "train")
    assert sp.table.names == ("good1", "good3")
    good1 = sp.video(0)
    np.testing.assert_array_equal(np.nonzero(good1["has_label"])[0], [0, 4, 8])  # f_9 moved up to 8
    assert np.all(np.isfinite(good1["root"][[0, 4, 8]])) and np.all(np.isnan(good1["pose"][[1, 5]]))
    assert good1["image"].shape == (9, S, S, 3)
    np.testing.assert_array_equal(sp.video_labelled[0], [0, 4, 8])
    # the unreadable f_6 is a hole in source time: f_7..f_9 keep their numbers as frame_time
    np.testing.assert_array_equal(good1["frame_time"], [0, 1, 2, 3, 4, 5, 7, 8, 9])


def test_label_of_a_moved_frame_stays_with_it(built, source):
    config, _ = built
    video = open_split(config, "train").video(0)
    labels = json.loads((source / "good1" / "labels.json").read_text())["labels"]
    np.testing.assert_allclose(video["root"][8], labels["9"]["root"], rtol=1e-6)
    np.testing.assert_allclose(video["root"][4], labels["4"]["root"], rtol=1e-6)


def test_held_back_labels_with_a_larger_stride(built):
    config, _ = built
    import dataclasses

    sp = open_split(dataclasses.replace(config, label_stride=5), "train")
    # good1: labels 0, 4, 8 -> K=5 keeps 0 and the last (8); 4 is held back and evaluated
    np.testing.assert_array_equal(sp.video_labelled[0], [0, 8])
    assert sp.evaluated.sum() == 1 and sp.table.frame[np.nonzero(sp.evaluated)[0][0]] == 4


def test_raise_mode_names_the_file(source, tmp_path):
    config = DataConfig(name="hand_videos", data_dir=str(tmp_path), image_size=S)
    builder = make_builder("hand_videos", tmp_path, data_config=config, mano_model="synthetic",
                           manual_dir=str(source), on_bad_input="raise")
    with pytest.raises(ValueError, match="f_6.png|ghost"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(source)))


def test_missing_mano_model_is_a_clear_error(source, tmp_path):
    config = DataConfig(name="hand_videos", data_dir=str(tmp_path), image_size=S)
    with pytest.raises(FileNotFoundError, match="MANO model .*nowhere.pkl not found.*model.mano_model=None"):
        build("hand_videos", tmp_path, manual_dir=source, data_config=config,
              mano_model=str(tmp_path / "nowhere.pkl"), verbose=False)


def test_rebuilds_when_the_files_change(tmp_path, capsys):
    root = tmp_path / "videos"
    for name in ("a", "b", "c"):
        _video(root, name, 5, [0, 4])
    config = DataConfig(name="hand_videos", data_dir=str(tmp_path / "data"), image_size=S)
    first = build("hand_videos", config.data_dir, manual_dir=root, data_config=config, mano_model="synthetic")
    # seeded video-level split of 3 videos: one per split
    assert {s: v["videos"] for s, v in first["splits"].items()} == {"train": 1, "val": 1, "test": 1}
    again = build("hand_videos", config.data_dir, manual_dir=root, data_config=config, mano_model="synthetic")
    assert "stale" not in capsys.readouterr().out and again["splits"] == first["splits"]
    for name in ("a", "b", "c"):
        _labels(root / name / "labels.json", [0, 2, 4])
    third = build("hand_videos", config.data_dir, manual_dir=root, data_config=config, mano_model="synthetic")
    assert "stale" in capsys.readouterr().out
    assert sum(s["labels"] for s in third["splits"].values()) == 9


def test_select_labelled_generalises_the_stride_rule():
    for length, stride in ((10, 4), (9, 4), (1, 3), (300, 128), (7, 1)):
        np.testing.assert_array_equal(sparse.select_labelled(np.ones(length, bool), stride),
                                      sparse.labelled_frames(length, stride))
    has = np.zeros(40, bool)
    has[[3, 5, 10, 17, 30, 31]] = True
    np.testing.assert_array_equal(sparse.select_labelled(has, 1), [3, 5, 10, 17, 30, 31])
    np.testing.assert_array_equal(sparse.select_labelled(has, 10), [3, 17, 30, 31])  # >= 10 apart; the last
    lab, scored = sparse.label_sets(40, 10, has)
    np.testing.assert_array_equal(scored, [5, 10])
    assert len(sparse.select_labelled(np.zeros(5, bool), 2)) == 0
    rng = np.random.default_rng(0)  # the samplers with an explicit S_V
    for _ in range(50):
        u, is_lab = sparse.sample_stage3_partner(rng, 17, 40, 10, 5, 2, 0.5, labelled=lab)
        assert (u in lab) == is_lab and (is_lab or abs(u - 17) < 5)
        assert sparse.sample_labelled_partner(rng, 17, 40, 10, 2, labelled=lab) in (3, 17, 30)


def test_box_rule(tmp_path):
    anchors = {2: Box(10.0, 20.0, 8.0), 6: Box(30.0, 20.0, 16.0)}
    out = boxes_lib.interpolate(9, anchors)
    np.testing.assert_allclose(out[[0, 2, 4, 6, 8]], [[10, 20, 8], [10, 20, 8], [20, 20, 12], [30, 20, 16],
                                                      [30, 20, 16]])
    joints = np.zeros((2, 21, 3))
    joints[..., 2] = 0.5
    joints[:, :, 0] = np.linspace(-0.05, 0.05, 21)
    joints[1, :, 2] = -0.5  # behind the camera: no box from this label
    boxes, src = boxes_lib.video_boxes(5, H, W, np.array(K), np.array([0, 4]), joints,
                                       {2: Box(5.0, 6.0, 7.0)})
    assert src.tolist() == ["label", "interpolated", "file", "interpolated", "interpolated"]
    np.testing.assert_allclose(boxes[0], [23.5, 19.5, 1.5 * 12.0])  # 0.1 m at 0.5 m, f = 60: 12 px wide
    np.testing.assert_allclose(boxes[3:], [[5, 6, 7], [5, 6, 7]])
    with pytest.raises(boxes_lib.BoxError, match="no frame has a hand box"):
        boxes_lib.video_boxes(5, H, W, np.array(K), np.array([4]), joints[1:])
    for content, match in (("{oops", "malformed JSON"),
                           ('{"boxes": {"1": [1, 2]}}', "expected \\[cx, cy, side\\]"),
                           ('{"boxes": {"9": [1, 2, 3]}}', "outside the video"),
                           ('{"boxes": {"1": [1, 2, 0]}}', "side > 0")):
        (tmp_path / "b.json").write_text(content)
        with pytest.raises(boxes_lib.BoxError, match=match):
            boxes_lib.read_boxes(tmp_path / "b.json", 5)
    np.save(tmp_path / "b.npy", np.array([[1, 2, 3], [np.nan] * 3]))
    assert list(boxes_lib.read_boxes(tmp_path / "b.npy", 2)) == [0]


def test_propagate_crops_as_the_builder(built, source, tmp_path):
    """The tool on the GIF video (K in the labels, one box from boxes.json, the others from the labels
    and interpolated) sees exactly the builder's crops and K: a stand-in model whose aligner moves
    the root by the difference of two frames' pixels and principal points gives the same result on
    the tool's inputs and on the stored records."""
    import jax.numpy as jnp

    from handprop_jax import config as config_lib
    from handprop_jax.model.api import BoundModel, Features
    from handprop_jax.propagation import cli
    from handprop_jax.propagation.core import propagate_video

    def features(images):
        z = jnp.asarray(images, jnp.float32).reshape(images.shape[0], -1)[:, :512] / 255.0
        return Features(z, z)

    def align(g, a, b):
        shift = jnp.stack([jnp.mean(a.features.z_r - b.features.z_r, -1),
                           (a.K[:, 0, 2] - b.K[:, 0, 2]) * 1e-3, (a.K[:, 0, 0] - b.K[:, 0, 0]) * 1e-3], -1)
        return g._replace(root=g.root + shift)

    net = BoundModel(features=features, regress=None, align=align, image_size=S, batch_size=4)
    run = config_lib.override(config_lib.load("tiny"), [f"data.image_size={S}"])  # synthetic hand
    config, _ = built
    video = open_split(config, "val").video(0)
    lab = np.nonzero(video["has_label"])[0]
    ref = propagate_video(net, video["image"], video["K"], lab, Gamma.of(video).take(lab))
    options = cli.PropagateOptions(boxes=source / "good2" / "boxes.json", method="paper", both_sides=False)
    out = cli.propagate_files(source / "good2" / "clip.gif", source / "good2" / "labels.json", tmp_path / "o",
                              options, bound=(run, net))
    assert out["labelled"].sum() == 3
    for k, v in ref.gamma.as_dict().items():
        np.testing.assert_allclose(out[k], v, rtol=1e-6, atol=1e-7, err_msg=k)
    assert np.abs(ref.gamma.root[1] - ref.gamma.root[0]).max() > 1e-4  # the stand-in aligner did move it
    np.testing.assert_allclose(out["box"][3], [20, 18, 30])
    doc = json.loads((tmp_path / "o" / "annotations.json").read_text())
    assert [e["box_source"] for e in doc["frames_out"]][:4] == ["label", "interpolated", "label", "file"]
    # the left hand and a malformed box file are refused before anything is computed
    with pytest.raises(cli.PropagationInputError, match="left hand"):
        cli.propagate_files(source / "left" / "frames", source / "left" / "labels.json", tmp_path / "o2",
                            cli.PropagateOptions(intrinsics="60,60,23.5,19.5"),
                            bound=(run, net))
    (tmp_path / "bad.json").write_text('{"boxes": {"0": [1, 2]}}')
    with pytest.raises(cli.PropagationInputError, match="--boxes .*bad.json"):
        cli.propagate_files(source / "good2" / "clip.gif", source / "good2" / "labels.json", tmp_path / "o3",
                            cli.PropagateOptions(boxes=tmp_path / "bad.json"),
                            bound=(run, net))
