"""LeNet digit classifier for the digits evaluation features (Frechet classifier distance).

Trains on MNIST-format IDX files. The shipped weights (aigc_jax/weights/lenet_mnist.npz)
were trained on the first 90% of the MNIST test split; the last 10% is held out:
  --config.data.manual_dir=../shared/data/mnist (see aigc_jax/weights/lenet_mnist.md).
A user with the full MNIST points manual_dir at it and sets --config.data.split=train.
"""

from aigc_jax.config import base_config


def get_config():
  config = base_config()
  config.model.family = "classifier"
  config.model.name = "lenet"
  config.data.dataset = "mnist_idx"
  config.data.split = "test[:90%]"
  config.data.eval_split = "test[90%:]"
  config.data.image_size = 28
  config.data.channels = 1
  config.train.batch_size = 128
  config.train.learning_rate = 1e-3
  config.train.b1 = 0.9
  config.train.num_steps = 3000
  config.train.log_every = 100
  config.train.checkpoint_every = 1000
  config.train.sample_every = 1000
  return config
