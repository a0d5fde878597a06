"""Per-family training logic: state, losses, pure train steps, generation.

Each family module (`gan`, `vae`, `classifier`) exposes `init_state(config, key)`,
`make_train_step(config)` and, for generators, `generate(config, state, key, num, labels)`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import ml_collections


def get_trainer(config: ml_collections.ConfigDict) -> ModuleType:
  """Returns the trainer module for `config.model.family`."""
  return importlib.import_module(f"aigc_jax.trainers.{config.model.family}")
