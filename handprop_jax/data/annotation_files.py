"""The per-frame annotation files that ``handprop propagate`` writes and ``handprop score`` reads
(``annotations.json`` beside ``annotations.npz``): the number format and units shared by the tool's
output and by the ground truth of synthetic full-frame videos (:mod:`handprop_jax.data.full_frames`).

Each ``frames_out`` entry holds ``index``, ``file``, ``labelled``, ``K`` (3 × 3, px) and the arrays of
:data:`ARRAY_KEYS` with the units of :data:`UNITS`, every number written as the shortest decimal that
reads back to the same float32 (:func:`shortest`).
"""

from __future__ import annotations

import numpy as np

#: the per-frame arrays of an annotation entry (root (3,), pose (48,), betas (10,), joints3d (21, 3),
#: joints2d (21, 2))
ARRAY_KEYS = ("root", "pose", "betas", "joints3d", "joints2d")

#: units of the arrays, recorded in every annotations.json
UNITS = {"root": "m", "joints3d": "m (camera frame, OpenCV)", "pose": "rad, axis-angle",
         "joints2d": "px of the original frames"}


def shortest(values: np.ndarray) -> list:
    """``values`` as nested lists of the shortest decimals that read back to the same numbers in their
    dtype (a float32 0.1 is written 0.1, not 0.10000000149011612; a root depth of 1e-9 m forced past
    the limits stays 1e-09, where rounding to decimals wrote 0.0)."""
    values = np.asarray(values)
    flat = [float(str(v)) for v in values.ravel()]
    return np.asarray(flat, np.float64).reshape(values.shape).tolist()


def frame_entry(index: int, name: str, labelled: bool, K: np.ndarray, arrays: dict, **extra) -> dict:
    """One ``frames_out`` entry: index, file ``name``, labelled, ``K`` (3, 3) px, then ``extra``
    fields, then frame ``index``'s row of each of :data:`ARRAY_KEYS` in ``arrays`` (leading frame
    axis, float32), written by :func:`shortest`."""
    return {"index": int(index), "file": name, "labelled": bool(labelled), "K": np.asarray(K).tolist(),
            **extra, **{k: shortest(np.asarray(arrays[k][index], np.float32)) for k in ARRAY_KEYS}}
