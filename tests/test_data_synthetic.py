"""Synthetic videos: labels consistent with MANO and the camera, hand in view, deterministic, and
motion that makes label propagation meaningful (copying the nearest label is clearly wrong)."""
import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from handprop_jax.camera import project
from handprop_jax.data import sparse
from handprop_jax.data import synthetic as sy
from handprop_jax.data.crop import crop_intrinsics
from handprop_jax.hand import hand_in_camera

SPEC = sy.SynthSpec(videos=(2, 1, 1), frames=12, image_size=32, seed=5)


@pytest.fixture(scope="module")
def video():
    return sy.render_video(SPEC, "train", 1)


def test_labels_agree_with_mano_and_the_crop_camera(video):
    T, S = SPEC.frames, SPEC.image_size
    assert video["image"].shape == (T, S, S, 3) and video["image"].dtype == np.uint8
    model = sy._hand("right", 0).model
    verts, joints = hand_in_camera(model, jnp.asarray(video["root"]), jnp.asarray(video["pose"]),
                                   jnp.asarray(video["betas"]))
    np.testing.assert_allclose(joints, video["joints3d"], atol=1e-5)
    np.testing.assert_allclose(video["joints3d"][:, 0], video["root"], atol=1e-6)  # root = wrist
    np.testing.assert_allclose(project(joints, jnp.asarray(video["K"])), video["joints2d"], atol=1e-3)
    # the crop is centred on the hand: every vertex inside, the vertex box centred
    uv = np.asarray(project(verts, jnp.asarray(video["K"])))
    assert uv.min() > -0.5 and uv.max() < S - 0.5
    centre = (uv.min(1) + uv.max(1)) / 2
    np.testing.assert_allclose(centre, (S - 1) / 2, atol=1e-3)
    # square pixels, principal point moved with the crop
    np.testing.assert_allclose(video["K"][:, 0, 0], video["K"][:, 1, 1], rtol=1e-5)
    assert np.ptp(video["K"][:, 0, 2]) > 0
    np.testing.assert_array_equal(video["frame_index"], np.arange(T))
    assert video["video_name"] == "train_0001" and (video["video_id"] == 1).all()


def test_image_shows_the_hand_over_a_textured_background(video):
    img = video["image"].astype(np.float64)
    S = SPEC.image_size
    centre = img[:, S // 2 - 3:S // 2 + 3, S // 2 - 3:S // 2 + 3]
    T = SPEC.frames
    border = np.concatenate([img[:, :3].reshape(T, -1, 3), img[:, -3:].reshape(T, -1, 3)], 1)
    assert border.std(axis=1).mean() > 8  # not a flat colour
    assert np.abs(centre.mean((1, 2)) - border.mean(1)).mean() > 5  # the hand differs from the background


def test_crop_intrinsics_map_full_image_pixels_to_the_crop():
    K_full = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    centre, side = np.array([[400.0, 200.0]]), np.array([100.0])
    K = crop_intrinsics(K_full, np.concatenate([centre, side[:, None]], 1), 50)[0]
    p = np.array([0.03, -0.02, 0.5])
    full = K_full @ p / p[2]
    crop = K @ p / p[2]
    np.testing.assert_allclose(crop[:2], (full[:2] - centre[0]) * 50 / 100 + 24.5, atol=1e-9)


def test_deterministic_and_seed_dependent(video):
    np.testing.assert_array_equal(sy.render_video(SPEC, "train", 1)["image"], video["image"])
    a = sy.video_parameters(SPEC, "val", 0)
    b = sy.video_parameters(SPEC, "val", 0)
    c = sy.video_parameters(dataclasses.replace(SPEC, seed=6), "val", 0)
    for k in ("root", "pose", "betas", "canvas", "K_full"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.allclose(a["pose"], c["pose"])
    assert not np.allclose(a["pose"], sy.video_parameters(SPEC, "test", 0)["pose"])  # splits differ


def test_motion_makes_propagation_meaningful():
    """K = 16: copying N(u) at gap 8 is off by several cm and tens of degrees on average, while
    consecutive frames move about a centimetre (coherent video)."""
    spec = sy.SynthSpec(videos=(6, 0, 0), frames=64, image_size=32)
    model = sy._hand("right", 0).model
    gap8, gap8_rot, step = [], [], []
    u, s, gap = sparse.eval_pairs(64, 16)
    for v in range(6):
        p = sy.video_parameters(spec, "train", v)
        _, j = hand_in_camera(model, jnp.asarray(p["root"]), jnp.asarray(p["pose"]),
                              jnp.asarray(np.broadcast_to(p["betas"], (64, 10))))
        j = np.asarray(j)
        m = gap == 8
        gap8.append(np.linalg.norm(j[u[m]] - j[s[m]], axis=-1).mean(1))
        R = np.asarray(sy._rotation(p["pose"][:, :3]))
        cos = (np.einsum("nij,nij->n", R[u[m]], R[s[m]]) - 1) / 2
        gap8_rot.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
        step.append(np.linalg.norm(j[1:] - j[:-1], axis=-1).mean(1))
    gap8, gap8_rot, step = (np.concatenate(x) for x in (gap8, gap8_rot, step))
    assert gap8.mean() > 0.03 and np.percentile(gap8, 90) > 0.06  # metres
    assert gap8_rot.mean() > 10.0  # degrees
    assert step.mean() < 0.02 and np.percentile(step, 50) < 0.015
