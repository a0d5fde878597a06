"""Device mesh, shardings and host-to-global arrays; multi-host start-up.

The mesh has two axes over every device of every process: "data" and "fsdp" (size
`train.fsdp_devices`, default 1). Batches are split along their leading axis over both, so every
device sees its own examples. Parameters and optimiser states are replicated over "data" and, when
"fsdp" has more than one device, sharded over it (fully sharded data parallelism): each big leaf is
split along its largest dimension the fsdp size divides, as big_vision's `fsdp` rule does, and XLA
gathers it for the computation and scatters its gradient back. The same code runs on one CPU, eight
fake CPU devices in tests, a GPU node or a TPU pod slice; with several processes
(`initialize_distributed`), the mesh spans all of them and each process feeds only its own devices.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from aigc_jax.errors import UserError

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)  # a batch is split over every device


def create_mesh(devices=None, fsdp_devices: int = 1) -> Mesh:
  """A ("data", "fsdp") mesh over `devices` (default: all devices of all processes), fsdp of the given size."""
  devices = jax.devices() if devices is None else devices
  if fsdp_devices < 1 or len(devices) % fsdp_devices:
    raise ValueError(f"fsdp_devices={fsdp_devices} must divide the {len(devices)} devices")
  # Devices in their listed order (process by process), so an fsdp group is consecutive devices,
  # within one host when it is no bigger than a host, and each process's batch slice is contiguous.
  return Mesh(np.asarray(devices).reshape(-1, fsdp_devices), BATCH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy on every device (scalars, small leaves, inputs of sampling)."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  """Sharding that splits axis `batch_axis` (the examples) over every device of the mesh."""
  return NamedSharding(mesh, P(*[None] * batch_axis, BATCH_AXES))


def fsdp_spec(shape: tuple[int, ...], nbytes: int, fsdp_size: int, min_bytes: int) -> P:
  """The partition of one state leaf: its largest dimension that `fsdp_size` divides, over "fsdp".

  Replicated (P()) without an fsdp axis, below `min_bytes` (gathering a small leaf costs more
  time than its copies cost memory), or when no dimension divides; ties go to the later dimension
  (the output features of a kernel).
  """
  if fsdp_size == 1 or nbytes < min_bytes:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: (shape[d], d), reverse=True):
    if shape[dim] % fsdp_size == 0:
      return P(*[None] * dim, FSDP_AXIS)
  return P()


def state_shardings(abstract_state: Any, mesh: Mesh, min_bytes: int) -> Any:
  """The sharding of every leaf of a train state (e.g. from `jax.eval_shape`), derived from the mesh."""
  fsdp_size = mesh.shape[FSDP_AXIS]

  def sharding(leaf) -> NamedSharding:
    return NamedSharding(mesh, fsdp_spec(tuple(leaf.shape), leaf.size * leaf.dtype.itemsize,
                                         fsdp_size, min_bytes))

  return jax.tree.map(sharding, abstract_state)


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
