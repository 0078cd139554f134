"""mano_jax.load / save_npz: the official pickle layout read without chumpy, npz, and bad input."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

import mano_jax

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _random_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Arbitrary (not hand-like) model arrays: an independent check of the file round trip."""
    rng = np.random.default_rng(seed)
    W = rng.random((778, 16))
    Jr = rng.random((16, 778)) * (rng.random((16, 778)) < 0.05)
    Jr[:, 0] += 1e-3
    return dict(
        v_template=rng.normal(0, 0.05, (778, 3)), shapedirs=rng.normal(0, 0.01, (778, 3, 10)),
        posedirs=rng.normal(0, 0.01, (778, 3, 135)), J_regressor=Jr / Jr.sum(1, keepdims=True),
        weights=W / W.sum(1, keepdims=True), faces=rng.integers(0, 778, (1538, 3)),
        hands_components=np.linalg.qr(rng.normal(size=(45, 45)))[0].T,
        hands_mean=rng.normal(0, 0.2, 45))


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(arrays, path of an official-layout MANO_RIGHT.pkl written by a separate process)."""
    d = tmp_path_factory.mktemp("mano")
    arrays = _random_arrays()
    np.savez(d / "src.npz", **arrays)
    pkl = d / "MANO_RIGHT.pkl"
    subprocess.run([sys.executable, os.path.join(HERE, "mano_official_writer.py"), str(d / "src.npz"),
                    str(pkl)], check=True, cwd=ROOT)
    return arrays, pkl


def test_official_pickle_has_chumpy_and_sparse_objects(official):
    _, pkl = official
    raw = pkl.read_bytes()
    assert raw[:2] == b"\x80\x02"                       # protocol 2
    assert b"chumpy.ch\nCh\n" in raw and b"scipy.sparse.csc\ncsc_matrix\n" in raw
    assert b"chumpy.ch_ops\nadd\n" in raw
    assert b"numpy.core.multiarray\n_reconstruct\n" in raw
    with pytest.raises(subprocess.CalledProcessError):   # plain pickle needs chumpy
        subprocess.run([sys.executable, "-c", "import pickle,sys; sys.modules['chumpy']=None; "
                        f"pickle.load(open({str(pkl)!r},'rb'), encoding='latin1')"],
                       check=True, capture_output=True)


def test_load_official_pickle_without_chumpy_or_scipy(official, tmp_path):
    arrays, pkl = official
    out = tmp_path / "converted.npz"
    code = (
        "import sys\n"
        "sys.modules['chumpy'] = None\n"        # import chumpy -> ImportError
        "sys.modules['scipy'] = None\n"         # and scipy is not needed either
        "import mano_jax\n"
        f"m = mano_jax.load({str(pkl)!r})\n"
        "assert m.side == 'right', m.side\n"
        f"mano_jax.save_npz(m, {str(out)!r})\n"
    )
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)
    with np.load(out) as z:
        for k, v in arrays.items():
            np.testing.assert_allclose(z[k], v, rtol=0, atol=0, err_msg=k)
        assert z["kintree_table"][0, 0] == 2**32 - 1
        assert list(z["kintree_table"][0, 1:]) == list(mano_jax.PARENTS[1:])
        assert str(z["side"]) == "right"


@pytest.mark.parametrize("protocol", [4, 5])
def test_modern_pickle_protocols(tmp_path, protocol):
    import scipy.sparse as sp

    a = _random_arrays(2)
    d = dict(a, f=a.pop("faces"), J_regressor=sp.csc_matrix(a["J_regressor"]), bs_type="lrotmin")
    p = tmp_path / "MANO_LEFT.pkl"
    p.write_bytes(pickle.dumps(d, protocol=protocol))
    m = mano_jax.load(p)
    assert m.side == "left"
    np.testing.assert_allclose(m.numpy()["J_regressor"], a["J_regressor"], atol=1e-7)
    np.testing.assert_array_equal(m.numpy()["faces"], d["f"])


def test_npz_round_trip_and_side(tmp_path):
    m = mano_jax.make_model(_random_arrays(1), side="left")
    mano_jax.save_npz(m, tmp_path / "hand.npz")
    m2 = mano_jax.load(tmp_path / "hand.npz")
    assert m2.side == "left" and m2.parents == m.parents
    for k, v in m.numpy().items():
        np.testing.assert_array_equal(m2.numpy()[k], v)
    assert mano_jax.load(tmp_path / "hand.npz", side="right").side == "right"


def _write_dict_pickle(path, d):
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


def test_missing_file_error(tmp_path):
    p = tmp_path / "MANO_RIGHT.pkl"
    with pytest.raises(FileNotFoundError, match="MANO_RIGHT.pkl"):
        mano_jax.load(p)


@pytest.mark.parametrize("name, content, message", [
    ("MANO_RIGHT.pkl", b"this is not a pickle\n", "not a MANO model pickle"),
    ("MANO_LEFT.pkl", b"", "empty"),
    ("MANO_RIGHT.pkl", b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.",
     r"refusing to load os\.system"),
    ("MANO_RIGHT.pkl", pickle.dumps([1, 2, 3], protocol=2), "expected a pickled dict"),
], ids=["not_a_pickle", "empty", "arbitrary_globals", "not_a_dict"])
def test_bad_file_content_error(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(mano_jax.ManoFileError, match=re.escape(name) + ".*" + message):
        mano_jax.load(p)


def test_truncated_error(official, tmp_path):
    _, pkl = official
    p = tmp_path / "MANO_RIGHT.pkl"
    p.write_bytes(pkl.read_bytes()[: pkl.stat().st_size // 2])
    with pytest.raises(mano_jax.ManoFileError, match=r"MANO_RIGHT\.pkl.*truncated"):
        mano_jax.load(p)


def test_missing_key_error(tmp_path):
    a = _random_arrays()
    d = {k: v for k, v in a.items() if k not in ("faces", "posedirs")}
    d["f"] = a["faces"]
    p = tmp_path / "MANO_RIGHT.pkl"
    _write_dict_pickle(p, d)
    with pytest.raises(mano_jax.ManoFileError, match=r"MANO_RIGHT\.pkl.*missing key 'posedirs'"):
        mano_jax.load(p)


def test_wrong_shape_error(tmp_path):
    a = _random_arrays()
    a["f"] = a.pop("faces")
    a["shapedirs"] = a["shapedirs"][:, :, :8]
    p = tmp_path / "MANO_RIGHT.pkl"
    _write_dict_pickle(p, a)
    with pytest.raises(mano_jax.ManoFileError,
                       match=r"MANO_RIGHT\.pkl.*'shapedirs' has shape \(778, 3, 8\), expected "
                             r"\(778, 3, 10\)"):
        mano_jax.load(p)


def test_bad_npz_shape_error(tmp_path):
    a = _random_arrays()
    a["weights"] = a["weights"][:, :15]
    np.savez(tmp_path / "hand.npz", **a)
    with pytest.raises(mano_jax.ManoFileError, match=r"hand\.npz.*'weights' has shape \(778, 15\)"):
        mano_jax.load(tmp_path / "hand.npz")


def test_required_key_without_array_error(tmp_path, monkeypatch):
    import types

    class add:  # noqa: N801  (stands in for chumpy.ch_ops.add, a derived expression)
        def __init__(self):
            self.a, self.b = 1.0, 2.0

    mod = types.ModuleType("chumpy.ch_ops")
    add.__module__, add.__qualname__ = "chumpy.ch_ops", "add"
    mod.add = add
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.ch_ops", mod)
    a = _random_arrays()
    a["f"] = a.pop("faces")
    a["shapedirs"] = add()
    p = tmp_path / "MANO_RIGHT.pkl"
    _write_dict_pickle(p, a)
    with pytest.raises(mano_jax.ManoFileError,
                       match=r"MANO_RIGHT\.pkl: key 'shapedirs' is a chumpy chumpy\.ch_ops\.add "):
        mano_jax.load(p)
