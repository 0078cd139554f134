"""handprop propagate: rotation blending, neighbours, exactness against copy-propagation, the
input errors and the output schema (with a stand-in predictor; the real run is exercised by the
evaluation tests)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation, Slerp

from handprop_jax import config as config_lib
from handprop_jax import propagate as P

S = 16  # crop side of the stand-in predictor (S*S*3 >= 512 features)


def _fake_predictor(align_offset=None):
    """Features = the first 512 pixel values; regress = a fixed hand; align = γ_b (+ optional fixed
    root offset): a zero aligner when align_offset is None."""

    def features(images):
        z = jnp.asarray(images, jnp.float32).reshape(images.shape[0], -1)[:, :512] / 255.0
        return z, 2 * z

    def regress(z_r, z_t, K):
        B = z_r.shape[0]
        return {"root": jnp.tile(jnp.array([[0.0, 0.0, 0.5]]), (B, 1)) + z_r[:, :3] * 0.01,
                "pose": jnp.zeros((B, 48)), "betas": jnp.zeros((B, 10))}

    def align(gamma_b, z_a, z_b):
        if align_offset is None:
            return dict(gamma_b)
        return {**gamma_b, "root": gamma_b["root"] + jnp.asarray(align_offset)}

    return P.Predictor(features=features, regress=regress, align=align, image_size=S, batch_size=4)


@pytest.fixture(scope="module")
def config():
    return config_lib.override(config_lib.load("tiny"), [f"data.image_size={S}"])


def _gamma(rng, n):
    return {"root": (rng.normal(size=(n, 3)) * 0.05 + [0, 0, 0.5]).astype(np.float32),
            "pose": (rng.normal(size=(n, 48)) * 0.5).astype(np.float32),
            "betas": (rng.normal(size=(n, 10)) * 0.5).astype(np.float32)}


def test_slerp_matches_scipy():
    rng = np.random.default_rng(0)
    a = Rotation.random(20, random_state=1)
    b = Rotation.random(20, random_state=2)
    t = rng.uniform(0, 1, 20)
    ours = np.asarray(P.slerp_axis_angle(jnp.asarray(a.as_rotvec(), jnp.float32),
                                         jnp.asarray(b.as_rotvec(), jnp.float32), jnp.asarray(t)))
    for i in range(20):
        ref = Slerp([0, 1], Rotation.concatenate([a[i], b[i]]))(t[i])
        assert (Rotation.from_rotvec(ours[i]) * ref.inv()).magnitude() < 1e-4


def test_blend_is_not_axis_angle_average():
    # two rotations by 170 degrees about z and about -z+eps: the geodesic midpoint is near 180 deg
    # about z; averaging the vectors gives almost the identity
    a = np.array([[0, 0, np.deg2rad(170)]] * 16, np.float32).reshape(1, 48)
    b = np.array([[0, 0, -np.deg2rad(170)]] * 16, np.float32).reshape(1, 48)
    g = lambda p: {"root": np.zeros((1, 3), np.float32), "pose": p, "betas": np.zeros((1, 10), np.float32)}
    mid = np.asarray(P.blend_gammas(g(a), g(b), jnp.array([0.5]))["pose"]).reshape(16, 3)
    angle = np.linalg.norm(mid, axis=-1)
    np.testing.assert_allclose(angle, np.pi, atol=1e-3)
    # exact endpoints
    for w, ref in ((0.0, a), (1.0, b)):
        np.testing.assert_array_equal(np.asarray(P.blend_gammas(g(a), g(b), jnp.array([w]))["pose"]), ref)


def test_neighbours_hand_computed():
    nb = P.neighbours(10, np.array([2, 6]))
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
    out = P.propagate_video(_fake_predictor(), images, lab, labels)
    nearest = P.neighbours(T, lab)["nearest"]
    row = {f: i for i, f in enumerate(lab)}
    for k in P.GAMMA_KEYS:
        np.testing.assert_array_equal(out[k], labels[k][[row[s] for s in nearest]])
    np.testing.assert_array_equal(out["labelled"], np.isin(np.arange(T), lab))
    np.testing.assert_array_equal(out["source"][:, 0], nearest)
    # a non-zero aligner moves exactly the unlabelled frames
    moved = P.propagate_video(_fake_predictor([0.01, 0, 0]), images, lab, labels)
    diff = moved["root"][:, 0] - out["root"][:, 0]
    np.testing.assert_allclose(diff, np.where(out["labelled"], 0.0, 0.01), atol=1e-7)


def test_both_sides_nearest_equals_nearest_only_run():
    """The ``nearest`` result of a both-sides run (reused by the evaluation) is the nearest-only run,
    with an aligner whose output depends on which labelled frame it starts from."""
    rng = np.random.default_rng(2)
    T, lab = 13, np.array([2, 5, 11])  # frames before the first / after the last label, a tie at 8
    images = rng.integers(0, 255, (T, S, S, 3), dtype=np.uint8)
    labels = _gamma(rng, len(lab))
    pred = P.Predictor(features=_fake_predictor().features, regress=_fake_predictor().regress,
                       align=lambda g, za, zb: {**g, "root": g["root"] + 0.1 * (za[0][:, :3] - zb[0][:, :3])},
                       image_size=S, batch_size=4)
    near = P.propagate_video(pred, images, lab, labels)
    both = P.propagate_video(pred, images, lab, labels, both_sides=True)
    assert "nearest" not in near
    for k in P.GAMMA_KEYS:
        np.testing.assert_array_equal(both["nearest"][k], near[k])
    assert not np.allclose(both["root"], near["root"])  # the blend itself differs


def test_both_sides_recovers_geodesic_motion():
    """GT moving at constant speed along a geodesic (pose), a line (root) between two labels: blending
    the two copies by temporal distance reproduces every frame; nearest-only copying does not."""
    rng = np.random.default_rng(1)
    T = 9
    ends = _gamma(rng, 2)
    t = np.arange(T) / (T - 1)
    truth = P.blend_gammas({k: np.repeat(v[:1], T, 0) for k, v in ends.items()},
                           {k: np.repeat(v[1:], T, 0) for k, v in ends.items()}, jnp.asarray(t, jnp.float32))
    truth = {k: np.asarray(v) for k, v in truth.items()}
    lab = np.array([0, T - 1])
    labels = {k: v[lab] for k, v in truth.items()}
    images = np.zeros((T, S, S, 3), np.uint8)
    both = P.propagate_video(_fake_predictor(), images, lab, labels, both_sides=True)
    near = P.propagate_video(_fake_predictor(), images, lab, labels, both_sides=False)
    for k in P.GAMMA_KEYS:
        np.testing.assert_allclose(both[k], truth[k], atol=2e-5)
    assert np.abs(near["root"] - truth["root"]).max() > 1e-3
    np.testing.assert_allclose(both["weight"].sum(-1), 1.0)


def _write_frames(folder, n, size=(24, 20), seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            folder / f"frame_{i}.png")
    return folder


def _write_labels(path, frames, rng, with_k=False):
    g = _gamma(rng, len(frames))
    data = {"labels": {str(f): {k: g[k][i].tolist() for k in P.GAMMA_KEYS} for i, f in enumerate(frames)}}
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
    arrays = P.propagate_files("unused", frames, labels, out, intrinsics="30,30,12,10",
                               predictor=(config, _fake_predictor()), both_sides=True)
    npz = dict(np.load(out / "annotations.npz"))
    shapes = {"frame_index": (12,), "labelled": (12,), "source": (12, 2), "weight": (12, 2), "root": (12, 3),
              "pose": (12, 48), "betas": (12, 10), "joints3d": (12, 21, 3), "joints2d": (12, 21, 2),
              "K": (12, 3, 3)}
    assert {k: v.shape for k, v in npz.items()} == shapes
    # labelled frames keep their labels; 10 < 11 sorted numerically, frame order by number
    for i, f in enumerate([0, 5, 11]):
        for k in P.GAMMA_KEYS:
            np.testing.assert_allclose(npz[k][f], g[k][i], rtol=1e-6)
    # the 3D joints are the MANO joints of γ, the 2D joints their projection in the original frame
    from handprop_jax.hand import default_mano

    joints, _ = P.hand_mesh(default_mano(config), {k: npz[k] for k in P.GAMMA_KEYS})
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
    arrays = P.propagate_files("unused", gif, labels, tmp_path / "o", predictor=(config, _fake_predictor()))
    assert arrays["root"].shape == (6, 3) and arrays["labelled"].sum() == 1
    np.testing.assert_array_equal(arrays["source"][:, 0], 2)  # a single label feeds every frame


def test_npz_labels(tmp_path, video, config):
    frames, _, _ = video
    rng = np.random.default_rng(3)
    g = _gamma(rng, 2)
    np.savez(tmp_path / "l.npz", frames=np.array([7, 1]), **g)
    lab, gamma, K = P.load_labels(tmp_path / "l.npz", 12)
    np.testing.assert_array_equal(lab, [1, 7])  # sorted, labels follow
    np.testing.assert_array_equal(gamma["pose"][0], g["pose"][1])
    assert K is None


@pytest.mark.parametrize("content, match", [
    ("{not json", "malformed JSON"),
    ('{"labels": {"0": {"root": [0, 0, 0.5], "pose": %s}}}' % ([0] * 48), "frame 0: missing key 'betas'"),
    ('{"labels": {"0": {"root": [0, 0], "pose": [0], "betas": [0]}}}', r"'root' has shape \(2,\)"),
    ('{"labels": {"abc": {}}}', "not a frame index"),
    ('{"labels": {}}', "no labelled frame"),
    ('{"labels": [1, 2]}', "must map frame index"),
])
def test_malformed_labels(tmp_path, content, match):
    path = tmp_path / "labels.json"
    path.write_text(content)
    with pytest.raises(P.PropagationInputError, match=match):
        P.load_labels(path, 10)


def test_label_outside_video(tmp_path, video, config):
    frames, _, _ = video
    labels = tmp_path / "far.json"
    _write_labels(labels, [0, 12], np.random.default_rng(0))
    with pytest.raises(P.PropagationInputError, match="frame index 12 is outside the video"):
        P.propagate_files("unused", frames, labels, tmp_path / "o", intrinsics="30,30,12,10",
                          predictor=(config, _fake_predictor()))


def test_npz_missing_arrays(tmp_path):
    np.savez(tmp_path / "l.npz", frames=np.array([0]), root=np.zeros((1, 3)))
    with pytest.raises(P.PropagationInputError, match="missing arrays"):
        P.load_labels(tmp_path / "l.npz")


def test_missing_intrinsics(tmp_path, video, config):
    frames, labels, _ = video
    with pytest.raises(P.PropagationInputError, match="missing intrinsics"):
        P.propagate_files("unused", frames, labels, tmp_path / "o", predictor=(config, _fake_predictor()))
    with pytest.raises(P.PropagationInputError, match="fx,fy,cx,cy"):
        P.parse_intrinsics("30,30,12")


def test_unreadable_frames(tmp_path, video, config):
    frames, labels, _ = video
    (frames / "frame_99.png").write_bytes(b"this is not a png")
    with pytest.raises(P.PropagationInputError, match="frame_99.png: unreadable frame"):
        P.propagate_files("unused", frames, labels, tmp_path / "o", intrinsics="30,30,12,10",
                          predictor=(config, _fake_predictor()))
    with pytest.raises(P.PropagationInputError, match="no frame images"):
        P.list_frames(tmp_path)
    bad = tmp_path / "video.mp4"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(P.PropagationInputError, match="unreadable video"):
        P.list_frames(bad)


def test_frames_of_different_sizes(tmp_path, config):
    frames = _write_frames(tmp_path / "f", 3)
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(frames / "frame_3.png")
    with pytest.raises(P.PropagationInputError, match="all frames must have one size"):
        P.load_frames(frames, S)


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
    arrays = P.propagate_files("unused", frames, labels, tmp_path / "o", intrinsics=str(tmp_path / "K.npy"),
                               predictor=(config, _fake_predictor()))
    j = arrays["joints3d"]
    np.testing.assert_allclose(arrays["joints2d"][..., 0], 30 * j[..., 0] / j[..., 2] + K[:, None, 0, 2],
                               rtol=1e-4, atol=1e-3)
    np.save(tmp_path / "K5.npy", K[:5])
    with pytest.raises(P.PropagationInputError, match="5 per-frame intrinsics for 12 frames"):
        P.propagate_files("unused", frames, labels, tmp_path / "o", intrinsics=str(tmp_path / "K5.npy"),
                          predictor=(config, _fake_predictor()))
