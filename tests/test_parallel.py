"""parallel: the ("data", "fsdp") mesh, batches over every device, state shardings derived as
big_vision's fsdp rule, a sharded state's checkpoint restoring onto its shardings and resuming
exactly, and the XLA options hot steps compile with. (Sharded runs train to the replicated run's
state: tests/trainers/test_common.py, and tests/test_train.py for the training loop.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from aigc_jax import checkpoints, parallel, trainers
from tests.trainers.test_common import SHARED_RUNS, tiny_config, two_steps
from tests.trainers.test_gan import tiny_batch


@pytest.mark.parametrize("shape, fsdp, min_bytes, expected", [
    ((4, 4, 8, 16), 4, 0, P(None, None, None, "fsdp")),  # the largest dimension
    ((10, 12, 9), 5, 0, P("fsdp")),                       # the largest one the axis divides
    ((8, 8), 2, 0, P(None, "fsdp")),                      # ties: the later dimension
    ((3, 5), 2, 0, P()),                                  # none divides: replicated
    ((), 2, 0, P()),                                      # scalars
    ((64, 64), 4, 64 * 64 * 4 + 1, P()),                  # below the minimum size
    ((64, 64), 1, 0, P()),                                # no fsdp axis
])
def test_fsdp_spec_shards_the_largest_dimension_the_axis_divides(shape, fsdp, min_bytes, expected):
  assert parallel.fsdp_spec(shape, int(np.prod(shape)) * 4, fsdp, min_bytes) == expected


def test_mesh_has_a_data_and_an_fsdp_axis_and_batches_split_over_every_device():
  assert dict(parallel.create_mesh().shape) == {"data": 8, "fsdp": 1}
  mesh = parallel.create_mesh(fsdp_devices=4)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4}
  x = np.arange(16 * 3).reshape(16, 3)
  shards = sorted(parallel.host_to_global({"x": x}, mesh)["x"].addressable_shards,
                  key=lambda shard: shard.index[0].start)
  assert [shard.device for shard in shards] == list(mesh.devices.flat)
  for i, shard in enumerate(shards):  # device i holds examples 2i and 2i + 1
    np.testing.assert_array_equal(shard.data, x[2 * i:2 * i + 2])
  with pytest.raises(ValueError, match="must divide the 8 devices"):
    parallel.create_mesh(fsdp_devices=3)


@SHARED_RUNS
def test_a_sharded_state_restores_onto_its_shardings_and_resumes_exactly(tmp_path):
  # The diffusion step after its one compared step: accumulated, sharded over pairs of devices.
  # (The GAN's resumes are checked through train.py: tests/test_train.py, tests/test_multihost.py.)
  family = "diffusion"
  state, _, step, keys, mesh = two_steps(family, 2, 2, num_steps=1)
  manager = checkpoints.create_manager(str(tmp_path))
  checkpoints.save(manager, 2, state, keys["step"])
  restored, _ = checkpoints.restore(manager, 2, state, keys["step"])
  manager.close()
  for got, live in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
    assert got.sharding == live.sharding
  config = tiny_config(family, 2, 2)
  batch = [parallel.host_to_global(tiny_batch(config, 2), mesh)]
  resumed, _ = step(restored, batch, keys["step"])
  uninterrupted, _ = step(jax.tree.map(jnp.copy, state), batch, keys["step"])
  assert int(resumed.step) == int(state.step) + 1
  for a, b in zip(jax.tree.leaves(jax.device_get(resumed)), jax.tree.leaves(jax.device_get(uninterrupted)),
                  strict=True):
    np.testing.assert_array_equal(a, b)


def _conv(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_cpu_steps_compile_convolutions_without_ynnpack(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  options = parallel.compiler_options("cpu")
  if not options:
    pytest.skip("this jaxlib's CPU compiler has no YNNPACK fusion option")
  x, kernel = jnp.ones((2, 8, 8, 16)), jnp.ones((3, 3, 16, 32))
  if "ynn_fusion" not in jax.jit(_conv).lower(x, kernel).compile().as_text():
    pytest.skip("this jaxlib's CPU compiler no longer hands convolutions to YNNPACK")
  compiled = jax.jit(_conv, compiler_options=options).lower(x, kernel).compile()
  assert "ynn_fusion" not in compiled.as_text()
  np.testing.assert_allclose(compiled(x, kernel), _conv(x, kernel), rtol=1e-6)


def test_a_users_own_xla_flag_wins(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
  assert parallel.compiler_options("cpu") == {}


def test_no_options_off_the_cpu():
  assert parallel.compiler_options("gpu") == parallel.compiler_options("tpu") == {}
