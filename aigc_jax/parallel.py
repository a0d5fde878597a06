"""Device mesh, shardings and host-to-global arrays; multi-host start-up.

One mesh axis, "data", spans every device of every process: parameters are
replicated and batches are split along their leading axis. The same code runs
on one CPU, eight fake CPU devices in tests, a GPU node or a TPU pod slice; with
several processes (`initialize_distributed`), the mesh spans all of them and each
process feeds only its own devices.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from aigc_jax.errors import UserError

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


# XLA:CPU (jaxlib 0.10) hands convolutions to YNNPACK by default, which runs this project's train
# steps, sampling and Inception features slower than XLA's Eigen convolutions, so such programs
# keep YNNPACK for matmuls only; LeNet's tiny convolutions, which YNNPACK runs faster, keep the
# default (benchmarks/RESULTS.md, "CPU convolutions").
_YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_CPU_COMPILER_OPTIONS = ((_YNN_OPTION, "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"),)


@functools.cache
def _cpu_accepts_options() -> bool:
  """Whether this jaxlib's CPU compiler knows the options (an unknown one is an error)."""
  probe = jax.device_put(jnp.zeros(()), jax.local_devices(backend="cpu")[0])
  try:
    jax.jit(lambda x: x + 1).lower(probe).compile(dict(_CPU_COMPILER_OPTIONS))
  except jax.errors.JaxRuntimeError:
    return False
  return True


def compiler_options(platform: str) -> dict[str, str]:
  """XLA options for a convolution-heavy program on `platform`: on "cpu", Eigen's convolutions.

  Empty off the CPU, where the installed jaxlib lacks the option, or where the user set it in
  XLA_FLAGS themselves.
  """
  if (platform != "cpu" or _YNN_OPTION in os.environ.get("XLA_FLAGS", "")
      or not _cpu_accepts_options()):
    return {}
  return dict(_CPU_COMPILER_OPTIONS)


def initialize_distributed(enabled: bool | None = None, coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None) -> bool:
  """Starts JAX's multi-controller runtime if asked or detected; returns whether it started.

  Must run before any other JAX call. `enabled=True` always starts it (arguments left as None
  are detected by JAX: TPU VM pods, SLURM, Open MPI, Kubernetes); `False` never does; `None`
  (auto) starts it when a coordinator address is given or JAX detects such a cluster.
  """
  if enabled is False:
    return False
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  except ValueError as e:
    # With nothing given and no cluster detected, JAX raises ValueError before starting
    # anything: in auto mode that simply means a single-process run.
    if enabled or coordinator_address is not None:
      raise UserError(f"cannot start jax.distributed: {e} Give --coordinator_address, "
                      "--num_processes and --process_id, or run where JAX detects the cluster "
                      "(TPU VM pod, SLURM, Open MPI)") from None
    return False
  return True
