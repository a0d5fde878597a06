"""The families' builders map config keys onto the modules."""

import jax.numpy as jnp

from aigc_jax import config as config_lib
from aigc_jax.trainers import gan, vae as vae_family


def _config():
  c = config_lib.base_config()
  c.data.image_size, c.data.channels = 28, 3
  c.model.latent_dim, c.model.width, c.model.num_classes, c.model.d_norm = 7, 5, 10, "none"
  c.model.d_minibatch_std = 4
  c.train.compute_dtype = "bfloat16"
  return c


def test_builders_take_every_model_key_from_the_config():
  c = _config()
  g, d, vae = gan.build_generator(c), gan.build_discriminator(c), vae_family.build_vae(c)
  assert (g.image_size, g.channels, g.latent_dim, g.width, g.num_classes, g.dtype) == (
      28, 3, 7, 5, 10, jnp.bfloat16)
  assert (d.image_size, d.width, d.num_classes, d.norm, d.minibatch_std, d.dtype) == (
      28, 5, 10, "none", 4, jnp.bfloat16)
  assert (vae.image_size, vae.channels, vae.latent_dim, vae.width, vae.num_classes, vae.dtype) == (
      28, 3, 7, 5, 10, jnp.bfloat16)


def test_float32_is_the_default_compute_dtype():
  assert gan.build_generator(config_lib.base_config()).dtype == jnp.float32
