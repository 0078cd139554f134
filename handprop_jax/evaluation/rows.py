"""The rows of Table I: what each one is and what it needs.

Every row gives an annotation for each unlabelled frame of a video:

- ``predict`` rows (scenario 1): the single-frame predictor of a phase's checkpoint on the frame;
- ``propagate`` rows: the labelled frames' ground truth moved to the frame by a propagation method
  (:class:`handprop_jax.propagation.core.Propagator`), from the nearest labelled frame or from both
  neighbours (scenario 2 for the methods, "ref" for the trivial references: copy and interpolation,
  plain and crop-aware); the paper's method needs its phase's aligner;
- ``mean``: one constant hand, the mean of the train split's labelled frames (reference);
- ``recurrent`` rows (scenario 1): a phase's predictor with a temporal input run over each whole
  video in frame order from frame 0 (``BoundModel.sequence``; Chen et al.'s method,
  :mod:`handprop_jax.model.temporal`).

A training variant adds its row with one entry here (its phase is trained by
:mod:`handprop_jax.training.registry`); rows whose phase has no checkpoint in a run are left out.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Row:
    """name: as printed. scenario: 1, 2 or "ref". kind: "predict", "propagate", "mean" or
    "recurrent". phase: the
    checkpoint it needs (None: none). method, both_sides: the propagation (``propagate`` rows)."""

    name: str
    scenario: int | str
    kind: str
    phase: str | None = None
    method: str | None = None
    both_sides: bool = False


BASELINE = "Baseline"
ALIGN = "Baseline + Align"
ALIGN_PAPER = "Baseline + Align (paper)"
PROPAGATION = "Propagation"
BOTH_SIDES = "Propagation (both sides)"
PAPER = "Propagation (paper)"
PAPER_BOTH = "Propagation (paper, both sides)"
COPY = "Copy"
COPY_CROP = "Copy (crop-aware)"
INTERPOLATION = "Interpolation"
INTERPOLATION_CROP = "Interpolation (crop-aware)"
MEAN_POSE = "Mean pose"
HASSON = "Photometric consistency (Hasson)"
ADVERSARIAL_UNPAIRED = "Adversarial motion (Spurr), unpaired motion"
ADVERSARIAL_LABELS = "Adversarial motion (Spurr), labels only"
TEMPORAL = "Temporal consistency (Chen)"
TEMPORAL_SINGLE = "Temporal consistency (Chen), no temporal input"

#: Table I rows per split, in order.
ROWS: tuple[Row, ...] = (
    Row(BASELINE, 1, "predict", phase="baseline"),
    Row(ALIGN, 1, "predict", phase="pseudo"),
    Row(ALIGN_PAPER, 1, "predict", phase="align"),
    Row(HASSON, 1, "predict", phase="photometric"),
    Row(ADVERSARIAL_UNPAIRED, 1, "predict", phase="adversarial_motion"),
    Row(ADVERSARIAL_LABELS, 1, "predict", phase="adversarial_motion_labels"),
    Row(TEMPORAL, 1, "recurrent", phase="temporal_consistency"),
    Row(TEMPORAL_SINGLE, 1, "predict", phase="temporal_consistency"),
    Row(PROPAGATION, 2, "propagate", method="photometric"),
    Row(BOTH_SIDES, 2, "propagate", method="photometric", both_sides=True),
    Row(PAPER, 2, "propagate", phase="align", method="paper"),
    Row(PAPER_BOTH, 2, "propagate", phase="align", method="paper", both_sides=True),
    Row(COPY, "ref", "propagate", method="copy"),
    Row(COPY_CROP, "ref", "propagate", method="crop"),
    Row(INTERPOLATION, "ref", "propagate", method="copy", both_sides=True),
    Row(INTERPOLATION_CROP, "ref", "propagate", method="crop", both_sides=True),
    Row(MEAN_POSE, "ref", "mean"),
)

#: row name → scenario, in table order
MODEL_ROWS: dict[str, int | str] = {r.name: r.scenario for r in ROWS}


def by_name(names=None) -> tuple[Row, ...]:
    """The rows named (all when ``names`` is None or empty), in table order; ValueError for an unknown
    name."""
    if not names:
        return ROWS
    unknown = [n for n in names if n not in MODEL_ROWS]
    if unknown:
        raise ValueError(f"unknown Table I rows {unknown}; rows are {list(MODEL_ROWS)}")
    return tuple(r for r in ROWS if r.name in names)


def phases_needed(rows: tuple[Row, ...]) -> tuple[str, ...]:
    """The checkpoints the rows need, in first-use order."""
    return tuple(dict.fromkeys(r.phase for r in rows if r.phase is not None))
