"""Flax modules (DCGAN, conv VAE, their layers) and the constructors trainers build them with."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from aigc_jax.models.dcgan import Discriminator, Generator
from aigc_jax.models.vae import ConvVAE

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config: ml_collections.ConfigDict):
  """Returns the jnp dtype named by config.train.compute_dtype."""
  return _DTYPES[config.train.compute_dtype]


def build_generator(config: ml_collections.ConfigDict) -> Generator:
  """Returns the DCGAN generator the config describes."""
  return Generator(image_size=config.data.image_size, channels=config.data.channels,
                   latent_dim=config.model.latent_dim, width=config.model.width,
                   num_classes=config.model.num_classes, dtype=compute_dtype(config))


def build_discriminator(config: ml_collections.ConfigDict) -> Discriminator:
  """Returns the DCGAN discriminator the config describes."""
  return Discriminator(image_size=config.data.image_size, width=config.model.width,
                       num_classes=config.model.num_classes, norm=config.model.d_norm,
                       minibatch_std=config.model.d_minibatch_std, dtype=compute_dtype(config))


def build_vae(config: ml_collections.ConfigDict) -> ConvVAE:
  """Returns the conv VAE the config describes."""
  return ConvVAE(latent_dim=config.model.latent_dim, width=config.model.width,
                 image_size=config.data.image_size, channels=config.data.channels,
                 num_classes=config.model.num_classes, learn_std=config.vae.learn_decoder_std,
                 init_std=config.vae.decoder_std, dtype=compute_dtype(config))
