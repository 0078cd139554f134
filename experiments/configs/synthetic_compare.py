"""The demo config (``synthetic``) plus the comparison methods' training phases: what
``make demo-compare`` / ``handprop demo --compare`` runs, into the same run folder as ``make demo``
(finished phases are skipped, so only the comparison phases and the evaluation are added).

Each comparison method appends its phase name here (handprop_jax.training.registry); its Table I row
(handprop_jax.evaluation.rows) appears once the phase has a checkpoint.
"""
import dataclasses

from handprop_jax import config as config_lib

#: comparison phases, trained after the paper's: Hasson et al.'s photometric consistency; Spurr et
#: al.'s adversarial motion prior with (a) unpaired motion and (b) the labels only; Chen et al.'s
#: temporal consistency (TASSN adapted to MANO)
COMPARISON_PHASES = ("photometric", "adversarial_motion", "adversarial_motion_labels", "temporal_consistency")


def get_config() -> config_lib.Config:
    base = config_lib.load("synthetic")
    # Hasson's λ_c ramp sized to the phase: the official 1000 steps is longer than the whole phase
    # here (the baseline's stage2 + stage3 steps), where λ_c would reach only a third of its value;
    # the ramp ends a third of the way in
    phase_steps = base.train.stage2_steps + base.train.stage3_steps
    return dataclasses.replace(base, name="synthetic_compare",
                               train=dataclasses.replace(base.train,
                                                         phases=base.train.phases + COMPARISON_PHASES),
                               hasson=dataclasses.replace(base.hasson, ramp_steps=max(phase_steps // 3, 1)))
