"""handprop propagate: rotation blending, neighbours, exactness against copy-propagation, the
input errors and the output schema (with a stand-in model; the real network is exercised by the
evaluation tests)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from handprop_jax import config as config_lib
from handprop_jax.batching import batched
from handprop_jax.data.sparse import neighbours
from handprop_jax.errors import UserError
from handprop_jax.gamma import Gamma, blend
from handprop_jax.hand import hand_mesh
from handprop_jax.model.api import BoundModel, Features
from handprop_jax.propagation import cli, core
from handprop_jax.propagation import inputs as I

S = 16  # crop side of the stand-in predictor (S*S*3 >= 512 features)


#: one label entry in the JSON schema
ENTRY = json.dumps({"root": [0, 0, 0.5], "pose": [0] * 48, "betas": [0] * 10})


def _labels_text(*entries: tuple[str, str]) -> str:
    """A labels.json text with the given (key, entry text) pairs, repeated keys kept."""
    return '{"labels": {' + ", ".join(f'"{k}": {v}' for k, v in entries) + "}}"


def _fake_model(align=None):
    """Features = the first 512 pixel values; regress = a fixed hand; align = γ_b (a zero aligner)
    unless another ``align(gamma_b, frame_a, frame_b)`` is given."""

    def features(images):
        z = jnp.asarray(images, jnp.float32).reshape(images.shape[0], -1)[:, :512] / 255.0
        return Features(z, 2 * z)

    def regress(z, K):
        B = z.z_r.shape[0]
        return Gamma(jnp.tile(jnp.array([[0.0, 0.0, 0.5]]), (B, 1)) + z.z_r[:, :3] * 0.01,
                     jnp.zeros((B, 48)), jnp.zeros((B, 10)))

    return BoundModel(features=features, regress=regress, align=align or (lambda g, a, b: Gamma.of(g)),
                      image_size=S, batch_size=4)


def _offset_align(offset):
    return lambda g, a, b: g._replace(root=g.root + jnp.asarray(offset))


@pytest.fixture(scope="module")
def config():
    return config_lib.override(config_lib.load("tiny"), [f"data.image_size={S}"])


def _gamma(rng, n):
    return Gamma((rng.normal(size=(n, 3)) * 0.05 + [0, 0, 0.5]).astype(np.float32),
                 (rng.normal(size=(n, 48)) * 0.5).astype(np.float32),
                 (rng.normal(size=(n, 10)) * 0.5).astype(np.float32))


def _K(T):
    return np.tile(np.array([[30.0, 0, 7.5], [0, 30.0, 7.5], [0, 0, 1]], np.float32), (T, 1, 1))


def test_blend_is_not_axis_angle_average():
    # two rotations by 170 degrees about z and about -z+eps: the geodesic midpoint is near 180 deg
    # about z; averaging the vectors gives almost the identity
    a = np.array([[0, 0, np.deg2rad(170)]] * 16, np.float32).reshape(1, 48)
    b = np.array([[0, 0, -np.deg2rad(170)]] * 16, np.float32).reshape(1, 48)
    g = lambda p: Gamma(np.zeros((1, 3), np.float32), p, np.zeros((1, 10), np.float32))
    mid = np.asarray(blend(g(a), g(b), jnp.array([0.5])).pose).reshape(16, 3)
    angle = np.linalg.norm(mid, axis=-1)
    np.testing.assert_allclose(angle, np.pi, atol=1e-3)
    # exact endpoints
    for w, ref in ((0.0, a), (1.0, b)):
        np.testing.assert_array_equal(np.asarray(blend(g(a), g(b), jnp.array([w])).pose), ref)


def test_neighbours_hand_computed():
    nb = neighbours(10, np.array([2, 6]))
    np.testing.assert_array_equal(nb["left"], [-1, -1, 2, 2, 2, 2, 6, 6, 6, 6])
    np.testing.assert_array_equal(nb["right"], [2, 2, 2, 6, 6, 6, 6, -1, -1, -1])
    np.testing.assert_array_equal(nb["nearest"], [2, 2, 2, 2, 2, 6, 6, 6, 6, 6])  # tie at 4 → earlier
    np.testing.assert_array_equal(nb["gap"], [2, 1, 0, 1, 2, 1, 0, 1, 2, 3])
    np.testing.assert_allclose(nb["weight"], [1, 1, 0, 0.25, 0.5, 0.75, 0, 0, 0, 0])


def test_zero_aligner_equals_copy_propagation():
    rng = np.random.default_rng(0)
    T, lab = 11, np.array([0, 4, 10])
    images = rng.integers(0, 255, (T, S, S, 3), dtype=np.uint8)
    labels = _gamma(rng, len(lab))
    out = core.propagate_video(_fake_model(), images, _K(T), lab, labels)
    nearest = neighbours(T, lab)["nearest"]
    row = {f: i for i, f in enumerate(lab)}
    for got, want in zip(out.gamma, labels.take([row[s] for s in nearest]), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(out.labelled, np.isin(np.arange(T), lab))
    np.testing.assert_array_equal(out.source[:, 0], nearest)
    # a non-zero aligner moves exactly the unlabelled frames
    moved = core.propagate_video(_fake_model(_offset_align([0.01, 0, 0])), images, _K(T), lab, labels)
    diff = moved.gamma.root[:, 0] - out.gamma.root[:, 0]
    np.testing.assert_allclose(diff, np.where(out.labelled, 0.0, 0.01), atol=1e-7)


def test_aligner_sees_both_frames_features_and_intrinsics():
    """align(γ*_s, frame_u, frame_s): frame records carry each frame's own features and K."""
    rng = np.random.default_rng(4)
    T, lab = 7, np.array([0, 6])
    images = rng.integers(0, 255, (T, S, S, 3), dtype=np.uint8)
    K = _K(T)
    K[:, 0, 2] += np.arange(T)  # a principal point that identifies the frame
    seen = []

    def align(g, frame_a, frame_b):
        seen.append((np.asarray(frame_a.K[:, 0, 2]), np.asarray(frame_b.K[:, 0, 2]),
                     np.asarray(frame_a.features.z_r[:, 0]), np.asarray(frame_b.features.z_r[:, 0])))
        return Gamma.of(g)

    core.propagate_video(_fake_model(align), images, K, lab, _gamma(rng, 2))
    cx_a = np.concatenate([s[0] for s in seen])[:5]  # the first batches cover u = 1..5
    cx_b = np.concatenate([s[1] for s in seen])[:5]
    np.testing.assert_allclose(cx_a - 7.5, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(cx_b - 7.5, [0, 0, 0, 6, 6])  # N(u), the tie at 3 to the earlier frame
    z = images.reshape(T, -1)[:, 0] / 255.0
    np.testing.assert_allclose(np.concatenate([s[2] for s in seen])[:5], z[1:6], rtol=1e-6)
    np.testing.assert_allclose(np.concatenate([s[3] for s in seen])[:5], z[[0, 0, 0, 6, 6]], rtol=1e-6)


def test_both_sides_nearest_equals_nearest_only_run():
    """The ``nearest`` result of a both-sides run (reused by the evaluation) is the nearest-only run,
    with an aligner whose output depends on which labelled frame it starts from."""
    rng = np.random.default_rng(2)
    T, lab = 13, np.array([2, 5, 11])  # frames before the first / after the last label, a tie at 8
    images = rng.integers(0, 255, (T, S, S, 3), dtype=np.uint8)
    labels = _gamma(rng, len(lab))
    model = _fake_model(lambda g, a, b: g._replace(
        root=g.root + 0.1 * (a.features.z_r[:, :3] - b.features.z_r[:, :3])))
    near = core.propagate_video(model, images, _K(T), lab, labels)
    both = core.propagate_video(model, images, _K(T), lab, labels, both_sides=True)
    assert near.nearest is None
    for got, want in zip(both.nearest, near.gamma, strict=True):
        np.testing.assert_array_equal(got, want)
    assert not np.allclose(both.gamma.root, near.gamma.root)  # the blend itself differs


def test_both_sides_recovers_geodesic_motion():
    """GT moving at constant speed along a geodesic (pose), a line (root) between two labels: blending
    the two copies by temporal distance reproduces every frame; nearest-only copying does not."""
    rng = np.random.default_rng(1)
    T = 9
    ends = _gamma(rng, 2)
    t = np.arange(T) / (T - 1)
    truth = blend(ends.take(np.zeros(T, int)), ends.take(np.ones(T, int)), jnp.asarray(t, jnp.float32))
    truth = truth.numpy()
    lab = np.array([0, T - 1])
    images = np.zeros((T, S, S, 3), np.uint8)
    both = core.propagate_video(_fake_model(), images, _K(T), lab, truth.take(lab), both_sides=True)
    near = core.propagate_video(_fake_model(), images, _K(T), lab, truth.take(lab), both_sides=False)
    for got, want in zip(both.gamma, truth, strict=True):
        np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.abs(near.gamma.root - truth.root).max() > 1e-3
    np.testing.assert_allclose(both.weight.sum(-1), 1.0)


def test_batched_pads_the_last_batch_and_keeps_pytrees():
    calls = []

    def fn(g, x):
        calls.append(x.shape[0])
        return Gamma(g.root * x[:, None], g.pose, g.betas), x + 1

    g = _gamma(np.random.default_rng(5), 7)
    x = np.arange(7.0, dtype=np.float32)
    out_g, out_x = batched(fn, g, x, batch_size=3)
    assert calls == [3, 3, 3]  # 7 rows: the last batch is padded to 3, never a new shape
    assert isinstance(out_g, Gamma) and out_g.root.shape == (7, 3)
    np.testing.assert_allclose(out_g.root, g.root * x[:, None])
    np.testing.assert_array_equal(out_x, x + 1)
    with pytest.raises(ValueError, match="0 rows"):
        batched(fn, g.take(slice(0, 0)), x[:0], batch_size=3)


def _write_frames(folder, n, size=(24, 20), seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            folder / f"frame_{i}.png")
    return folder


def _write_labels(path, frames, rng, with_k=False):
    g = _gamma(rng, len(frames))
    data = {"labels": {str(f): {k: v[i].tolist() for k, v in g.as_dict().items()}
                       for i, f in enumerate(frames)}}
    if with_k:
        data["K"] = [[30.0, 0, 12], [0, 30.0, 10], [0, 0, 1]]
    path.write_text(json.dumps(data))
    return g


@pytest.fixture()
def video(tmp_path):
    rng = np.random.default_rng(0)
    frames = _write_frames(tmp_path / "frames", 12)
    labels = tmp_path / "labels.json"
    g = _write_labels(labels, [0, 5, 11], rng)
    return frames, labels, g


def test_output_schema_and_values(tmp_path, video, config):
    frames, labels, g = video
    out = tmp_path / "out"
    arrays = cli.propagate_files(frames, labels, out,
                                 cli.PropagateOptions(intrinsics="30,30,12,10", both_sides=True,
                                                      method="paper"),
                                 bound=(config, _fake_model()))
    npz = dict(np.load(out / "annotations.npz"))
    shapes = {"frame_index": (12,), "labelled": (12,), "source": (12, 2), "weight": (12, 2), "root": (12, 3),
              "pose": (12, 48), "betas": (12, 10), "joints3d": (12, 21, 3), "joints2d": (12, 21, 2),
              "K": (12, 3, 3), "box": (12, 3)}
    assert {k: v.shape for k, v in npz.items()} == shapes
    # labelled frames keep their labels; 10 < 11 sorted numerically, frame order by number
    for i, f in enumerate([0, 5, 11]):
        for k, v in g.as_dict().items():
            np.testing.assert_allclose(npz[k][f], v[i], rtol=1e-6)
    # the 3D joints are the MANO joints of γ, the 2D joints their projection in the original frame
    from handprop_jax.hand import default_mano

    _, joints = hand_mesh(default_mano(config), Gamma.of(npz))
    np.testing.assert_allclose(npz["joints3d"], joints, atol=1e-6)
    uv = 30 * npz["joints3d"][..., :2] / npz["joints3d"][..., 2:] + np.array([12, 10])
    np.testing.assert_allclose(npz["joints2d"], uv, rtol=1e-4, atol=1e-3)
    doc = json.loads((out / "annotations.json").read_text())
    assert len(doc["frames_out"]) == 12 and doc["both_sides"] is True
    e = doc["frames_out"][3]
    assert e["file"] == "frame_3.png" and e["labelled"] is False and e["sources"] == [0, 5]
    assert e["weights"] == pytest.approx([0.4, 0.6])
    assert np.array(e["joints3d"]).shape == (21, 3) and len(e["pose"]) == 48
    np.testing.assert_allclose(e["root"], arrays["root"][3], atol=1e-6)


def test_gif_video_and_intrinsics_in_labels(tmp_path, config):
    rng = np.random.default_rng(2)
    frames = [Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)) for _ in range(6)]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=40)
    labels = tmp_path / "l.json"
    _write_labels(labels, [2], rng, with_k=True)
    arrays = cli.propagate_files(gif, labels, tmp_path / "o",
                                 cli.PropagateOptions(method="paper", both_sides=False),
                                 bound=(config, _fake_model()))
    assert arrays["root"].shape == (6, 3) and arrays["labelled"].sum() == 1
    np.testing.assert_array_equal(arrays["source"][:, 0], 2)  # a single label feeds every frame


def test_npz_labels(tmp_path, video, config):
    frames, _, _ = video
    rng = np.random.default_rng(3)
    g = _gamma(rng, 2)
    np.savez(tmp_path / "l.npz", frames=np.array([7, 1]), **g.as_dict())
    lab, gamma, K = I.load_labels(tmp_path / "l.npz", 12)
    np.testing.assert_array_equal(lab, [1, 7])  # sorted, labels follow
    np.testing.assert_array_equal(gamma.pose[0], g.pose[1])
    assert K is None


@pytest.mark.parametrize("content, match", [
    ("{not json", "malformed JSON"),
    ('{"labels": {"0": {"root": [0, 0, 0.5], "pose": %s}}}' % ([0] * 48), "frame 0: missing key 'betas'"),
    ('{"labels": {"0": {"root": [0, 0], "pose": [0], "betas": [0]}}}', r"'root' has shape \(2,\)"),
    ('{"labels": {"abc": {}}}', "not a frame index"),
    ('{"labels": {}}', "no labelled frame"),
    ('{"labels": [1, 2]}', "must map frame index"),
    # JSON keeps the last of two equal keys: a frame labelled twice is refused, not half-used
    (_labels_text(("16", ENTRY), ("4", ENTRY), ("16", ENTRY)), "labels.json: frame 16 is labelled twice"),
    (_labels_text(("16", ENTRY), ("016", ENTRY)), r"frame 16 is labelled twice \(keys '16', '016'\)"),
    (_labels_text(("2", '{"root": [0, 0, 1], ' + ENTRY[1:])), "frame 2: key 'root' appears twice"),
    (_labels_text(("0", ENTRY), ("5", ENTRY.replace("0.5", "NaN"))), "frame 5: 'root' contains NaN"),
    (_labels_text(("5", ENTRY.replace("0.5", "Infinity"))), "frame 5: 'root' contains NaN or inf"),
])
def test_malformed_labels(tmp_path, content, match):
    path = tmp_path / "labels.json"
    path.write_text(content)
    with pytest.raises(I.PropagationInputError, match=match):
        I.load_labels(path, 20)


def _npz_bytes(**arrays):
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


GOOD_NPZ = dict(frames=np.array([0, 3]), root=np.tile([0, 0, 0.5], (2, 1)), pose=np.zeros((2, 48)),
                betas=np.zeros((2, 10)))


@pytest.mark.parametrize("content, match", [
    (b"PK\x03\x04 not really a zip", "not a readable .npz"),
    (_npz_bytes(**GOOD_NPZ)[:300], "not a readable .npz|cannot be read"),  # truncated
    (b"\x93NUMPY garbage", "not a readable .npz"),
    (_npz_bytes(**{**GOOD_NPZ, "pose": np.zeros((2, 47))}), r"'pose' has shape \(2, 47\) \(float64\), "
                                                             r"expected \(2, 48\)"),
    (_npz_bytes(**{**GOOD_NPZ, "betas": np.array(["a"] * 20).reshape(2, 10)}), "'betas' has shape"),
    (_npz_bytes(**{**GOOD_NPZ, "frames": np.array([[0, 3]])}), r"'frames' must be a 1-D integer array"),
    (_npz_bytes(**{**GOOD_NPZ, "frames": np.array([3, 3])}), "frame 3 is labelled twice"),
    (_npz_bytes(**{**GOOD_NPZ, "frames": np.array([None, 3], object)}), "array 'frames' cannot be read"),
])
def test_malformed_npz_labels(tmp_path, content, match):
    """Every read error of an .npz names the file (and the array, with its shape)."""
    path = tmp_path / "labels.npz"
    path.write_bytes(content)
    with pytest.raises(I.PropagationInputError, match=match) as e:
        I.load_labels(path, 10)
    assert str(e.value).startswith(f"{path}: ")
    assert I.label_side(path) == "right"  # the side of a file it cannot read: load_labels says why


def test_cli_names_a_bad_labels_file_in_one_line(tmp_path, video, capsys):
    from handprop_jax.cli import main

    frames, _, _ = video
    dup = tmp_path / "dup.json"
    dup.write_text(_labels_text(("0", ENTRY), ("16", ENTRY), ("16", ENTRY)))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(_npz_bytes(**GOOD_NPZ)[:300])
    for labels, what in ((dup, "frame 16 is labelled twice"), (bad, "")):
        assert main(["propagate", "--frames", str(frames), "--labels", str(labels), "--intrinsics",
                     "30,30,12,10", "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("handprop propagate: ") and f"{labels}: {what}" in err, err
        assert err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_label_outside_video(tmp_path, video, config):
    frames, _, _ = video
    labels = tmp_path / "far.json"
    _write_labels(labels, [0, 12], np.random.default_rng(0))
    with pytest.raises(I.PropagationInputError, match="frame index 12 is outside the video"):
        cli.propagate_files(frames, labels, tmp_path / "o",
                            cli.PropagateOptions(intrinsics="30,30,12,10", method="paper"),
                            bound=(config, _fake_model()))


def test_npz_missing_arrays(tmp_path):
    np.savez(tmp_path / "l.npz", frames=np.array([0]), root=np.zeros((1, 3)))
    with pytest.raises(I.PropagationInputError, match="missing arrays"):
        I.load_labels(tmp_path / "l.npz")


def test_missing_intrinsics(tmp_path, video, config):
    frames, labels, _ = video
    with pytest.raises(I.PropagationInputError, match="missing intrinsics"):
        cli.propagate_files(frames, labels, tmp_path / "o", cli.PropagateOptions(method="paper"),
                            bound=(config, _fake_model()))
    with pytest.raises(I.PropagationInputError, match="fx,fy,cx,cy"):
        I.parse_intrinsics("30,30,12")


def test_unreadable_frames(tmp_path, video, config):
    frames, labels, _ = video
    (frames / "frame_99.png").write_bytes(b"this is not a png")
    with pytest.raises(I.PropagationInputError, match="frame_99.png: unreadable frame"):
        cli.propagate_files(frames, labels, tmp_path / "o",
                            cli.PropagateOptions(intrinsics="30,30,12,10", method="paper"),
                            bound=(config, _fake_model()))
    with pytest.raises(I.PropagationInputError, match="no frame images"):
        I.list_frames(tmp_path)
    bad = tmp_path / "video.mp4"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(I.PropagationInputError, match="unreadable video"):
        I.list_frames(bad)


def test_frames_of_different_sizes(tmp_path, config):
    frames = _write_frames(tmp_path / "f", 3)
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(frames / "frame_3.png")
    with pytest.raises(I.PropagationInputError, match="all frames must have one size"):
        I.load_frames(frames, S)


def test_cli_reports_errors(tmp_path, video, capsys):
    from handprop_jax.cli import main

    frames, labels, _ = video
    code = main(["propagate", "--checkpoint", str(tmp_path / "nope"), "--frames", str(frames), "--labels",
                 str(labels), "--intrinsics", "30,30,12,10", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "no such run folder" in capsys.readouterr().err
    code = main(["propagate", "--checkpoint", str(tmp_path), "--frames", str(frames), "--labels",
                 str(labels), "--out", str(tmp_path / "o")])
    assert code == 2 and "missing intrinsics" in capsys.readouterr().err


def test_per_frame_intrinsics(tmp_path, video, config):
    frames, labels, _ = video
    K = np.tile(np.array([[30.0, 0, 12], [0, 30.0, 10], [0, 0, 1]]), (12, 1, 1))
    K[:, 0, 2] += np.arange(12)  # a principal point that moves with the frame
    np.save(tmp_path / "K.npy", K)
    arrays = cli.propagate_files(frames, labels, tmp_path / "o",
                                 cli.PropagateOptions(intrinsics=str(tmp_path / "K.npy"), method="paper"),
                                 bound=(config, _fake_model()))
    j = arrays["joints3d"]
    np.testing.assert_allclose(arrays["joints2d"][..., 0], 30 * j[..., 0] / j[..., 2] + K[:, None, 0, 2],
                               rtol=1e-4, atol=1e-3)
    np.save(tmp_path / "K5.npy", K[:5])
    with pytest.raises(I.PropagationInputError, match="5 per-frame intrinsics for 12 frames"):
        cli.propagate_files(frames, labels, tmp_path / "o",
                            cli.PropagateOptions(intrinsics=str(tmp_path / "K5.npy"), method="paper"),
                            bound=(config, _fake_model()))


def test_cli_methods_without_checkpoint(tmp_path, video, capsys):
    """Without a run, ``--method copy`` copies the nearest label unchanged, ``interpolate`` keeps the
    crop-aware root's pixel position fixed between the two labels (hand-computed from the labels),
    and ``paper`` asks for a checkpoint."""
    from handprop_jax.cli import main

    frames, labels, g = video  # labels at 0, 5, 11 of 12 frames (24 x 20 px), fx = fy = 30
    base = ["propagate", "--frames", str(frames), "--labels", str(labels), "--intrinsics", "30,30,12,10",
            "--crop", "12", "10", "20", "--set", f"data.image_size={S}"]
    assert main([*base, "--method", "copy", "--nearest-only", "--out", str(tmp_path / "c")]) == 0
    copy = np.load(tmp_path / "c" / "annotations.npz")
    for u, s in [(1, 0), (3, 5), (8, 5), (9, 11)]:  # ties (none here) would go to the earlier label
        for k, v in g.as_dict().items():
            np.testing.assert_array_equal(copy[k][u], v[[0, 5, 11].index(s)], err_msg=f"{k} of {u}")
    assert json.loads((tmp_path / "c" / "annotations.json").read_text())["method"] == "copy"

    assert main([*base, "--method", "interpolate", "--out", str(tmp_path / "i")]) == 0
    inter = np.load(tmp_path / "i" / "annotations.npz")
    # every frame shares one crop box here, so crop-aware = plain: the root moves linearly between labels
    w = 3 / 5
    np.testing.assert_allclose(inter["root"][3], (1 - w) * g.root[0] + w * g.root[1], atol=1e-6)
    np.testing.assert_allclose(inter["betas"][3], (1 - w) * g.betas[0] + w * g.betas[1], atol=1e-6)
    np.testing.assert_array_equal(inter["source"][3], [0, 5])
    # interpolate runs as crop with both sides (same arrays) but records the method it was given
    assert main([*base, "--method", "crop", "--out", str(tmp_path / "k")]) == 0
    crop = np.load(tmp_path / "k" / "annotations.npz")
    for k in inter.files:
        np.testing.assert_array_equal(inter[k], crop[k], err_msg=k)
    recorded = {m: json.loads((tmp_path / m / "annotations.json").read_text()) for m in ("i", "k")}
    assert recorded["i"]["method"] == "interpolate" and recorded["k"]["method"] == "crop"
    assert recorded["i"]["both_sides"] is True and recorded["k"]["both_sides"] is True
    capsys.readouterr()
    for m, name in (("i", "interpolate"), ("k", "crop")):  # score names them as recorded
        assert main(["score", "--pred", str(tmp_path / m), "--truth", str(tmp_path / m)]) == 0
        assert capsys.readouterr().out.startswith(f"**{name}: unlabelled frames of 1 video(s)")

    assert main([*base, "--method", "paper", "--out", str(tmp_path / "p")]) == 2
    assert "--method paper needs --checkpoint" in capsys.readouterr().err
    assert main([*base, "--config", "no_such_config", "--out", str(tmp_path / "p")]) == 2
    assert "no_such_config" in capsys.readouterr().err


#: a fast CLI run: copy-propagation in one fixed box (no network, no box from the labels)
FAST = ["--intrinsics", "30,30,12,10", "--crop", "12", "10", "20", "--set", f"data.image_size={S}",
        "--method", "copy"]


def _propagate(frames, labels, out, *extra) -> int:
    from handprop_jax.cli import main

    return main(["propagate", "--frames", str(frames), "--labels", str(labels), "--out", str(out), *FAST,
                 *extra])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("handprop propagate: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def test_out_that_cannot_be_written_is_refused_before_the_model_runs(tmp_path, video, capsys, monkeypatch):
    import os

    from handprop_jax import errors

    frames, labels, _ = video
    monkeypatch.setattr(cli, "propagate_video", lambda *a, **k: pytest.fail("the model ran"))
    a_file, locked = tmp_path / "a_file", tmp_path / "locked"
    a_file.write_text("x")
    locked.mkdir()
    access = os.access  # root may write anywhere: say that `locked` is read-only
    monkeypatch.setattr(errors.os, "access", lambda p, mode: str(p) != str(locked) and access(p, mode))
    is_file, read_only = f"{a_file} is a file, not a folder", f"{locked} is not writable"
    for out, why in ((a_file, is_file), (a_file / "o", is_file), (locked, read_only),
                     (locked / "o", read_only)):
        assert _propagate(frames, labels, out) == 2
        assert _error_line(capsys) == f"handprop propagate: --out {out}: {why}"
    assert a_file.read_text() == "x" and list(locked.iterdir()) == []


def test_out_with_results_needs_overwrite_and_is_never_mixed(tmp_path, video, capsys, monkeypatch):
    from handprop_jax.propagation import overlays

    frames, labels, _ = video
    out = tmp_path / "out"
    assert _propagate(frames, labels, out, "--overlays") == 0
    assert len(list((out / "overlays").iterdir())) == 12
    first = (out / "annotations.json").read_text()
    assert _propagate(frames, labels, out) == 2
    assert _error_line(capsys).startswith(f"handprop propagate: --out {out}: the folder is not empty "
                                          "(annotations.json, annotations.npz, overlays); pass --overwrite")

    def half_way(folder, *args):  # Ctrl-C while the overlays are written
        folder.mkdir()
        (folder / "000000.png").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(overlays, "write_overlays", half_way)
    assert _propagate(frames, labels, out, "--overwrite", "--overlays", "--method", "interpolate") == 130
    assert (out / "annotations.json").read_text() == first  # the earlier results, untouched and alone
    assert sorted(p.name for p in out.iterdir()) == ["annotations.json", "annotations.npz", "overlays"]
    assert len(list((out / "overlays").iterdir())) == 12
    monkeypatch.undo()
    assert _propagate(frames, labels, out, "--overwrite", "--method", "interpolate") == 0
    assert sorted(p.name for p in out.iterdir()) == ["annotations.json", "annotations.npz"]  # no old overlays
    assert json.loads((out / "annotations.json").read_text())["method"] == "interpolate"


def test_implausible_labels_and_boxes(tmp_path, video, capsys):
    frames, labels, g = video
    data = json.loads(labels.read_text())
    behind = tmp_path / "behind.json"
    data["labels"]["5"]["root"] = [0.01, 0.0, -0.4]
    behind.write_text(json.dumps(data))
    assert _propagate(frames, behind, tmp_path / "o") == 2
    assert _error_line(capsys).startswith(f"handprop propagate: {behind}: frame 5 (frame_5.png): root z = "
                                          "-0.4 m, not in front of the camera")
    assert _propagate(frames, labels, tmp_path / "o", "--crop", "100", "10", "20") == 2  # frames: 24 x 20
    assert "--crop 100 10 20: the box lies outside the 24x20 frames" in _error_line(capsys)
    assert not (tmp_path / "o").exists()
    # millimetres are refused (used with a warning under --force); degrees are warned about
    data["labels"]["5"]["root"] = [0.0, 0.0, 450.0]
    data["labels"]["11"]["pose"][4] = 90.0
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(data))
    assert _propagate(frames, odd, tmp_path / "o") == 2
    assert _error_line(capsys) == (f"handprop propagate: {odd}: frame 5 (frame_5.png): root z = 450 m, "
                                   "outside the plausible 0.05 to 20 m (millimetres or centimetres? root is "
                                   "the wrist in the camera frame, in metres); pass --force to use it anyway")
    assert not (tmp_path / "o").exists()
    assert _propagate(frames, odd, tmp_path / "o", "--force") == 0
    err = capsys.readouterr().err
    assert f"warning: {odd}: frame 5 (frame_5.png): root z = 450 m, outside the plausible 0.05 to 20 m" in err
    assert f"warning: {odd}: frame 11 (frame_11.png): a pose component is 90.0, over 2π; degrees?" in err


def test_non_finite_results_are_never_written(tmp_path, video, config):
    frames, labels, _ = video
    nan = _fake_model(align=lambda g, a, b: g._replace(root=g.root * jnp.nan))
    with pytest.raises(UserError, match=r"method paper\) gave NaN or inf for 9 frame\(s\) \(first: frame_1"):
        cli.propagate_files(frames, labels, tmp_path / "o",
                            cli.PropagateOptions(intrinsics="30,30,12,10", method="paper"),
                            bound=(config, nan))
    assert not (tmp_path / "o").exists()


def test_unfinished_checkpoint_is_recorded(tmp_path, video, config, capsys, monkeypatch):
    """--method paper on a run whose align phase stopped at step 3 of 10: a warning, and the step read
    is recorded in annotations.json."""
    from test_training_fakes import phase_checkpoint

    from handprop_jax.training.checkpoint import load_run

    frames, labels, _ = video
    run = tmp_path / "run"
    run.mkdir()
    config_lib.save_json(config, run / "config.json")
    phase_checkpoint(run, "align", step=3, total_steps=10)
    monkeypatch.setattr(cli, "bound_from_run", lambda workdir, model: (load_run(workdir, model)[0],
                                                                        _fake_model()))  # a stand-in net
    from handprop_jax.cli import main

    assert main(["propagate", "--frames", str(frames), "--labels", str(labels), "--out", str(tmp_path / "o"),
                 "--intrinsics", "30,30,12,10", "--crop", "12", "10", "20", "--method", "paper",
                 "--checkpoint", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"warning: phase 'align' of {run} is unfinished (step 3 of 10)" in err, err
    doc = json.loads((tmp_path / "o" / "annotations.json").read_text())
    assert doc["checkpoint_used"] == {"phase": "align", "step": 3, "total_steps": 10, "finished": False,
                                      "which": "latest"}


def test_labels_by_file_name_when_a_frame_is_missing(tmp_path, video, capsys):
    """frame_3.png is missing: label "5" (by index) lands on frame_6.png, with a warning; with
    --labels-by name the label keyed "frame_5.png" (or "frame_5") is the frame of that name."""
    frames, _, _ = video
    (frames / "frame_3.png").unlink()
    by_index = tmp_path / "by_index.json"
    g = _write_labels(by_index, [0, 5], np.random.default_rng(1))
    assert _propagate(frames, by_index, tmp_path / "i") == 0
    assert (f"warning: {by_index}: label 5 is used for frame_6.png: labels are keyed by the frame's position "
            "in the sorted files, from 0") in capsys.readouterr().err
    data = json.loads(by_index.read_text())
    by_name = tmp_path / "by_name.json"
    by_name.write_text(json.dumps({"labels": {"frame_0.png": data["labels"]["0"],
                                              "frame_5": data["labels"]["5"]}}))
    assert _propagate(frames, by_name, tmp_path / "n", "--labels-by", "name") == 0
    assert "warning" not in capsys.readouterr().err
    doc = json.loads((tmp_path / "n" / "annotations.json").read_text())
    assert doc["labels_by"] == "name"
    entry = next(e for e in doc["frames_out"] if e["file"] == "frame_5.png")
    assert entry["index"] == 4 and entry["labelled"] is True
    np.testing.assert_allclose(entry["root"], g.root[1], atol=1e-6)
    assert _propagate(frames, by_index, tmp_path / "x", "--labels-by", "name") == 2
    assert f"{by_index}: label key '0' is not the name of a frame" in _error_line(capsys)


@pytest.mark.slow  # two photometric passes (~1 min on 2 busy cores)
def test_default_recrops_the_interpolated_frames(tmp_path, video, monkeypatch):
    """The default (photometric, boxes from the labels): the labelled frames are cut by the training
    crops' rule (data.boxes' vertex rule, computed here from the labels' meshes), the frames between
    them first with those boxes interpolated, then re-cropped around their propagated hands
    (propagation.recrop, called once with exactly those boxes); the outputs record the re-crop's
    boxes with ``box_source`` "propagated". With a box file nothing is re-cropped."""
    from handprop_jax.data import boxes as boxes_lib
    from handprop_jax.hand import default_mano
    from handprop_jax.propagation import cli, recrop

    frames, labels, g = video  # labels at 0, 5, 11 of 12 frames (24 x 20 px)
    calls = []

    def spy(*args, **kwargs):
        out = recrop.propagate_recrop(*args, **kwargs)
        calls.append((np.array(args[2]), np.array(out[1])))
        return out

    monkeypatch.setattr(cli, "propagate_recrop", spy)
    options = cli.PropagateOptions(intrinsics="30,30,12,10")
    run = config_lib.override(config_lib.load("tiny"), [f"data.image_size={S}", "propagation.steps=2"])
    out = cli.propagate_files(frames, labels, tmp_path / "o", options, config=run)
    joints, verts = boxes_lib.label_geometry(default_mano(run), g)
    K = np.tile(np.array([[30.0, 0, 12], [0, 30.0, 10], [0, 0, 1]]), (12, 1, 1))
    expected, _ = boxes_lib.video_boxes(12, 20, 24, K, np.array([0, 5, 11]), joints, vertices3d=verts)
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0][0], expected, rtol=1e-6)
    np.testing.assert_allclose(out["box"], calls[0][1], rtol=1e-6)
    unlabelled = np.setdiff1d(np.arange(12), [0, 5, 11])
    assert not np.allclose(out["box"][unlabelled], expected[unlabelled])  # the re-crop moved them
    np.testing.assert_allclose(out["box"][[0, 5, 11]], expected[[0, 5, 11]], rtol=1e-6)
    doc = json.loads((tmp_path / "o" / "annotations.json").read_text())
    sources = [e["box_source"] for e in doc["frames_out"]]
    assert [sources[i] for i in (0, 5, 11)] == ["label"] * 3
    assert {sources[i] for i in unlabelled} == {"propagated"}

    (tmp_path / "b.json").write_text(json.dumps({"boxes": {"3": [12, 10, 20]}}))
    cli.propagate_files(frames, labels, tmp_path / "o2", cli.PropagateOptions(intrinsics="30,30,12,10",
                                                                             boxes=tmp_path / "b.json"),
                        config=run)
    assert len(calls) == 1
