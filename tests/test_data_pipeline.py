"""tfds builder + grain pipeline on a tiny synthetic build: storage order, label hiding, sampling
rules, determinism, checkpointable state, sharding, evaluation batches, the CLI."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from handprop_jax import config as config_lib
from handprop_jax.data import sparse, train_batches
from handprop_jax.data.clips import clip_iterator
from handprop_jax.data.eval_batches import eval_batches
from handprop_jax.data.features import LABEL_KEYS
from handprop_jax.data.iterators import CombinedIterator
from handprop_jax.data.sources import open_split


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    config = config_lib.load("tiny", [f"data.data_dir={str(data_dir)!r}", "data.synth_videos=[3,1,1]",
                                      "data.synth_frames=11", "data.label_stride=4", "data.max_gap=3",
                                      "train.batch_size=4"])
    from handprop_jax.data.build import build

    summary = build(config.data.name, config.data.data_dir, data_config=config.data, verbose=False)
    return config, summary


def test_build_summary_and_plain_tfds_read(cfg):
    config, summary = cfg
    # 11 frames, K=4: labelled 0, 4, 8, 10 -> 4 per video
    assert summary["splits"]["train"] == {"videos": 3, "frames": 33, "labelled": 12, "skipped": {}}
    assert summary["splits"]["test"]["videos"] == 1
    ds = tfds.data_source("synthetic_hand_video", data_dir=config.data.data_dir, split="train")
    assert len(ds) == 33
    order = [(int(ds[i]["video_id"]), int(ds[i]["frame_index"])) for i in range(len(ds))]
    assert order == [(v, f) for v in range(3) for f in range(11)]  # grouped by video, in frame order
    rec = ds[5]
    assert rec["image"].shape == (32, 32, 3) and rec["image"].dtype == np.uint8
    assert rec["pose"].shape == (48,) and int(rec["video_length"]) == 11


def test_split_table_and_random_access(cfg):
    config, _ = cfg
    sp = open_split(config.data, "train")
    assert sp.table.num_videos == 3 and list(sp.table.lengths) == [11, 11, 11]
    np.testing.assert_array_equal(sp.labelled_positions, [0, 4, 8, 10, 11, 15, 19, 21, 22, 26, 30, 32])
    f = sp.frame(2, 7)
    assert int(f["video_id"]) == 2 and int(f["frame_index"]) == 7
    assert set(sp.frame(2, 7, with_labels=False)) == {"image", "K", "video_id", "frame_index"}
    video = sp.video(1)
    np.testing.assert_array_equal(video["frame_index"], np.arange(11))
    np.testing.assert_allclose(video["joints3d"][:, 0], video["root"], atol=1e-6)


def _labelled(frame, stride=4, length=11):
    return np.isin(frame, sparse.labelled_frames(length, stride))


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_training_batches_never_carry_unlabelled_labels(cfg):
    config, _ = cfg
    b1, b2, b3 = (_take(train_batches.train_iterator(config, s, 0, 1), 6) for s in (1, 2, 3))
    for b in b1:
        assert set(LABEL_KEYS) <= set(b) and b["image"].shape == (4, 32, 32, 3)
        assert _labelled(b["frame_index"]).all()
    for b in b2:
        for f in (b["s"], b["u"]):
            assert set(LABEL_KEYS) <= set(f) and _labelled(f["frame_index"]).all()
        np.testing.assert_array_equal(b["s"]["video_id"], b["u"]["video_id"])
    saw_unlabelled = False
    for b in b3:
        assert set(b) == {"s", "u", "u_labelled"}
        assert not set(LABEL_KEYS) & set(b["u"])  # u never carries labels
        assert set(LABEL_KEYS) <= set(b["s"]) and _labelled(b["s"]["frame_index"]).all()
        np.testing.assert_array_equal(b["u_labelled"], _labelled(b["u"]["frame_index"]))
        saw_unlabelled |= not b["u_labelled"].all()
    assert saw_unlabelled
    # the labels in stage-1/2 batches are those of the stored labelled frames
    sp = open_split(config.data, "train")
    for i in range(4):
        ref = sp.frame(int(b1[0]["video_id"][i]), int(b1[0]["frame_index"][i]))
        np.testing.assert_array_equal(b1[0]["pose"][i], ref["pose"])


def test_partner_rules(cfg):
    config, _ = cfg
    lab = sparse.labelled_frames(11, 4)  # 0 4 8 10
    three = {int(s): set(sparse.n_nearest_labelled(11, 4, 3)[i].tolist()) for i, s in enumerate(lab)}
    for b in _take(train_batches.train_iterator(config, 2, 0, 1), 8):
        for s, u in zip(b["s"]["frame_index"], b["u"]["frame_index"], strict=True):
            assert int(u) in three[int(s)]
    for b in _take(train_batches.train_iterator(config, 3, 0, 1), 8):
        for s, u, ul in zip(b["s"]["frame_index"], b["u"]["frame_index"], b["u_labelled"], strict=True):
            assert (int(u) in three[int(s)]) if ul else (abs(int(u) - int(s)) < 3)


def test_deterministic_resumable_and_sharded(cfg):
    config, _ = cfg
    first = _take(train_batches.train_iterator(config, 3, 0, 1), 5)
    second = _take(train_batches.train_iterator(config, 3, 0, 1), 5)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a["u"]["image"], b["u"]["image"])
        np.testing.assert_array_equal(a["s"]["frame_index"], b["s"]["frame_index"])
    it = train_batches.train_iterator(config, 3, 0, 1)
    _take(it, 2)
    state = it.get_state()
    resumed = train_batches.train_iterator(config, 3, 0, 1)
    resumed.set_state(state)
    for a, b in zip(first[2:], _take(resumed, 3), strict=True):
        np.testing.assert_array_equal(a["s"]["video_id"], b["s"]["video_id"])
        np.testing.assert_array_equal(a["u"]["frame_index"], b["u"]["frame_index"])
    other = dataclasses.replace(config, data=dataclasses.replace(config.data, seed=1))
    assert any(not np.array_equal(a["s"]["frame_index"], b["s"]["frame_index"])
               for a, b in zip(first, _take(train_batches.train_iterator(other, 3, 0, 1), 5), strict=True))
    # two processes: half the global batch each, disjoint anchors within an epoch
    shards = [train_batches.train_iterator(config, 1, i, 2) for i in range(2)]
    seen = [set(), set()]
    for i, it in enumerate(shards):
        for b in _take(it, 3):  # 12 labelled anchors / 2 shards / 2 per batch = 3 batches = 1 epoch
            assert b["image"].shape[0] == 2
            seen[i] |= {(int(v), int(f)) for v, f in zip(b["video_id"], b["frame_index"], strict=True)}
    assert len(seen[0]) == len(seen[1]) == 6 and not seen[0] & seen[1]


def _same_batches(got, want):
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        for k in w:
            if isinstance(w[k], dict):
                _same_batches([g[k]], [w[k]])
            else:
                np.testing.assert_array_equal(g[k], w[k], strict=True)


def test_comparison_batches_resume_from_the_old_checkpoint_encodings(cfg):
    """The consistency phase's batches (was ZipIterator: dict state) and the temporal phase's (was
    JointIterator: bytes state) resume from states in those encodings, built from the parts' grain
    states as the old code built them, with the batches of the uninterrupted iterator."""
    config, _ = cfg
    want = _take(train_batches.labelled_and_pairs(config, 0, 1), 4)
    parts = {"labelled": train_batches.train_iterator(config, 1, 0, 1),
             "pairs": train_batches.neighbour_pairs(config, 0, 1)}
    for it in parts.values():
        _take(it, 2)
    resumed = train_batches.labelled_and_pairs(config, 0, 1)
    resumed.set_state({name: it.get_state().decode("latin-1") for name, it in parts.items()})
    _same_batches(_take(resumed, 2), want[2:])

    def frames_and_clips():
        return {"frames": train_batches.train_iterator(config, 1, 0, 1),
                "clips": clip_iterator(config, 3, 2, 0, 1, with_labelled_labels=True, seed_offset=7000)}

    want = _take(CombinedIterator(frames_and_clips()), 4)
    assert not np.array_equal(want[1]["clips"]["image"], want[3]["clips"]["image"])
    parts = frames_and_clips()
    for it in parts.values():
        _take(it, 1)
    old = json.dumps({name: it.get_state().decode("latin-1") for name, it in parts.items()}).encode("latin-1")
    resumed = CombinedIterator(frames_and_clips())
    resumed.set_state(old)
    _same_batches(_take(resumed, 3), want[1:])


def test_validation_and_evaluation_batches(cfg):
    config, _ = cfg
    val = list(train_batches.val_batches(config, 2, 0, 1))
    assert len(val) == 1 and val[0]["s"]["image"].shape[0] == 4  # 4 labelled val frames
    ev1 = list(eval_batches(config.data, "train", 1, batch_size=5))
    n_unlab = 33 - 12
    assert len(ev1) == -(-n_unlab // 5) and int(sum(b["mask"].sum() for b in ev1)) == n_unlab
    assert not ev1[-1]["mask"][-4:].any() and ev1[-1]["image"].shape[0] == 5
    frames = np.concatenate([b["frame_index"][b["mask"]] for b in ev1])
    assert not _labelled(frames).any() and set(LABEL_KEYS) <= set(ev1[0])
    ev2 = list(eval_batches(config.data, "train", 2, batch_size=8))
    for b in ev2:
        m = b["mask"]
        u, s = b["u"]["frame_index"][m], b["s"]["frame_index"][m]
        np.testing.assert_array_equal(s, sparse.nearest_labelled(11, 4)[u])
        np.testing.assert_array_equal(b["gap"][m], np.abs(u - s))
        np.testing.assert_array_equal(b["u"]["video_id"][m], b["s"]["video_id"][m])


def test_cli_build_is_idempotent_and_reports(cfg, capsys):
    config, _ = cfg
    from handprop_jax.cli import main

    rc = main(["data", "build", "synthetic_hand_video", "--data-dir", config.data.data_dir,
               "--config", "tiny", "--set", "data.synth_videos=[3,1,1]", "--set", "data.synth_frames=11"])
    out = capsys.readouterr().out
    assert rc == 0 and "train" in out and "33" in out and "labelled (K=4)" in out
    with pytest.raises(FileNotFoundError, match="handprop data build"):
        bad = dataclasses.replace(config.data, data_dir=config.data.data_dir + "_missing")
        open_split(bad, "train")
    with pytest.raises(ValueError, match="does not match"):
        open_split(dataclasses.replace(config.data, synth_frames=12), "train")


def test_export_example_in_the_tool_formats(cfg, tmp_path):
    """export_example writes a built video as handprop propagate reads it: frames, labels at the
    evaluation's labelled frames, per-frame intrinsics, ground truth."""
    from handprop_jax.data.export import ExportError, export_example
    from handprop_jax.errors import UserError
    from handprop_jax.gamma import Gamma
    from handprop_jax.propagation import inputs as P

    config, _ = cfg
    files = export_example(config, "test", 0, tmp_path / "ex")
    video = open_split(config.data, "test").video(0)
    names, crops, _, _ = P.load_frames(files["frames"], config.data.image_size)
    assert len(names) == 11
    np.testing.assert_array_equal(crops, video["image"])  # PNG round trip and identity crop
    lab, gamma, K = P.load_labels(files["labels"], len(names))
    np.testing.assert_array_equal(lab, [0, 4, 8, 10])
    assert K is None
    for got, want in zip(gamma, Gamma.of(video).take(lab), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(P.parse_intrinsics(str(files["intrinsics"])), video["K"], rtol=1e-6)
    with pytest.raises(ExportError, match="videos 0..0, not 3") as e:
        export_example(config, "test", 3, tmp_path / "bad")
    assert isinstance(e.value, UserError)  # handprop reports it in one line


def test_pseudo_labels_interpolate_from_labelled_frames_only(cfg, monkeypatch):
    """Phase ``pseudo``: the propagated labels of every unlabelled train frame (here plain
    interpolation, checked by hand against the two labelled neighbours), computed without reading any
    unlabelled frame's ground truth, cached, and served by the phase's examples."""
    import jax.numpy as jnp

    from handprop_jax.camera import project
    from handprop_jax.data.sources import Split
    from handprop_jax.gamma import Gamma
    from handprop_jax.hand import default_mano, hand_in_camera
    from handprop_jax.training import pseudo

    config, _ = cfg
    config = config_lib.override(config, ["propagation.method='copy'"])
    sp = open_split(config.data, "train")
    read_with_labels = []
    original = Split.example

    def spy(self, record, with_labels):
        if with_labels:
            read_with_labels.append((int(record["video_id"]), int(record["frame_index"])))
        return original(self, record, with_labels)

    monkeypatch.setattr(Split, "example", spy)
    labels = pseudo.pseudo_labels(config, "train", progress=False, split_data=sp)
    # only labelled frames' labels were read
    assert read_with_labels and all(_labelled(f) for _, f in read_with_labels)
    np.testing.assert_array_equal(labels["positions"], np.nonzero(~sp.labelled)[0])
    truth = sp.frames(range(len(sp)))
    for row, p in enumerate(labels["positions"][:9]):  # video 0: frames 1-3, 5-7, 9 between 0,4,8,10
        f = int(truth["frame_index"][p])
        left = {1: 0, 2: 0, 3: 0, 5: 4, 6: 4, 7: 4, 9: 8}[f]
        right = {0: 4, 4: 8, 8: 10}[left]
        w = (f - left) / (right - left)
        np.testing.assert_allclose(labels["root"][row],
                                   (1 - w) * truth["root"][p - f + left] + w * truth["root"][p - f + right],
                                   atol=1e-6)
        np.testing.assert_allclose(labels["betas"][row],
                                   (1 - w) * truth["betas"][p - f + left] + w * truth["betas"][p - f + right],
                                   atol=1e-6)
    # joints are the MANO joints of the propagated γ, joints2d their projection
    _, joints = hand_in_camera(default_mano(config), *Gamma.of(labels))
    np.testing.assert_allclose(labels["joints3d"], joints, atol=1e-6)
    uv = project(joints, jnp.asarray(truth["K"][labels["positions"]]))
    np.testing.assert_allclose(labels["joints2d"], uv, atol=1e-3)
    # cached: read back without propagating; another propagation setting is another file
    path = pseudo.cache_path(config)
    assert path.is_file() and path.parent.parent == Path(config.data.data_dir)
    monkeypatch.setattr(pseudo, "propagate_video", None)  # no propagation: the cache is read
    again = pseudo.pseudo_labels(config, "train", progress=False)
    np.testing.assert_array_equal(again["pose"], labels["pose"])
    other = config_lib.override(config, ["propagation.method='crop'"])
    assert pseudo.cache_path(other) != path

    # examples: fraction 1 = an unlabelled frame of the anchor's video with its pseudo-label;
    # fraction 0 = the labelled anchor with its own label
    rng = np.random.default_rng(0)
    always = pseudo.PseudoExample(sp, labels, 1.0)
    for anchor in sp.labelled_positions[:6]:
        ex = always.random_map(int(anchor), rng)
        p = int(sp.table.position(int(ex["video_id"]), int(ex["frame_index"])))
        assert not sp.labelled[p] and int(ex["video_id"]) == int(truth["video_id"][anchor])
        row = int(np.searchsorted(labels["positions"], p))
        for k in LABEL_KEYS:
            np.testing.assert_array_equal(ex[k], labels[k][row])
    never = pseudo.PseudoExample(sp, labels, 0.0)
    ex = never.random_map(int(sp.labelled_positions[1]), rng)
    np.testing.assert_array_equal(ex["pose"], truth["pose"][sp.labelled_positions[1]])
    with pytest.raises(ValueError, match="do not cover"):
        pseudo.PseudoExample(sp, {k: v[1:] for k, v in labels.items()}, 0.5)
