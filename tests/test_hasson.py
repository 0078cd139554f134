"""Comparison method 1 (Hasson et al.'s photometric consistency): the wrist cap, the cycle check, the
pair loss (gradient only through the flow, finite differences, the right mesh scores lowest), the
padding masks, the pair sampler, the train step and the phase in the training loop."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_photometric import _texture
from test_training_fakes import TinyEncoder, interrupting, make_frames, tiny_config

import mano_jax
from handprop_jax import config as config_lib
from handprop_jax import photometric as P
from handprop_jax.data import augment as augment_lib
from handprop_jax.evaluation import rows as rows_lib
from handprop_jax.hand import hand_in_camera
from handprop_jax.model import encoder as encoder_lib
from handprop_jax.model import handprop as hp
from handprop_jax.render import render
from handprop_jax.training import checkpoint, hasson, loop, registry

# a textured quad at depth 2 seen by a 16 px camera (as tests/test_photometric.py)
F, C, S = 20.0, 7.5, 16
K = np.array([[F, 0, C], [0, F, C], [0, 0, 1]], np.float32)
QUAD = np.array([[-0.3, -0.3, 2.0], [0.3, -0.3, 2.0], [0.3, 0.3, 2.0], [-0.3, 0.3, 2.0]], np.float32)
FACES = np.array([[0, 1, 2], [0, 2, 3]], np.int32)




def _pair_loss(verts_u, verts_s, image_u, image_s, faces=FACES, cap=None, window=8, k_u=K, k_s=K):
    faces = jnp.asarray(faces)
    cap = jnp.zeros(len(faces), bool) if cap is None else jnp.asarray(cap)
    ones = jnp.ones(image_s.shape[:2], bool)
    return hasson.pair_loss(jnp.asarray(verts_u), jnp.asarray(verts_s), jnp.asarray(k_u), jnp.asarray(k_s),
                            jnp.asarray(image_u), jnp.asarray(image_s), ones, ones, faces, cap, window, 2.0)


# ----------------------------------------------------------------------------- wrist cap


def _edges(faces):
    return [tuple(e) for f in np.asarray(faces) for e in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))]


@pytest.mark.parametrize("side", ["right", "left"])
def test_wrist_cap_of_the_closed_synthetic_hand_is_its_wrist_fan(side):
    m = mano_jax.synthetic(side)
    faces, cap = P.wrist_cap(m.v_template, m.faces, m.J_regressor)
    np.testing.assert_array_equal(faces, m.faces)  # closed already: unchanged
    assert cap.sum() == 30  # the fan over the 30-vertex wrist ring
    centre = np.bincount(faces[cap].ravel()).argmax()
    assert np.all(np.any(faces[cap] == centre, axis=1))
    assert np.all(np.asarray(m.weights)[np.unique(faces[cap])].argmax(1) == 0)  # all on the wrist


def test_wrist_cap_closes_an_open_wrist_with_appended_faces():
    """MANO's wrist is open (one boundary loop): it is closed by a fan of consistently oriented faces."""
    m = mano_jax.synthetic()
    _, cap = P.wrist_cap(m.v_template, m.faces, m.J_regressor)
    opened = np.asarray(m.faces)[~cap]  # 1508 faces, a 30-edge hole
    faces, new_cap = P.wrist_cap(m.v_template, opened, m.J_regressor)
    assert len(faces) == len(opened) + 28 and np.array_equal(faces[:len(opened)], opened)
    assert np.array_equal(new_cap, np.arange(len(faces)) >= len(opened))
    directed = _edges(faces)
    assert len(set(directed)) == len(directed)  # every directed edge once: closed and oriented
    assert all((b, a) in set(directed) for a, b in directed)


# ----------------------------------------------------------------------------- cycle check


def _quad_reference(verts=QUAD, n=S * S):
    return P.sample_reference(jnp.asarray(verts), jnp.asarray(FACES), jnp.asarray(K), jnp.asarray(_texture()),
                              n, jax.random.PRNGKey(0), (0.0,), 8)


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_dense_reference_is_every_silhouette_pixel_in_raster_order():
    ref = _quad_reference()
    assert ref.pixel.shape == (S * S, 2) and int(ref.valid.sum()) == 36
    np.testing.assert_array_equal(np.asarray(ref.pixel)[:3], [[0, 0], [1, 0], [2, 0]])


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_flow_warp_interpolates_the_flow_perspective_correctly():
    """q(p) = p + Σ w_k flow_k with w the barycentrics of the 3D point seen at p (found here by
    intersecting p's ray with a tilted quad's plane, independently of the rasteriser)."""
    tilted = QUAD + np.array([[0, 0, -0.4], [0, 0, -0.4], [0, 0, 0.4], [0, 0, 0.4]], np.float32)
    ref = _quad_reference(tilted)
    k = jnp.asarray(K)
    same = np.asarray(P.flow_warp(ref, jnp.asarray(tilted), k, jnp.asarray(tilted), k))
    np.testing.assert_array_equal(same, np.asarray(ref.pixel))  # no motion: q = p exactly
    moved = tilted + np.random.default_rng(0).normal(0, 0.05, tilted.shape).astype(np.float32)
    q = np.asarray(P.flow_warp(ref, jnp.asarray(moved), jnp.asarray(K), jnp.asarray(tilted), jnp.asarray(K)))
    proj = lambda v: (v[:, :2] / v[:, 2:]) * F + C  # noqa: E731
    flow = proj(moved.astype(np.float64)) - proj(tilted.astype(np.float64))
    valid, pix, tri = np.asarray(ref.valid), np.asarray(ref.pixel), np.asarray(ref.tri)
    for i in np.flatnonzero(valid):
        a, b, c = tilted[tri[i]].astype(np.float64)
        ray = np.array([(pix[i, 0] - C) / F, (pix[i, 1] - C) / F, 1.0])
        n = np.cross(b - a, c - a)
        x = ray * (n @ a) / (n @ ray)  # the surface point seen at p
        w = np.linalg.solve(np.stack([b - a, c - a, n], 1), x - a)[:2]
        w = np.array([1 - w.sum(), *w])
        np.testing.assert_allclose(q[i], pix[i] + w @ flow[tri[i]], atol=1e-3)
    # the perspective correction matters on this tilted face (screen barycentrics differ)
    assert np.abs(q - np.asarray(P.warp(ref, jnp.asarray(moved), jnp.asarray(K))))[valid].max() > 0.05


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_cycle_check_passes_a_moved_surface_and_rejects_occluded_points():
    ref = _quad_reference()
    valid = np.asarray(ref.valid)
    moved = QUAD + np.array([0.1, 0.0, 0.0], np.float32)  # 1 px to the right
    q = P.warp(ref, jnp.asarray(moved), jnp.asarray(K))
    ok = np.asarray(P.cycle_check(ref, q, jnp.asarray(moved), jnp.asarray(K), jnp.asarray(QUAD),
                                  jnp.asarray(K), jnp.asarray(FACES), (S, S), 8))
    assert ok[valid].all() and not ok[~valid].any()
    # a second quad (part of the same mesh) moves from the side in r to in front of the first one in u
    faces = np.concatenate([FACES, FACES + 4])
    side = QUAD + np.array([5.0, 0.0, -0.5], np.float32)  # far right of the image in r
    front = QUAD * np.array([1.5, 1.5, 0.5], np.float32)  # at depth 1, covering the first quad in u
    verts_r, verts_u = np.concatenate([QUAD, side]), np.concatenate([QUAD, front])
    ref = P.sample_reference(jnp.asarray(verts_r), jnp.asarray(faces), jnp.asarray(K),
                             jnp.asarray(_texture()), S * S, jax.random.PRNGKey(0), (0.0,), 8)
    q = P.warp(ref, jnp.asarray(verts_u), jnp.asarray(K))
    ok = np.asarray(P.cycle_check(ref, q, jnp.asarray(verts_u), jnp.asarray(K), jnp.asarray(verts_r),
                                  jnp.asarray(K), jnp.asarray(faces), (S, S), None))  # large faces: dense
    assert ref.valid.sum() > 0 and not ok.any()
    # excluded faces fail wherever they are hit
    q = P.warp(ref, jnp.asarray(verts_r), jnp.asarray(K))
    both = np.asarray(P.cycle_check(ref, q, jnp.asarray(verts_r), jnp.asarray(K), jnp.asarray(verts_r),
                                    jnp.asarray(K), jnp.asarray(faces), (S, S), 8))
    none = np.asarray(P.cycle_check(ref, q, jnp.asarray(verts_r), jnp.asarray(K), jnp.asarray(verts_r),
                                    jnp.asarray(K), jnp.asarray(faces), (S, S), 8,
                                    exclude_faces=jnp.ones(4, bool)))
    assert both[np.asarray(ref.valid)].all() and not none.any()


# ----------------------------------------------------------------------------- the pair loss


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_gradient_reaches_the_candidate_mesh_only_through_the_flow():
    """Finite differences of L_photo in the candidate mesh match its gradient; the reference mesh
    gets none (its raster, barycentrics and the mask are constants)."""
    tex = _texture(1)
    image_u = np.roll(tex, 1, axis=1)
    cand = jnp.asarray(QUAD + np.array([0.07, 0.02, 0.0], np.float32))

    def loss(vu, vs=jnp.asarray(QUAD)):
        return _pair_loss(vu, vs, image_u, tex)[0]

    g_u, g_s = jax.grad(loss, argnums=(0, 1))(cand, jnp.asarray(QUAD))
    assert np.all(np.asarray(g_s) == 0) and np.abs(np.asarray(g_u)).max() > 0
    rng = np.random.default_rng(0)
    for _ in range(3):
        d = rng.normal(size=QUAD.shape).astype(np.float32)
        d[:, 2] *= 0.1
        eps = 2e-3
        fd = (float(loss(cand + eps * d)) - float(loss(cand - eps * d))) / (2 * eps)
        np.testing.assert_allclose(float(jnp.sum(g_u * d)), fd, rtol=0.05, atol=1e-4)


def _hand_scene(size=48):
    """Two rendered frames of the synthetic hand (textured by vertex colours) and their meshes."""
    m = mano_jax.synthetic()
    pose = np.zeros((2, 48), np.float32)
    pose[:, :3] = [[2.0, 0.0, 0.0], [2.05, 0.1, 0.05]]
    pose[:, 3:] = np.asarray(m.hands_mean)
    pose[1, 3:] += 0.05
    root = np.array([[0.0, -0.02, 0.55], [0.008, -0.017, 0.55]], np.float32)
    verts, _ = hand_in_camera(m, jnp.asarray(root), jnp.asarray(pose), jnp.zeros((2, 10)))
    f = 1.6 * size
    k = np.array([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1]], np.float32)
    rng = np.random.default_rng(0)
    colours = jnp.asarray(np.clip(0.5 + 0.4 * np.sin(np.asarray(m.v_template) @ rng.normal(size=(3, 3)) * 60),
                                  0, 1).astype(np.float32))
    faces, cap = hasson.hand_faces(m)
    draw = jax.jit(lambda v: render(v, faces, jnp.asarray(k), colours, jnp.array([0.0, 0.0, -1.0]),
                                    (size, size), jnp.full((size, size, 3), 0.2), ambient=1.0)["image"])
    return np.asarray(verts), k, [np.asarray(draw(v)) for v in verts], faces, cap


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_the_right_mesh_scores_lower_than_shifted_or_copied_ones():
    verts, k, (img_s, img_u), faces, cap = _hand_scene()

    def loss(vu):
        err, used, sil = _pair_loss(vu, verts[0], img_u, img_s, faces, cap, 16, k, k)
        return float(err), int(used), int(sil)

    right, used, sil = loss(verts[1])
    # not 0: bilinear samples straddle silhouette and self-occlusion edges of a 25 px hand
    assert right < 0.04 and used > 0.8 * sil > 100
    for wrong in (verts[0], verts[1] + [0.005, 0, 0], verts[1] + [0, 0.005, 0], verts[1] + [0, 0, 0.02]):
        assert loss(wrong)[0] > right + 0.015


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_off_silhouette_rows_keep_the_gradient_finite():
    """The dense reference holds every pixel; the rows off the silhouette lie outside the face they
    are given, where perspective weights can divide by ~0. They are masked out, so the gradient must
    stay finite — a NaN there stopped the demo's photometric phase (step 8, seed 0)."""
    verts, k, (img_s, img_u), faces, cap = _hand_scene()
    ref = P.sample_reference(jnp.asarray(verts[0]), faces, jnp.asarray(k), jnp.asarray(img_s),
                             img_s.shape[0] * img_s.shape[1], jax.random.PRNGKey(0), (0.0,), 16,
                             exclude_faces=cap)
    valid = np.asarray(ref.valid)
    assert 0 < valid.sum() < valid.size
    # bounded weights on every row (before the fix: |w| up to ~1e5 off the silhouette)
    assert np.all(np.isfinite(np.asarray(ref.persp))) and np.abs(np.asarray(ref.persp)).max() <= 1.0 + 1e-5

    def loss(vu, vs):
        return _pair_loss(vu, vs, img_u, img_s, faces, cap, 16, k, k)[0]

    for vu in (verts[1], verts[1] * np.array([1, 1, 0], np.float32) + [0, 0, 1e-9]):
        g = np.asarray(jax.grad(loss)(jnp.asarray(vu), jnp.asarray(verts[0])))
        assert np.all(np.isfinite(g))
    # a candidate reaching the camera plane gives its pair no loss (and no gradient)
    flat = verts[1] * np.array([1, 1, 0], np.float32)
    err, used, _ = _pair_loss(flat, verts[0], img_u, img_s, faces, cap, 16, k, k)
    assert float(err) == 0.0 and int(used) == 0


# ----------------------------------------------------------------------------- augmentation masks


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_padding_masks_mark_the_reflected_border_and_labelled_frames_get_their_own_draw():
    frames = make_frames(tiny_config(), 2)
    lab = {k: frames[k] for k in ("image", "K", "joints2d")}
    pair = {"s": dict(lab), "u": {"image": frames["image"], "K": frames["K"]}, "labelled": dict(lab)}
    data = dataclasses.replace(config_lib.DataConfig(), rotation_range=0.5, color_jitter=0.0)
    fn = jax.jit(lambda b, k: augment_lib.augment(b, k, data, padding_masks=True))
    out = fn(pair, jax.random.PRNGKey(3))
    s_in, u_in = np.asarray(out["s"]["inside"]), np.asarray(out["u"]["inside"])
    assert s_in.shape == (2, 32, 32) and np.array_equal(s_in, u_in)  # the pair shares its rotation
    assert s_in[:, 16, 16].all() and not s_in[:, [0, 0, -1, -1], [0, -1, 0, -1]].all(axis=1).any()
    assert not np.allclose(out["labelled"]["joints2d"], out["s"]["joints2d"])  # its own draw
    assert "inside" in out["labelled"]
    same = augment_lib.augment(pair, jax.random.PRNGKey(3), data)
    assert "inside" not in same["s"]
    flat = augment_lib.rotation_inside(jnp.asarray(frames["K"][0]), jnp.float32(0.0), (32, 32))
    assert np.asarray(flat).all()


# ----------------------------------------------------------------------------- records, configs


def test_phase_row_schedule_and_configs():
    phase = registry.get("photometric")
    assert phase.init_from == "stage1" and phase.trainable == hp.PREDICTOR_KEYS and phase.padding_masks
    config = config_lib.load("synthetic")
    assert phase.steps(config) == registry.get("baseline").steps(config) == 300
    row = [r for r in rows_lib.ROWS if r.name == rows_lib.HASSON][0]
    assert (row.scenario, row.kind, row.phase) == (1, "predict", "photometric")
    assert [float(hasson.consist_weight(config, t)) for t in (0, 500, 1000, 5000)] == pytest.approx(
        [0.0, 5e-4, 1e-3, 1e-3])
    assert config.hasson.lambda_data == 0.999 and hasson.splat_window(config) == 16
    compare = config_lib.load("synthetic_compare")
    assert compare.train.phases[:len(config.train.phases) + 1] == config.train.phases + ("photometric",)
    # only the phases and Hasson's ramp differ, the ramp sized to the phase (a third of its steps)
    assert compare.hasson.ramp_steps == (config.train.stage2_steps + config.train.stage3_steps) // 3
    assert dataclasses.replace(compare, name=config.name, train=config.train, hasson=config.hasson) == config
    assert loop.resolve_phases(None) == ("stage1", "baseline", "stage2", "align", "pseudo")
    assert "photometric" in loop.resolve_phases(None, compare)
    assert loop.resolve_phases(["photometric"]) == ("photometric",)


def test_demo_compare_flag():
    import argparse

    from handprop_jax import demo

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    assert demo.run(parser.parse_args(["--compare", "--config", "synthetic"])) == 2


# ----------------------------------------------------------------------------- data, step, loop


@pytest.fixture(scope="module")
def data_config(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    cfg = tiny_config(stage1_steps=2, stage2_steps=1, stage3_steps=2, log_every=1, eval_every=2,
                      checkpoint_every=2, keep_checkpoints=1, batch_size=4, val_batches=1)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=str(data_dir), augment=True),
                              train=dataclasses.replace(cfg.train, phases=("stage1", "photometric")),
                              hasson=dataclasses.replace(cfg.hasson, ramp_steps=2, lambda_consist=0.5))
    from handprop_jax.data.build import build

    build(cfg.data.name, cfg.data.data_dir, data_config=cfg.data, verbose=False)
    return cfg


@pytest.mark.slow  # quick tier (make test-fast): compile-heavy, runs in make test
def test_pairs_are_every_frame_with_its_nearest_label_and_resume(data_config):
    from handprop_jax.data.sources import open_split
    from handprop_jax.data.train_batches import labelled_and_pairs

    sp = open_split(data_config.data, "train")
    it = labelled_and_pairs(data_config, 0, 1)
    seen = set()
    for _ in range(6):
        b = next(it)
        assert set(b) == {"labelled", "s", "u"} and "joints3d" in b["labelled"] and "joints3d" in b["s"]
        assert "root" not in b["u"] and "pose" not in b["u"]
        for vid, fu, fs in zip(b["u"]["video_id"], b["u"]["frame_index"], b["s"]["frame_index"], strict=True):
            pos = sp.table.position(int(vid), int(fu))
            assert sp.table.frame[sp.nearest[pos]] == fs and b["s"]["video_id"][0] >= 0
            seen.add((int(vid), int(fu)))
    assert len(seen) > len(sp.labelled_positions)  # unlabelled frames are anchors too
    # the state as a checkpoint's meta holds it (JSON)
    state = checkpoint.decode_data_state(json.loads(json.dumps(checkpoint.encode_data_state(it.get_state()))))
    want = next(it)
    again = labelled_and_pairs(data_config, 0, 1)
    again.set_state(state)
    got = next(again)
    for part in ("labelled", "s", "u"):
        np.testing.assert_array_equal(got[part]["image"], want[part]["image"])


@pytest.fixture(scope="module")
def tiny_encoder():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(encoder_lib, "from_config", lambda m: TinyEncoder(m.feature_dim))
        yield


@pytest.mark.slow  # trains stage 1 and the photometric phase twice (one killed and resumed)
def test_phase_trains_the_predictor_logs_the_check_and_resumes(data_config, tiny_encoder, tmp_path):
    summary = loop.train(data_config, tmp_path / "full", progress=False)
    assert list(summary) == ["stage1", "photometric"]
    s = summary["photometric"]
    assert s["val_photo_gt"] < s["val_photo_copy"] and s["val_photo_gt_below_copy"] > 0.5
    log = tmp_path / "full" / "logs" / "metrics.jsonl"
    records = [json.loads(ln) for ln in log.read_text().splitlines()]
    checks = [r["step"] for r in records if r["phase"] == "photometric" and "val_photo_gt" in r]
    assert checks == [0, 3]
    # λ_c ramps over the phase's steps (here to 0.5 in 2 steps), λ_d = 0.999 − λ_c
    logged = [r for r in records if r["phase"] == "photometric" and "l_photo" in r]
    assert [r["lambda_consist"] for r in logged] == pytest.approx([0.0, 0.25, 0.5])
    for r in logged:
        assert r["photo_pixels"] > 0 and np.isfinite(r["loss"])
        lam = r["lambda_consist"]
        want = (0.999 - lam) * (r["l_pred"] + r["l_reg_u"]) + lam * r["l_photo"]
        assert r["loss"] == pytest.approx(want, rel=1e-4)
    # the predictor is trained from stage 1's end, the aligners are not
    _, v1 = checkpoint.load_run(tmp_path / "full", "stage1")
    _, vp = checkpoint.load_run(tmp_path / "full", "photometric")
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), v1["params"], vp["params"])
    assert any(jax.tree.leaves(changed["encoder"]))
    assert not any(jax.tree.leaves({k: changed[k] for k in hp.ALIGNER_KEYS}))
    # killed at step 2 and resumed: the same parameters and λ_c counter as the uninterrupted run
    with pytest.raises(KeyboardInterrupt):
        loop.train(data_config, tmp_path / "cut", progress=False,
                   sources=interrupting(loop.default_sources, "photometric", 2))
    loop.train(data_config, tmp_path / "cut", progress=False)

    def final(w):
        ck = checkpoint.PhaseCheckpoints(w, "photometric", read_only=True)
        state, _ = ck.restore(ck.latest_step())
        ck.close()
        return state

    a, b = final(tmp_path / "full"), final(tmp_path / "cut")
    assert int(a["aux"]["step"]) == 3
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))
    # the config of a compare run (other name, more phases) resumes this run folder
    other = dataclasses.replace(data_config, name="tiny_compare")
    assert all(x.get("skipped") for x in loop.train(other, tmp_path / "full", progress=False).values())
