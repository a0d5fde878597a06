"""DCGAN on MNIST, 28 px: width 128, batch 128, non-saturating loss, batch-norm D, generator EMA.

The shipped dcgan_mnist (30,000 steps). Width 128 gave the best FCD and confidence of the
variants in benchmarks/quality.py (see benchmarks/RESULTS.md, "Model quality"). TFDS "mnist" by
default; for a local IDX folder use --config.data.dataset=mnist_idx --config.data.manual_dir=DIR
--config.data.split=test.
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
  config.model.width = 128
  config.gan.ema_half_life_images = 5_000
  config.train.batch_size = 128
  config.train.num_steps = 30_000
  config.train.log_every = 100
  config.train.checkpoint_every = 1000
  config.train.sample_every = 1000
  return config
