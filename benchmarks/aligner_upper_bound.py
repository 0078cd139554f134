"""The dense-ground-truth upper bound of a propagation aligner design (issue 19, item 7).

What it measures: an aligner design is trained on DENSE ground truth — every frame of the train
split's videos, pairs (or triples) of frames within a label gap, known motion, loss = mean joint
distance + mean vertex distance of the MANO meshes (metres) — and then evaluated on the unseen test
videos exactly as Table I's propagation rows are: labels on every K-th frame
(``handprop_jax.data.sparse.labelled_frames``, first and last frame included), every unlabelled
frame u propagated from its nearest labelled frame ("near") and from both labelled neighbours
("both"; ``sparse.neighbours``), MPJPE and MPVPE in mm overall and per gap bucket |u − N(u)|
(1, 2–3, 4–7, 8–15, 16–31). The table puts the design next to the references Copy, Copy
(crop-aware), Interpolation and Interpolation (crop-aware), computed with the package's own
propagation core (``Propagator("copy" / "crop")`` + ``propagate_video``). No sparse-label training
can do better than what a design reaches here: if it cannot beat crop-aware interpolation with dense
ground truth, its evidence carries no motion that transfers to unseen videos.

Designs (``--design``; :data:`DESIGNS` — a new design is one class and one entry):

- ``paper``: the project's own RootAligner / PoseAligner (``handprop_jax.model.heads``, through
  ``HandPropModel.align``) on the feature difference z_u − z_s of an encoder, frozen, features
  cached: the encoder of a trained run (``--run RUN_DIR --phase stage1|align``, the checkpoint
  ``handprop_jax.training.checkpoint.bound_from_run`` reads) or a randomly initialised one (no
  ``--run``). The aligner starts from the run's aligner (or zero-initialised output layers, i.e.
  copy). ``--crop-aware``: the aligner starts from the crop-aware transfer of the label
  (``handprop_jax.propagation.transfer``) instead of the raw label. Pairs s → u with
  1 <= |u − s| <= ``--max-gap`` (default K − 1: every gap the evaluation asks, both sides
  included). No augmentation (the features are cached). Evaluated through ``propagate_video``
  itself, with this aligner as the model.
- ``stacked``: a small conv net over the stacked crops (s, u, r: 9 channels; space-to-depth 4,
  three conv stages with GroupNorm, flatten) and an MLP that also takes a geometric input (the
  prior's crop-relative root, rotation matrix, finger pose offsets from the mean, the three crops'
  parameters, the blend weight and both gaps), predicting a residual (crop-relative root, axis-angle
  pose) on top of crop-aware interpolation (both) / crop-aware copy (near). The last layer is
  zero-initialised, so zero evidence gives exactly the prior (checked against the Propagator in
  ``tests/test_benchmarks_upper_bound.py``). Training triples: with probability 0.3 a near pair
  (s = r, 1 <= |u − s| <= ``--max-gap``, default K // 2), otherwise l < u < r = l + K anywhere in a
  video. Rotation + colour augmentation (``handprop_jax.data.augment``, ranges from
  ``data.rotation_range`` / ``data.color_jitter``), labels transformed to match: ``--augment
  per-frame`` (default: a different draw for each of the three frames, so the pairs carry extra
  known motion), ``shared`` (one draw for the triple) or ``none``.

Optimiser: AdamW (weight decay 1e-4), linear warm-up then cosine decay to 2 % of ``--lr``.
Deterministic given ``--seed`` (training sampler, initialisation, augmentation).

Usage (from the repository root)::

    .venv/bin/python benchmarks/aligner_upper_bound.py --design stacked \\
        --set data.data_dir="'/tmp/hp/data_s0'" --set data.synth_seed=0 --steps 4000 --json ub.json
    .venv/bin/python benchmarks/aligner_upper_bound.py --design paper --run /tmp/runs/demo \\
        --phase align --crop-aware --set data.data_dir="'data'" --steps 3000
    # a quick check that everything runs (~2-4 min on the shared 2-core VM): --steps 100 --videos 4

``--json OUT`` writes the arguments, the config, the training curve and every table cell.
``tests/test_benchmarks_upper_bound.py`` checks that before training both designs reproduce their
reference rows of the Propagator bit for bit.

Already measured (dev VM, 2 vCPU; data seed 0 = ``data.synth_seed=0``: 40 train / 10 test videos ×
128 frames, 64 px, K = 16; test split, MPJPE mm):

- ``stacked``, 4000 steps, lr 3e-4 cosine, batch 32 (measured with the scratch research
  implementation this script was written from, which drew ONE augmentation for the three frames,
  i.e. ``--augment shared``): both 20.32 vs its prior, crop-aware interpolation, 20.01; near 26.33
  vs crop-aware copy 25.73; the training MPJPE stayed flat at ~20–22 mm: no transferable motion
  was learned.
- ``paper`` (the issue's reviewer, demo run's cached features, pairs |u − s| <= 8, joint MSE,
  3,000 Adam steps): 39.1 mm (28.9 with the crop-aware start) vs Copy 35.1 — 7–10 mm on the train
  videos.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from handprop_jax import config as config_lib  # noqa: E402
from handprop_jax.batching import batched  # noqa: E402
from handprop_jax.data import augment as aug_lib  # noqa: E402
from handprop_jax.data.sources import open_split  # noqa: E402
from handprop_jax.data.sparse import labelled_frames, neighbours  # noqa: E402
from handprop_jax.evaluation.gap import gap_bins  # noqa: E402
from handprop_jax.gamma import Gamma, blend  # noqa: E402
from handprop_jax.hand import (  # noqa: E402
    default_mano,
    hand_in_camera,
    hand_mesh,  # noqa: E402
)
from handprop_jax.model.api import BoundModel, Features, Frame, HandPropModel  # noqa: E402
from handprop_jax.model.encoder import normalize_images  # noqa: E402
from handprop_jax.model.handprop import ALIGNER_KEYS  # noqa: E402
from handprop_jax.model.heads import recover_root, root_to_raw  # noqa: E402
from handprop_jax.propagation.core import Propagator, propagate_video  # noqa: E402
from handprop_jax.propagation.transfer import transfer  # noqa: E402

BINS = gap_bins(31)  # 1, 2-3, 4-7, 8-15, 16-31
MODES = ("near", "both")


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class Videos:
    """Every frame of some videos of a split, videos one after the other (N frames in all).

    ``images`` uint8 (N, S, S, 3), ``K`` (N, 3, 3) float32, ``gamma`` ground truth (N, ...) of EVERY
    frame, ``starts`` / ``lengths`` (V,) int64: video v is frames ``starts[v] : starts[v] + lengths[v]``.
    """

    images: np.ndarray
    K: np.ndarray
    gamma: Gamma
    starts: np.ndarray
    lengths: np.ndarray

    @property
    def num_videos(self) -> int:
        return len(self.starts)


def load_videos(data_config, split: str, max_videos: int | None = None) -> Videos:
    """The first ``max_videos`` (all if None) videos of ``split``, with the labels of every frame."""
    sp = open_split(data_config, split)
    n = sp.table.num_videos if max_videos is None else min(max_videos, sp.table.num_videos)
    vids = [sp.video(v, with_labels=True) for v in range(n)]
    lengths = np.array([len(v["image"]) for v in vids], np.int64)
    cat = {k: np.concatenate([v[k] for v in vids]) for k in ("image", "K", "root", "pose", "betas")}
    return Videos(images=cat["image"], K=cat["K"].astype(np.float32), gamma=Gamma.of(cat).numpy(),
                  starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64), lengths=lengths)


@dataclasses.dataclass(frozen=True)
class EvalItems:
    """Table I's scenario-2 queries of some videos: every unlabelled frame, videos in order, frames
    ascending (global positions into :class:`Videos`). ``u``; ``left`` / ``right`` the labelled
    neighbours (a missing side replaced by the other, as ``propagate_video`` does); ``weight`` the
    both-sides weight on ``right``; ``nearest`` N(u); ``gap`` |u − N(u)|; ``video`` (M,)."""

    u: np.ndarray
    left: np.ndarray
    right: np.ndarray
    weight: np.ndarray
    nearest: np.ndarray
    gap: np.ndarray
    video: np.ndarray


def eval_items(videos: Videos, stride: int) -> EvalItems:
    parts = []
    for v, (start, length) in enumerate(zip(videos.starts, videos.lengths, strict=True)):
        lab = labelled_frames(int(length), stride)
        nb = neighbours(int(length), lab)
        u = np.setdiff1d(np.arange(length), lab)
        left, right = nb["left"][u], nb["right"][u]
        left, right = np.where(left >= 0, left, right), np.where(right >= 0, right, left)
        parts.append((u + start, left + start, right + start, nb["weight"][u].astype(np.float32),
                      nb["nearest"][u] + start, nb["gap"][u], np.full(len(u), v)))
    return EvalItems(*(np.concatenate(p) for p in zip(*parts, strict=True)))


def reference_rows(config, videos: Videos) -> dict[str, Gamma]:
    """Copy, Copy (crop-aware), Interpolation, Interpolation (crop-aware) of every query of
    :func:`eval_items` (same order), from the package's ``propagate_video``."""
    names = {"copy": ("Copy", "Interpolation"), "crop": ("Copy (crop-aware)", "Interpolation (crop-aware)")}
    out = {}
    for method, (near_name, both_name) in names.items():
        prop = Propagator.from_config(config, method=method)
        near, both = [], []
        for start, length in zip(videos.starts, videos.lengths, strict=True):
            sl = slice(start, start + length)
            lab = labelled_frames(int(length), config.data.label_stride)
            res = propagate_video(prop, videos.images[sl], videos.K[sl], lab, videos.gamma.take(lab + start),
                                  both_sides=True)
            u = np.nonzero(~res.labelled)[0]
            near.append(res.nearest.take(u))
            both.append(res.gamma.take(u))
        out[near_name] = Gamma(*(np.concatenate(f) for f in zip(*near, strict=True)))
        out[both_name] = Gamma(*(np.concatenate(f) for f in zip(*both, strict=True)))
    return out


def errors(mano, gamma: Gamma, truth: Gamma) -> dict[str, np.ndarray]:
    """Per-frame MPJPE and MPVPE (mm) of annotations against the ground truth (N rows each)."""
    verts, joints = hand_mesh(mano, gamma)
    verts_t, joints_t = hand_mesh(mano, truth)
    return {"MPJPE": 1000 * np.linalg.norm(joints - joints_t, axis=-1).mean(-1),
            "MPVPE": 1000 * np.linalg.norm(verts - verts_t, axis=-1).mean(-1)}


def summarise(err: np.ndarray, gap: np.ndarray) -> dict[str, float | None]:
    """{"all": mean, "1": ..., "2-3": ..., ...} (None for an empty bucket)."""
    out: dict[str, float | None] = {"all": float(err.mean())}
    for lo, hi in BINS:
        sel = (gap >= lo) & (gap <= hi)
        out[str(lo) if lo == hi else f"{lo}-{hi}"] = float(err[sel].mean()) if sel.any() else None
    return out


def mesh_loss(mano, gamma: Gamma, truth: Gamma) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(mean joint distance + mean vertex distance, mean joint distance), metres; inside a jit."""
    verts, joints = hand_in_camera(mano, gamma.root, gamma.pose, gamma.betas)
    verts_t, joints_t = hand_in_camera(mano, truth.root, truth.pose, truth.betas)
    lj = jnp.linalg.norm(joints - joints_t, axis=-1).mean()
    lv = jnp.linalg.norm(verts - verts_t, axis=-1).mean()
    return lj + lv, lj


# ----------------------------------------------------------------------------- training samples
def sample_near(rng: np.random.Generator, videos: Videos, max_gap: int) -> tuple[int, int]:
    """(s, u) global positions in one random video, 1 <= |u − s| <= max_gap."""
    while True:
        v = rng.integers(videos.num_videos)
        length = int(videos.lengths[v])
        s = int(rng.integers(length))
        u = s + int(rng.integers(1, max_gap + 1)) * int(rng.choice([-1, 1]))
        if 0 <= u < length:
            return s + int(videos.starts[v]), u + int(videos.starts[v])


def sample_between(rng: np.random.Generator, videos: Videos, stride: int) -> tuple[int, int, int]:
    """(l, u, r) global positions in one random video, r = min(l + K, end), l < u < r."""
    while True:
        v = rng.integers(videos.num_videos)
        length = int(videos.lengths[v])
        if length < 3:
            continue
        left = int(rng.integers(length - 1))
        right = min(left + stride, length - 1)
        if right - left >= 2:
            u = int(rng.integers(left + 1, right))
            start = int(videos.starts[v])
            return left + start, u + start, right + start


# ----------------------------------------------------------------------------- designs
@dataclasses.dataclass
class Context:
    """What every design is built from."""

    config: Any
    mano: Any
    args: argparse.Namespace
    train: Videos
    splits: dict[str, Videos]  # the evaluated splits

    @property
    def stride(self) -> int:
        return int(self.config.data.label_stride)


class PaperDesign:
    """The paper's φ^r, φ^θ on z_u − z_s of a frozen encoder (module docstring)."""

    def __init__(self, ctx: Context):
        a = ctx.args
        self.ctx, self.crop_aware = ctx, bool(a.crop_aware)
        self.max_gap = a.max_gap or ctx.stride - 1
        d = ctx.config.data
        if a.run:
            from handprop_jax.training.checkpoint import load_run

            # what training.checkpoint.bound_from_run reads; the variables are kept to train the aligner
            run_config, variables = load_run(a.run, a.phase)
            if run_config.data.image_size != d.image_size:
                raise SystemExit(f"--run {a.run}: image size {run_config.data.image_size} != the data's "
                                 f"{d.image_size}")
            self.model = HandPropModel.create(run_config, mano=ctx.mano)
        else:
            self.model = HandPropModel.create(ctx.config, mano=ctx.mano)
            variables = self.model.init(jax.random.PRNGKey(a.seed))
        self.variables = variables
        bound = self.model.bind(variables, a.eval_batch)
        t = time.perf_counter()
        self.features = {name: Features(*batched(bound.features, vids.images, batch_size=a.eval_batch))
                         for name, vids in {"train": ctx.train, **ctx.splits}.items()}
        n = sum(len(v.images) for v in {"train": ctx.train, **ctx.splits}.values())
        print(f"paper: features of {n} frames cached in {time.perf_counter() - t:.1f} s "
              f"({'run ' + str(a.run) + ' ' + a.phase if a.run else 'random encoder'})", flush=True)
        self.transfer = functools.partial(transfer, crop_aware=self.crop_aware, image_size=d.image_size,
                                          z_off=d.z_off, depth_unit=ctx.config.model.root_depth_unit)
        self._align = jax.jit(self.align)

    def init(self, key: jax.Array) -> dict:
        return {k: self.variables["params"][k] for k in ALIGNER_KEYS}

    def align(self, params: dict, gamma_s: Gamma, frame_u: Frame, frame_s: Frame) -> Gamma:
        start = self.transfer(Gamma.of(gamma_s), frame_s.K, frame_u.K)
        return self.model.align(params, start, frame_u, frame_s)

    def batch(self, rng: np.random.Generator, size: int) -> dict:
        s, u = np.array([sample_near(rng, self.ctx.train, self.max_gap) for _ in range(size)]).T
        tr, f = self.ctx.train, self.features["train"]
        return {"gamma_s": tr.gamma.take(s), "gamma_u": tr.gamma.take(u),
                "frame_s": Frame(Features(f.z_r[s], f.z_theta[s]), tr.K[s]),
                "frame_u": Frame(Features(f.z_r[u], f.z_theta[u]), tr.K[u])}

    def loss(self, params: dict, batch: dict, key: jax.Array):
        out = self.align(params, batch["gamma_s"], batch["frame_u"], batch["frame_s"])
        return mesh_loss(self.ctx.mano, out, batch["gamma_u"])

    def propagate(self, params: dict, split: str) -> dict[str, Gamma]:
        """Table I's propagation of ``split`` with this aligner as the model, through ``propagate_video``."""
        vids, feats = self.ctx.splits[split], self.features[split]
        bs = self.ctx.args.eval_batch
        model = BoundModel(features=None, regress=None, align=functools.partial(self._align, params),
                           image_size=self.ctx.config.data.image_size, batch_size=bs)
        near, both = [], []
        for start, length in zip(vids.starts, vids.lengths, strict=True):
            sl = slice(start, start + length)
            lab = labelled_frames(int(length), self.ctx.stride)
            res = propagate_video(model, None, vids.K[sl], lab, vids.gamma.take(lab + start), both_sides=True,
                                  features=Features(feats.z_r[sl], feats.z_theta[sl]))
            u = np.nonzero(~res.labelled)[0]
            near.append(res.nearest.take(u))
            both.append(res.gamma.take(u))
        return {"near": Gamma(*(np.concatenate(f) for f in zip(*near, strict=True))),
                "both": Gamma(*(np.concatenate(f) for f in zip(*both, strict=True)))}


def space_to_depth(x: jnp.ndarray, k: int) -> jnp.ndarray:
    """(B, H, W, C) → (B, H/k, W/k, k·k·C)."""
    B, H, W, C = x.shape
    x = x.reshape(B, H // k, k, W // k, k, C).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H // k, W // k, k * k * C)


class StackedNet(nn.Module):
    """Stacked crops (B, S, S, 9) + geometry (B, G) → residual (B, 3 + 48), last layer zero."""

    width: int = 64

    @nn.compact
    def __call__(self, images: jnp.ndarray, geometry: jnp.ndarray) -> jnp.ndarray:
        x = space_to_depth(images, 4)
        for i, c in enumerate((self.width, 2 * self.width, 4 * self.width)):
            x = nn.relu(nn.GroupNorm(8)(nn.Conv(c, (3, 3), strides=1 if i == 0 else 2)(x)))
            x = nn.relu(nn.GroupNorm(8)(nn.Conv(c, (3, 3))(x)))
        h = jnp.concatenate([x.reshape(x.shape[0], -1), geometry], -1)
        h = nn.relu(nn.Dense(512)(h))
        h = nn.relu(nn.Dense(256)(h))
        return nn.Dense(3 + 48, kernel_init=nn.initializers.zeros)(h)


class StackedDesign:
    """A conv net over the stacked crops (s, u, r), residual on crop-aware interpolation / copy."""

    #: residual scales: crop-relative root (d_f [depth units], t_u, t_v [pixels]), pose (radians)
    ROOT_SCALE = (0.1, 1.0, 1.0)
    POSE_SCALE = 0.1
    NEAR_FRACTION = 0.3

    def __init__(self, ctx: Context):
        a, d = ctx.args, ctx.config.data
        self.ctx = ctx
        self.S, self.z_off, self.unit = d.image_size, d.z_off, ctx.config.model.root_depth_unit
        self.max_gap = a.max_gap or max(ctx.stride // 2, 1)
        self.net = StackedNet(a.width)
        self.hands_mean = jnp.asarray(ctx.mano.hands_mean)
        self.augment_mode = a.augment
        self.rotation, self.color = float(d.rotation_range), float(d.color_jitter)
        self._forward = jax.jit(self.forward)

    def init(self, key: jax.Array) -> dict:
        S = self.S
        return self.net.init(key, jnp.zeros((1, S, S, 9)), jnp.zeros((1, 3 + 9 + 45 + 9 + 3)))

    # --- geometry that needs no learning
    def to_u(self, gamma: Gamma, K_from, K_u) -> Gamma:
        return transfer(gamma, K_from, K_u, True, self.S, self.z_off, self.unit)

    def prior(self, ga: Gamma, gb: Gamma, Ka, Kb, Ku, w) -> Gamma:
        """Crop-aware interpolation of the two labels at u (w = 0: crop-aware copy of ``ga``)."""
        return blend(self.to_u(ga, Ka, Ku), self.to_u(gb, Kb, Ku), w)

    def crop_params(self, K):
        S = self.S
        ray = ((S - 1) / 2 - K[:, :2, 2]) / K[:, :1, 0]
        return jnp.concatenate([jnp.log(K[:, 0, 0] / S)[:, None], ray], -1)

    def geometry(self, prior: Gamma, Ka, Ku, Kb, w, gap_a, gap_b):
        from mano_jax import rodrigues

        raw = root_to_raw(prior.root, Ku, self.S, self.z_off, self.unit)
        rot = rodrigues(prior.pose[:, :3]).reshape(-1, 9)
        ca, cu, cb = self.crop_params(Ka), self.crop_params(Ku), self.crop_params(Kb)
        k = float(self.ctx.stride)
        return jnp.concatenate([raw * jnp.array([1.0, 1 / self.S, 1 / self.S]), rot,
                                prior.pose[:, 3:] - self.hands_mean, cu, ca - cu, cb - cu,
                                w[:, None], gap_a[:, None] / k, gap_b[:, None] / k], -1)

    def apply_residual(self, prior: Gamma, delta, Ku) -> Gamma:
        """γ = prior + residual: root moved in crop coordinates (as the difference of two recovered
        roots, so that a zero residual returns the prior's root bit for bit), pose additively."""
        raw = root_to_raw(prior.root, Ku, self.S, self.z_off, self.unit)
        moved = raw + delta[:, :3] * jnp.array(self.ROOT_SCALE)
        root = prior.root + (recover_root(moved, Ku, self.S, self.z_off, self.unit)
                             - recover_root(raw, Ku, self.S, self.z_off, self.unit))
        return Gamma(root, prior.pose + self.POSE_SCALE * delta[:, 3:], prior.betas)

    def forward(self, params, ia, iu, ib, ga: Gamma, gb: Gamma, Ka, Ku, Kb, w, gap_a, gap_b):
        prior = self.prior(ga, gb, Ka, Kb, Ku, w)
        images = jnp.concatenate([normalize_images(x) for x in (ia, iu, ib)], -1)
        delta = self.net.apply(params, images, self.geometry(prior, Ka, Ku, Kb, w, gap_a, gap_b))
        return self.apply_residual(prior, delta, Ku)

    # --- training
    def batch(self, rng: np.random.Generator, size: int) -> dict:
        a, u, b, w = [], [], [], []
        for _ in range(size):
            if rng.random() < self.NEAR_FRACTION:
                s, uu = sample_near(rng, self.ctx.train, self.max_gap)
                a.append(s), u.append(uu), b.append(s), w.append(0.0)
            else:
                left, uu, right = sample_between(rng, self.ctx.train, self.ctx.stride)
                a.append(left), u.append(uu), b.append(right), w.append((uu - left) / (right - left))
        return self.triples(self.ctx.train, np.array(a), np.array(u), np.array(b), np.array(w, np.float32))

    @staticmethod
    def triples(videos: Videos, a, u, b, w) -> dict:
        out = {"w": w, "gap_a": np.abs(u - a).astype(np.float32), "gap_b": np.abs(b - u).astype(np.float32)}
        for name, idx in (("a", a), ("u", u), ("b", b)):
            out[f"i{name}"], out[f"K{name}"], out[f"g{name}"] = videos.images[idx], videos.K[idx], \
                videos.gamma.take(idx)
        return out

    def augment(self, batch: dict, key: jax.Array) -> dict:
        """Rotation + colour of the three frames, labels transformed to match (module docstring)."""
        if self.augment_mode == "none":
            return batch
        B = batch["iu"].shape[0]
        keys = jax.random.split(key, 3)
        if self.augment_mode == "shared":
            keys = jnp.stack([keys[0]] * 3)
        out = dict(batch)
        for name, k in zip("aub", keys, strict=True):
            angle, color = aug_lib.sample_params(k, B, self.rotation, self.color)
            g = batch[f"g{name}"]
            frame = aug_lib.augment_frame({"image": batch[f"i{name}"], "K": batch[f"K{name}"],
                                           "root": g.root, "pose": g.pose}, angle, color)
            out[f"i{name}"], out[f"g{name}"] = frame["image"], Gamma(frame["root"], frame["pose"], g.betas)
        return out

    def loss(self, params, batch: dict, key: jax.Array):
        b = self.augment(batch, key)
        out = self.forward(params, b["ia"], b["iu"], b["ib"], b["ga"], b["gb"], b["Ka"], b["Ku"], b["Kb"],
                           b["w"], b["gap_a"], b["gap_b"])
        return mesh_loss(self.ctx.mano, out, b["gu"])

    # --- evaluation
    def propagate(self, params, split: str) -> dict[str, Gamma]:
        """Every scenario-2 query of ``split`` (:func:`eval_items` order), near and both sides."""
        vids = self.ctx.splits[split]
        it = eval_items(vids, self.ctx.stride)
        fn = functools.partial(self._forward, params)
        out = {}
        for mode, (a, b, w) in {"near": (it.nearest, it.nearest, np.zeros_like(it.weight)),
                                "both": (it.left, it.right, it.weight)}.items():
            t = self.triples(vids, a, it.u, b, w)
            out[mode] = batched(fn, t["ia"], t["iu"], t["ib"], t["ga"], t["gb"], t["Ka"], t["Ku"], t["Kb"],
                                t["w"], t["gap_a"], t["gap_b"], batch_size=self.ctx.args.eval_batch)
        return out


DESIGNS = {"paper": PaperDesign, "stacked": StackedDesign}


# ----------------------------------------------------------------------------- train / evaluate
def design_rows(design, params, ctx: Context, split: str, items: EvalItems) -> dict[str, dict]:
    """{"<design> (near)": errors, "<design> (both sides)": errors} on ``split``."""
    pred = design.propagate(params, split)
    truth = ctx.splits[split].gamma.take(items.u)
    name = ctx.args.design + (" crop-aware" if getattr(ctx.args, "crop_aware", False)
                              and ctx.args.design == "paper" else "")
    return {f"{name} (near)": errors(ctx.mano, pred["near"], truth),
            f"{name} (both sides)": errors(ctx.mano, pred["both"], truth)}


def train(design, ctx: Context, evaluate_fn=None) -> tuple[Any, list[dict]]:
    """AdamW on the design's loss; returns (params, history)."""
    a = ctx.args
    params = design.init(jax.random.PRNGKey(a.seed))
    warmup = min(100, max(a.steps // 10, 1))
    schedule = optax.warmup_cosine_decay_schedule(0.0, a.lr, warmup, max(a.steps, warmup + 1), a.lr * 0.02)
    tx = optax.adamw(schedule, weight_decay=1e-4)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, batch, key):
        (_, mpjpe), grads = jax.value_and_grad(design.loss, has_aux=True)(params, batch, key)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, mpjpe

    rng = np.random.default_rng(a.seed)
    base = jax.random.PRNGKey(a.seed + 1)
    history, window, t0 = [], [], time.perf_counter()
    for i in range(a.steps):
        params, opt, mpjpe = step(params, opt, design.batch(rng, a.batch), jax.random.fold_in(base, i))
        window.append(float(mpjpe) * 1000)
        if (i + 1) % a.log_every == 0 or i + 1 == a.steps:
            rate = (time.perf_counter() - t0) / (i + 1) * 1000
            history.append({"step": i + 1, "train_mpjpe": float(np.mean(window))})
            print(f"step {i + 1}/{a.steps}  train-pair MPJPE {np.mean(window):6.2f} mm  "
                  f"{rate:.0f} ms/step", flush=True)
            window = []
        if evaluate_fn is not None and a.eval_every and (i + 1) % a.eval_every == 0 and i + 1 < a.steps:
            evaluate_fn(params, i + 1)
    return params, history


def format_table(rows: dict[str, dict], gap: np.ndarray, split: str) -> str:
    heads = ["all"] + [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in BINS]
    counts = [len(gap)] + [int(((gap >= lo) & (gap <= hi)).sum()) for lo, hi in BINS]
    lines = []
    for metric in ("MPJPE", "MPVPE"):
        lines.append(f"{split}: {metric} (mm) by gap |u - N(u)|")
        lines.append(f"{'':34s}" + "".join(f"{h:>8s}" for h in heads))
        lines.append(f"{'frames':34s}" + "".join(f"{c:8d}" for c in counts))
        for name, err in rows.items():
            s = summarise(err[metric], gap)
            lines.append(f"{name:34s}" + "".join(f"{s[h]:8.2f}" if s[h] is not None else f"{'-':>8s}"
                                                 for h in heads))
        lines.append("")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--design", choices=sorted(DESIGNS), default="stacked")
    p.add_argument("--config", default="synthetic")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. --set data.data_dir=\"'/tmp/hp/data_s0'\" "
                   "(repeatable)")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--eval-every", type=int, default=0,
                   help="test-split evaluation every N steps (0: at the end only)")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--videos", type=int, default=None, help="use at most this many videos of each split")
    p.add_argument("--eval-splits", nargs="+", default=["test"], help="splits evaluated (test; add train to "
                   "see how much of the bound is memorised)")
    p.add_argument("--eval-batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-gap", type=int, default=None, help="largest |u - s| of the training pairs "
                   "(default: paper K - 1, stacked K // 2 for its near pairs)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    g = p.add_argument_group("paper design")
    g.add_argument("--run", default=None,
                   help="a trained run folder (encoder and aligner start); none: random encoder")
    g.add_argument("--phase", default="align", choices=["stage1", "align"], help="the run's checkpoint")
    g.add_argument("--crop-aware", action="store_true",
                   help="start from the crop-aware transfer of the label")
    g = p.add_argument_group("stacked design")
    g.add_argument("--width", type=int, default=64, help="channels of the first conv stage (x2, x4 after)")
    g.add_argument("--augment", choices=["per-frame", "shared", "none"], default="per-frame")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = config_lib.load(args.config, args.overrides)
    t = time.perf_counter()
    train_videos = load_videos(config.data, "train", args.videos)
    splits = {s: (train_videos if s == "train" else load_videos(config.data, s, args.videos))
              for s in args.eval_splits}
    print(f"data {config.data.data_dir}: train {train_videos.num_videos} videos / {len(train_videos.images)} "
          f"frames; " + ", ".join(f"{s} {v.num_videos} videos" for s, v in splits.items())
          + f"; K = {config.data.label_stride}, {config.data.image_size} px "
          f"({time.perf_counter() - t:.1f} s)",
          flush=True)
    ctx = Context(config=config, mano=default_mano(config), args=args, train=train_videos, splits=splits)
    design = DESIGNS[args.design](ctx)
    items = {s: eval_items(v, ctx.stride) for s, v in splits.items()}
    refs = {}
    for s, v in splits.items():
        truth = v.gamma.take(items[s].u)
        refs[s] = {name: errors(ctx.mano, g, truth) for name, g in reference_rows(config, v).items()}

    evals = []

    def evaluate(params, step):
        s = "test" if "test" in splits else next(iter(splits))
        rows = design_rows(design, params, ctx, s, items[s])
        line = {name: float(err["MPJPE"].mean()) for name, err in rows.items()}
        evals.append({"step": step, "split": s, **line})
        print(f"[{step}] {s} MPJPE " + "  ".join(f"{k} {v:.2f}" for k, v in line.items()), flush=True)

    params, history = train(design, ctx, evaluate)
    result = {"design": args.design, "args": vars(args), "config": config_lib.to_dict(config),
              "train_history": history, "evals": evals, "tables": {}}
    for s in splits:
        mine = design_rows(design, params, ctx, s, items[s])
        near, both = list(mine)
        rows = {k: refs[s][k] for k in ("Copy", "Copy (crop-aware)")} | {near: mine[near]} \
            | {k: refs[s][k] for k in ("Interpolation", "Interpolation (crop-aware)")} | {both: mine[both]}
        print("\n" + format_table(rows, items[s].gap, s), flush=True)
        result["tables"][s] = {name: {m: summarise(err[m], items[s].gap) for m in ("MPJPE", "MPVPE")}
                               for name, err in rows.items()}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
