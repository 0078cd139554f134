"""Reading the official MANO model files (no chumpy, no scipy needed) and ``.npz`` conversions.

The official ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` are Python-2 pickles (read with
``encoding="latin1"``) holding numpy arrays, **chumpy** ``Ch`` objects (e.g. ``shapedirs``; a
pickled ``Ch`` keeps its array in its state dict under ``"x"``) and a **scipy.sparse**
``csc_matrix`` ``J_regressor``. ``load`` uses a restricted unpickler: numpy's array
reconstruction and a few builtins are allowed, chumpy and scipy.sparse classes are replaced by
small stubs that only record their pickled state, and anything else is refused.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any

import numpy as np

from mano_jax import constants as C
from mano_jax.model import ARRAY_SHAPES, ManoFileError, ManoModel, make_model

__all__ = ["ManoFileError", "load", "save_npz", "read_official_pickle"]

# Official pickle key -> ManoModel field (identical except faces).
_PKL_KEYS = {
    "v_template": "v_template",
    "shapedirs": "shapedirs",
    "posedirs": "posedirs",
    "J_regressor": "J_regressor",
    "weights": "weights",
    "f": "faces",
    "hands_components": "hands_components",
    "hands_mean": "hands_mean",
}


_NEEDED_KEYS = set(_PKL_KEYS) | {"kintree_table"}


class _PickledStub:
    """Stand-in for a class we do not import: keeps the pickled state and constructor args."""

    _module = "?"
    _name = "?"
    _args: tuple = ()
    _state: Any = None

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj._args = args
        obj._state = None
        return obj

    def __init__(self, *args, **kwargs):  # copy_reg-style reconstruction may call __init__
        pass

    def __setstate__(self, state):
        self._state = state

    def __reduce__(self):  # never re-pickle stubs by accident
        raise TypeError(f"stub for {self._module}.{self._name} cannot be pickled")


class _ChumpyStub(_PickledStub):
    """A chumpy object: its array is ``state['x']``."""


class _SparseStub(_PickledStub):
    """A scipy.sparse matrix: CSC/CSR (data, indices, indptr) or COO (data, row, col)."""


def _stub_class(base: type, module: str, name: str) -> type:
    return type(name, (base,), {"_module": module, "_name": name})


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays, builtins containers and stubs."""

    _NUMPY = {"_reconstruct", "scalar", "ndarray", "dtype", "_frombuffer"}
    _BUILTINS = {"object", "set", "frozenset", "list", "dict", "tuple", "complex", "slice"}

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self.source = source
        self._stubs: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        top = module.split(".")[0]
        stub = _ChumpyStub if top == "chumpy" else _SparseStub if module.startswith("scipy.sparse") else None
        if stub is not None:
            key = (module, name)
            if key not in self._stubs:
                self._stubs[key] = _stub_class(stub, module, name)
            return self._stubs[key]
        if top == "numpy" and name in self._NUMPY:
            core: Any = getattr(np, "_core", None) or np.core     # numpy >= 2 renamed numpy.core
            if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in (
                    "_reconstruct", "scalar"):
                return getattr(core.multiarray, name)
            if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
                return core.numeric._frombuffer                         # protocol-5 pickles
            if module == "numpy" and name in ("ndarray", "dtype"):
                return getattr(np, name)
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            import copyreg
            return copyreg._reconstructor  # pyright: ignore[reportAttributeAccessIssue]  (private, no stub)
        if module in ("__builtin__", "builtins") and name in self._BUILTINS:
            import builtins
            return getattr(builtins, name)
        if module == "_codecs" and name == "encode":  # bytes written by Python 3 at protocol <= 2
            import codecs
            return codecs.encode
        raise pickle.UnpicklingError(
            f"{self.source}: refusing to load {module}.{name} (only numpy arrays, chumpy arrays and "
            f"scipy sparse matrices are expected in a MANO model file)")


def _sparse_to_dense(obj: _SparseStub, source: str, key: str) -> np.ndarray:
    st = obj._state
    if not isinstance(st, dict):
        raise ManoFileError(f"{source}: key {key!r}: unreadable sparse matrix state")
    shape: Any = st.get("_shape", st.get("shape"))  # None: the TypeError below names the key
    fmt = st.get("format") or obj._name[:3]
    try:
        shape = tuple(int(s) for s in shape)
        out = np.zeros(shape, np.float64)
        data = np.asarray(st["data"], np.float64)
        if fmt in ("csc", "csr"):
            indices = np.asarray(st["indices"], np.int64)
            indptr = np.asarray(st["indptr"], np.int64)
            major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            if fmt == "csc":
                np.add.at(out, (indices, major), data)
            else:
                np.add.at(out, (major, indices), data)
        elif fmt == "coo":
            row = np.asarray(st.get("row", st.get("coords", [None, None])[0]), np.int64)
            col = np.asarray(st.get("col", st.get("coords", [None, None])[1]), np.int64)
            np.add.at(out, (row, col), data)
        else:
            raise ManoFileError(f"{source}: key {key!r}: unsupported sparse format {fmt!r}")
    except (KeyError, TypeError, ValueError, IndexError) as e:
        if isinstance(e, ManoFileError):
            raise
        raise ManoFileError(f"{source}: key {key!r}: malformed sparse matrix ({e})") from e
    return out


def _to_array(value: Any, source: str, key: str) -> np.ndarray:
    if isinstance(value, _ChumpyStub):
        st = value._state
        if isinstance(st, dict) and "x" in st:
            return _to_array(st["x"], source, key)
        raise ManoFileError(
            f"{source}: key {key!r} is a chumpy {value._module}.{value._name} object without a stored "
            f"array (state keys: {sorted(st) if isinstance(st, dict) else type(st).__name__})")
    if isinstance(value, _SparseStub):
        return _sparse_to_dense(value, source, key)
    try:
        return np.asarray(value)
    except Exception as e:  # pragma: no cover - defensive
        raise ManoFileError(f"{source}: key {key!r} is not an array ({type(value).__name__})") from e


def read_official_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """Raw contents of an official MANO ``.pkl`` with chumpy/sparse objects turned into arrays.

    Args:
      path: the file.
    Returns:
      dict: the file's keys; arrays as numpy arrays (``J_regressor`` dense), strings kept. Keys
      the layer does not use whose objects hold no array (derived chumpy expressions) are left out.
    Raises:
      FileNotFoundError, ManoFileError (not a pickle, truncated, unexpected content).
    """
    source = os.fspath(path)
    if not os.path.exists(source):
        raise FileNotFoundError(f"MANO model file not found: {source}")
    with open(source, "rb") as f:
        raw = f.read()
    if not raw:
        raise ManoFileError(f"{source}: file is empty (expected a MANO model pickle)")
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), source).load()
    except EOFError as e:
        raise ManoFileError(f"{source}: truncated pickle (ended early: {e or 'EOF'})") from e
    except pickle.UnpicklingError as e:
        msg = str(e)
        if msg.startswith(source):
            raise ManoFileError(msg) from e
        if "truncated" in msg:
            raise ManoFileError(f"{source}: truncated pickle ({msg})") from e
        raise ManoFileError(f"{source}: not a MANO model pickle ({msg})") from e
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError,
            UnicodeDecodeError, OverflowError) as e:
        raise ManoFileError(f"{source}: corrupt or truncated pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise ManoFileError(f"{source}: expected a pickled dict of MANO arrays, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if isinstance(v, (str, bytes, int, float)) or v is None:
            out[k] = v
            continue
        try:
            out[k] = _to_array(v, source, k)
        except ManoFileError:
            if k in _NEEDED_KEYS:
                raise
            # a key the layer does not use (e.g. a derived chumpy expression): leave it out
    return out


def _parents_from_kintree(kt: np.ndarray, source: str) -> tuple[int, ...]:
    kt = np.asarray(kt)
    if kt.ndim != 2 or kt.shape[0] != 2 or kt.shape[1] != C.NUM_JOINTS:
        raise ManoFileError(f"{source}: key 'kintree_table' has shape {kt.shape}, expected (2, 16)")
    par = kt[0].astype(np.int64)
    ids = kt[1].astype(np.int64)
    if not np.array_equal(ids, np.arange(C.NUM_JOINTS)):
        raise ManoFileError(f"{source}: key 'kintree_table' row 1 must be 0..15, got {ids.tolist()}")
    par = np.where((par < 0) | (par >= C.NUM_JOINTS), -1, par)   # root stored as 2**32 - 1
    return tuple(int(p) for p in par)


def _side_from_name(source: str) -> str | None:
    name = os.path.basename(source).upper()
    if "LEFT" in name and "RIGHT" not in name:
        return "left"
    if "RIGHT" in name and "LEFT" not in name:
        return "right"
    return None


def load(path: str | os.PathLike, side: str | None = None) -> ManoModel:
    """Load a MANO model from an official ``.pkl`` (e.g. ``MANO_RIGHT.pkl``) or a ``.npz``.

    Works without chumpy or scipy installed. Arrays come back in JAX's default float dtype
    (float32, or float64 with x64 enabled); the units are those of the file (metres for MANO).

    Args:
      path: ``.pkl`` in the official layout (keys ``v_template``, ``shapedirs``, ``posedirs``,
        ``J_regressor``, ``weights``, ``f``, ``hands_components``, ``hands_mean``,
        ``kintree_table``, ...), or ``.npz`` written by ``save_npz`` (or with the same keys).
      side: "right"/"left"; by default taken from the npz's ``side`` entry or from the file name
        (``LEFT``/``RIGHT``), else "right".
    Returns:
      the ManoModel.
    Raises:
      FileNotFoundError if the file does not exist; ManoFileError (a ValueError) naming the file
      and the problem when it is not a pickle/npz, truncated, lacks a key or has a wrong shape.
    """
    source = os.fspath(path)
    if not os.path.exists(source):
        raise FileNotFoundError(f"MANO model file not found: {source}")
    with open(source, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):          # zip archive: .npz
        return _load_npz(source, side)
    data = read_official_pickle(source)
    arrays = {}
    for pkl_key, field in _PKL_KEYS.items():
        if pkl_key not in data:
            alt = field if field in data else None
            if alt is None:
                raise ManoFileError(f"{source}: missing key {pkl_key!r} (file has {sorted(data)})")
            pkl_key = alt
        arrays[field] = data[pkl_key]
    parents = C.PARENTS
    if "kintree_table" in data:
        parents = _parents_from_kintree(data["kintree_table"], source)
    side = side or _side_from_name(source) or "right"
    return make_model(arrays, side=side, parents=parents, source=source)


def _load_npz(source: str, side: str | None) -> ManoModel:
    try:
        with np.load(source, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:
        raise ManoFileError(f"{source}: unreadable .npz ({type(e).__name__}: {e})") from e
    if "faces" not in data and "f" in data:
        data["faces"] = data["f"]
    parents = C.PARENTS
    if "kintree_table" in data:
        parents = _parents_from_kintree(data["kintree_table"], source)
    elif "parents" in data:
        parents = tuple(int(p) for p in data["parents"])
    if side is None and "side" in data:
        side = str(data["side"])
    side = side or _side_from_name(source) or "right"
    return make_model(data, side=side, parents=parents, source=source)


def save_npz(model: ManoModel, path: str | os.PathLike) -> None:
    """Write the model's arrays to ``path`` (.npz, float64, plus ``kintree_table`` and ``side``).

    ``load(path)`` reads it back; convert an official ``.pkl`` once with
    ``save_npz(load("MANO_RIGHT.pkl"), "mano_right.npz")``.
    """
    arrays = model.numpy()
    parents = np.asarray([p if p >= 0 else 2**32 - 1 for p in model.parents], np.int64)
    kintree = np.stack([parents, np.arange(C.NUM_JOINTS)]).astype(np.int64)
    assert set(arrays) == set(ARRAY_SHAPES)
    with open(os.fspath(path), "wb") as f:
        entries: dict[str, Any] = {**arrays, "kintree_table": kintree, "side": np.asarray(model.side)}
        np.savez(f, **entries)
