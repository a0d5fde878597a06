"""Pieces the family trainers share: optimisers and applying modules with mutable state."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
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
