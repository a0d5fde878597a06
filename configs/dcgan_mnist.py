"""DCGAN on MNIST, 28 px: width 128, batch 128, non-saturating loss, un-normalised D with lazy R1,
generator EMA.

The shipped dcgan_mnist (60,000 steps). Of the variants in benchmarks/quality.py (see
benchmarks/RESULTS.md, "Model quality"), width 128 gave the best FCD and confidence with a batch-norm
D, and dropping D's batch norm for an R1 penalty (gamma 1, every 16 steps) gave the best of all: FCD
13.9, precision 0.70, 92% of samples confidently classified at 60,000 steps. TFDS "mnist" by
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
  config.model.d_norm = "none"
  config.gan.r1_gamma = 1.0
  config.gan.ema_half_life_images = 5_000
  config.train.batch_size = 128
  config.train.num_steps = 60_000
  config.train.log_every = 100
  config.train.checkpoint_every = 1000
  config.train.sample_every = 1000
  return config
