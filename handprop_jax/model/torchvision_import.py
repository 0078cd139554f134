"""Import a torchvision ResNet-18 checkpoint (``.pth`` state dict) into the Flax :class:`Encoder`.

Key mapping (torch -> Flax, inside the encoder's variables):

====================================  =============================================
``conv1.weight`` (O, I, kh, kw)        ``params/conv1/kernel`` (kh, kw, I, O)
``bn1.weight`` / ``bn1.bias``          ``params/bn1/scale`` / ``params/bn1/bias``
``bn1.running_mean`` / ``running_var`` ``batch_stats/bn1/mean`` / ``batch_stats/bn1/var``
``layerS.B.conv{1,2}.weight``          ``params/layerS_B/conv{1,2}/kernel``
``layerS.B.bn{1,2}.*``                 ``params|batch_stats/layerS_B/bn{1,2}/*``
``layerS.B.downsample.0.weight``       ``params/layerS_B/downsample_conv/kernel``
``layerS.B.downsample.1.*``            ``params|batch_stats/layerS_B/downsample_bn/*``
====================================  =============================================

``fc.*`` and ``*.num_batches_tracked`` are ignored; a ``module.`` prefix (DataParallel) is
stripped. The encoder's own heads (``z_r_proj``, ``z_theta_proj``) keep their values.

:func:`read_pth` reads a ``.pth`` file with torch when it is installed and otherwise with a small
built-in reader of torch's zip serialisation format (a pickle whose tensors refer to raw little-endian
storages ``archive/data/<key>``); no code from the file is executed beyond rebuilding
``OrderedDict``s and tensors (the unpickler only admits those names).
"""

from __future__ import annotations

import collections
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

_BN_FIELDS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def flax_path(torch_key: str) -> tuple[str, ...] | None:
    """Map one torchvision ResNet key to (collection, module..., leaf); None for ignored keys.

    Raises ValueError naming the key when it is not part of a torchvision ResNet.
    """
    key = torch_key[len("module."):] if torch_key.startswith("module.") else torch_key
    if key.startswith("fc.") or key.endswith("num_batches_tracked"):
        return None
    m = re.fullmatch(r"(?:layer(\d)\.(\d+)\.)?(conv1|conv2|bn1|bn2|downsample\.0|downsample\.1)\.(\w+)", key)
    if m is None:
        raise ValueError(f"torchvision import: unexpected key {torch_key!r} (not a ResNet-18 key)")
    stage, block, layer, field = m.groups()
    if stage is None and layer not in ("conv1", "bn1"):
        raise ValueError(f"torchvision import: unexpected key {torch_key!r}")
    module = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}.get(layer, layer)
    path = (module,) if stage is None else (f"layer{stage}_{block}", module)
    if module.startswith("conv") or module == "downsample_conv":
        if field != "weight":
            raise ValueError(f"torchvision import: unexpected key {torch_key!r} (convolutions have no bias)")
        return ("params", *path, "kernel")
    if field not in _BN_FIELDS:
        raise ValueError(f"torchvision import: unexpected BatchNorm field in key {torch_key!r}")
    collection, leaf = _BN_FIELDS[field]
    return (collection, *path, leaf)


def _convert(value: np.ndarray, leaf: str) -> np.ndarray:
    return np.transpose(value, (2, 3, 1, 0)) if leaf == "kernel" else value


def import_state_dict(state_dict: Mapping[str, Any], variables: Mapping[str, Any],
                      source: str = "state dict") -> dict:
    """Return a copy of the encoder ``variables`` ({"params", "batch_stats"}) with every ResNet
    weight taken from the torchvision ``state_dict`` (name -> array-like, torch tensors accepted).

    Raises KeyError naming the missing Flax/torch keys, ValueError naming a key whose shape
    does not match (torch shape, converted shape, expected Flax shape).
    """
    out = jax.tree.map(np.asarray, {c: variables[c] for c in ("params", "batch_stats")})
    expected = {}
    for c in ("params", "batch_stats"):
        for kpath, leaf in jax.tree_util.tree_leaves_with_path(out[c]):
            names = tuple(k.key for k in kpath)
            if names[0] in ("z_r_proj", "z_theta_proj"):
                continue
            expected[(c, *names)] = leaf
    seen = set()
    for key, value in state_dict.items():
        path = flax_path(key)
        if path is None:
            continue
        if path not in expected:
            raise KeyError(f"torchvision import ({source}): key {key!r} -> {'/'.join(path)} has no "
                           f"counterpart in the encoder (wrong width or architecture?)")
        arr = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, np.float32)
        conv = _convert(arr, path[-1]) if arr.ndim == 4 else arr
        want = expected[path].shape
        if conv.shape != want:
            raise ValueError(f"torchvision import ({source}): key {key!r} has shape {arr.shape} -> "
                             f"{conv.shape}, but the encoder's {'/'.join(path)} is {want}")
        node = out[path[0]]
        for name in path[1:-1]:
            node = node[name]
        node[path[-1]] = conv
        seen.add(path)
    missing = sorted("/".join(p) for p in expected if p not in seen)
    if missing:
        raise KeyError(f"torchvision import ({source}): {len(missing)} encoder variables have no key in "
                       f"the checkpoint, e.g. {missing[:5]}")
    return out


class _Storage:
    def __init__(self, dtype: np.dtype, key: str):
        self.dtype, self.key = dtype, key


_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                   "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                   "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class _PthUnpickler(pickle.Unpickler):
    """Unpickler for torch's zip format that only rebuilds tensors (as numpy) and dicts."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: str):
        super().__init__(file)
        self.archive, self.prefix, self.source = archive, prefix, source

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self._rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if module == "torch" and name == "Size":
            return tuple
        raise pickle.UnpicklingError(f"{self.source}: refusing to load {module}.{name} (only tensors and "
                                     "dicts are read without torch; install torch for other contents)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"{self.source}: unsupported persistent id {pid!r}")
        storage_type, key = pid[1], pid[2]
        if storage_type not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"{self.source}: unsupported storage {storage_type!r}")
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        return np.frombuffer(raw, dtype=np.dtype(_STORAGE_DTYPES[storage_type]).newbyteorder("<"))

    @staticmethod
    def _rebuild_tensor(storage, offset, size, stride, *unused):
        itemsize = storage.dtype.itemsize
        if len(size) == 0:
            return storage[offset].copy()
        view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                               strides=tuple(s * itemsize for s in stride))
        return np.array(view)


def read_pth(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``.pth`` state dict (name -> numpy array). Uses torch when importable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"torchvision checkpoint {path} does not exist")
    try:
        import torch  # pyright: ignore[reportMissingImports]  (optional: only to read .pth files)
    except ImportError:
        torch = None
    if torch is not None:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(sd, Mapping) and "state_dict" in sd:
            sd = sd["state_dict"]
        return {k: v.detach().cpu().numpy() for k, v in sd.items()}
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a zip-format torch checkpoint (legacy format needs torch installed)")
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ValueError(f"{path}: expected one */data.pkl in the archive, found {pkl}")
        prefix = pkl[0][: -len("/data.pkl")]
        with archive.open(pkl[0]) as f:
            sd = _PthUnpickler(f, archive, prefix, str(path)).load()
    if isinstance(sd, Mapping) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return dict(sd)


def load_torchvision_resnet18(path: str | Path, variables: Mapping[str, Any],
                              scope: str | None = None) -> dict:
    """Read ``path`` (a torchvision ResNet-18 ``.pth``) into ``variables``.

    ``scope=None``: ``variables`` are the Encoder's own ({"params", "batch_stats"}). ``scope="encoder"``:
    ``variables`` are a parent module's (e.g. HandProp's) and the encoder is its submodule
    ``encoder``; only that subtree is replaced, everything else is returned unchanged.
    """
    state_dict = read_pth(path)
    if scope is None:
        return import_state_dict(state_dict, variables, source=str(path))
    for c in ("params", "batch_stats"):
        if scope not in variables.get(c, {}):
            raise KeyError(f"torchvision import ({path}): variables[{c!r}] has no {scope!r} submodule; "
                           f"it has {sorted(variables.get(c, {}))}")
    sub = import_state_dict(state_dict, {c: variables[c][scope] for c in ("params", "batch_stats")},
                            source=str(path))
    out = dict(variables)
    for c in ("params", "batch_stats"):
        out[c] = {**variables[c], scope: jax.tree.map(np.asarray, sub[c])}
    return out
