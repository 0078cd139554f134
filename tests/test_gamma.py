"""The annotation type γ (``handprop_jax.gamma``): a pytree with numpy or jax leaves, and its helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from handprop_jax.gamma import Gamma, broadcast, concatenate, split


def _gamma(n, seed=0, xp=np):
    rng = np.random.default_rng(seed)
    return Gamma(*(xp.asarray(rng.normal(size=(n, d)).astype(np.float32)) for d in (3, 48, 10)))


def test_of_takes_the_three_keys_of_a_frame_batch():
    g = _gamma(4)
    frame = {**g.as_dict(), "image": np.zeros((4, 2, 2, 3)), "joints3d": np.zeros((4, 21, 3))}
    got = Gamma.of(frame)
    assert isinstance(got, Gamma) and got._fields == ("root", "pose", "betas")
    assert got.root is frame["root"] and Gamma.of(got) is got
    with pytest.raises(KeyError, match="betas"):
        Gamma.of({"root": 0, "pose": 0})


def test_rows_concatenate_and_split_round_trip():
    a, b = _gamma(3, 1), _gamma(5, 2)
    cat = concatenate([a, b])
    assert cat.batch_size == 8 and all(isinstance(x, np.ndarray) for x in cat)  # numpy stays on the host
    back = split(cat, [3, 5])
    for got, want in zip(back, (a, b), strict=True):
        for x, y in zip(got, want, strict=True):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(cat.take([4, 0]).pose, np.stack([b.pose[1], a.pose[0]]))
    np.testing.assert_array_equal(cat.take(np.arange(8) % 2 == 0).root, cat.root[::2])
    with pytest.raises(ValueError, match="do not add up"):
        split(cat, [3, 4])
    mixed = concatenate([_gamma(2, 3, jnp), a])
    assert isinstance(mixed.root, jax.Array) and mixed.batch_size == 5


def test_is_a_pytree_under_jit_and_tree_map():
    g = _gamma(2)
    out = jax.jit(lambda g: g._replace(root=g.root + 1.0))(g)
    assert isinstance(out, Gamma)
    np.testing.assert_allclose(out.root, g.root + 1.0)
    doubled = jax.tree.map(lambda x: 2 * x, g)
    assert isinstance(doubled, Gamma)
    np.testing.assert_allclose(doubled.betas, 2 * g.betas)
    assert [x.dtype for x in g.numpy(np.float64)] == [np.float64] * 3


def test_broadcast_repeats_one_annotation():
    one = Gamma(np.arange(3.0), np.arange(48.0), np.arange(10.0))
    rows = broadcast(one, 4)
    assert tuple(x.shape for x in rows) == ((4, 3), (4, 48), (4, 10))
    np.testing.assert_array_equal(rows.pose[3], np.arange(48.0))
