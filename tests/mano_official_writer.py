"""Write a MANO model pickle in the official ``MANO_RIGHT.pkl`` layout (test fixture helper).

Run as a script in its own process: ``python mano_official_writer.py IN.npz OUT.pkl``. It registers
stand-in classes under chumpy's module names (``chumpy``, ``chumpy.ch``) so that the pickle holds
chumpy ``Ch`` objects exactly as the official files do (class ``chumpy.ch.Ch``, state dict with the
array under ``"x"`` and chumpy's bookkeeping entries), a ``scipy.sparse`` CSC ``J_regressor``, all
official keys, pickle protocol 2, and the Python-2-era module names (``numpy.core.multiarray``,
``scipy.sparse.csc``) in its GLOBAL opcodes. The process that reads it must not import chumpy.
"""

from __future__ import annotations

import io
import pickle
import sys
import types

import numpy as np


def _install_fake_chumpy() -> type:
    pkg = types.ModuleType("chumpy")
    pkg.__path__ = []
    ch = types.ModuleType("chumpy.ch")

    class Ch:
        """Mimics chumpy.ch.Ch pickling: ``__getstate__`` returns ``__dict__`` minus caches."""

        def __init__(self, x):
            self.x = np.asarray(x, np.float64)
            self._dirty_vars = set()
            self._itr = None
            self._depends_on_deps = {}
            self._make_dense = False
            self._make_sparse = False
            self._parents = {}
            self._cache = {"r": None}

        def __getstate__(self):
            d = dict(self.__dict__)
            del d["_parents"], d["_cache"]
            return d

    class add(Ch):  # noqa: N801  (chumpy's name) a derived expression: no array of its own
        def __init__(self, a, b):
            super().__init__(0.0)
            del self.x
            self.a, self.b = a, b

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    ops = types.ModuleType("chumpy.ch_ops")
    add.__module__ = "chumpy.ch_ops"
    add.__qualname__ = "add"
    ops.add = add
    ch.Ch = Ch
    pkg.ch, pkg.ch_ops = ch, ops
    sys.modules["chumpy"] = pkg
    sys.modules["chumpy.ch"] = ch
    sys.modules["chumpy.ch_ops"] = ops
    return Ch


class _Py2StylePickler(pickle.Pickler):
    """Pickles ndarrays the way Python 2 did: raw data as a (latin-1) str, not bytes."""

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            arr = np.ascontiguousarray(obj)
            state = (1, arr.shape, arr.dtype, False, arr.tobytes().decode("latin1"))
            return (np.ndarray.__reduce__(arr)[0], (np.ndarray, (0,), "b"), state)
        return NotImplemented


def write_official_pickle(arrays: dict, out_path: str) -> None:
    """Pickle ``arrays`` (ManoModel field names, numpy) in the official MANO layout."""
    import scipy.sparse as sp

    Ch = _install_fake_chumpy()
    parents = np.asarray(arrays["kintree_table"])[0] if "kintree_table" in arrays else np.asarray(
        [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])
    kintree = np.stack([np.where(parents < 0, 2**32 - 1, parents), np.arange(16)]).astype(np.int64)
    d = {
        "hands_components": np.asarray(arrays["hands_components"], np.float64),
        "f": np.asarray(arrays["faces"], np.uint32),
        "J_regressor": sp.csc_matrix(np.asarray(arrays["J_regressor"], np.float64)),
        "kintree_table": kintree,
        # a derived chumpy expression (unused by the layer; the loader must skip it)
        "J": sys.modules["chumpy.ch_ops"].add(
            Ch(np.asarray(arrays["J_regressor"]) @ np.asarray(arrays["v_template"])), Ch(np.zeros(3))),
        "weights": np.asarray(arrays["weights"], np.float64),
        "posedirs": np.asarray(arrays["posedirs"], np.float64),
        "bs_style": "lbs",
        "hands_mean": np.asarray(arrays["hands_mean"], np.float64),
        "hands_coeffs": np.zeros((1554, 45)),
        "v_template": np.asarray(arrays["v_template"], np.float64),
        "shapedirs": Ch(arrays["shapedirs"]),
        "bs_type": "lrotmin",
    }
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(d)
    raw = buf.getvalue()
    # Python-2-era module names, as in the official files (GLOBAL opcodes are plain text).
    for new, old in [(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"),
                     (b"scipy.sparse._csc\n", b"scipy.sparse.csc\n")]:
        raw = raw.replace(new, old)
    with open(out_path, "wb") as f:
        f.write(raw)


if __name__ == "__main__":
    with np.load(sys.argv[1]) as z:
        arrs = {k: z[k] for k in z.files}
    write_official_pickle(arrs, sys.argv[2])
