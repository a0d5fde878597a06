"""Class-conditional DCGAN on MNIST, 28 px: class embedding in G, projection D, generator EMA.

The shipped cgan_mnist: `python -m aigc_jax.sample --model=cgan_mnist --class=3`. TFDS "mnist"
by default; for a local IDX folder use --config.data.dataset=mnist_idx
--config.data.manual_dir=DIR --config.data.split=test.
"""

from configs import dcgan_mnist


def get_config():
  config = dcgan_mnist.get_config()
  config.model.num_classes = 10
  return config
