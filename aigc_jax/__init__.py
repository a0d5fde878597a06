"""aigc_jax: automated image generation in JAX/Flax.

Rule-based transforms (`aigc_jax.transforms`), GANs and VAEs (`aigc_jax.models`,
`aigc_jax.trainers`), TFDS input pipelines (`aigc_jax.data`) and evaluation
metrics (`aigc_jax.evaluation`). Entry points: `python -m aigc_jax.train`,
`python -m aigc_jax.sample`, `python -m aigc_jax.evaluate`.
"""

__version__ = "0.1.0"
