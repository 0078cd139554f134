"""What every resumable training-batch source shares: the record positions grain samples, sharding
over processes, the checkpointable iterator of one grain loader, and one combinator of several.

- :class:`Positions`: the integer positions (frames, clip or window starts) grain shuffles and shards.
- :func:`shard` / :func:`local_batch_size`: this process's shard and share of a global batch.
- :func:`make_grain_loader`: the grain loader every source builds (sampler, batching, read options,
  the absl flags its worker processes need).
- :class:`TrainIterator`: endless process-local batches of one grain loader, ``get_state() -> bytes``
  after batch n, ``set_state(bytes)`` on a new iterator built the same way yields batch n+1, n+2, ...
- :class:`CombinedIterator`: named iterators advanced together as one batch dict, one state (bytes).

Users: :mod:`handprop_jax.data.train_batches` (stages 1-3, neighbour pairs) and
:mod:`handprop_jax.data.clips` (clips and motion windows); the comparison phases of
:mod:`handprop_jax.training` combine them with :class:`CombinedIterator`.
"""

from __future__ import annotations

import json
import queue
import threading
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import grain.python as grain
import numpy as np


class Positions(grain.RandomAccessDataSource):
    """Record positions (anchor frames, clip or window starts) that grain shuffles and shards; item i
    is ``positions[i]`` (int)."""

    def __init__(self, positions: np.ndarray):
        self._positions = np.asarray(positions, np.int64)

    def __len__(self) -> int:
        return len(self._positions)

    def __getitem__(self, index: int) -> int:
        return int(self._positions[index])

    def __repr__(self) -> str:
        # grain stores this text in the iterator state and checks it on restore: it must not depend
        # on the process, and it keeps the class's old name so that saved checkpoints still resume
        return f"_Anchors(n={len(self._positions)}, crc32={zlib.crc32(self._positions.tobytes())})"


def shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    """(index, count) of this process's shard: the given pair, or JAX's process index and count when
    either is None."""
    if shard_index is None or shard_count is None:
        import jax

        return jax.process_index(), jax.process_count()
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} must be in [0, {shard_count})")
    return shard_index, shard_count


def local_batch_size(global_batch: int, shard_count: int) -> int:
    """Per-process batch size; the global batch must divide evenly over the processes."""
    if global_batch % shard_count:
        raise ValueError(f"train.batch_size {global_batch} is not divisible by the {shard_count} processes")
    return global_batch // shard_count


def make_grain_loader(positions: Positions, transform: grain.MapTransform | grain.RandomMapTransform,
                      batch_size: int, *, seed: int, shard_index: int, shard_count: int, shuffle: bool = True,
                      num_epochs: int | None = None, worker_count: int = 0,
                      prefetch_buffer_size: int = 8) -> grain.DataLoader:
    """grain DataLoader of batches of ``batch_size`` (process-local) records: ``transform`` of each of
    ``positions``, this process's shard of them (``shard_index`` of ``shard_count``, the remainder
    dropped), shuffled per epoch with ``seed`` (``shuffle``), ``num_epochs`` times (None: forever), a
    last incomplete batch dropped; ``worker_count`` grain worker processes (0: in this process),
    ``prefetch_buffer_size`` records read ahead by one thread. Its state (``get_state``) records the
    sampler's and ``positions``' repr, so the same arguments resume a saved state."""
    sampler = grain.IndexSampler(
        num_records=len(positions),
        shard_options=grain.ShardOptions(shard_index=shard_index, shard_count=shard_count,
                                         drop_remainder=True),
        shuffle=shuffle, num_epochs=num_epochs, seed=seed)
    if worker_count > 0:  # grain's worker processes read absl flags, which a plain script never parsed
        from absl import flags

        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
    return grain.DataLoader(
        data_source=positions, sampler=sampler,
        operations=[transform, grain.Batch(batch_size, drop_remainder=True)], worker_count=worker_count,
        read_options=grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch_buffer_size))


class TrainIterator:
    """Endless iterator of process-local training batches with ``get_state``/``set_state``.

    The state (bytes, JSON-able via latin-1 as ``handprop_jax.training`` does) records how many
    records were consumed; restoring it into an iterator built with the same config and shard
    resumes with exactly the next batch. With ``prefetch`` > 0 a background thread prepares the next
    batches while the caller computes (useful with ``worker_count=0``); ``get_state`` still refers to
    the last batch *returned*, not to the prefetched ones. Call ``set_state`` before the first batch.
    """

    def __init__(self, loader: grain.DataLoader, prefetch: int = 2):
        self._loader = loader
        self._it = iter(loader)
        self._prefetch = prefetch
        self._queue = None
        self._state = self._it.get_state()

    def __iter__(self) -> Iterator[dict]:
        return self

    def _start(self) -> None:
        self._queue = queue.Queue(maxsize=self._prefetch)

        def work():
            while True:
                try:
                    batch = next(self._it)
                    item = (batch, self._it.get_state(), None)
                except BaseException as e:  # handed to the consumer
                    item = (None, None, e)
                self._queue.put(item)
                if item[2] is not None:
                    return

        threading.Thread(target=work, daemon=True, name="handprop-prefetch").start()

    def __next__(self) -> dict:
        if self._prefetch <= 0:
            batch = next(self._it)
            self._state = self._it.get_state()
            return batch
        if self._queue is None:
            self._start()
        batch, state, error = self._queue.get()
        if error is not None:
            raise error
        self._state = state
        return batch

    def get_state(self) -> bytes:
        return self._state

    def set_state(self, state: bytes) -> None:
        if self._queue is not None:
            raise RuntimeError("TrainIterator.set_state must be called before the first batch")
        self._it.set_state(state)
        self._state = state


def _text(state: Any) -> Any:
    return state.decode("latin-1") if isinstance(state, bytes) else state


class CombinedIterator:
    """Named iterators advanced together: each batch is ``{name: that iterator's batch}``, except that
    the keys of the batches of the names in ``merged`` (dict batches) go to the top level.

    State: ``get_state()`` is bytes, the JSON object ``{name: the part's state as latin-1 text}``
    encoded as latin-1; a ``CombinedIterator`` built the same way and given it with ``set_state``
    yields exactly the batches that followed. ``set_state`` also takes that object as text and the
    encodings older checkpoints hold: the JSON-able dict ``{name: latin-1 text}`` itself (the
    consistency phases' state before issue 26). Part states that are not text pass through as is.
    """

    def __init__(self, parts: dict[str, Any], merged: Sequence[str] = ()):
        self.parts = dict(parts)
        unknown = set(merged) - set(self.parts)
        if unknown:
            raise ValueError(f"CombinedIterator: merged names {sorted(unknown)} are not parts "
                             f"{sorted(self.parts)}")
        self._merged = frozenset(merged)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        out: dict = {}
        for name, it in self.parts.items():
            batch = next(it)
            if name in self._merged:
                out.update(batch)
            else:
                out[name] = batch
        return out

    def get_state(self) -> bytes:
        return json.dumps({name: _text(it.get_state()) for name, it in self.parts.items()}).encode("latin-1")

    def set_state(self, state: bytes | str | dict) -> None:
        states = state if isinstance(state, dict) else json.loads(_text(state))
        if set(states) != set(self.parts):
            raise ValueError(f"CombinedIterator.set_state: state of parts {sorted(states)}, iterator of "
                             f"{sorted(self.parts)}")
        for name, it in self.parts.items():
            part = states[name]
            it.set_state(part.encode("latin-1") if isinstance(part, str) else part)
