"""Class-conditional DCGAN on MNIST, 28 px: class embedding in G, projection D, generator EMA.

The shipped cgan_mnist: `python -m aigc_jax.sample --model=cgan_mnist --class=3`. Width 32 and
batch 64 with a batch-norm D and no R1 (the unconditional dcgan_mnist moved to width 128, batch
128 and an R1-regularised D; this model was trained and measured with the former settings). TFDS
"mnist" by default; for a local IDX folder use --config.data.dataset=mnist_idx
--config.data.manual_dir=DIR --config.data.split=test.
"""

from configs import dcgan_mnist


def get_config():
  config = dcgan_mnist.get_config()
  config.model.num_classes = 10
  config.model.width = 32
  config.model.d_norm = "batch"
  config.gan.r1_gamma = 0.0
  config.train.batch_size = 64
  config.train.num_steps = 10_000
  return config
