"""Orbax checkpoints of a run: the train state, the base PRNG key, and the run's config.

A checkpoint holds everything resuming needs: the state (params, optimiser
states, collections, step) and the base key. The input position is the step
itself, because the data stream is a pure function of (seed, step).

A workdir may be local or a URL such as gs://bucket/run: Orbax and the TensorBoard writer
take both, and this module's `write_file` / `read_config` go through tf.io.gfile for URLs.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

from aigc_jax import config as config_lib, run_log
from aigc_jax.errors import UserError
from aigc_jax.images import check_writable, write_bytes_atomic

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


def check_outputs(paths: Sequence[str], overwrite: bool) -> None:
  """UserError unless every local path can be written and, without `overwrite`, does not exist yet."""
  for path in paths:
    check_writable(path)
    if os.path.exists(path) and not overwrite:
      raise UserError(f"{path!r} exists: pass --overwrite to replace it")


def write_together(files: dict[str, bytes]) -> None:
  """Writes local files as one: each is complete beside its target before the first replaces its
  target, so a failure while writing leaves every target as it was."""
  staged = {path: f"{path}.partial" for path in files}
  try:
    for path, data in files.items():
      write_bytes_atomic(staged[path], data)
    for path, partial in staged.items():
      os.replace(partial, path)
  finally:
    for partial in staged.values():
      if os.path.exists(partial):
        os.remove(partial)


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
    # The handler named up front lets `item_metadata` read a checkpoint's tree, which tells a tree
    # that does not fit a config from damaged files.
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_handlers=ocp.StandardCheckpointHandler())
  except (FileExistsError, NotADirectoryError, PermissionError) as e:
    raise UserError(f"cannot use {checkpoint_dir(workdir)!r} for checkpoints: {e.strerror}") from e


class UnusableCheckpoint(UserError):
  """A checkpoint that does not read back whole (damaged), or holds NaN or infinite values."""


class NonFiniteState(UserError):
  """A train state with NaN or infinite values, which is never saved."""


@jax.jit
def _finite_flags(tree: Any) -> Any:
  return jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact)
                      else jnp.bool_(True), tree)


def non_finite_leaves(tree: Any) -> list[str]:
  """The paths ("g_params/Dense_0/kernel") of the leaves of `tree` that hold a NaN or an infinity."""
  flags = jax.device_get(_finite_flags(tree))  # one reduction per leaf on the devices, one fetch
  return [_path(path) for path, ok in jax.tree_util.tree_flatten_with_path(flags)[0] if not ok]


def _path(key_path) -> str:
  return jax.tree_util.keystr(key_path, simple=True, separator="/")


def _first_line(error: BaseException, limit: int = 200) -> str:
  """An Orbax or TensorStore error's first line, without the spec TensorStore appends."""
  text = (str(error).strip().splitlines() or [type(error).__name__])[0]
  text = text.split(" [tensorstore_spec=")[0]
  return text if len(text) <= limit else text[:limit] + "..."


def save(manager: ocp.CheckpointManager, step: int, state: Any, base_key: jax.Array) -> None:
  """Saves state and base key at `step` (every process takes part); NonFiniteState if not finite.

  A checkpoint already at `step` is one that resuming skipped as unusable: it is replaced.
  """
  bad = non_finite_leaves(state)
  if bad:
    raise NonFiniteState(f"the train state holds NaN or infinite values ({_some(bad)}) and was not saved")
  if step in manager.all_steps():
    manager.delete(step)
  # The key goes in as numpy: a host-local jax.Array cannot be saved by several processes.
  item = {"state": state, "base_key": np.asarray(jax.random.key_data(base_key))}
  manager.save(step, args=ocp.args.StandardSave(item), force=True)
  manager.wait_until_finished()


def _some(paths: list[str]) -> str:
  return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def fit_problem(stored: Any, target: Any, source: str = "the checkpoint") -> str | None:
  """How the tree `stored` (arrays or Orbax metadata) of `source` differs from `target`; None if it fits."""
  have = {_path(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(stored)[0]}
  want = {_path(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(target)[0]}
  if want.keys() - have.keys():
    return f"this config's train state has {_some(sorted(want.keys() - have.keys()))}, {source} not"
  if have.keys() - want.keys():
    return f"{source} has {_some(sorted(have.keys() - want.keys()))}, this config's train state not"
  for name, leaf in want.items():
    if tuple(have[name].shape) != tuple(leaf.shape):
      return (f"{name} has shape {tuple(have[name].shape)} in {source}, "
              f"{tuple(leaf.shape)} in this config")
  return None


@contextlib.contextmanager
def _quiet_async_failures():
  """Keeps the leftovers of a failed Orbax read off the terminal: the one error raised says it all.

  A failed restore leaves Orbax's other reads as orphaned asyncio tasks and coroutines, which
  report themselves ("Task exception was never retrieved", "Exception ignored in ...") when they
  are collected: collected here, with asyncio's logger and the unraisable-exception hook quiet.
  """
  logger = logging.getLogger("asyncio")
  level, hook = logger.level, sys.unraisablehook
  logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    sys.unraisablehook = lambda unraisable: None
    try:
      gc.collect()
    finally:
      sys.unraisablehook = hook
      logger.setLevel(level)


# TensorStore's errors start with an absl status code ("DATA_LOSS: ..."): the files are missing,
# short or corrupt. Orbax's own checks of the tree and the shapes do not.
_STORAGE_ERROR = re.compile(r"^[A-Z][A-Z_]+: ")


def _failure(manager: ocp.CheckpointManager, step: int, target: dict, error: Exception) -> UserError:
  """Why restoring `step` failed: its tree does not fit `target` (UserError), or it is damaged."""
  where = f"the checkpoint at step {step} in {str(manager.directory)!r}"
  damaged = UnusableCheckpoint(f"{where} is damaged ({_first_line(error)})")
  if _STORAGE_ERROR.match(str(error)):
    return damaged
  try:  # Only now read the tree's metadata: on damaged files that read fails noisily.
    stored = manager.item_metadata(step)
  except Exception:  # noqa: BLE001 -- the metadata cannot be read either: damaged
    return damaged
  if stored is None or not jax.tree.leaves(stored):
    return UnusableCheckpoint(f"{where} is damaged (its tree metadata is missing)")
  problem = fit_problem(stored, target)
  if problem is None:
    return damaged
  return UserError(f"{where} does not fit this config's train state ({problem}): resume with the "
                   f"config it was trained with (config.json beside it) or use a new workdir")


_READS_AT_ONCE = 64  # values in memory at once while checking a checkpoint's files


def _check_files(manager: ocp.CheckpointManager, step: int) -> None:
  """Reads every value stored in the checkpoint's OCDBT database; UnusableCheckpoint if one fails.

  TensorStore's synchronous reads report a missing, short or corrupt file as one error. Left to
  Orbax, the same damage fails many concurrent reads, and those still in flight when its event
  loop closes print tracebacks of their own.
  """
  item = os.path.join(str(manager.directory), str(step), "default")
  store = ts.KvStore.open({"driver": "ocdbt", "base": (item if is_url(item) else "file://" + item) + "/"})
  try:
    store = store.result()
    keys = store.list().result()
    for start in range(0, len(keys), _READS_AT_ONCE):
      for read in [store.read(key) for key in keys[start:start + _READS_AT_ONCE]]:
        read.result()
  except ValueError as e:  # TensorStore's errors: "NOT_FOUND: ...", "DATA_LOSS: ...", ...
    raise UnusableCheckpoint(f"the checkpoint at step {step} in {str(manager.directory)!r} is "
                             f"damaged ({_first_line(e)})") from e


def _restore_step(manager: ocp.CheckpointManager, step: int, target: dict) -> dict:
  """Restores `step` onto `target`: UserError if its tree does not fit, UnusableCheckpoint if damaged
  or not finite."""
  _check_files(manager, step)
  with _quiet_async_failures():
    try:
      restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as e:  # noqa: BLE001 -- whatever the storage layer raises, judged by _failure
      raise _failure(manager, step, target, e) from e
  bad = non_finite_leaves(restored["state"])
  if bad:
    raise UnusableCheckpoint(f"the checkpoint at step {step} in {str(manager.directory)!r} holds "
                             f"NaN or infinite values ({_some(bad)})")
  return restored


def restore(manager: ocp.CheckpointManager, step: int | None, abstract_state: Any,
            base_key: jax.Array) -> tuple[Any, jax.Array]:
  """Restores (state, base key) at `step` onto the shardings of `abstract_state`.

  `step` None: the newest usable checkpoint (its step is the state's), with one warning line
  for each newer one skipped as damaged or not finite. A checkpoint whose tree does not fit
  `abstract_state` ends the search: older ones of the same run would not fit either.
  """
  target = {"state": abstract_state,
            "base_key": np.asarray(jax.random.key_data(base_key))}
  steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise UserError(f"no checkpoint in {str(manager.directory)!r}")
  skipped = []
  for s in steps:
    try:
      restored = _restore_step(manager, s, target)
    except UnusableCheckpoint as e:
      if step is not None:
        raise
      skipped.append(str(e))
      continue
    for reason in skipped:
      run_log.warn(f"{reason}: skipped, using step {s}")
    return restored["state"], jax.random.wrap_key_data(restored["base_key"])
  raise UserError(f"no usable checkpoint: {'; '.join(skipped)}")


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


def _flat(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{"section.key": value} as JSON has it (so tuples and lists compare equal)."""
  flat = {}
  for section, values in json.loads(config.to_json()).items():
    if isinstance(values, dict):
      flat.update({f"{section}.{key}": value for key, value in values.items()})
    else:
      flat[section] = values
  return flat


def config_changes(stored: ml_collections.ConfigDict,
                   config: ml_collections.ConfigDict) -> list[tuple[str, Any, Any]]:
  """(key, stored value, new value) for each key of `config` whose value differs from `stored`'s."""
  old, new = _flat(config_lib.complete(stored)), _flat(config)
  return [(key, old.get(key), value) for key, value in new.items() if old.get(key) != value]


def check_resume(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
  """Refuses to resume the run in `workdir` with keys that change its mathematics.

  Returns the allowed changes ("train.num_steps 10 -> 20"); none when the run has no config.json.
  """
  data = read_file(join(workdir, CONFIG_FILE))
  if data is None:
    return []
  changes = config_changes(ml_collections.ConfigDict(json.loads(data)), config)
  safe = config_lib.resume_safe_keys(config)
  refused = [c for c in changes if c[0] not in safe]
  if refused:
    raise UserError(f"--workdir={workdir!r} holds a run trained with another config ({_describe(refused)}); "
                    f"resuming would change its mathematics: resume with its own config ({CONFIG_FILE} "
                    f"there) or use a new --workdir. Safe to change on resume: "
                    f"{', '.join(safe)}")
  return [_describe([c]) for c in changes]


def _describe(changes: list[tuple[str, Any, Any]]) -> str:
  return ", ".join(f"{key} {old!r} -> {new!r}" for key, old, new in changes)
