"""HandProp training: train state and jitted steps (``steps``), data parallelism (``parallel``),
orbax checkpoints (``checkpoint``), logs (``logs``), the loop (``loop.train``) and the CLI."""

from handprop_jax.training.loop import NonFiniteLossError, train

__all__ = ["train", "NonFiniteLossError"]
