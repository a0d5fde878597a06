"""Class-conditional EDM on MNIST, 28 px: label dropout in training, classifier-free guidance.

Sample a class of a run with `python -m aigc_jax.sample --workdir=DIR --class=3`.
Guidance weight w in D = D_uncond + w (D_cond - D_uncond): 1 is the conditional model alone,
larger values trade diversity for class fidelity (`--guidance`, default diffusion.guidance).
"""

from configs import edm_mnist


def get_config():
  config = edm_mnist.get_config()
  config.model.num_classes = 10
  config.diffusion.label_dropout = 0.1
  config.diffusion.guidance = 2.0
  config.train.num_steps = 4_500  # its shipped budget; edm_mnist's own has grown since
  config.diffusion.sampler, config.diffusion.steps = "heun", 18  # what its card was scored with
  return config
