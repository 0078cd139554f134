"""What ``handprop propagate`` accepts of a user's numbers (issue 27, items 6-9): one check per kind
(labels, intrinsics, boxes — the same for ``--crop`` and a box file), strict numbers (no booleans or
strings), plausible values (root depth, focal lengths, principal point, boxes on the frame), a
frames folder whose broken link is named; and a property-based test: random malformed files give a
result or one PropagationInputError, never another exception."""

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from handprop_jax.cli import main
from handprop_jax.data import boxes as boxes_lib
from handprop_jax.propagation import inputs as I

W, H = 32, 24  # frame size of the test video
ENTRY = {"root": [0.0, 0.0, 0.5], "pose": [0.0] * 48, "betas": [0.0] * 10}
FAST = ["--set", "data.image_size=16", "--method", "copy"]


@pytest.fixture()
def video(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(frames / f"f_{i}.png")
    return frames


def _labels(tmp_path, name="labels.json", **change):
    entry = {**ENTRY, **change}
    path = tmp_path / name
    path.write_text(json.dumps({"labels": {"0": ENTRY, "3": entry}}))
    return path


def _run(frames, labels, out, *extra):
    return main(["propagate", "--frames", str(frames), "--labels", str(labels), "--out", str(out), *FAST,
                 *extra])


def _line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("handprop propagate: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("z", [1e-9, 0.01, 25.0, 450.0])
def test_root_depth_outside_5cm_to_20m_is_refused_or_warned_with_force(tmp_path, video, capsys, z):
    labels = _labels(tmp_path, root=[0.0, 0.0, z])
    out = tmp_path / "out"
    assert _run(video, labels, out, "--intrinsics", "30,30,16,12", "--crop", "16", "12", "24") == 2
    unit = "millimetres or centimetres? " if z > 20 else ""
    assert _line(capsys) == (f"handprop propagate: {labels}: frame 3 (f_3.png): root z = {z:g} m, outside "
                             f"the plausible 0.05 to 20 m ({unit}root is the wrist in the camera frame, in "
                             "metres); pass --force to use it anyway")
    assert not out.exists()
    assert _run(video, labels, out, "--intrinsics", "30,30,16,12", "--crop", "16", "12", "24", "--force") == 0
    assert f"warning: {labels}: frame 3 (f_3.png): root z = {z:g} m" in capsys.readouterr().err
    # the forced label is written as given (7-decimal rounding wrote z = 1e-9 as 0.0), and every number
    # of annotations.json reads back to annotations.npz's
    frame = json.loads((out / "annotations.json").read_text())["frames_out"][3]
    assert frame["labelled"] and frame["root"][2] == pytest.approx(z, rel=1e-6)
    npz = np.load(out / "annotations.npz")
    for key in ("root", "pose", "betas", "joints3d", "joints2d"):
        np.testing.assert_array_equal(np.asarray(frame[key], npz[key].dtype), npz[key][3], err_msg=key)


def test_root_depth_inside_the_limits_is_accepted(tmp_path, video):
    for z in (0.05, 0.5, 20.0):
        labels = _labels(tmp_path, root=[0.0, 0.0, z])
        out = tmp_path / f"out{z}"
        assert _run(video, labels, out, "--intrinsics", "30,30,16,12", "--crop", "16", "12", "24") == 0
        assert np.load(out / "annotations.npz")["root"][3, 2] == pytest.approx(z)


@pytest.mark.parametrize("intrinsics, message", [
    ("1e30,30,16,12", "fx = 1e+30 px is implausible for 32x24 frames (allowed: 0.64 to 3200 px"),
    ("30,0.1,16,12", "fy = 0.1 px is implausible for 32x24 frames (allowed: 0.64 to 3200 px"),
    ("30,30,5000,12", "cx = 5000 px is implausible for 32x24 frames (allowed: within 640 px"),
    ("30,30,16,-1e9", "cy = -1e+09 px is implausible for 32x24 frames"),
])
def test_implausible_intrinsics_are_refused(tmp_path, video, capsys, intrinsics, message):
    assert _run(video, _labels(tmp_path), tmp_path / "o", "--intrinsics", intrinsics) == 2
    assert _line(capsys).startswith(f"handprop propagate: --intrinsics: {message}")


def test_implausible_intrinsics_in_a_file_or_the_labels_name_the_frame(tmp_path, video, capsys):
    K = np.tile(np.array([[30.0, 0, 16], [0, 30, 12], [0, 0, 1]]), (6, 1, 1))
    K[4, 0, 0] = 1e30
    np.save(tmp_path / "K.npy", K)
    assert _run(video, _labels(tmp_path), tmp_path / "o", "--intrinsics", str(tmp_path / "K.npy")) == 2
    assert f"{tmp_path / 'K.npy'} (frame 4): fx = 1e+30 px is implausible" in _line(capsys)
    data = {"K": [[30.0, 0, 16], [0, 1e30, 12], [0, 0, 1]], "labels": {"0": ENTRY}}
    (tmp_path / "with_k.json").write_text(json.dumps(data))
    assert _run(video, tmp_path / "with_k.json", tmp_path / "o") == 2
    assert f"{tmp_path / 'with_k.json'}: 'K': fy = 1e+30 px is implausible" in _line(capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("box", [[5000, 5000, 20], [16, 12, 1e6], [-100, 12, 20]])
def test_the_same_box_is_refused_from_crop_and_from_a_box_file(tmp_path, video, capsys, box):
    labels = _labels(tmp_path)
    (tmp_path / "boxes.json").write_text(json.dumps({"boxes": {"2": box}}))
    assert _run(video, labels, tmp_path / "o", "--intrinsics", "30,30,16,12", "--boxes",
                str(tmp_path / "boxes.json")) == 2
    from_file = _line(capsys).split(": frame 2: ", 1)[1]
    assert _run(video, labels, tmp_path / "o", "--intrinsics", "30,30,16,12", "--crop",
                *map(str, box)) == 2
    from_crop = _line(capsys).split(f"--crop {' '.join(f'{v:g}' for v in box)}: ", 1)[1]
    assert from_file == from_crop  # one rule, one message
    assert "lies outside the 32x24 frames" in from_file or "over 4 x the 32x24 frames" in from_file


@pytest.mark.parametrize("where, value, key", [
    ("pose", True, "pose"), ("root", "0.5", "root"), ("betas", None, "betas"), ("root", False, "root"),
])
def test_booleans_strings_and_null_are_not_numbers(tmp_path, where, value, key):
    entry = json.loads(json.dumps(ENTRY))
    entry[where][-1] = value
    path = tmp_path / "l.json"
    path.write_text(json.dumps({"labels": {"0": entry}}))
    with pytest.raises(I.PropagationInputError,
                       match=rf"{path}: frame 0: '{key}': {value!r} is not a number"):
        I.load_labels(path, 5)


def test_booleans_and_strings_are_not_numbers_in_intrinsics_and_boxes(tmp_path):
    k = tmp_path / "K.json"
    k.write_text(json.dumps({"fx": "30", "fy": 30, "cx": 16, "cy": 12}))
    with pytest.raises(I.PropagationInputError, match="'fx': '30' is not a number"):
        I.parse_intrinsics(str(k))
    k.write_text(json.dumps([[30, 0, 16], [0, 30, 12], [0, 0, True]]))
    with pytest.raises(I.PropagationInputError, match="True is not a number"):
        I.parse_intrinsics(str(k))
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"boxes": {"1": [16, "12", 20]}}))
    with pytest.raises(boxes_lib.BoxError, match="frame 1: '12' is not a number"):
        boxes_lib.read_boxes(b, 6)
    np.save(tmp_path / "b.npy", np.ones((6, 3), bool))
    with pytest.raises(boxes_lib.BoxError, match="array of bool"):
        boxes_lib.read_boxes(tmp_path / "b.npy", 6)


def test_a_broken_symlink_among_the_frames_is_named(tmp_path, video, capsys):
    link = video / "f_9.png"
    os.symlink(tmp_path / "gone.png", link)
    K = np.tile(np.array([[30.0, 0, 16], [0, 30, 12], [0, 0, 1]]), (6, 1, 1))
    np.save(tmp_path / "K.npy", K)
    assert _run(video, _labels(tmp_path), tmp_path / "o", "--intrinsics", str(tmp_path / "K.npy")) == 2
    assert _line(capsys) == (f"handprop propagate: {link}: a broken symbolic link (to "
                             f"{tmp_path / 'gone.png'}); every image in the frames folder must be a "
                             "readable frame (remove it or repair the link)")


def test_deeply_nested_json_is_one_line(tmp_path, video, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text('{"labels": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert _run(video, deep, tmp_path / "o", "--intrinsics", "30,30,16,12") == 2
    assert _line(capsys) == f"handprop propagate: {deep}: JSON nested too deeply to read"
    for path in (tmp_path / "deep_K.json", tmp_path / "deep_boxes.json"):
        path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(I.PropagationInputError, match="nested too deeply"):
        I.parse_intrinsics(str(tmp_path / "deep_K.json"))
    with pytest.raises(boxes_lib.BoxError, match="nested too deeply"):
        boxes_lib.read_boxes(tmp_path / "deep_boxes.json", 6)


# --- property-based: random malformed files, never anything but a result or a one-line user error ---

_atoms = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=4),
                   st.floats(allow_nan=True, allow_infinity=True))
_json = st.recursive(_atoms, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=4), inner, max_size=4)),
                     max_leaves=12)


def _numbers(n):
    return st.lists(st.one_of(st.floats(-2, 2), _atoms), min_size=n - 1, max_size=n + 1)


_entry = st.fixed_dictionaries({}, optional={"root": st.one_of(_numbers(3), _json), "pose": _numbers(48),
                                             "betas": st.one_of(_numbers(10), _json), "x": _json})
_labels_doc = st.one_of(
    _json,
    st.fixed_dictionaries({"labels": st.dictionaries(st.one_of(st.sampled_from(["0", "3", "-1", "99"]),
                                                               st.text(max_size=3)),
                                                     st.one_of(_entry, _json), max_size=3)},
                          optional={"K": _json, "side": _json}),
)
_K_doc = st.one_of(_json, st.lists(st.lists(st.one_of(st.floats(), _atoms), min_size=2, max_size=4),
                                   min_size=2, max_size=4),
                   st.fixed_dictionaries({k: st.one_of(st.floats(), _atoms)
                                          for k in ("fx", "fy", "cx", "cy")}))
_boxes_doc = st.one_of(_json, st.fixed_dictionaries({"boxes": st.dictionaries(
    st.one_of(st.sampled_from(["0", "5", "-1", "6", " 1", "1.5"]), st.text(max_size=3)),
    st.one_of(st.lists(st.one_of(st.floats(-100, 100), _atoms), max_size=4), _json), max_size=3)}))


def _dump(doc) -> str:
    return json.dumps(doc, allow_nan=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=_labels_doc, K=_K_doc, boxes=_boxes_doc)
def test_random_malformed_files_give_a_result_or_one_user_error(tmp_path, labels, K, boxes):
    for name, doc, read in (
            ("labels.json", labels, lambda p: (I.load_labels(p, 6), I.label_side(p))),
            ("K.json", K, lambda p: I.parse_intrinsics(str(p), (H, W))),
            ("boxes.json", boxes, lambda p: boxes_lib.read_boxes(p, 6, (H, W)))):
        path = tmp_path / name
        path.write_text(_dump(doc))
        try:
            read(path)
        except (I.PropagationInputError, boxes_lib.BoxError) as e:
            line = str(e)
            assert str(path) in line and "\n" not in line, line
