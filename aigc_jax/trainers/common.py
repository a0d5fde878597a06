"""Pieces the family trainers share: optimisers and applying modules with mutable state."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax


def adam(config: ml_collections.ConfigDict, learning_rate: float) -> optax.GradientTransformation:
  """Adam with the config's betas."""
  return optax.adam(learning_rate, b1=config.train.b1, b2=config.train.b2)


def init_variables(module: nn.Module, key: jax.Array, *args, **kwargs) -> tuple[Any, dict]:
  """Initialises `module`; returns (params, the other collections such as batch_stats)."""
  variables = dict(module.init(key, *args, **kwargs))
  params = variables.pop("params")
  return params, variables


def apply_train(module: nn.Module, params: Any, collections: dict, *args, **kwargs) -> tuple[Any, dict]:
  """Applies `module` in training mode; returns (output, updated non-param collections)."""
  if not collections:
    return module.apply({"params": params}, *args, train=True, **kwargs), collections
  out, updated = module.apply({"params": params, **collections}, *args, train=True,
                              mutable=list(collections), **kwargs)
  return out, dict(updated)


def apply_eval(module: nn.Module, params: Any, collections: dict, *args, **kwargs) -> Any:
  """Applies `module` in inference mode (running statistics, no updates)."""
  return module.apply({"params": params, **collections}, *args, train=False, **kwargs)


def generator_inputs(config: ml_collections.ConfigDict, key: jax.Array | None, num: int,
                     labels: jax.Array | None, z: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
  """(z, labels) for generating `num` images: z ~ N(0, I) from `key` unless given; a conditional
  model without labels cycles through the classes (image i gets class i % num_classes)."""
  if z is None:
    z = jax.random.normal(key, (num, config.model.latent_dim), jnp.float32)
  if config.model.num_classes and labels is None:
    labels = jnp.arange(num, dtype=jnp.int32) % config.model.num_classes
  return z, labels
