"""The model facade: one object that training, evaluation and propagation call.

:class:`HandPropModel` binds the static description of the network (the run's
:class:`~handprop_jax.config.Config` and the Flax module) to the MANO model. It is a
``flax.struct`` pytree (config and module static, the MANO arrays leaves), so it can be closed over
in a jitted step or passed to ``jax.jit`` as an argument. Its methods are pure functions with the
variables or parameters passed explicitly (``variables`` = ``{"params", "batch_stats"}``):

- :meth:`~HandPropModel.init` ``(key) -> variables`` (fresh, or the encoder from
  ``model.init_checkpoint``: :mod:`handprop_jax.model.pretrained`);
- :meth:`~HandPropModel.encode` ``(variables, images uint8 (B,S,S,3), train=False) ->
  (Features, batch_stats)`` — ψ; in training mode the returned BatchNorm statistics are updated;
- :meth:`~HandPropModel.regress` ``(params, features, K (B,3,3)) -> Gamma`` — π^r, π^θ (Eq. 1),
  MANO PCA → full pose, root recovered through K;
- :meth:`~HandPropModel.predict` ``(variables, images, K, train=False) -> (Features, Gamma,
  batch_stats)`` — encode + regress (scenario 1);
- :meth:`~HandPropModel.align` ``(params, gamma_b, frame_a, frame_b) -> Gamma`` — Pose Alignment
  (Eqs. 2–4): annotations of frame b moved to frame a, β copied. Propagation (scenario 2) is
  ``align(params, γ*_s, frame_u, frame_s)``;
- :meth:`~HandPropModel.hand` ``(gamma) -> (verts (B,778,3), joints (B,21,3))`` camera frame,
  metres; :meth:`~HandPropModel.joints` ``(*gammas)``: the joints of several γ in one MANO call;
- :meth:`~HandPropModel.bind` ``(variables, batch_size=None) -> BoundModel``: the jitted inference
  callables of one set of variables (what evaluation, visualisation and ``handprop propagate`` use;
  ``sequence`` for a model with a temporal input, :mod:`handprop_jax.model.temporal`).

A frame enters the aligner as a :class:`Frame` record (its :class:`Features` and its intrinsics K)
rather than as bare feature tuples, so that the aligner can later be given more of each frame
without changing its callers.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import flax.struct
import jax
import jax.numpy as jnp

import mano_jax
from handprop_jax.config import Config
from handprop_jax.gamma import Gamma, concatenate
from handprop_jax.hand import default_mano, hand_in_camera
from handprop_jax.model import handprop as hp
from handprop_jax.model import pretrained, temporal


class Features(NamedTuple):
    """ψ(I) = [z^r; z^θ]: ``z_r`` (B, F) for the root, ``z_theta`` (B, F) for pose and shape, float32."""

    z_r: Any
    z_theta: Any


class Frame(NamedTuple):
    """What the aligner is given of one frame: its ``features`` and its intrinsics ``K`` (B, 3, 3),
    pixels of the crop."""

    features: Features
    K: Any


@flax.struct.dataclass
class HandPropModel:
    """The network of one config and its MANO model (see the module docstring)."""

    config: Config = flax.struct.field(pytree_node=False)
    module: hp.HandProp = flax.struct.field(pytree_node=False)
    mano: mano_jax.ManoModel

    @classmethod
    def create(cls, config: Config, mano: mano_jax.ManoModel | None = None,
               module: hp.HandProp | None = None) -> HandPropModel:
        """The model of ``config``; ``mano`` defaults to the config's MANO model
        (:func:`handprop_jax.hand.default_mano`), ``module`` to :func:`handprop.from_config`."""
        return cls(config=config, module=hp.from_config(config) if module is None else module,
                   mano=default_mano(config) if mano is None else mano)

    # ------------------------------------------------------------------------------ variables
    def init(self, key: jax.Array) -> dict:
        """Fresh variables ({'params', 'batch_stats'}) for the config's image size, then
        ``model.init_checkpoint`` when one is set: a torchvision ResNet-18 ``.pth`` (the encoder) or a
        predictor ``.npz`` of ``handprop pretrain`` (:mod:`handprop_jax.model.pretrained`)."""
        s = self.config.data.image_size
        images = jnp.zeros((2, s, s, 3), jnp.uint8)
        variables = dict(jax.jit(lambda k: self.module.init(k, images, False))(key))  # one compilation
        return pretrained.initialise(variables, self.config)

    # ------------------------------------------------------------------------------ the network
    def encode(self, variables: dict, images: jnp.ndarray, train: bool = False,
               stem: jnp.ndarray | None = None) -> tuple[Features, Any]:
        """ψ: uint8 images (B, S, S, 3) → (Features, batch_stats). ``train``: BatchNorm on batch
        statistics, running averages updated (unless ``model.freeze_batchnorm``); otherwise the
        running statistics are used and returned unchanged. ``stem`` (B, S/2, S/2, width): optional
        addition to the first convolution's output — extra input channels through their own conv1
        weights (:mod:`handprop_jax.model.temporal`); None = the plain single-frame encoder."""
        stats = variables.get("batch_stats", {})
        if not train:
            out = self.module.apply(variables, images, False, stem, method=hp.HandProp.encode)
            return Features(*out), stats
        out, mutated = self.module.apply(variables, images, True, stem, mutable=["batch_stats"],
                                         method=hp.HandProp.encode)
        return Features(*out), mutated.get("batch_stats", stats)

    def regress(self, params: dict, features: Features, K: jnp.ndarray,
                image_size: int | None = None) -> Gamma:
        """π^r, π^θ (Eq. 1) → γ^reg: root recovered with K (B, 3, 3) for crops of ``image_size``
        pixels (default ``data.image_size``), PCA pose mapped to the full 48-d pose with hands_mean."""
        m, d = self.config.model, self.config.data
        raw_root, raw_pose = cast(tuple[jax.Array, jax.Array], self.module.apply(
            {"params": params}, features.z_r, features.z_theta, method=hp.HandProp.regress))
        return hp.regress_gamma(self.mano, raw_root, raw_pose, K,
                                d.image_size if image_size is None else image_size,
                                d.z_off if m.root_z_off is None else m.root_z_off, m.ncomps,
                                m.root_depth_unit)

    def predict(self, variables: dict, images: jnp.ndarray, K: jnp.ndarray, train: bool = False,
                stem: jnp.ndarray | None = None) -> tuple[Features, Gamma, Any]:
        """Single-frame Hand Predictor: images (B, S, S, 3) uint8, K (B, 3, 3) → (Features, γ^reg,
        batch_stats) (see :meth:`encode` for ``train`` and ``stem``)."""
        features, stats = self.encode(variables, images, train, stem)
        return features, self.regress(variables["params"], features, K, images.shape[1]), stats

    def align(self, params: dict, gamma_b: Gamma, frame_a: Frame, frame_b: Frame) -> Gamma:
        """Pose Alignment (Eqs. 2–4): γ_a = (r_b + φ^r(r_b, z^r_a − z^r_b), θ_b + φ^θ(θ_b, z^θ_a −
        z^θ_b), β_b). Everything (B, ...)."""
        za, zb = frame_a.features, frame_b.features
        d_root, d_pose = self.module.apply({"params": params}, gamma_b.root, gamma_b.pose, za.z_r - zb.z_r,
                                           za.z_theta - zb.z_theta, method=hp.HandProp.align)
        return Gamma(root=gamma_b.root + d_root, pose=gamma_b.pose + d_pose, betas=gamma_b.betas)

    # ------------------------------------------------------------------------------ MANO
    def hand(self, gamma: Gamma) -> tuple[jnp.ndarray, jnp.ndarray]:
        """γ → (vertices (B, 778, 3), joints (B, 21, 3)), camera frame, metres."""
        return hand_in_camera(self.mano, gamma.root, gamma.pose, gamma.betas)

    def joints(self, *gammas: Gamma) -> list[jnp.ndarray]:
        """Joints (B_i, 21, 3) of each γ, computed in ONE batched MANO call."""
        _, joints = self.hand(concatenate(gammas))
        return jnp.split(joints, len(gammas)) if len(gammas) > 1 else [joints]

    # ------------------------------------------------------------------------------ inference
    def bind(self, variables: dict, batch_size: int | None = None) -> BoundModel:
        """The jitted inference callables of ``variables`` (BatchNorm in inference mode); the variables
        and the MANO arrays are arguments of the compiled functions, not constants folded into them.
        ``batch_size`` (default ``eval.batch_size``) is the fixed batch callers pad to."""
        model, variables = jax.device_put((self, variables))  # once, not at every call
        return BoundModel(
            features=functools.partial(_features, model, variables),
            regress=functools.partial(_regress, model, variables["params"]),
            align=functools.partial(_align, model, variables["params"]),
            image_size=self.config.data.image_size,
            batch_size=batch_size or self.config.eval.batch_size,
            sequence=(temporal.video_predictor(model, variables) if temporal.KEY in variables["params"]
                      else None))


@jax.jit
def _features(model: HandPropModel, variables: dict, images: jnp.ndarray) -> Features:
    return model.encode(variables, images)[0]


@jax.jit
def _regress(model: HandPropModel, params: dict, features: Features, K: jnp.ndarray) -> Gamma:
    return model.regress(params, features, K)


@jax.jit
def _align(model: HandPropModel, params: dict, gamma_b: Gamma, frame_a: Frame, frame_b: Frame) -> Gamma:
    return model.align(params, Gamma.of(gamma_b), frame_a, frame_b)


@dataclasses.dataclass(frozen=True)
class BoundModel:
    """The inference functions of one checkpoint (:meth:`HandPropModel.bind`), or stand-ins with the
    same signatures (tests):

    - ``features(images uint8 (B, S, S, 3)) -> Features``;
    - ``regress(features, K (B, 3, 3)) -> Gamma`` (γ^reg, scenario 1);
    - ``align(gamma_b, frame_a, frame_b) -> Gamma`` (scenario 2: ``align(γ*_s, frame_u, frame_s)``);
    - ``image_size``: S; ``batch_size``: the fixed batch the functions are called with (callers pad
      the last batch so that nothing recompiles);
    - ``sequence(images (T, S, S, 3), K (T, 3, 3)) -> Gamma (T)``: for a model with a temporal input
      (:mod:`handprop_jax.model.temporal`) the recurrent prediction of a whole video in frame order;
      None for single-frame models (``features``/``regress`` are then the model without its
      temporal input).
    """

    features: Callable[[Any], Features]
    regress: Callable[[Features, Any], Gamma]
    align: Callable[[Gamma, Frame, Frame], Gamma]
    image_size: int
    batch_size: int
    sequence: Callable[[Any, Any], Gamma] | None = None


__all__ = ["BoundModel", "Features", "Frame", "HandPropModel"]
