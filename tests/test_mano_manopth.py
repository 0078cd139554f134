"""Parity with the real manopth ``ManoLayer`` (skipped unless manopth and chumpy are importable).

Neither is a dependency. To run it: put a checkout of hassony2/manopth (it contains the ``mano``
package it needs) and chumpy on ``PYTHONPATH``, e.g.
``pip install --no-deps --target /tmp/chumpy chumpy-fixed`` and
``PYTHONPATH=/path/to/manopth:/tmp/chumpy .venv/bin/pytest tests/test_mano_manopth.py``.
The model file is written in the official layout by ``mano_official_writer.py`` in a subprocess
and read by manopth through chumpy, and by ``mano_jax.load`` without it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("manopth", "chumpy", "torch")),
    reason="manopth, chumpy and torch are needed (none is a project dependency)")


def _install_cv2_stub():
    """mano/webuser/posemapper imports cv2 for cv2.Rodrigues only (applied to a zero pose)."""
    if "cv2" in sys.modules or importlib.util.find_spec("cv2") is not None:
        return

    def rodrigues(r):
        r = np.asarray(r, np.float64).reshape(3)
        t = np.linalg.norm(r)
        if t < 1e-12:
            return np.eye(3), np.zeros((3, 9))
        k = r / t
        K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        return np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K, np.zeros((3, 9))

    cv2 = types.ModuleType("cv2")
    cv2.Rodrigues = rodrigues
    sys.modules["cv2"] = cv2


@pytest.fixture(scope="module")
def mano_root(tmp_path_factory):
    import mano_jax

    d = tmp_path_factory.mktemp("mano_models")
    rng = np.random.default_rng(0)
    for side in ("right", "left"):
        a = mano_jax.synthetic(side).numpy()
        a["hands_components"] = a["hands_components"] * rng.uniform(0.5, 2.0, (45, 1))  # not orthonormal
        np.savez(d / f"{side}.npz", **a)
        subprocess.run([sys.executable, os.path.join(HERE, "mano_official_writer.py"), str(d / f"{side}.npz"),
                        str(d / f"MANO_{side.upper()}.pkl")], check=True)
    return d


@pytest.mark.parametrize("side", ["right", "left"])
def test_forward_matches_manopth(mano_root, side):
    import jax
    import torch

    import mano_jax

    _install_cv2_stub()
    from manopth.manolayer import ManoLayer

    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        import jax.numpy as jnp

        m = mano_jax.load(mano_root / f"MANO_{side.upper()}.pkl")
        for use_pca, nc, flat, ci, tr in [(True, 6, False, None, None), (True, 45, True, 9, "zero"),
                                          (False, 45, False, 0, "rand"), (False, 45, True, None, "zero")]:
            layer = ManoLayer(center_idx=ci, flat_hand_mean=flat, ncomps=nc, side=side,
                              mano_root=str(mano_root), use_pca=use_pca).double()
            pose = rng.normal(0, 0.8, (4, 3 + nc))
            pose[0] = 0.0
            betas = rng.normal(0, 1, (4, 10))
            trans = None if tr is None else (np.zeros((4, 3)) if tr == "zero" else rng.normal(0, .1, (4, 3)))
            args = [torch.tensor(pose), torch.tensor(betas)]
            tv, tj = layer(*args, *([] if trans is None else [torch.tensor(trans)]))[:2]
            v, j = mano_jax.forward(m, jnp.asarray(pose), jnp.asarray(betas),
                                    None if trans is None else jnp.asarray(trans), ncomps=nc,
                                    use_pca=use_pca, flat_hand_mean=flat, center_idx=ci)
            # manopth returns millimetres
            np.testing.assert_allclose(np.asarray(v) * 1000, tv.detach().numpy(), atol=1e-4)
            np.testing.assert_allclose(np.asarray(j) * 1000, tj.detach().numpy(), atol=1e-4)
