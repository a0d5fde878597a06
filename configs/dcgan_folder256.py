"""DCGAN on your own images at 256 px RGB: --config.data.folder=DIR (or a .zip of PNG/JPEG/WebP/BMP).

configs/dcgan_folder128.py one stage up: G from 4x4 x 1024 at width 32 (at width 64 that stage
would be 2048 wide, 4x the parameters of the next), batch 32 for the memory of 256 px maps. Not
yet tuned at 256 px.
"""

from configs import dcgan_folder128


def get_config():
  config = dcgan_folder128.get_config()
  config.data.image_size = 256
  config.model.width = 32
  config.train.batch_size = 32
  config.train.num_steps = 100_000
  return config
