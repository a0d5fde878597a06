"""Gradient accumulation: the micro-batch layout, `accumulate_gradients` against a closed form, and
the VAE's, GAN's and diffusion model's accumulated steps against their plain steps on 8 devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import config as config_lib, parallel, trainers
from aigc_jax.trainers import common
from tests.trainers import test_diffusion
from tests.trainers.test_gan import assert_trees_close, tiny_batch, tiny_gan_config


def test_micro_batches_are_strided_and_merge_back_in_order():
  x = np.arange(12 * 2).reshape(12, 2)
  micro = common.split_micro_batches({"x": x, "label": None}, 3)
  assert micro["x"].shape == (3, 4, 2) and micro["label"] is None
  np.testing.assert_array_equal(micro["x"][1, :, 0], x[[1, 4, 7, 10], 0])
  np.testing.assert_array_equal(common.merge_micro_batches(micro)["x"], x)


def test_accumulated_least_squares_gradient_equals_the_closed_form():
  rng = np.random.default_rng(0)
  x, y, w = rng.normal(size=(8, 3)), rng.normal(size=8), rng.normal(size=3)
  residual = x @ w - y  # float64 reference: loss mean(r^2), gradient 2/N x^T r

  def loss_fn(w, micro):
    r = micro["x"] @ w - micro["y"]
    return jnp.mean(r ** 2), {"mean_y": jnp.mean(micro["y"])}

  batch = {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y, jnp.float32)}
  for k in (1, 2, 4):
    (loss, aux), grad = common.accumulate_gradients(loss_fn, jnp.asarray(w, jnp.float32), batch, k)
    np.testing.assert_allclose(loss, np.mean(residual ** 2), rtol=1e-5)
    np.testing.assert_allclose(aux["mean_y"], y.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, 2 / 8 * x.T @ residual, rtol=1e-5)


def test_one_micro_batch_gets_the_key_and_several_get_it_folded_with_their_index():
  def loss_fn(w, micro, key):
    return jnp.sum(w * micro["x"]) / micro["x"].shape[0], jax.random.uniform(key)

  key, batch = jax.random.key(3), {"x": jnp.ones(4)}
  (_, draw), _ = common.accumulate_gradients(loss_fn, jnp.float32(1), batch, 1, key=key)
  assert draw == jax.random.uniform(key)
  (_, draw), grad = common.accumulate_gradients(loss_fn, jnp.float32(1), batch, 2, key=key)
  expected = (jax.random.uniform(jax.random.fold_in(key, 0)) + jax.random.uniform(jax.random.fold_in(key, 1))) / 2
  np.testing.assert_allclose(draw, expected, rtol=1e-6)
  np.testing.assert_allclose(grad, 1.0, rtol=1e-6)


def assert_sharded_over_fsdp(state, fsdp):
  """Every leaf with a dimension `fsdp` divides is split over the fsdp axis, the others replicated."""
  for leaf in jax.tree.leaves(state):
    divisible = any(d % fsdp == 0 for d in leaf.shape)
    assert (parallel.FSDP_AXIS in leaf.sharding.spec) == divisible, (leaf.shape, leaf.sharding.spec)
    assert leaf.addressable_shards[0].data.size == leaf.size // (fsdp if divisible else 1)
  assert sum(any(d % fsdp == 0 for d in leaf.shape) for leaf in jax.tree.leaves(state)) > 10


def tiny_config(family: str, grad_accum_steps: int = 1, fsdp_devices: int = 1):
  """A tiny VAE, diffusion U-Net, or a GAN with every source of randomness a step has, at 8 px,
  batch 32."""
  config = test_diffusion.tiny_config() if family == "diffusion" else tiny_gan_config()
  config.train.batch_size = 32  # 4 per device: 2 or 4 micro-batches of every device's examples
  config.train.grad_accum_steps = grad_accum_steps
  config.train.fsdp_devices, config.train.fsdp_min_kib = fsdp_devices, 0
  if family == "vae":
    config.model.family, config.model.name = "vae", "conv_vae"
  elif family == "diffusion":
    config.diffusion.dropout = 0.0  # dropout masks are drawn per micro-batch; the rest for the batch
  else:
    # Batch norm couples the examples of a (micro-)batch; G has it too unless model.g_norm says not.
    config.model.d_norm = config.model.g_norm = "none"
    config.gan.loss, config.gan.n_critic = "wgan_gp", 2
    config.gan.r1_gamma, config.gan.r1_every = 1.0, 1
    config.gan.augment, config.gan.ema_half_life_images = "diffaugment", 100
  config_lib.validate(config, num_devices=8)
  return config


@functools.cache
def two_steps(family: str, grad_accum_steps: int = 1, fsdp_devices: int = 1, num_steps: int = 2):
  """(state, host metrics, compiled step, base keys, mesh) after `num_steps` steps on all 8
  devices, each run done once (the plain runs are every comparison's reference; don't donate
  the state)."""
  config = tiny_config(family, grad_accum_steps, fsdp_devices)
  mesh = parallel.create_mesh(fsdp_devices=fsdp_devices)
  keys = trainers.base_keys(config.seed)
  state, sharding = trainers.init_sharded_state(config, mesh, keys["init"])
  step = trainers.compile_train_step(config, mesh, sharding)
  for i in range(num_steps):
    state, metrics = step(state, [parallel.host_to_global(tiny_batch(config, i), mesh)], keys["step"])
  return state, jax.device_get(metrics), step, keys, mesh


# Tests that share two_steps's compiled runs run on one worker (setup.cfg: --dist loadgroup).
SHARED_RUNS = pytest.mark.xdist_group("two_steps")


@SHARED_RUNS
def test_accumulated_vae_step_equals_the_plain_step():
  state, metrics, *_ = two_steps("vae", 2)
  plain_state, plain_metrics, *_ = two_steps("vae")
  assert int(state.step) == 2
  assert_trees_close(jax.device_get(state), jax.device_get(plain_state), rtol=1e-5)
  assert_trees_close(metrics, plain_metrics, rtol=1e-5)


@SHARED_RUNS
def test_accumulated_gan_step_on_sharded_parameters_equals_the_plain_replicated_step():
  """WGAN-GP with two critic updates, R1, DiffAugment and EMA: every draw of the step is made for
  the whole batch, so micro-batches change nothing, and neither do parameters and optimiser
  states sharded over fsdp devices (which the states show they are)."""
  state, metrics, *_ = two_steps("gan", 2, 2)
  plain_state, plain_metrics, *_ = two_steps("gan")
  assert_sharded_over_fsdp(state, 2)
  # Adam's moments are sharded as the parameters they follow.
  for param, mu in zip(jax.tree.leaves(state.g_params), jax.tree.leaves(state.g_opt_state[0].mu)):
    assert mu.sharding == param.sharding
  assert int(state.step) == 2
  assert_trees_close(jax.device_get(state), jax.device_get(plain_state), rtol=1e-5)
  assert_trees_close(metrics, plain_metrics, rtol=1e-5)


@SHARED_RUNS
def test_accumulated_diffusion_step_on_sharded_parameters_equals_the_plain_replicated_step():
  """Noise levels, noise and label dropout are drawn for the whole batch, so two micro-batches
  and parameters sharded over pairs of devices change nothing; the EMA follows. One step: the
  U-Net's output layer starts at zero, so in a second step the layers below it get gradients
  near float rounding, whose signs Adam's first updates (about lr * sign) would compare."""
  state, metrics, *_ = two_steps("diffusion", 2, 2, num_steps=1)
  plain_state, plain_metrics, *_ = two_steps("diffusion", num_steps=1)
  assert_sharded_over_fsdp(state, 2)
  assert int(state.step) == 1
  assert_trees_close(jax.device_get(state), jax.device_get(plain_state), rtol=1e-5)
  assert_trees_close(metrics, plain_metrics, rtol=1e-5)
