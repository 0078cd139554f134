"""Initial weights of the single-frame predictor: ``model.init_checkpoint``.

One config field says where a run's predictor starts from (:func:`initialise`, called by
:meth:`handprop_jax.model.api.HandPropModel.init`):

- ``None``: a fresh random initialisation;
- a torchvision ResNet-18 ``.pth`` (e.g. ImageNet weights): the encoder only
  (:mod:`handprop_jax.model.torchvision_import`); the heads stay fresh;
- a handprop predictor ``.npz`` written by :func:`export_predictor` (``handprop pretrain``): the
  encoder, π^r and π^θ parameters and the encoder's BatchNorm statistics. The aligners stay fresh.

The ``.npz`` holds one array per leaf, named by its path (``params/encoder/conv1/kernel``), the
parameters in float16 (half the size; an initialisation needs no more precision) and the BatchNorm
statistics in float32, plus ``__meta__``: a JSON text with the model fields that fix the parameter
shapes and meaning (:data:`MATCHING_FIELDS`) and where the weights came from. Loading checks those
fields against the run's config and every array's shape, naming the file and the key on a mismatch.

A relative path that does not exist from the working directory is looked up in the repository
(e.g. ``pretrained/synthetic_source.npz``, the shipped stand-in for ImageNet weights).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from handprop_jax.errors import UserError
from handprop_jax.model.torchvision_import import load_torchvision_resnet18

#: model fields (and data.image_size) that a predictor .npz must share with the run that loads it
MATCHING_FIELDS = ("encoder_width", "feature_dim", "z_r_stage", "ncomps", "global_rotation", "root_z_off",
                   "root_depth_unit")
PREDICTOR_KEYS = ("encoder", "root_regressor", "pose_regressor")
REPO_ROOT = Path(__file__).resolve().parents[2]


class InitCheckpointError(UserError):
    """``model.init_checkpoint`` names a missing, unreadable or incompatible file (the message says which
    file, which key and what was expected)."""


def resolve(path: str | Path) -> Path:
    """``path`` as given when it exists, else relative to the repository root; InitCheckpointError when
    neither exists."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        if not p.is_file():
            raise InitCheckpointError(f"model.init_checkpoint {path}: no such file")
        return p
    q = REPO_ROOT / p
    if not q.is_file():
        raise InitCheckpointError(f"model.init_checkpoint {path}: no such file (nor {q})")
    return q


def _flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
    """{"a/b/c": leaf} of a nested mapping (flax's ``flatten_dict`` with "/" keys)."""
    return traverse_util.flatten_dict(dict(tree), sep="/")


def _meta(config) -> dict:
    m = config.model
    return {**{f: getattr(m, f) for f in MATCHING_FIELDS}, "image_size": config.data.image_size}


def export_predictor(variables: Mapping[str, Any], config, path: str | Path, source: str = "") -> str:
    """Write the predictor part of ``variables`` ({"params", "batch_stats"}) to ``path`` (.npz, see the
    module docstring); ``source`` is recorded in the metadata (e.g. the run and step). Returns the
    file's SHA-256."""
    arrays = {}
    for k in PREDICTOR_KEYS:
        for name, leaf in _flatten(variables["params"][k]).items():
            arrays[f"params/{k}/{name}"] = np.asarray(leaf, np.float16)
    for name, leaf in _flatten(variables.get("batch_stats", {})).items():
        arrays[f"batch_stats/{name}"] = np.asarray(leaf, np.float32)
    meta = {**_meta(config), "source": source, "format": "handprop-predictor-1"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, __meta__=np.asarray(json.dumps(meta, sort_keys=True)), **arrays)
    return sha256(path)


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_meta(path: str | Path) -> dict:
    """The ``__meta__`` record of a predictor .npz."""
    try:
        with np.load(resolve(path)) as z:
            return json.loads(str(z["__meta__"]))
    except (OSError, ValueError, KeyError) as e:
        raise InitCheckpointError(f"model.init_checkpoint {path}: not a handprop predictor file ({e})"
                                  ) from None


def load_predictor(path: str | Path, variables: Mapping[str, Any], config) -> dict:
    """``variables`` with the predictor's leaves replaced by those stored in ``path`` (each cast to the
    dtype of the leaf it replaces). Raises InitCheckpointError naming the file and the field or key when
    the file was made for another model (a field of :data:`MATCHING_FIELDS` or the image size differs)
    or an array is missing or of another shape."""
    path = resolve(path)
    meta = read_meta(path)
    wanted = _meta(config)
    diffs = [f"{k}: file {meta.get(k)!r}, run {v!r}" for k, v in wanted.items() if meta.get(k) != v]
    if diffs:
        raise InitCheckpointError(f"model.init_checkpoint {path}: made for another model "
                                  f"({'; '.join(diffs)})")
    flat = _flatten({"params": {k: variables["params"][k] for k in PREDICTOR_KEYS},
                     "batch_stats": variables.get("batch_stats", {})})
    with np.load(path) as z:
        stored = {k: z[k] for k in z.files if k != "__meta__"}
    missing = sorted(set(flat) - set(stored))
    if missing:
        raise InitCheckpointError(f"model.init_checkpoint {path}: no array {missing[0]!r} "
                                  f"({len(missing)} missing)")
    for key, leaf in flat.items():
        if stored[key].shape != np.shape(leaf):
            raise InitCheckpointError(f"model.init_checkpoint {path}: {key!r} has shape {stored[key].shape}, "
                                      f"the model needs {np.shape(leaf)}")

    def replace(tree, prefix):
        return {k: (replace(v, f"{prefix}/{k}") if isinstance(v, Mapping)
                    else np.asarray(stored[f"{prefix}/{k}"], np.asarray(v).dtype)) for k, v in tree.items()}

    out = dict(variables)
    out["params"] = {**variables["params"],
                     **{k: replace(variables["params"][k], f"params/{k}") for k in PREDICTOR_KEYS}}
    if "batch_stats" in variables:
        out["batch_stats"] = replace(variables["batch_stats"], "batch_stats")
    return jax.tree.map(np.asarray, out)


def initialise(variables: Mapping[str, Any], config) -> dict:
    """The run's starting variables: ``variables`` (fresh) with ``model.init_checkpoint`` applied (see
    the module docstring); unchanged when it is None."""
    name = config.model.init_checkpoint
    if not name:
        return dict(variables)
    path = resolve(name)
    if path.suffix == ".npz":
        return load_predictor(path, variables, config)
    return dict(load_torchvision_resnet18(path, variables, scope="encoder"))
