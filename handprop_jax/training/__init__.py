"""HandProp training: train state and jitted steps (``steps``), data parallelism (``parallel``),
orbax checkpoints (``checkpoint``), logs (``logs``), the loop (``loop.train``) and the CLI.

``train`` and ``NonFiniteLossError`` are imported lazily so that ``handprop_jax.training.parallel``
can call ``jax.distributed.initialize`` before any module that touches a JAX backend is imported.
"""

__all__ = ["train", "NonFiniteLossError"]


def __getattr__(name):
    if name in __all__:
        from handprop_jax.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'handprop_jax.training' has no attribute {name!r}")
