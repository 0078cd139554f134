"""Table I evaluation: scenario 1 (predictor) and scenario 2 (propagation) on the unlabelled frames,
reference rows (copy-propagation, mean pose), error vs frame gap: ``runner.evaluate(workdir, config)``.

Nothing is imported here (as in :mod:`handprop_jax.propagation`), so that ``handprop evaluate --help``
imports the command's module alone, not the runner's checkpoints and data sets.
"""
