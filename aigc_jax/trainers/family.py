"""The model-family contract: what a family declares, so the CLIs and libraries ask it, not its name.

A family is one module `aigc_jax/trainers/NAME.py` defining `FAMILY = Family(...)`. Required:
its config section and validation, `init_state` and `make_train_step`. Optional capabilities are
fields left `None` when a family lacks them; callers discover them with `family.can(...)`:

- generation: `noise(config, key, num)` draws the initial noise of `num` images from one key (a
  latent vector each, or image-shaped noise); `generate(config, state, noise, labels, keys, options)`
  maps it to images in [-1, 1], where `keys` are per-image PRNG keys for samplers that draw fresh
  noise on the way and `options` holds the `sample_options` a user set. A seed's noise is
  `noise(config, key(seed), 1)[0]`, so the same seed gives the same image in any grid.
- `trajectory`: the same sampling, returning `frames` intermediate images.
- `encode`: images -> noise (posterior means), which `generate` decodes back (reconstruction).
- `classify`: images -> class logits (held-out accuracy while training).
- `sample_settings(config, options)`: every sampling setting in effect (the options given, the rest
  from the config), recorded beside scores; without it, the options over their defaults.
- shipped models: `sampling_fields` picks the state fields sampling needs; `with_sampling_fields`
  puts them back into a freshly initialised state.
- `sampling_keys`: the keys of its section that only sampling reads (a resume may change them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import ml_collections

from aigc_jax.errors import UserError

Config = ml_collections.ConfigDict
CAPABILITIES = ("generate", "trajectory", "encode", "classify")


@dataclasses.dataclass(frozen=True)
class SampleOption:
  """A sampling setting a family accepts; `sample` offers it as a flag of the same name."""
  name: str
  default: Any  # None: the family reads the default from the run's config
  help: str
  type: type | None = None  # the flag's type (float, int or str); None: type(default)

  @property
  def flag_type(self) -> type:
    """The type of the `sample` flag that sets this option."""
    return self.type or type(self.default)


@dataclasses.dataclass(frozen=True)
class Family:
  """A model family: its config section, train state, train step and what else it can do."""
  name: str
  model_names: tuple[str, ...]
  section: str | None  # the config section it owns (None: it has no settings of its own)
  defaults: Callable[[], Config] | None  # that section with every key and its default
  validate: Callable[[Config], None]  # UserError for a bad key of its section or a model.* key it reads
  init_state: Callable[[Config, jax.Array], Any]
  make_train_step: Callable[[Config], Callable]
  noise: Callable[[Config, jax.Array, int], jax.Array] | None = None
  generate: Callable[[Config, Any, jax.Array, jax.Array | None, jax.Array, Mapping[str, Any]],
                     jax.Array] | None = None
  sample_options: tuple[SampleOption, ...] = ()
  sample_settings: Callable[[Config, Mapping[str, Any]], dict] | None = None
  trajectory: Callable[..., jax.Array] | None = None
  encode: Callable[[Config, Any, jax.Array, jax.Array | None], jax.Array] | None = None
  classify: Callable[[Config, Any, jax.Array], jax.Array] | None = None
  sampling_fields: Callable[[Config, Any], dict] | None = None
  with_sampling_fields: Callable[[Config, Any, dict], Any] | None = None
  # Keys of its section that only sampling reads, so a resumed run may change them.
  sampling_keys: tuple[str, ...] = ()

  def can(self, capability: str) -> bool:
    """Whether the family offers `capability` (one of CAPABILITIES)."""
    return getattr(self, capability) is not None

  def settings(self, config: Config, options: Mapping[str, Any] | None = None) -> dict:
    """Every sampling setting `options` leave in effect, for the record beside a score."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    self.check_options(options)
    if self.sample_settings is not None:
      return self.sample_settings(config, options)
    return {**{o.name: o.default for o in self.sample_options}, **options}

  def check_options(self, options: Mapping[str, Any]) -> None:
    """UserError for a sampling option this family does not take."""
    known = {o.name for o in self.sample_options}
    for name in options:
      if name not in known:
        raise UserError(f"--{name} does not apply to {self.name} models (they take: "
                        f"{', '.join(sorted(known)) or 'no sampling options'})")
