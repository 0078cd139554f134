"""The training phases that exist, in training order (:class:`~handprop_jax.training.phases.Phase`).

=========  =====  ==========  ===================================  ====================================
phase      stage  starts from trainable                            loss / batches
=========  =====  ==========  ===================================  ====================================
stage1     1      fresh init  predictor (encoder, π^r, π^θ)        L_pred on labelled frames
baseline   1      stage1      predictor                            L_pred, control: as many steps as
                                                                   stage2 + stage3
stage2     2      stage1      aligners (φ^r, φ^θ) only             L_align on labelled pairs (paper)
align      3      stage2      everything                           L_pred + λ_align L_align (paper)
pseudo     3      stage1      predictor                            L_pred on labelled frames and on
                                                                   propagated labels (default "Baseline
                                                                   + Align"; :mod:`.pseudo`), steps as
                                                                   baseline
photometr. 3      stage1      predictor                            L_pred + Hasson's photometric
                                                                   consistency on (u, N(u)); as many
                                                                   steps as baseline (training/hasson)
adversar.  3      stage1      predictor (+ its discriminator D)    adversarial_motion(_labels): L_pred +
                                                                   λ_MM L_MM, D's LSGAN step (Spurr);
                                                                   steps as baseline
temporal_  3      stage1      predictor + temporal input           temporal_consistency: L_pred + Chen's
                                                                   forward/reversed consistency;
                                                                   steps as baseline
=========  =====  ==========  ===================================  ====================================

Which phases a run trains is ``train.phases`` (default: all of them, in this order). A phase module
(e.g. a comparison method) adds itself here with one import and one entry in :data:`_MODULES`.
"""

from __future__ import annotations

import functools

from handprop_jax.config import Config
from handprop_jax.data.train_batches import train_iterator, val_batches
from handprop_jax.model import handprop as hp
from handprop_jax.training import adversarial_motion, hasson, objectives, pseudo, temporal_consistency
from handprop_jax.training.phases import Phase


def _pipeline_batches(stage: int, val_stage: int | None):
    """Batches of :mod:`handprop_jax.data.train_batches` for a paper stage (train) and validation."""

    def batches(config: Config, split: str, shard_index: int, shard_count: int):
        if split == "train":
            return train_iterator(config, stage, shard_index=shard_index, shard_count=shard_count)
        if val_stage is None:
            return None
        return val_batches(config, val_stage, shard_index=shard_index, shard_count=shard_count)

    return batches


def _core() -> tuple[Phase, ...]:
    t = lambda name: (lambda c: getattr(c.train, name))  # noqa: E731
    return (
        Phase("stage1", 1, None, hp.PREDICTOR_KEYS, t("stage1_steps"), objectives.pred_phase_loss,
              _pipeline_batches(1, 1)),
        Phase("baseline", 1, "stage1", hp.PREDICTOR_KEYS,
              lambda c: c.train.stage2_steps + c.train.stage3_steps, objectives.pred_phase_loss,
              _pipeline_batches(1, 1), shares_step_with="stage1"),
        Phase("stage2", 2, "stage1", hp.ALIGNER_KEYS, t("stage2_steps"), objectives.stage2_loss,
              _pipeline_batches(2, 2), validation="pairs", images_per_sample=2),
        Phase("align", 3, "stage2", hp.PREDICTOR_KEYS + hp.ALIGNER_KEYS, t("stage3_steps"),
              objectives.stage3_loss, _pipeline_batches(3, 1), images_per_sample=2),
    )


#: Modules that define more phases: each has a module-level ``PHASE`` (a Phase) or ``PHASES`` (a
#: tuple of them, e.g. one method with two variants), added in this order. They may use the
#: propagation layer (below training; docs/design.md, "Layers"), never the training loop or steps.
_MODULES = (pseudo, hasson,
            adversarial_motion,  # Spurr et al.: (a), (b)
            temporal_consistency)  # Chen et al. (TASSN)


@functools.cache
def phases() -> dict[str, Phase]:
    """{name: Phase} of every known phase, in training order."""
    out = {p.name: p for p in _core()}
    for module in _MODULES:
        for phase in getattr(module, "PHASES", None) or (module.PHASE,):
            out[phase.name] = phase
    return out


def names() -> tuple[str, ...]:
    return tuple(phases())


def get(name: str) -> Phase:
    """The phase ``name``; ValueError naming the known phases otherwise."""
    known = phases()
    if name not in known:
        raise ValueError(f"phase {name!r}: expected one of {tuple(known)}")
    return known[name]


def order(config: Config) -> tuple[str, ...]:
    """The phases a run trains (``train.phases``; empty = all), in training order."""
    chosen = tuple(config.train.phases) or names()
    for name in chosen:
        get(name)
    return tuple(n for n in names() if n in chosen)
