"""DCGAN on your own images at 256 px RGB: --config.data.folder=DIR (or a .zip of PNG/JPEG/WebP/BMP).

configs/dcgan_folder128.py one stage up: G from 4x4 x 1024 at width 32 (at width 64 that stage
would be 2048 wide, 4x the parameters of the next), batch 32 for the memory of 256 px maps. Not
yet tuned at 256 px.
"""

from aigc_jax.config import base_config


def get_config():
  config = base_config()
  config.data.dataset = "image_folder"
  config.data.image_size = 256
  config.data.channels = 3
  config.data.random_flip = True
  config.model.family = "gan"
  config.model.name = "dcgan"
  config.model.latent_dim = 128
  config.model.width = 32
  config.model.d_norm = "none"
  config.gan.r1_gamma = 1.0
  config.gan.ema_half_life_images = 10_000
  config.gan.augment = "ada"
  config.train.batch_size = 32
  config.train.num_steps = 100_000
  config.train.log_every = 100
  config.train.checkpoint_every = 2000
  config.train.sample_every = 2000
  return config
