"""GAN trainer: losses and regularisers against hand-computed values and finite differences, EMA
against its formula, one sharded step equals the unsharded step, training is deterministic, and
each option trains without NaN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import config as config_lib, parallel, trainers
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
    ("wgan_gp", FAKE.mean() - REAL.mean(), -FAKE.mean()),
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
  keys = trainers.base_keys(config.seed)
  state, sharding = trainers.init_sharded_state(config, mesh, keys["init"])
  step = trainers.compile_train_step(config, mesh, sharding)
  metrics = None
  for b in batches:
    global_batch = jax.device_put(b, parallel.batch_sharded(mesh))
    state, metrics = step(state, [global_batch], keys["step"])
  return jax.device_get(state), jax.device_get(metrics)


def assert_trees_close(a, b, rtol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
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
  init = jax.device_get(gan.init_state(config, trainers.base_keys(config.seed)["init"]))
  moved = [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a.g_params), jax.tree.leaves(init.g_params))]
  assert all(moved)


W = np.random.default_rng(3).normal(size=(3, 3, 1))


def _critic(x):
  """A smooth per-example 'discriminator' [N,3,3,1] -> [N] with input gradients that vary by example."""
  return jnp.sum(jnp.sin(x) * W + 0.5 * x ** 2, axis=(1, 2, 3))


def _fd_sq_norms(x, h=1e-5):
  """Central finite-difference ||grad _critic||^2 per example, in float64 numpy."""
  f = lambda v: np.sum(np.sin(v) * W + 0.5 * v ** 2, axis=(1, 2, 3))
  grads = np.zeros_like(x)
  for idx in np.ndindex(*x.shape[1:]):
    e = np.zeros_like(x)
    e[(slice(None),) + idx] = h
    grads[(slice(None),) + idx] = (f(x + e) - f(x - e)) / (2 * h)
  return np.sum(grads ** 2, axis=(1, 2, 3))


def test_r1_and_gradient_penalty_equal_finite_difference_gradient_norms():
  x = np.random.default_rng(4).uniform(-1, 1, (4, 3, 3, 1))
  sq = _fd_sq_norms(x)
  np.testing.assert_allclose(gan.r1_penalty(_critic, jnp.asarray(x, jnp.float32)), sq.mean(), rtol=1e-4)
  # With real == fake every interpolate is x itself, whatever eps is drawn.
  eps = jax.random.uniform(jax.random.key(0), (4,))
  gp = gan.gradient_penalty(_critic, jnp.asarray(x, jnp.float32), jnp.asarray(x, jnp.float32), eps)
  np.testing.assert_allclose(gp, np.mean((np.sqrt(sq) - 1) ** 2), rtol=1e-4)


def test_gradient_penalty_is_taken_at_interpolates():
  real, fake = np.ones((2, 3, 3, 1)), -np.ones((2, 3, 3, 1))
  eps = np.array([0.25, 0.875], np.float32)
  gp = gan.gradient_penalty(_critic, jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32),
                            jnp.asarray(eps))
  x_hat = eps[:, None, None, None] * real + (1 - eps[:, None, None, None]) * fake
  np.testing.assert_allclose(gp, np.mean((np.sqrt(_fd_sq_norms(x_hat)) - 1) ** 2), rtol=1e-4)


def test_ema_formula_holds_past_two_to_the_31_images():
  # 40M steps x 16 images: an int32 image count would wrap negative and make beta 0.
  config = tiny_gan_config()
  config.gan.ema_half_life_images = 100
  s0 = gan.init_state(config, jax.random.key(0))
  s0 = s0.replace(step=jnp.asarray(40_000_000, jnp.int32))
  s1, _ = jax.jit(gan.make_train_step(config))(s0, tiny_batch(config), jax.random.key(1))
  beta = 0.5 ** (config.train.batch_size / 100)
  expected = jax.tree.map(lambda e, p: beta * np.asarray(e, np.float64) + (1 - beta) * np.asarray(p, np.float64),
                          s0.g_ema_params, s1.g_params)
  assert_trees_close(s1.g_ema_params, expected, rtol=1e-5)


def test_init_state_can_feed_a_donating_step_directly():
  # The EMA copy must not share the generator's buffers, or donation sees one buffer twice.
  config = tiny_gan_config()
  config.gan.ema_half_life_images = 100
  step = jax.jit(gan.make_train_step(config), donate_argnums=0)
  state, metrics = step(gan.init_state(config, jax.random.key(0)), tiny_batch(config), jax.random.key(1))
  assert np.isfinite(float(metrics["g_loss"]))


def test_ema_parameters_follow_the_formula_over_steps():
  config = tiny_gan_config()
  config.gan.ema_half_life_images = 100
  config.gan.ema_rampup = 0.5
  n = config.train.batch_size
  step = jax.jit(gan.make_train_step(config))
  s0 = gan.init_state(config, jax.random.key(0))
  s1, _ = step(s0, tiny_batch(config, 0), jax.random.key(1))
  s2, _ = step(s1, tiny_batch(config, 1), jax.random.key(2))
  # Step 0 has seen no images: beta = 0, the EMA is a copy of the new weights.
  assert_trees_close(s1.g_ema_params, s1.g_params, rtol=1e-6)
  beta = 0.5 ** (n / min(100, n * 0.5))
  expected = jax.tree.map(lambda e, p: beta * np.asarray(e, np.float64) + (1 - beta) * np.asarray(p, np.float64),
                          s1.g_ema_params, s2.g_params)
  assert_trees_close(s2.g_ema_params, expected, rtol=1e-5)
  assert not np.allclose(jax.tree.leaves(s2.g_ema_params)[0], jax.tree.leaves(s2.g_params)[0])
  # Sampling uses the EMA weights.
  z = jnp.ones((2, config.model.latent_dim))
  keys = jax.random.split(jax.random.key(0), 2)
  np.testing.assert_allclose(gan.generate(config, s2, z, None, keys, {}),
                             gan.generate(config, s2.replace(g_params=s2.g_ema_params), z, None, keys, {}),
                             atol=1e-6)


def test_ada_p_moves_at_most_batch_over_speed_per_step_whatever_n_critic():
  # The n_critic updates of a step share one real batch: together they move p by at most
  # batch / ada_speed_images, as one update would.
  config = tiny_gan_config()
  config.gan.augment, config.gan.n_critic, config.gan.ada_speed_images = "ada", 2, 160
  state = gan.init_state(config, jax.random.key(0)).replace(ada_p=jnp.float32(0.5))
  state, _ = jax.jit(gan.make_train_step(config))(state, tiny_batch(config), jax.random.key(1))
  moved = abs(float(state.ada_p) - 0.5)
  assert moved <= config.train.batch_size / 160 + 1e-6
  assert moved in (pytest.approx(0.0, abs=1e-6), pytest.approx(0.1, abs=1e-6))  # two moves of 0.05


@pytest.mark.parametrize("overrides", [
    {"gan.loss": "wgan_gp", "model.d_norm": "spectral", "gan.n_critic": 2, "gan.augment": "diffaugment"},
    {"gan.loss": "hinge", "gan.r1_gamma": 1.0, "gan.r1_every": 2, "gan.augment": "ada",
     "gan.ada_speed_images": 160, "model.num_classes": 10, "gan.ema_half_life_images": 500},
])
def test_each_option_trains_without_nan_and_reports_its_metrics(overrides):
  config = tiny_gan_config()
  config.update_from_flattened_dict(overrides)
  config_lib.validate(config, num_devices=2)
  state, metrics = run_steps(config, jax.devices()[:2], [tiny_batch(config, i) for i in range(3)])
  assert all(np.isfinite(v) for v in jax.tree.leaves(metrics))
  assert all(np.isfinite(v).all() for v in jax.tree.leaves(state))
  if config.gan.loss == "wgan_gp":
    assert metrics["gp"] > 0
    assert "spectral" in state.d_collections
  else:
    # Step 2 is an R1 step (2 % r1_every == 0); ADA moved p by a multiple of batch / speed.
    assert metrics["r1_penalty"] > 0
    p = float(state.ada_p)
    assert 0 <= p <= 1 and abs(p * 10 - round(p * 10)) < 1e-5
