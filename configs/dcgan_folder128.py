"""DCGAN on your own images at 128 px RGB: --config.data.folder=DIR (or a .zip of PNG/JPEG/WebP/BMP).

The 64 px DCGAN with one more, wider stage (G from 4x4 x 1024 at width 64). Its D follows what
trained best in benchmarks/RESULTS.md ("Model quality", on MNIST): no normalisation, a lazy R1
penalty and a generator EMA; ADA, which backs off while D does not overfit, guards the small
folders photos usually come in. Not yet tuned at 128 px. Photos are centre-cropped to a square
(data.crop='none' squeezes the whole image instead); data.labels='folders' with
model.num_classes=N trains a class-conditional model on N class subfolders.
"""

from aigc_jax.config import base_config


def get_config():
  config = base_config()
  config.data.dataset = "image_folder"
  config.data.image_size = 128
  config.data.channels = 3
  config.data.random_flip = True
  config.model.family = "gan"
  config.model.name = "dcgan"
  config.model.latent_dim = 128
  config.model.width = 64
  config.model.d_norm = "none"
  config.gan.r1_gamma = 1.0
  config.gan.ema_half_life_images = 10_000
  config.gan.augment = "ada"
  config.train.batch_size = 64
  config.train.num_steps = 50_000
  config.train.log_every = 100
  config.train.checkpoint_every = 2000
  config.train.sample_every = 2000
  return config
