"""The model-family contract: what train, sample and evaluate ask of a family module's `FAMILY`."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import ml_collections

State = Any
StepFn = Callable[[State, dict, jax.Array], tuple[State, dict]]


@dataclasses.dataclass(frozen=True)
class SampleOption:
  """A sampling setting a family accepts (a `sample` flag of the same name, e.g. --steps)."""
  name: str        # "steps", "sampler", "guidance", "trunc"
  default: Any     # the flag's type is type(default): float, int or str. None default -> read from config
  help: str


@dataclasses.dataclass(frozen=True)
class Family:
  """One model family: its config section, state, train step and optional sampling capabilities."""
  name: str
  model_names: tuple[str, ...]
  section: str
  defaults: Callable[[], ml_collections.ConfigDict]
  validate: Callable[[ml_collections.ConfigDict], None]
  init_state: Callable[[ml_collections.ConfigDict, jax.Array], State]
  make_train_step: Callable[[ml_collections.ConfigDict], StepFn]
  noise: Callable[[ml_collections.ConfigDict, jax.Array, int], jax.Array] | None = None
  generate: Callable[[ml_collections.ConfigDict, State, jax.Array, jax.Array | None,
                      Mapping[str, Any]], jax.Array] | None = None
  sample_options: tuple[SampleOption, ...] = ()
  trajectory: Callable[[ml_collections.ConfigDict, State, jax.Array, jax.Array | None,
                        Mapping[str, Any], int], jax.Array] | None = None
  encode: Callable[[ml_collections.ConfigDict, State, jax.Array, jax.Array | None],
                   jax.Array] | None = None
  classify: Callable[[ml_collections.ConfigDict, State, jax.Array], jax.Array] | None = None
  sampling_fields: Callable[[ml_collections.ConfigDict, State], dict] | None = None
  with_sampling_fields: Callable[[ml_collections.ConfigDict, State, dict], State] | None = None
