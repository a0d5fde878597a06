"""Exponential moving averages of parameters, as StyleGAN2-ADA and EDM keep for sampling."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def ema_decay(images_seen: jax.Array, batch_size: int, half_life_images: float,
              rampup: float) -> jax.Array:
  """StyleGAN2-ADA's EMA beta: 0.5 ** (batch / min(half_life, images_seen * rampup))."""
  half_life = jnp.asarray(half_life_images, jnp.float32)
  if rampup > 0:
    half_life = jnp.minimum(half_life, images_seen.astype(jnp.float32) * rampup)
  return 0.5 ** (batch_size / jnp.maximum(half_life, 1e-8))


def update(ema_params: Any, params: Any, step: jax.Array, batch_size: int, half_life_images: float,
           rampup: float) -> Any:
  """The average after `step` steps of `batch_size` images: beta * ema + (1 - beta) * params."""
  # float32: an int32 image count would wrap after 2**31 images.
  beta = ema_decay(step.astype(jnp.float32) * batch_size, batch_size, half_life_images, rampup)
  return jax.tree.map(lambda e, p: beta * e + (1.0 - beta) * p, ema_params, params)
