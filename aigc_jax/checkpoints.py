"""Orbax checkpoints of a run: the train state, the base PRNG key, and the run's config.

A checkpoint holds everything resuming needs: the state (params, optimiser
states, collections, step) and the base key. The input position is the step
itself, because the data stream is a pure function of (seed, step).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from aigc_jax.errors import UserError
from aigc_jax.images import write_bytes_atomic

CONFIG_FILE = "config.json"


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def create_manager(workdir: str, config: ml_collections.ConfigDict | None = None,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """Opens the run's checkpoint manager; keeps the last `train.keep_checkpoints` when writing."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=None if config is None else config.train.keep_checkpoints,
      create=not read_only, read_only=read_only,
      # Synchronous saves: the train step donates its state, and on CPU a background copy could
      # read buffers that the next step has already reused.
      enable_async_checkpointing=False)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, base_key: jax.Array) -> None:
  """Saves state and base key at `step` (every process takes part)."""
  item = {"state": state, "base_key": jax.random.key_data(base_key)}
  manager.save(step, args=ocp.args.StandardSave(item), force=True)
  manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
            base_key: jax.Array) -> tuple[Any, jax.Array]:
  """Restores (state, base key) at `step` onto the shardings of `abstract_state`."""
  target = {"state": abstract_state,
            "base_key": jax.eval_shape(jax.random.key_data, base_key)}
  restored = manager.restore(step, args=ocp.args.StandardRestore(target))
  return restored["state"], jax.random.wrap_key_data(restored["base_key"])


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Stores the run's config next to its checkpoints (sample and evaluate read it back)."""
  os.makedirs(workdir, exist_ok=True)
  write_bytes_atomic(os.path.join(workdir, CONFIG_FILE), config.to_json(indent=2).encode())


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """Reads the config a run in `workdir` was trained with; UserError if there is none."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise UserError(f"no training run in {workdir!r}: {CONFIG_FILE} is missing "
                    "(train first with python -m aigc_jax.train --workdir=...)")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))
