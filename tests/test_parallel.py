"""parallel: the ("data", "fsdp") mesh, batches over every device, state shardings derived as
big_vision's fsdp rule (a sharded run trains to the replicated run's state and resumes exactly
from its checkpoint), and the XLA options hot steps compile with."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from aigc_jax import checkpoints, parallel, trainers
from tests.trainers.test_gan import assert_trees_close, tiny_batch, tiny_gan_config


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


def _sharded_gan_config():
  config = tiny_gan_config()
  config.train.fsdp_min_kib = 0  # the tiny model's leaves are all far below the default minimum
  return config


def _compiled(config, fsdp_devices):
  """(initial state, compiled step, base keys) on a mesh of all 8 devices with that fsdp size."""
  mesh = parallel.create_mesh(fsdp_devices=fsdp_devices)
  keys = trainers.base_keys(config.seed)
  state, sharding = trainers.init_sharded_state(config, mesh, keys["init"])
  return state, trainers.compile_train_step(config, mesh, sharding), keys, mesh


def assert_sharded_over_fsdp(state, fsdp):
  """Every leaf with a dimension `fsdp` divides is split over the fsdp axis, the others replicated."""
  for leaf in jax.tree.leaves(state):
    divisible = any(d % fsdp == 0 for d in leaf.shape)
    assert (parallel.FSDP_AXIS in leaf.sharding.spec) == divisible, (leaf.shape, leaf.sharding.spec)
    assert leaf.addressable_shards[0].data.size == leaf.size // (fsdp if divisible else 1)
  assert sum(any(d % fsdp == 0 for d in leaf.shape) for leaf in jax.tree.leaves(state)) > 10


def test_sharded_parameters_train_to_the_replicated_state_and_resume_exactly(tmp_path):
  config = _sharded_gan_config()
  batches = [tiny_batch(config, i) for i in range(2)]
  state, step, keys, mesh = _compiled(config, 1)
  for batch in batches:
    state, _ = step(state, [parallel.host_to_global(batch, mesh)], keys["step"])
  replicated = jax.device_get(state)

  state, step, keys, mesh = _compiled(config, 2)
  first, second = ([parallel.host_to_global(b, mesh)] for b in batches)
  state, _ = step(state, first, keys["step"])
  manager = checkpoints.create_manager(str(tmp_path))
  checkpoints.save(manager, 1, state, keys["step"])
  state, _ = step(state, second, keys["step"])
  assert_sharded_over_fsdp(state, 2)
  # Adam's moments are sharded as the parameters they follow.
  for param, mu in zip(jax.tree.leaves(state.g_params), jax.tree.leaves(state.g_opt_state[0].mu)):
    assert mu.sharding == param.sharding
  assert int(state.step) == 2
  assert_trees_close(jax.device_get(state), replicated, rtol=1e-5)

  # Restored onto the sharded state's shardings, step 2 again gives the same state bit for bit.
  restored, _ = checkpoints.restore(manager, 1, state, keys["step"])
  manager.close()
  for got, template in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
    assert got.sharding == template.sharding
  resumed, _ = step(restored, second, keys["step"])
  for a, b in zip(jax.tree.leaves(jax.device_get(resumed)), jax.tree.leaves(jax.device_get(state)),
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
