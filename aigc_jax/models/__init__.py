"""Flax modules (DCGAN, conv VAE, LeNet, their layers); each family builds its own from the config."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config: ml_collections.ConfigDict):
  """Returns the jnp dtype named by config.train.compute_dtype."""
  return _DTYPES[config.train.compute_dtype]
