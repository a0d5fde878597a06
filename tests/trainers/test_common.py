"""Gradient accumulation: the micro-batch layout, `accumulate_gradients` against a closed form, and
the VAE's and GAN's accumulated steps against their plain steps on 8 devices."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import config as config_lib, parallel, trainers
from aigc_jax.trainers import common, gan
from tests.test_parallel import assert_sharded_over_fsdp
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


def _accumulation_config(family: str, grad_accum_steps: int, fsdp_devices: int = 1):
  config = tiny_gan_config()
  config.train.batch_size = 32  # 4 per device: 2 or 4 micro-batches of every device's examples
  config.train.grad_accum_steps = grad_accum_steps
  config.train.fsdp_devices, config.train.fsdp_min_kib = fsdp_devices, 0
  if family == "vae":
    config.model.family, config.model.name = "vae", "conv_vae"
  else:
    # Batch norm couples the examples of a (micro-)batch; G has it too unless model.g_norm says not.
    config.model.d_norm = config.model.g_norm = "none"
    config.gan.loss, config.gan.n_critic = "wgan_gp", 2
    config.gan.augment, config.gan.ema_half_life_images = "diffaugment", 100
  config_lib.validate(config, num_devices=8)
  return config


@functools.cache
def _two_steps(family: str, grad_accum_steps: int, fsdp_devices: int = 1):
  """(state on the devices, host metrics) after two steps on 8 devices (plain runs are shared)."""
  config = _accumulation_config(family, grad_accum_steps, fsdp_devices)
  mesh = parallel.create_mesh(fsdp_devices=fsdp_devices)
  keys = trainers.base_keys(config.seed)
  state, sharding = trainers.init_sharded_state(config, mesh, keys["init"])
  step = trainers.compile_train_step(config, mesh, sharding)
  for i in range(2):
    state, metrics = step(state, [parallel.host_to_global(tiny_batch(config, i), mesh)], keys["step"])
  return state, jax.device_get(metrics)


@pytest.mark.parametrize("k", [2, 4])
def test_accumulated_vae_step_equals_the_plain_step(k):
  state, metrics = _two_steps("vae", k)
  plain_state, plain_metrics = _two_steps("vae", 1)
  assert int(state.step) == 2
  assert_trees_close(jax.device_get(state), jax.device_get(plain_state), rtol=1e-5)
  assert_trees_close(metrics, plain_metrics, rtol=1e-5)


@pytest.mark.parametrize("k, fsdp", [(2, 2), (4, 4)])
def test_accumulated_gan_step_on_sharded_parameters_equals_the_plain_replicated_step(k, fsdp):
  """WGAN-GP with two critic updates, DiffAugment and EMA: every draw of the step is made for
  the whole batch, so micro-batches (and parameters sharded over fsdp devices) change nothing."""
  state, metrics = _two_steps("gan", k, fsdp)
  plain_state, plain_metrics = _two_steps("gan", 1)
  assert_sharded_over_fsdp(state, fsdp)
  assert int(state.step) == 2
  assert_trees_close(jax.device_get(state), jax.device_get(plain_state), rtol=1e-5)
  assert_trees_close(metrics, plain_metrics, rtol=1e-5)


def _r1_gradient(micro_batches):
  """(R1 penalty, its D gradient) of the tiny GAN's D on one batch, over `micro_batches`."""
  config = _accumulation_config("gan", 1)
  config.gan.augment = "none"  # R1 through an augmentation draws that augmentation per micro-batch
  nets = gan.Networks.from_config(config)
  hp = dataclasses.replace(gan.Hyper.from_config(config), r1_gamma=2.0, r1_every=4,
                           micro_batches=micro_batches)
  state = gan.init_state(config, jax.random.key(0))
  critic = gan._Critic(params=state.d_params, collections=state.d_collections,
                       opt_state=state.d_opt_state, ada_p=state.ada_p)
  r1 = jax.jit(lambda critic, real: gan.lazy_r1_gradient(nets, hp, critic, real, None,
                                                         jax.random.key(1), jnp.bool_(True)))
  return r1(critic, jnp.asarray(tiny_batch(config)["image"]))


def test_accumulated_r1_gradient_equals_the_whole_batch_gradient():
  whole, micro = _r1_gradient(1), _r1_gradient(4)
  assert float(whole[0]) > 0 and max(np.abs(g).max() for g in jax.tree.leaves(whole[1])) > 0
  assert_trees_close(micro, whole, rtol=1e-5)
