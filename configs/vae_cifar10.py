"""Convolutional VAE on CIFAR-10, 32 px RGB, Gaussian likelihood (TFDS "cifar10")."""

from aigc_jax.config import base_config


def get_config():
  config = base_config()
  config.data.dataset = "cifar10"
  config.data.image_size = 32
  config.data.channels = 3
  config.data.random_flip = True
  config.model.family = "vae"
  config.model.name = "conv_vae"
  config.model.latent_dim = 128
  config.model.width = 64
  config.vae.likelihood = "gaussian"
  config.vae.decoder_std = 0.1
  config.train.batch_size = 128
  config.train.learning_rate = 1e-3
  config.train.b1 = 0.9
  config.train.num_steps = 50_000
  config.train.log_every = 100
  config.train.checkpoint_every = 2000
  config.train.sample_every = 2000
  return config
