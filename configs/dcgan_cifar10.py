"""DCGAN on CIFAR-10, 32 px RGB (TFDS "cifar10"; download it where you have network)."""

from aigc_jax.config import base_config


def get_config():
  config = base_config()
  config.data.dataset = "cifar10"
  config.data.image_size = 32
  config.data.channels = 3
  config.data.random_flip = True
  config.model.family = "gan"
  config.model.name = "dcgan"
  config.model.latent_dim = 100
  config.model.width = 64
  config.train.batch_size = 128
  config.train.num_steps = 50_000
  config.train.log_every = 100
  config.train.checkpoint_every = 2000
  config.train.sample_every = 2000
  return config
