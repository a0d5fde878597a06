"""EDM (Karras et al. 2022) on MNIST, 28 px: a small U-Net, EDM's stochastic sampler with 40 steps.

Sized for a CPU: about 1.6 CPU seconds a step on x86_64 (benchmarks/RESULTS.md, Diffusion). TFDS
"mnist" by default; for a local IDX folder use --config.data.dataset=mnist_idx
--config.data.manual_dir=DIR --config.data.split=test.
"""

from aigc_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.model.family, config.model.name = "diffusion", "unet"
  config.model.width = 32
  config.data.dataset = "mnist"
  config.data.image_size = 28
  config.data.channels = 1
  config.data.eval_split = "test"
  config.diffusion.objective = "edm"
  config.diffusion.channel_mult = [1, 2, 2]     # 28 -> 14 -> 7 px
  config.diffusion.num_res_blocks = 1
  config.diffusion.attn_resolutions = [7]
  config.diffusion.dropout = 0.1
  config.diffusion.ema_half_life_images = 50_000  # short runs: a shorter average than EDM's 500k
  config.diffusion.lr_warmup_steps = 200
  config.diffusion.sampler = "stochastic"  # its churn mends more of a short run's errors (RESULTS.md)
  config.diffusion.steps = 40  # more precise and confident digits than 18 at the same FCD (RESULTS.md, Diffusion)
  config.train.batch_size = 64
  config.train.learning_rate = 5e-4
  config.train.b1 = 0.9
  config.train.b2 = 0.999
  config.train.num_steps = 9_000
  config.train.steps_per_dispatch = 1  # inside lax.scan XLA:CPU compiles the U-Net step far slower (RESULTS.md, Diffusion)
  config.train.log_every = 100
  config.train.checkpoint_every = 250
  config.train.sample_every = 1000
  return config
