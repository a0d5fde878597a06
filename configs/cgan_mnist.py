"""Class-conditional DCGAN on MNIST, 28 px: class embedding in G, projection D, generator EMA.

The shipped cgan_mnist: `python -m aigc_jax.sample --model=cgan_mnist --class=3`. TFDS "mnist"
by default; for a local IDX folder use --config.data.dataset=mnist_idx
--config.data.manual_dir=DIR --config.data.split=test.
"""

from aigc_jax.config import base_config


def get_config():
  config = base_config()
  config.data.dataset = "mnist"
  config.data.image_size = 28
  config.data.channels = 1
  config.model.family = "gan"
  config.model.name = "dcgan"
  config.model.latent_dim = 64
  config.model.width = 32
  config.model.num_classes = 10
  config.gan.ema_half_life_images = 5_000
  config.train.batch_size = 64
  config.train.num_steps = 10_000
  config.train.log_every = 100
  config.train.checkpoint_every = 1000
  config.train.sample_every = 1000
  return config
