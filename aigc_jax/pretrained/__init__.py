"""Small pretrained generators shipped with the package, and the export that makes them.

Each model NAME is two files here: `NAME.json` (the training config) and
`NAME.msgpack` (only what sampling needs: the generator's weights, EMA ones
when the run kept an EMA, and its batch statistics; or the VAE's parameters),
with a model card `NAME.md` beside them. `load(name)` rebuilds a train state
that `trainers.<family>.generate` accepts, offline.

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

from aigc_jax import config as config_lib, trainers
from aigc_jax.errors import UserError

DIR = os.path.dirname(os.path.abspath(__file__))
NAMES = ("dcgan_mnist", "cgan_mnist", "vae_mnist")
# The state fields each family needs to generate; other fields keep their initial values.
_FIELDS = {"gan": ("g_params", "g_collections"), "vae": ("params",)}


def _paths(name: str, directory: str) -> tuple[str, str]:
  return os.path.join(directory, f"{name}.json"), os.path.join(directory, f"{name}.msgpack")


def _sampling_weights(config: ml_collections.ConfigDict, state: Any) -> dict:
  fields = flax.serialization.to_state_dict(state)
  if config.model.family == "gan" and config.gan.ema_half_life_images > 0:
    fields["g_params"] = fields["g_ema_params"]  # Sampling uses the EMA weights only.
  return {k: jax.device_get(fields[k]) for k in _FIELDS[config.model.family]}


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
  from aigc_jax import checkpoints, sample
  if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
    raise UserError(f"--name={name!r} is not valid: letters, digits, '_', '-' and '.' only")
  config_path, weights_path = _paths(name, directory)
  checkpoints.check_outputs((config_path, weights_path), overwrite)
  config, state, _ = sample.load_run(workdir, step)
  if config.model.family not in _FIELDS:
    raise UserError(f"model.family={config.model.family!r} does not generate images")
  checkpoints.write_together({
      weights_path: flax.serialization.msgpack_serialize(_sampling_weights(config, state)),
      config_path: portable_config(config).to_json(indent=2).encode()})
  return config_path, weights_path


def load(name: str, directory: str = DIR) -> tuple[ml_collections.ConfigDict, Any]:
  """Returns (config, state) of a shipped model, ready for the family's `generate`."""
  config_path, weights_path = _paths(name, directory)
  if not os.path.isfile(weights_path):
    available = sorted(f[:-len(".msgpack")] for f in os.listdir(directory) if f.endswith(".msgpack"))
    raise UserError(f"--model={name!r} is not a shipped model; available: {', '.join(available) or 'none'}")
  with open(config_path) as f:
    config = config_lib.complete(ml_collections.ConfigDict(json.load(f)))
  with open(weights_path, "rb") as f:
    weights = flax.serialization.msgpack_restore(f.read())
  trainer = trainers.get_trainer(config)
  template = trainer.init_state(config, jax.random.key(0))
  fields = flax.serialization.to_state_dict(template)
  fields.update(weights)
  if config.model.family == "gan" and config.gan.ema_half_life_images > 0:
    fields["g_ema_params"] = weights["g_params"]
  return config, flax.serialization.from_state_dict(template, fields)
