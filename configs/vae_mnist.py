"""Convolutional VAE on MNIST, 28 px, Bernoulli likelihood. TFDS "mnist" by default; for a local
IDX folder use --config.data.dataset=mnist_idx --config.data.manual_dir=DIR --config.data.split=test."""

from aigc_jax.config import base_config


def get_config():
  config = base_config()
  config.data.dataset = "mnist"
  config.data.image_size = 28
  config.data.channels = 1
  config.model.family = "vae"
  config.model.name = "conv_vae"
  config.model.latent_dim = 16
  config.model.width = 32
  config.vae.likelihood = "bernoulli"
  config.vae.kl_warmup_steps = 1000
  config.train.batch_size = 128
  config.train.learning_rate = 1e-3
  config.train.b1 = 0.9
  config.train.num_steps = 10_000
  config.train.log_every = 100
  config.train.checkpoint_every = 1000
  config.train.sample_every = 1000
  return config
