"""Convolutional VAE on your own images at 128 px RGB: --config.data.folder=DIR (or a .zip).

configs/vae_cifar10.py's Gaussian-likelihood VAE with the stages of 128 px (encoder 64 -> 1024
channels down to 4x4) and a larger latent for larger images. Not yet tuned at 128 px.
"""

from aigc_jax.config import base_config


def get_config():
  config = base_config()
  config.data.dataset = "image_folder"
  config.data.image_size = 128
  config.data.channels = 3
  config.data.random_flip = True
  config.model.family = "vae"
  config.model.name = "conv_vae"
  config.model.latent_dim = 256
  config.model.width = 64
  config.vae.likelihood = "gaussian"
  config.vae.decoder_std = 0.1
  config.train.batch_size = 64
  config.train.learning_rate = 1e-3
  config.train.b1 = 0.9
  config.train.num_steps = 50_000
  config.train.log_every = 100
  config.train.checkpoint_every = 2000
  config.train.sample_every = 2000
  return config
