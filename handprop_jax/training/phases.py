"""What a training phase is: the record every phase — the paper's and the comparison methods' — fills in.

A phase trains from the final variables of another phase (or from a fresh initialisation) for a number
of steps, on its own batches, with its own loss and its own trainable parameter groups, and saves its
checkpoints to ``workdir/checkpoints/<name>/``. The loop (:mod:`handprop_jax.training.loop`) and the
step (:mod:`handprop_jax.training.steps`) know phases only through this record; the registry of the
phases that exist is :mod:`handprop_jax.training.registry`.

A new training variant (e.g. a comparison method) is one module that builds a :class:`Phase` and one
line in the registry; its Table I row is one line in :mod:`handprop_jax.evaluation.rows`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from handprop_jax.config import Config

#: ``loss(model, params, batch_stats, aux, batch) -> (loss, (new batch_stats, metrics dict))``:
#: ``model`` the :class:`~handprop_jax.model.api.HandPropModel`, ``params`` the HandProp parameters
#: (differentiated), ``aux`` the phase's own extra state (not differentiated; see ``Phase.aux_step``),
#: ``batch`` the augmented numeric batch. Metrics are scalar arrays and must include "loss".
LossFn = Callable[..., tuple[Any, tuple[Any, dict]]]
#: metrics key under which a phase's loss may hand a pytree (e.g. its predictions, under
#: ``stop_gradient``) to its ``aux_step``, which finds it as ``batch[AUX_INPUT]``; it is not logged
AUX_INPUT = "aux_input"
#: ``batches(config, split, shard_index, shard_count)``: for split "train" an endless iterator of
#: process-local numpy batches with ``get_state()``/``set_state()`` (resumable); for "val" a finite
#: iterable of batches for ``validation`` (or None: no validation).
BatchFn = Callable[[Config, str, int, int], Any]


@dataclasses.dataclass(frozen=True)
class Phase:
    """One training phase (see the module docstring).

    name: checkpoint folder and log name. stage: the paper's stage number (1, 2 or 3) it belongs to
    (logs, ``--stage`` aliases). init_from: phase whose final variables start this one (None: a fresh
    initialisation). trainable: top-level parameter groups given to Adam (the others get zero updates).
    steps: ``steps(config) -> int``. loss: :data:`LossFn`. batches: :data:`BatchFn`.
    validation: "frames" (the predictor's MPJPE on labelled val frames) or "pairs" (the aligner's
    propagation error on labelled val pairs). images_per_sample: images one batch row holds (for the
    images/s log). shares_step_with: a phase whose compiled step is identical (compiled once).
    init_aux: ``init_aux(config, key) -> pytree`` extra state of the phase (e.g. a discriminator
    and its optimizer), default none. aux_step: ``aux_step(model, params, batch_stats, aux, batch, key)
    -> (aux, metrics)``, run in the same jitted step after the main update (e.g. the discriminator's
    update), default none; the loss may hand it values of the main pass as ``metrics[AUX_INPUT]``
    (found as ``batch[AUX_INPUT]``). padding_masks: the in-step augmentation also gives every frame its
    ``inside`` mask (pixels not from the augmentation's reflected border; ``data.augment``).
    diagnostics: ``diagnostics(config, model, variables) -> {name: float}``, numbers computed at the
    phase's first and last step and logged (e.g. a check of the phase's loss on validation data),
    default none. extend_params: ``extend_params(config, variables, key) -> variables``,
    applied to the variables the phase starts from (``init_from``'s final ones) before its optimizer
    is made: parameter groups the phase adds (e.g. a zero-initialised temporal input), default none.
    config_section: the config section that shapes this phase alone (a comparison method's, e.g.
    "hasson"), or None. A run may be resumed with that section changed while none of the phases
    it shapes has a checkpoint (``training.loop``).
    """

    name: str
    stage: int
    init_from: str | None
    trainable: tuple[str, ...]
    steps: Callable[[Config], int]
    loss: LossFn
    batches: BatchFn
    validation: str = "frames"
    images_per_sample: int = 1
    shares_step_with: str | None = None
    init_aux: Callable[[Config, Any], Any] | None = None
    aux_step: Callable[..., tuple[Any, dict]] | None = None
    padding_masks: bool = False
    diagnostics: Callable[..., dict] | None = None
    extend_params: Callable[[Config, dict, Any], dict] | None = None
    config_section: str | None = None

    def __post_init__(self):
        if self.validation not in ("frames", "pairs"):
            raise ValueError(f"phase {self.name!r}: validation must be 'frames' or 'pairs'")
