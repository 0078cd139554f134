"""Table I evaluation: scenario 1 (predictor) and scenario 2 (propagation) on the unlabelled frames,
reference rows (copy-propagation, mean pose), error vs frame gap. ``evaluate(workdir, config)``."""

from handprop_jax.evaluation.runner import MODEL_ROWS, evaluate, evaluate_video, mean_gamma

__all__ = ["MODEL_ROWS", "evaluate", "evaluate_video", "mean_gamma"]
