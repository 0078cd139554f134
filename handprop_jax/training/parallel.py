"""Data parallelism: one mesh over every device with a ``data`` axis.

The train step is an ordinary ``jax.jit`` over *global* arrays (the paper's pmap'd design written
with today's sharding API): the batch is sharded on its leading axis over the ``data`` mesh axis,
the train state (parameters, optimizer state, BatchNorm statistics) is replicated. Because the
loss is a mean over the global batch, XLA inserts the cross-device reductions itself: gradients
are averaged over all devices and BatchNorm batch statistics are computed over the global batch
(synchronised BatchNorm), so an N-device step computes the same function as the 1-device step on
the same global batch (up to float summation order).

Multi-host: :func:`maybe_initialize_distributed` calls ``jax.distributed.initialize`` when
``TrainConfig.distributed`` is set (coordinator address / process count / id from the config, or
from the environment when they are None, as on managed clusters). Each process then loads its
``batch_size / process_count`` rows and :func:`global_batch` assembles the global array with
``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from handprop_jax.config import TrainConfig

DATA_AXIS = "data"

_initialized = False


def maybe_initialize_distributed(train: TrainConfig) -> None:
    """``jax.distributed.initialize`` once per process when ``train.distributed`` (else no-op).
    Call it before any other JAX computation of the process (``train`` does so first)."""
    global _initialized
    if not train.distributed or _initialized:
        return
    kwargs = {}
    if train.coordinator_address is not None:
        kwargs["coordinator_address"] = train.coordinator_address
    if train.num_processes is not None:
        kwargs["num_processes"] = train.num_processes
    if train.process_id is not None:
        kwargs["process_id"] = train.process_id
    # CPU cross-process collectives need an implementation (gloo is built into jaxlib); the
    # setting only concerns the CPU backend. Must run before anything initialises a backend.
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    _initialized = True


def make_mesh() -> Mesh:
    """1-D mesh over every device of every process, axis ``data``."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """Rows this process loads. Raises ValueError naming the sizes when they do not divide."""
    n_dev = mesh.devices.size
    if global_batch_size % n_dev:
        raise ValueError(f"train.batch_size={global_batch_size} is not divisible by the {n_dev} devices "
                         f"of the data mesh; use a multiple of {n_dev}")
    return global_batch_size // jax.process_count()


def global_batch(local: dict, mesh: Mesh) -> dict:
    """Process-local numpy batch (leading axis = local rows) → global jax arrays sharded on ``data``."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


def replicate(tree, mesh: Mesh):
    """Place a (host or device) pytree replicated on every device of the mesh. Always a copy (the
    train step donates its state, which must not delete the caller's arrays)."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        # a jitted copy: device_put may reuse the input buffer as one of the replicas, even with
        # may_alias=False, and donating that replica would delete the caller's array
        return jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=sharding)(tree)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda idx: np.asarray(x)[idx]),
        jax.device_get(tree))
