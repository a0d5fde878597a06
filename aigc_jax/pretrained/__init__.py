"""Small pretrained generators shipped with the package, and the export that makes them.

Each model NAME is two files here: `NAME.json` (the training config) and
`NAME.msgpack` (only what sampling needs, as the family's `sampling_fields` picks:
e.g. a GAN's generator weights, the EMA ones when the run kept an EMA), with a model
card `NAME.md` beside them. `load(name)` rebuilds a train state that the family's
`generate` accepts, offline.

    python -m aigc_jax.pretrained --workdir=RUN --name=dcgan_mnist   # export a run
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax.serialization
import jax
import ml_collections

from aigc_jax import config as config_lib, images, runs, trainers
from aigc_jax.errors import UserError

DIR = os.path.dirname(os.path.abspath(__file__))


def names(directory: str = DIR) -> list[str]:
  """The shipped models in `directory`."""
  return sorted(f[:-len(".msgpack")] for f in os.listdir(directory) if f.endswith(".msgpack"))


def _paths(name: str, directory: str) -> tuple[str, str]:
  return os.path.join(directory, f"{name}.json"), os.path.join(directory, f"{name}.msgpack")


def export(workdir: str, name: str, directory: str = DIR, step: int | None = None) -> tuple[str, str]:
  """Writes the sampling weights and config of the run in `workdir`; returns the two paths."""
  config, state, _ = runs.load_run(workdir, step)
  family = trainers.get_family(config)
  trainers.require(family, "generate", "generate images")
  config_path, weights_path = _paths(name, directory)
  # Both serialised before either is written, so a failure cannot pair a new config with old weights.
  weights = flax.serialization.msgpack_serialize(
      jax.device_get(flax.serialization.to_state_dict(family.sampling_fields(config, state))))
  config_json = config.to_json(indent=2).encode()
  images.write_bytes_atomic(weights_path, weights)
  images.write_bytes_atomic(config_path, config_json)
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
