"""ConvVAE: shapes for every size, the reparameterisation, conditioning, bf16 compute."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.config import IMAGE_SIZES
from aigc_jax.models.vae import ConvVAE
from tests.models.test_dcgan import random_variables


def _images(n, size, channels):
  return jnp.asarray(np.random.default_rng(size).uniform(-1, 1, (n, size, size, channels)),
                     jnp.float32)


@functools.partial(jax.jit, static_argnums=0)
def _forward(vae, variables, x, key, labels):
  """Returns (out, mean, logvar) and the decoder applied to the same z, recomputed by hand."""
  out, mean, logvar = vae.apply(variables, x, key, labels)
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
  again = vae.apply(variables, z, labels, method=ConvVAE.decode)
  return out, mean, logvar, again


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_every_size_round_trips_shapes_and_samples_by_reparameterisation(size):
  vae = ConvVAE(latent_dim=3, width=2, image_size=size, channels=3)
  x = _images(2, size, 3)
  key = jax.random.key(0)
  variables = random_variables(vae, x, key)
  out, mean, logvar, again = _forward(vae, variables, x, key, None)
  assert out.shape == (2, size, size, 3) and out.dtype == jnp.float32
  assert mean.shape == logvar.shape == (2, 3) and mean.dtype == logvar.dtype == jnp.float32
  np.testing.assert_allclose(out, again, rtol=1e-5, atol=1e-6)


def test_different_keys_sample_different_latents():
  vae = ConvVAE(latent_dim=3, width=2, image_size=8, channels=1)
  x = _images(2, 8, 1)
  variables = random_variables(vae, x, jax.random.key(0))
  out0 = _forward(vae, variables, x, jax.random.key(0), None)[0]
  out1 = _forward(vae, variables, x, jax.random.key(1), None)[0]
  assert float(jnp.abs(out0 - out1).max()) > 1e-4


def test_conditional_vae_uses_labels():
  vae = ConvVAE(latent_dim=3, width=2, image_size=16, channels=1, num_classes=4)
  x, key = _images(2, 16, 1), jax.random.key(0)
  variables = random_variables(vae, x, key, jnp.zeros(2, jnp.int32))
  out0, mean0, _, _ = _forward(vae, variables, x, key, jnp.array([0, 1]))
  out1, mean1, _, _ = _forward(vae, variables, x, key, jnp.array([2, 3]))
  assert float(jnp.abs(mean0 - mean1).max()) > 1e-4
  assert float(jnp.abs(out0 - out1).max()) > 1e-4
  with pytest.raises(ValueError, match="needs labels"):
    vae.apply(variables, x, method=ConvVAE.encode)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  vae = ConvVAE(latent_dim=3, width=4, image_size=8, channels=1, dtype=jnp.bfloat16)
  x, key = _images(2, 8, 1), jax.random.key(0)
  variables = random_variables(vae, x, key)
  assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  out, mean, logvar, _ = _forward(vae, variables, x, key, None)
  assert out.dtype == mean.dtype == logvar.dtype == jnp.float32
  out32 = _forward(ConvVAE(latent_dim=3, width=4, image_size=8, channels=1), variables, x, key,
                   None)[0]
  assert float(jnp.abs(out - out32).max()) < 0.1 * float(jnp.abs(out32).max())


def test_learned_std_is_one_scalar_parameter_initialised_to_log_std():
  vae = ConvVAE(latent_dim=2, width=2, image_size=8, channels=1, learn_std=True, init_std=0.3)
  params = vae.init(jax.random.key(0), _images(1, 8, 1), jax.random.key(1))["params"]
  assert params["decoder_log_std"].shape == ()
  np.testing.assert_allclose(params["decoder_log_std"], np.log(0.3), rtol=1e-6)
  plain = ConvVAE(latent_dim=2, width=2, image_size=8, channels=1)
  assert "decoder_log_std" not in plain.init(jax.random.key(0), _images(1, 8, 1), jax.random.key(1))["params"]
