"""Device mesh, shardings and host-to-global arrays; multi-host start-up.

One mesh axis, "data", spans every device of every process: parameters are
replicated and batches are split along their leading axis. The same code runs
on one CPU, eight fake CPU devices in tests, a GPU node or a TPU pod slice.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def create_mesh(devices=None) -> Mesh:
  """Returns a 1-D mesh named "data" over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy on every device (params, optimiser state, scalars)."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding that splits the leading (batch) axis over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def host_to_global(batch, mesh: Mesh):
  """Turns this process's slice of a batch (a pytree of numpy arrays) into global jax.Arrays."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Starts JAX's multi-controller runtime; must run before any other JAX call.

  With no arguments JAX detects the cluster itself (TPU VM pods, SLURM, Open MPI).
  """
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
