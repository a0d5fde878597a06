"""GAN trainer: losses against hand-computed values, one sharded step equals the unsharded step,
and training is deterministic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import config as config_lib, parallel, train
from aigc_jax.trainers import gan

REAL = np.array([2.0, -1.0, 0.5, 0.0])
FAKE = np.array([-3.0, 1.5, 0.0, 0.25])


def _softplus(x):
  return np.log1p(np.exp(x))


@pytest.mark.parametrize("kind, d_expected, g_expected", [
    ("non_saturating", _softplus(-REAL).mean() + _softplus(FAKE).mean(), _softplus(-FAKE).mean()),
    ("hinge", np.maximum(0, 1 - REAL).mean() + np.maximum(0, 1 + FAKE).mean(), -FAKE.mean()),
    ("least_squares", 0.5 * (((REAL - 1) ** 2).mean() + (FAKE ** 2).mean()),
     0.5 * ((FAKE - 1) ** 2).mean()),
])
def test_losses_match_hand_computed_values(kind, d_expected, g_expected):
  np.testing.assert_allclose(gan.discriminator_loss(kind, jnp.asarray(REAL), jnp.asarray(FAKE)),
                             d_expected, rtol=1e-6)
  np.testing.assert_allclose(gan.generator_loss(kind, jnp.asarray(FAKE)), g_expected, rtol=1e-6)


def tiny_gan_config():
  c = config_lib.base_config()
  c.data.image_size, c.data.channels = 8, 1
  c.model.latent_dim, c.model.width = 8, 4
  c.train.batch_size = 16
  return c


def tiny_batch(config, seed=0):
  rng = np.random.default_rng(seed)
  s, ch = config.data.image_size, config.data.channels
  return {"image": rng.uniform(-1, 1, (config.train.batch_size, s, s, ch)).astype(np.float32),
          "label": rng.integers(0, 10, config.train.batch_size).astype(np.int32)}


def run_steps(config, devices, batches):
  """Runs the jitted train step over a mesh of `devices`; returns host copies of state and metrics."""
  mesh = parallel.create_mesh(devices)
  keys = train._keys(config.seed)
  state, sharding = train.init_state(config, mesh, keys["init"])
  step = train.compile_train_step(config, mesh, sharding)
  metrics = None
  for b in batches:
    global_batch = jax.device_put(b, parallel.batch_sharded(mesh))
    state, metrics = step(state, [global_batch], keys["step"])
  return jax.device_get(state), jax.device_get(metrics)


def assert_trees_close(a, b, rtol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=1e-6)


def test_sharded_step_equals_single_device_step():
  config = tiny_gan_config()
  batches = [tiny_batch(config, 0)]
  state8, metrics8 = run_steps(config, jax.devices()[:8], batches)
  state1, metrics1 = run_steps(config, jax.devices()[:1], batches)
  assert len(jax.devices()) == 8
  assert_trees_close(state8, state1, rtol=1e-5)
  assert_trees_close(metrics8, metrics1, rtol=1e-5)
  assert int(state8.step) == 1


def test_same_seed_same_parameters_bitwise_and_training_moves_them():
  config = tiny_gan_config()
  batches = [tiny_batch(config, i) for i in range(2)]
  a, _ = run_steps(config, jax.devices()[:2], batches)
  b, _ = run_steps(config, jax.devices()[:2], batches)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  init = jax.device_get(gan.init_state(config, train._keys(config.seed)["init"]))
  moved = [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a.g_params), jax.tree.leaves(init.g_params))]
  assert all(moved)
