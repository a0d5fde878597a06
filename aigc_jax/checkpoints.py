"""Orbax checkpoints of a run: the train state, the base PRNG key, and the run's config.

A checkpoint holds everything resuming needs: the state (params, optimiser
states, collections, step) and the base key. The input position is the step
itself, because the data stream is a pure function of (seed, step).

A workdir may be local or a URL such as gs://bucket/run: Orbax and the TensorBoard writer
take both, and this module's `write_file` / `read_config` go through tf.io.gfile for URLs.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from aigc_jax.errors import UserError
from aigc_jax.images import write_bytes_atomic

CONFIG_FILE = "config.json"


def is_url(path: str) -> bool:
  """True for paths with a scheme (gs://, s3://), which go through tf.io.gfile."""
  return "://" in path


def join(workdir: str, *parts: str) -> str:
  """Joins path parts; local workdirs become absolute (Orbax needs that), URLs stay as they are."""
  return os.path.join(workdir if is_url(workdir) else os.path.abspath(workdir), *parts)


def checkpoint_dir(workdir: str) -> str:
  """The folder of the run's Orbax checkpoints."""
  return join(workdir, "checkpoints")


def write_file(path: str, data: bytes) -> None:
  """Writes `data` to a local path atomically, or to a URL (one object upload, itself atomic)."""
  if not is_url(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_bytes_atomic(path, data)
    return
  import tensorflow as tf  # Only URL workdirs need it.
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(data)


def read_file(path: str) -> bytes | None:
  """The bytes at a local path or URL, or None when there is no such file."""
  if is_url(path):
    import tensorflow as tf  # Only URL workdirs need it.
    exists, opener = tf.io.gfile.exists, tf.io.gfile.GFile
  else:
    exists, opener = os.path.isfile, open
  if not exists(path):
    return None
  with opener(path, "rb") as f:
    return f.read()


def create_manager(workdir: str, config: ml_collections.ConfigDict | None = None,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """Opens the run's checkpoint manager; keeps the last `train.keep_checkpoints` when writing."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=None if config is None else config.train.keep_checkpoints,
      create=not read_only, read_only=read_only,
      # Synchronous saves: the train step donates its state, and on CPU a background copy could
      # read buffers that the next step has already reused.
      enable_async_checkpointing=False)
  try:
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)
  except (FileExistsError, NotADirectoryError, PermissionError) as e:
    raise UserError(f"cannot use {checkpoint_dir(workdir)!r} for checkpoints: {e.strerror}") from e


def save(manager: ocp.CheckpointManager, step: int, state: Any, base_key: jax.Array) -> None:
  """Saves state and base key at `step` (every process takes part)."""
  # The key goes in as numpy: a host-local jax.Array cannot be saved by several processes.
  item = {"state": state, "base_key": np.asarray(jax.random.key_data(base_key))}
  manager.save(step, args=ocp.args.StandardSave(item), force=True)
  manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
            base_key: jax.Array) -> tuple[Any, jax.Array]:
  """Restores (state, base key) at `step` onto the shardings of `abstract_state`."""
  target = {"state": abstract_state,
            "base_key": np.asarray(jax.random.key_data(base_key))}
  try:
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
  except ValueError as e:  # Orbax's tree-structure or shape mismatch.
    raise UserError(f"the checkpoint at step {step} in {str(manager.directory)!r} does not fit this "
                    f"config's train state (another model size, normalisation, EMA or conditioning?): "
                    f"resume with the config it was trained with (config.json beside it) or use a "
                    f"new workdir. Orbax: {str(e).splitlines()[0]}") from e
  return restored["state"], jax.random.wrap_key_data(restored["base_key"])


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Stores the run's config next to its checkpoints (sample and evaluate read it back)."""
  write_file(join(workdir, CONFIG_FILE), config.to_json(indent=2).encode())


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """Reads the config a run in `workdir` was trained with; UserError if there is none."""
  data = read_file(join(workdir, CONFIG_FILE))
  if data is None:
    raise UserError(f"no training run in {workdir!r}: {CONFIG_FILE} is missing "
                    "(train first with python -m aigc_jax.train --workdir=...)")
  return ml_collections.ConfigDict(json.loads(data))
