"""Test helpers for the training tests (no tests here): a tiny encoder, labelled frames made with
the MANO layer, and an in-memory, checkpointable batch source with the pipeline's batch formats."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from handprop_jax import config as config_lib
from handprop_jax.camera import project
from handprop_jax.hand import default_mano, hand_in_camera

LABEL_KEYS = ("root", "pose", "betas", "joints3d", "joints2d")
_hand = jax.jit(hand_in_camera)


def tiny_config(**train) -> config_lib.Config:
    """tiny.py with a very small encoder and no augmentation (fast compile)."""
    cfg = config_lib.load("tiny")
    model = dataclasses.replace(cfg.model, encoder_width=4, feature_dim=16, z_r_stage=2)
    data = dataclasses.replace(cfg.data, augment=False, image_size=32)
    tr = dataclasses.replace(cfg.train, **train)
    return dataclasses.replace(cfg, model=model, data=data, train=tr)


def make_frames(config: config_lib.Config, n: int, seed: int = 0) -> dict:
    """n labelled frames: random-noise images (the network memorises them), hands from MANO."""
    rng = np.random.default_rng(seed)
    s = config.data.image_size
    mano = default_mano(config)
    pose = np.zeros((n, 48), np.float32)
    pose[:, :3] = rng.normal(size=(n, 3)) * 0.3
    pose[:, 3:] = np.asarray(mano.hands_mean) + rng.normal(size=(n, 45)) * 0.2
    betas = (rng.normal(size=(n, 10)) * 0.5).astype(np.float32)
    root = (np.array([0.0, 0.0, 0.5]) + rng.normal(size=(n, 3)) * [0.02, 0.02, 0.05]).astype(np.float32)
    f = 1.2 * s
    K = np.tile(np.array([[f, 0, (s - 1) / 2], [0, f, (s - 1) / 2], [0, 0, 1]], np.float32), (n, 1, 1))
    _, joints = _hand(mano, jnp.asarray(root), jnp.asarray(pose), jnp.asarray(betas))
    return {"image": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8), "K": K, "root": root,
            "pose": pose, "betas": betas, "joints3d": np.asarray(joints, np.float32),
            "joints2d": np.asarray(project(joints, jnp.asarray(K)), np.float32),
            "video_id": np.zeros(n, np.int32), "frame_index": np.arange(n, dtype=np.int32)}


class FakeSource:
    """Deterministic batches of ``phase``'s format from in-memory frames; the rows of this process
    (``shard_index`` of ``shard_count``); ``get_state``/``set_state`` like the grain iterators."""

    def __init__(self, frames: dict, phase: str, batch_size: int, seed: int = 0, shard_index: int = 0,
                 shard_count: int = 1):
        self.frames, self.phase, self.batch_size, self.seed = frames, phase, batch_size, seed
        self.shard_index, self.shard_count = shard_index, shard_count
        self.counter = 0

    def _rows(self, idx: np.ndarray, labels: bool = True) -> dict:
        per = self.batch_size // self.shard_count
        idx = idx[self.shard_index * per:(self.shard_index + 1) * per]
        return {k: v[idx] for k, v in self.frames.items() if labels or k not in LABEL_KEYS}

    def batch_at(self, counter: int) -> dict:
        n = len(self.frames["image"])
        rng = np.random.default_rng([self.seed, counter])
        s = rng.integers(0, n, self.batch_size)
        if self.phase in ("stage1", "baseline", "pseudo"):  # pseudo: frames, labels real or propagated
            return self._rows(s)
        u = np.clip(s + rng.integers(-1, 2, self.batch_size), 0, n - 1)
        if self.phase == "stage2":
            return {"s": self._rows(s), "u": self._rows(u)}
        per = self.batch_size // self.shard_count
        lab = np.zeros(self.batch_size, bool)[self.shard_index * per:(self.shard_index + 1) * per]
        return {"s": self._rows(s), "u": self._rows(u, labels=False), "u_labelled": lab}

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = self.batch_at(self.counter)
        self.counter += 1
        return batch

    def get_state(self) -> dict:
        return {"counter": self.counter}

    def set_state(self, state: dict) -> None:
        self.counter = int(state["counter"])


def fake_sources(frames: dict, val_frames: dict | None = None, seed: int = 0):
    """A ``SourceFactory`` for :func:`handprop_jax.training.loop.train`."""

    def factory(config, phase, split, shard_index, shard_count):
        bs = config.train.batch_size
        if split == "train":
            return FakeSource(frames, phase, bs, seed, shard_index, shard_count)
        if val_frames is None:
            return None
        val_phase = "stage2" if phase == "stage2" else "stage1"
        return [FakeSource(val_frames, val_phase, bs, seed + 1, shard_index, shard_count).batch_at(0)]

    return factory


def interrupting(sources, phase: str, step: int):
    """``sources`` whose train batches of ``phase`` stop before step ``step`` with a KeyboardInterrupt,
    as a kill or Ctrl-C would (counted from the phase's first step: for a phase that starts afresh).
    The injection point of the kill tests: :func:`handprop_jax.training.loop.train` has no test hook."""

    class Interrupting:
        def __init__(self, source):
            self.source, self.drawn = source, 0

        def __iter__(self):
            return self

        def __next__(self):
            if self.drawn == step:
                raise KeyboardInterrupt(f"test interrupt at step {step} of {phase}")
            self.drawn += 1
            return next(self.source)

        def get_state(self):
            return self.source.get_state()

        def set_state(self, state):
            self.source.set_state(state)

    def factory(config, phase_, split, shard_index, shard_count):
        source = sources(config, phase_, split, shard_index, shard_count)
        return Interrupting(source) if (phase_, split) == (phase, "train") else source

    if hasattr(sources, "check"):  # train checks the data of a factory that can
        factory.check = sources.check
    return factory


class TinyEncoder(nn.Module):
    """Stand-in encoder (conv + BatchNorm + pooled Dense features) for fast unit tests."""

    feature_dim: int = 16

    @nn.compact
    def __call__(self, x, train: bool, stem=None):
        x = nn.Conv(4, (3, 3), (2, 2))(x)
        if stem is not None:  # extra input channels' response (model/temporal.py): 4 channels, stride 2
            x = x + stem
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        p = jnp.mean(nn.relu(x), axis=(1, 2))
        return nn.Dense(self.feature_dim)(p), nn.Dense(self.feature_dim)(p)


def phase_checkpoint(workdir, phase: str, step: int, total_steps: int) -> None:
    """A (tiny, stand-in) checkpoint of ``phase`` at ``step`` of ``total_steps`` in ``workdir``: what
    :func:`handprop_jax.training.checkpoint.describe` and ``load_run`` read (not a usable network)."""
    from handprop_jax.training.checkpoint import PhaseCheckpoints

    ck = PhaseCheckpoints(workdir, phase)
    zero = np.zeros(2, np.float32)
    ck.save(step, {"step": np.int32(step), "params": {"w": zero}, "batch_stats": {"m": zero},
                   "opt_state": {"c": zero}, "rng": np.zeros(2, np.uint32), "bad_step": np.int32(0)},
            {"phase": phase, "step": step, "total_steps": total_steps})
    ck.close()
