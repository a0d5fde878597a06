"""Small pretrained generators shipped with the package, and the export that makes them.

Each model NAME is two files here: `NAME.json` (the training config) and
`NAME.msgpack` (only what sampling needs, as the family's `sampling_fields` picks:
e.g. a GAN's generator weights, the EMA ones when the run kept an EMA), with a model
card `NAME.md` beside them. `load(name)` rebuilds a train state that the family's
`generate` accepts, offline; `initial_weights(config)` reads the model that
`config.train.init_from` names, to start a new run from (fine-tuning).

    python -m aigc_jax.pretrained --workdir=RUN --name=dcgan_mnist   # export a run to ./
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import flax.serialization
import jax
import ml_collections

from aigc_jax import config as config_lib, runs, trainers
from aigc_jax.errors import UserError

DIR = os.path.dirname(os.path.abspath(__file__))


def names(directory: str = DIR) -> list[str]:
  """The shipped models in `directory`."""
  return sorted(f[:-len(".msgpack")] for f in os.listdir(directory) if f.endswith(".msgpack"))


def _paths(name: str, directory: str) -> tuple[str, str]:
  return os.path.join(directory, f"{name}.json"), os.path.join(directory, f"{name}.msgpack")


def portable_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` without the folders of the machine that trained it (data.data_dir, data.manual_dir)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.data_dir = config.data.manual_dir = None
  return config


def default_reference(config: ml_collections.ConfigDict) -> str | None:
  """The reference a shipped model is scored against without --reference or --manual_dir.

  A model trained on an MNIST IDX folder is scored on TFDS's `mnist`, the same images, which TFDS
  downloads where there is a network; other datasets keep the config's own (None).
  """
  if config.data.dataset == "mnist_idx" and config.data.manual_dir is None:
    return f"mnist:{config.data.eval_split}"
  return None


def export(workdir: str, name: str, directory: str = ".", step: int | None = None,
           overwrite: bool = False) -> tuple[str, str]:
  """Writes the sampling weights and config of the run in `workdir`; returns the two paths.

  Everything is checked before anything is written; the pair is written together, and existing
  files (the shipped models among them) are replaced only with `overwrite`.
  """
  from aigc_jax import checkpoints
  if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
    raise UserError(f"--name={name!r} is not valid: letters, digits, '_', '-' and '.' only")
  config_path, weights_path = _paths(name, directory)
  checkpoints.check_outputs((config_path, weights_path), overwrite)
  family = trainers.get_family(config_lib.complete(checkpoints.read_config(workdir)))
  trainers.require(family, "generate", "generate images")  # before any checkpoint is read
  config, state, _ = runs.load_run(workdir, step)
  weights = flax.serialization.msgpack_serialize(
      jax.device_get(flax.serialization.to_state_dict(family.sampling_fields(config, state))))
  checkpoints.write_together({weights_path: weights,
                              config_path: portable_config(config).to_json(indent=2).encode()})
  return config_path, weights_path


def load(name: str, directory: str = DIR) -> tuple[ml_collections.ConfigDict, Any]:
  """Returns (config, state) of a shipped model, ready for the family's `generate`."""
  config_path, weights_path = _paths(name, directory)
  if not os.path.isfile(weights_path):
    raise UserError(f"--model={name!r} is not a shipped model; available: "
                    f"{', '.join(names(directory)) or 'none'}")
  with open(config_path) as f:
    config = config_lib.complete(ml_collections.ConfigDict(json.load(f)))
  with open(weights_path, "rb") as f:
    weights = flax.serialization.msgpack_restore(f.read())
  family = trainers.get_family(config)
  template = family.init_state(config, jax.random.key(0))
  return config, family.with_sampling_fields(config, template, weights)


def source_paths(source: str, directory: str = DIR) -> tuple[str, str]:
  """(NAME.json, NAME.msgpack) of `source`: a shipped model's name, or a path to an exported NAME.msgpack."""
  if source.endswith(".msgpack"):
    paths = (source[:-len(".msgpack")] + ".json", source)
    for path in paths:
      if not os.path.isfile(path):
        raise UserError(f"config.train.init_from={source!r}: {path} does not exist (an export is "
                        "NAME.msgpack with NAME.json beside it)")
    return paths
  if source not in names(directory):
    raise UserError(f"config.train.init_from={source!r} is neither a shipped model ("
                    f"{', '.join(names(directory)) or 'none'}) nor a path to an exported NAME.msgpack")
  return _paths(source, directory)


def initial_weights(config: ml_collections.ConfigDict) -> dict:
  """The weights of the model `config.train.init_from` names, checked to fit `config`'s train state.

  They are what the model keeps (its family's `sampling_fields`): a GAN's generator, a diffusion
  model's EMA weights; the rest of the state (a discriminator, optimiser moments, the step) starts
  afresh.
  """
  from aigc_jax import checkpoints
  source = config.train.init_from
  config_path, weights_path = source_paths(source)
  family = trainers.get_family(config)
  try:
    with open(config_path) as f:
      stored = json.load(f)
    with open(weights_path, "rb") as f:
      weights = flax.serialization.msgpack_restore(f.read())
    stored_family = stored["model"]["family"]
  except (ValueError, KeyError, TypeError) as e:  # bad JSON, msgpack, or a JSON without model.family
    raise UserError(f"config.train.init_from={source!r} is not a readable exported model "
                    f"({type(e).__name__}: {e})") from None
  if stored_family != family.name:
    raise UserError(f"config.train.init_from={source!r} is a {stored_family} model; this config "
                    f"trains a {family.name} one")
  abstract = jax.eval_shape(lambda k: family.init_state(config, k), jax.random.key(0))
  problem = checkpoints.fit_problem(weights, family.sampling_fields(config, abstract), source)
  if problem:
    raise UserError(f"config.train.init_from={source!r} does not fit this config ({problem})")
  return weights
