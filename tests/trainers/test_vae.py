"""VAE trainer: likelihood and KL against closed forms; sharded step equals unsharded."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from aigc_jax import config as config_lib
from aigc_jax.trainers import vae
from tests.trainers.test_gan import assert_trees_close, run_steps, tiny_batch


def test_gaussian_nll_equals_scipy_logpdf():
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (3, 4, 4, 2))
  mu = rng.uniform(-1, 1, x.shape)
  expected = -stats.norm.logpdf(x, loc=mu, scale=0.3).sum(axis=(1, 2, 3))
  got = vae.negative_log_likelihood("gaussian", jnp.asarray(mu), jnp.asarray(x), 0.3)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bernoulli_nll_equals_cross_entropy_on_unit_range():
  rng = np.random.default_rng(1)
  x = rng.uniform(-1, 1, (2, 3, 3, 1))
  logits = rng.normal(size=x.shape)
  p, t = 1 / (1 + np.exp(-logits)), (x + 1) / 2
  expected = -(t * np.log(p) + (1 - t) * np.log(1 - p)).sum(axis=(1, 2, 3))
  got = vae.negative_log_likelihood("bernoulli", jnp.asarray(logits), jnp.asarray(x), 1.0)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_kl_matches_closed_form_and_is_zero_at_the_prior():
  mean, logvar = np.array([[0.5, -1.0]]), np.array([[math.log(2.0), 0.0]])
  expected = 0.5 * ((2.0 + 0.25 - 1 - math.log(2.0)) + (1.0 + 1.0 - 1 - 0.0))
  np.testing.assert_allclose(vae.kl_to_standard_normal(jnp.asarray(mean), jnp.asarray(logvar)), [expected], rtol=1e-6)
  np.testing.assert_allclose(vae.kl_to_standard_normal(jnp.zeros((1, 3)), jnp.zeros((1, 3))), [0.0], atol=1e-7)


def tiny_vae_config():
  c = config_lib.base_config()
  c.model.family, c.model.name = "vae", "conv_vae"
  c.data.image_size, c.data.channels = 8, 1
  c.model.latent_dim, c.model.width = 4, 4
  c.train.batch_size = 16
  return c


def test_sharded_vae_step_equals_single_device_step():
  config = tiny_vae_config()
  batches = [tiny_batch(config, 0)]
  state8, metrics8 = run_steps(config, jax.devices()[:8], batches)
  state1, metrics1 = run_steps(config, jax.devices()[:1], batches)
  assert_trees_close(state8, state1, rtol=1e-5)
  assert_trees_close(metrics8, metrics1, rtol=1e-5)
  np.testing.assert_allclose(metrics8["elbo"], -(metrics8["nll"] + metrics8["kl"]), rtol=1e-6)


def test_kl_weight_warms_up_linearly_to_beta():
  got = [float(vae.kl_weight(jnp.asarray(s), 2.0, 4)) for s in range(6)]
  np.testing.assert_allclose(got, [0.5, 1.0, 1.5, 2.0, 2.0, 2.0], rtol=1e-6)
  assert float(vae.kl_weight(jnp.asarray(0), 2.0, 0)) == 2.0


def test_learned_std_gradient_matches_the_closed_form_optimum():
  # d/d(log s) of the Gaussian NLL is D - r/s^2 (D pixels, r the squared residual sum): zero at
  # s^2 = r / D, the maximum-likelihood variance.
  rng = np.random.default_rng(2)
  x, mu = rng.uniform(-1, 1, (1, 4, 4, 1)), rng.uniform(-1, 1, (1, 4, 4, 1))
  r, d = ((x - mu) ** 2).sum(), x.size
  nll = lambda log_s: vae.negative_log_likelihood("gaussian", jnp.asarray(mu), jnp.asarray(x), jnp.exp(log_s))[0]
  for log_s in (-1.0, 0.0):
    np.testing.assert_allclose(jax.grad(nll)(log_s), d - r / np.exp(2 * log_s), rtol=1e-4)
  np.testing.assert_allclose(jax.grad(nll)(0.5 * np.log(r / d)), 0.0, atol=1e-4)


def test_conditional_vae_with_learned_std_and_warmup_trains_without_nan():
  config = tiny_vae_config()
  config.vae.likelihood, config.vae.learn_decoder_std = "gaussian", True
  config.vae.kl_warmup_steps, config.model.num_classes = 4, 10
  config_lib.validate(config, num_devices=2)
  state, metrics = run_steps(config, jax.devices()[:2], [tiny_batch(config, i) for i in range(3)])
  assert all(np.isfinite(v) for v in jax.tree.leaves(metrics))
  np.testing.assert_allclose(metrics["kl_weight"], 0.75, rtol=1e-6)  # Third step: 3 / 4.
  np.testing.assert_allclose(metrics["decoder_std"], np.exp(state.params["decoder_log_std"]), rtol=0.2)
  assert metrics["decoder_std"] != config.vae.decoder_std
