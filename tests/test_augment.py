"""Augmentation: rotated annotations stay consistent with the camera, the MANO hand and the image."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mano_jax
from handprop_jax.camera import project
from handprop_jax.config import DataConfig
from handprop_jax.data.augment import augment, rotate_image
from handprop_jax.hand import hand_in_camera

S = 48
NO_COLOR = DataConfig(color_jitter=0.0, rotation_range=0.6)


def _gamma(seed: int, B: int):
    rng = np.random.default_rng(seed)
    pose = rng.normal(0, 0.3, (B, 48)).astype(np.float32)
    pose[:, :3] = rng.normal(0, 1.2, (B, 3))
    root = np.stack([rng.uniform(-0.05, 0.05, B), rng.uniform(-0.05, 0.05, B), rng.uniform(0.4, 0.6, B)], 1)
    betas = rng.normal(0, 1, (B, 10)).astype(np.float32)
    return root.astype(np.float32), pose, betas


@pytest.fixture(scope="module")
def frames():
    """Frames with an anisotropic K, consistent labels and an image with a blob on the wrist."""
    B = 4
    model = mano_jax.synthetic("right", 0)
    root, pose, betas = _gamma(0, B)
    _, joints = hand_in_camera(model, jnp.asarray(root), jnp.asarray(pose), jnp.asarray(betas))
    K = np.tile(np.array([[70.0, 0, 22.0], [0, 64.0, 25.0], [0, 0, 1]], np.float32), (B, 1, 1))
    j2d = np.array(project(joints, jnp.asarray(K)))
    vv, uu = np.mgrid[0:S, 0:S]
    wrist = np.array([[22.0 + 9, 25.0 - 6]] * B, np.float32)  # a marker away from the rotation centre
    d2 = (uu[None] - wrist[:, 0, None, None]) ** 2 + (vv[None] - wrist[:, 1, None, None]) ** 2
    blob = np.exp(-d2 / 4.0)
    image = np.clip(20 + 230 * blob, 0, 255)[..., None].repeat(3, -1).astype(np.uint8)
    j2d[:, 0] = wrist  # joint 0's 2D position marks the blob (3D/2D consistency is tested on the rest)
    frame = {"image": image, "K": K, "root": root, "pose": pose, "betas": betas,
             "joints3d": np.asarray(joints), "joints2d": j2d, "video_id": np.arange(B, dtype=np.int32),
             "frame_index": np.zeros(B, np.int32)}
    return model, frame


def _aug(batch, seed, cfg=NO_COLOR):
    return jax.jit(lambda b, k: augment(b, k, cfg))(batch, jax.random.PRNGKey(seed))


def test_rotated_3d_projects_onto_rotated_2d_and_mano_agrees(frames):
    model, frame = frames
    out = _aug(frame, 1)
    K = jnp.asarray(frame["K"])
    np.testing.assert_allclose(project(out["joints3d"], K)[:, 1:], out["joints2d"][:, 1:], atol=2e-3)
    # the new γ (root, pose[:3] rotated) generates exactly the rotated joints
    _, joints = hand_in_camera(model, out["root"], out["pose"], out["betas"])
    np.testing.assert_allclose(joints, out["joints3d"], atol=2e-5)
    np.testing.assert_array_equal(out["pose"][:, 3:], frame["pose"][:, 3:])
    # something did change (angle drawn from +-0.6 rad)
    assert float(jnp.abs(out["joints3d"] - frame["joints3d"]).max()) > 1e-3
    assert out["image"].dtype == jnp.uint8 and out["image"].shape == frame["image"].shape


def test_image_content_moves_with_the_2d_points(frames):
    _, frame = frames
    out = _aug(frame, 2)
    img = np.asarray(out["image"][..., 0], np.float64) - 20
    vv, uu = np.mgrid[0:S, 0:S]
    w = np.clip(img, 0, None) ** 2
    centroid = np.stack([(w * uu).sum((1, 2)), (w * vv).sum((1, 2))], 1) / w.sum((1, 2))[:, None]
    np.testing.assert_allclose(centroid, np.asarray(out["joints2d"][:, 0]), atol=0.35)
    moved = np.linalg.norm(np.asarray(out["joints2d"][:, 0]) - frame["joints2d"][:, 0], axis=1)
    assert moved.max() > 2.0


def test_rotate_image_zero_angle_is_identity_and_reflects_at_borders():
    img = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (S, S, 3)), jnp.float32)
    K = jnp.array([[60.0, 0, 23.5], [0, 60.0, 23.5], [0, 0, 1]])
    rotate = jax.jit(rotate_image)
    np.testing.assert_allclose(rotate(img, K, jnp.float32(0.0)), img, atol=1e-3)
    rot = rotate(img, K, jnp.float32(np.pi / 2))  # quarter turn about the centre: exact pixels
    np.testing.assert_allclose(rot, jnp.rot90(img, k=-1, axes=(0, 1)), atol=1e-2)
    corner = rotate(img, K, jnp.float32(0.4))
    assert float(corner.min()) > 0.0 and jnp.isfinite(corner).all()


def test_pair_shares_the_angle_and_unlabelled_keys_pass_through(frames):
    _, frame = frames
    u = {k: frame[k] for k in ("image", "K", "video_id", "frame_index")}
    batch = {"s": frame, "u": u, "u_labelled": np.array([True, False, True, False]),
             "mask": np.ones(4, bool)}
    cfg = dataclasses.replace(NO_COLOR, color_jitter=0.3)
    fn = jax.jit(lambda b, k: augment(b, k, cfg))
    out = fn(batch, jax.random.PRNGKey(3))
    assert set(out["u"]) == set(u) and set(out["s"]) == set(frame)
    np.testing.assert_array_equal(out["u"]["image"], out["s"]["image"])  # same angle and colours
    np.testing.assert_array_equal(out["u_labelled"], batch["u_labelled"])
    again = fn(batch, jax.random.PRNGKey(3))  # deterministic in the key
    np.testing.assert_array_equal(again["s"]["image"], out["s"]["image"])
    other = fn(batch, jax.random.PRNGKey(4))
    assert not np.array_equal(other["s"]["image"], out["s"]["image"])



def test_colour_jitter_closed_form():
    """Brightness b, contrast c (about the mean luma) and saturation s against closed forms:
    a grey image g (R=G=B) becomes m + (b g - m) c with m = mean(b g) (saturation has nothing to
    act on); a flat colour x becomes b (L + (x - L) c s) with L = luma(x); s = 0 leaves luma grey."""
    from handprop_jax.data.augment import augment_frame

    luma = np.array([0.299, 0.587, 0.114])
    rng = np.random.default_rng(0)
    grey = rng.uniform(60, 160, (6, 5))
    flat = np.array([120.0, 80.0, 40.0])
    images = np.stack([np.repeat(grey[..., None], 3, -1), np.broadcast_to(flat, (6, 5, 3)),
                       rng.uniform(50, 150, (6, 5, 3))]).astype(np.float32)
    factors = np.array([[1.2, 0.7, 1.3], [0.9, 1.1, 0.8], [1.0, 1.0, 0.0]], np.float32)
    K = np.tile(np.array([[10.0, 0, 2.0], [0, 10.0, 2.5], [0, 0, 1]], np.float32), (3, 1, 1))
    out = np.asarray(jax.jit(augment_frame)({"image": images, "K": K}, jnp.zeros(3), factors)["image"])
    b, c, _ = factors[0]
    m = (b * grey).mean()
    np.testing.assert_allclose(out[0], np.repeat((m + (b * grey - m) * c)[..., None], 3, -1), rtol=1e-5)
    b, c, s = factors[1]
    L = flat @ luma
    np.testing.assert_allclose(out[1], np.broadcast_to(b * (L + (flat - L) * c * s), (6, 5, 3)), rtol=1e-5)
    np.testing.assert_allclose(out[2], np.repeat((images[2] @ luma)[..., None], 3, -1), rtol=1e-5)
