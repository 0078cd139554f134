"""CombinedIterator (handprop_jax.data.iterators): one batch dict per step from named resumable
iterators, one state format, and the two encodings that checkpoints written before issue 26 hold:

- the consistency phase's ``ZipIterator`` (data/pipeline.py): ``get_state()`` was the JSON-able dict
  ``{name: part.get_state().decode("latin-1")}``, stored in the checkpoint's meta as that dict;
- the comparison phases' ``JointIterator``: ``get_state()`` was bytes,
  ``json.dumps({name: part state as latin-1 text}).encode("latin-1")``, stored as ``{"bytes": text}``.

The parts are real grain iterators (motion windows of small in-memory banks: no data set to build);
the states below are built exactly as the old code built them from the parts' grain states, and one
is written out literally, as it stands in an old checkpoint. Resuming from any of them must give the
batches the uninterrupted iterator gives (arrays compared exactly).
"""

import json

import numpy as np
import pytest

from handprop_jax.data.clips import MotionBank, motion_iterator
from handprop_jax.data.iterators import CombinedIterator
from handprop_jax.training import checkpoint


def _bank(lengths, name):
    seqs = [{"joints3d": np.arange(n * 63, dtype=np.float32).reshape(n, 21, 3) + 1000 * i,
             "K": np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)) * (i + 1)} for i, n in enumerate(lengths)]
    return MotionBank.of(seqs, name=name)


def _parts():
    """Two endless resumable iterators (windows of 3 resp. 2 frames, 2 per batch, own seeds)."""
    return {"a": motion_iterator(_bank((7, 5), "a"), 3, 2, seed=11, shard_index=0, shard_count=1),
            "b": motion_iterator(_bank((6,), "b"), 2, 2, seed=12, shard_index=0, shard_count=1)}


def _assert_same(got, want):
    assert type(got) is type(want)
    if isinstance(want, dict):
        assert set(got) == set(want)
        for k in want:
            _assert_same(got[k], want[k])
    elif isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            _assert_same(g, w)
    else:
        np.testing.assert_array_equal(got, want, strict=True)


def _uninterrupted(n_before, n_after, merged=()):
    it = CombinedIterator(_parts(), merged=merged)
    for _ in range(n_before):
        next(it)
    return [next(it) for _ in range(n_after)]


def _old_part_states(n_before):
    """Each part's own (grain) state after ``n_before`` batches, advanced on its own."""
    parts = _parts()
    for it in parts.values():
        for _ in range(n_before):
            next(it)
    return {name: it.get_state() for name, it in parts.items()}


def test_batches_are_the_parts_batches_under_their_names_or_merged():
    parts, combined = _parts(), CombinedIterator(_parts())
    for _ in range(4):
        _assert_same(next(combined), {name: next(it) for name, it in parts.items()})
    parts, merged = _parts(), CombinedIterator({"x": _parts()["a"], "b": _parts()["b"]}, merged=("b",))
    for _ in range(3):
        a, b = next(parts["a"]), next(parts["b"])
        _assert_same(next(merged), {"x": a, **b})
    with pytest.raises(ValueError, match="not parts"):
        CombinedIterator(_parts(), merged=("c",))


def test_the_parts_advance_differently_so_a_wrong_resume_would_show():
    # guards the resume tests below: batch 3 differs from batch 1, and part a from part b
    first, third = _uninterrupted(0, 3)[0], _uninterrupted(0, 3)[2]
    assert not np.array_equal(first["a"]["joints3d"], third["a"]["joints3d"])
    assert first["a"]["joints3d"].shape != first["b"]["joints3d"].shape


@pytest.mark.parametrize("n_before", [0, 2, 5])
def test_resume_from_its_own_state_through_a_checkpoint(n_before):
    it = CombinedIterator(_parts())
    for _ in range(n_before):
        next(it)
    state = it.get_state()
    assert isinstance(state, bytes)
    meta = json.loads(json.dumps(checkpoint.encode_data_state(state)))  # what the checkpoint's meta holds
    resumed = CombinedIterator(_parts())
    resumed.set_state(checkpoint.decode_data_state(meta))
    _assert_same([next(resumed) for _ in range(4)], _uninterrupted(n_before, 4))


@pytest.mark.parametrize("n_before", [0, 3])
def test_resume_from_an_old_zip_iterator_state(n_before):
    old = {name: st.decode("latin-1") for name, st in _old_part_states(n_before).items()}  # ZipIterator
    meta = json.loads(json.dumps(checkpoint.encode_data_state(old)))
    assert meta == old  # a dict was stored as is
    resumed = CombinedIterator(_parts(), merged=("b",))
    resumed.set_state(checkpoint.decode_data_state(meta))
    _assert_same([next(resumed) for _ in range(3)], _uninterrupted(n_before, 3, merged=("b",)))


@pytest.mark.parametrize("n_before", [0, 3])
def test_resume_from_an_old_joint_iterator_state(n_before):
    old = json.dumps({name: st.decode("latin-1") for name, st in _old_part_states(n_before).items()}
                     ).encode("latin-1")  # JointIterator.get_state
    meta = json.loads(json.dumps(checkpoint.encode_data_state(old)))
    assert set(meta) == {"bytes"}
    resumed = CombinedIterator(_parts())
    resumed.set_state(checkpoint.decode_data_state(meta))
    _assert_same([next(resumed) for _ in range(3)], _uninterrupted(n_before, 3))


def _grain_text(records, seed, source):
    """A motion window iterator's grain state after 2 batches of 2 (text as grain writes it)."""
    sampler = (f"IndexSampler(num_records={records}, shard_options=ShardOptions(shard_index=0, "
               f"shard_count=1, drop_remainder=True), shuffle=True, num_epochs=None, seed={seed})")
    return ('{\n    "version": 2,\n    "last_seen_indices": {\n        "0": 3\n    },\n'
            '    "last_worker_index": -1,\n    "worker_count": 0,\n'
            f'    "sampler": "{sampler}",\n    "data_source": "{source}"\n}}')


# the data_state of an old checkpoint's meta after 2 steps, as written to disk
OLD_ZIP_META = {"a": _grain_text(8, 11, "_Windows(a, _Anchors(n=8, crc32=352956648))"),
                "b": _grain_text(5, 12, "_Windows(b, _Anchors(n=5, crc32=1821330972))")}
OLD_JOINT_META = {"bytes": json.dumps(OLD_ZIP_META)}


@pytest.mark.parametrize("meta", [OLD_ZIP_META, OLD_JOINT_META], ids=["zip", "joint"])
def test_resume_from_literal_old_checkpoint_states(meta):
    resumed = CombinedIterator(_parts())
    resumed.set_state(checkpoint.decode_data_state(json.loads(json.dumps(meta))))
    _assert_same([next(resumed) for _ in range(3)], _uninterrupted(2, 3))


def test_a_state_of_other_parts_is_refused():
    state = CombinedIterator({"a": _parts()["a"]}).get_state()
    with pytest.raises(ValueError, match="state of parts"):
        CombinedIterator(_parts()).set_state(state)
    with pytest.raises(ValueError, match="state of parts"):
        CombinedIterator(_parts()).set_state({"a": "{}"})


def test_loaders_with_worker_processes_mark_absl_flags_parsed(monkeypatch):
    """grain's worker processes read absl flags, which a plain script never parsed: every loader with
    worker processes (the stages', the clips') marks them parsed, one without leaves them alone."""
    import types

    from absl import flags

    from handprop_jax import config as config_lib
    from handprop_jax.data import clips, train_batches

    config = config_lib.load("tiny")

    class Split:  # what the loaders read of a split before the first batch
        data_config = config.data
        labelled_positions = np.array([0, 3, 8])
        table = types.SimpleNamespace(starts=np.array([0, 10]), lengths=np.array([10, 6]))

        def __len__(self):
            return 16

    monkeypatch.setattr(clips, "open_split", lambda data, split: Split())
    monkeypatch.setattr(clips, "TrainIterator", lambda loader, prefetch: loader)  # no iteration
    build = {"stage": lambda w: train_batches.make_loader(config.data, "train", 1, 2, seed=0,
                                                          worker_count=w, split_data=Split()),
             "clips": lambda w: clips.clip_iterator(config, 4, 2, shard_index=0, shard_count=1,
                                                    worker_count=w)}
    for name, make in build.items():
        fresh = flags.FlagValues()
        monkeypatch.setattr(flags, "FLAGS", fresh)
        make(0)
        assert not fresh.is_parsed(), name
        make(2)
        assert fresh.is_parsed(), name
