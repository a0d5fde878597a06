"""Model families (`gan`, `vae`, `classifier`, ...) and the sharded compilation of their steps.

Each family is a module here defining `FAMILY` (see `family.Family`); `get_family` finds it by
`config.model.family`, and `register` adds one defined elsewhere (a notebook, a test). This package
adds what turns a family's step into a sharded, jitted, multi-step update (`init_sharded_state`,
`compile_train_step`). It imports no TensorFlow, so steps can be built and timed wherever JAX runs,
with any input pipeline.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from aigc_jax import parallel
from aigc_jax.errors import UserError
from aigc_jax.trainers.family import Family, SampleOption

__all__ = ["Family", "SampleOption", "register", "unregister", "get_family", "family_names",
           "families", "require", "base_keys", "make_multi_step", "compile_train_step",
           "init_sharded_state"]

_REGISTERED: dict[str, Family] = {}  # families defined outside this package, by name


def register(family: Family) -> Family:
  """Makes `family` available under `family.name` (for families defined outside this package)."""
  _REGISTERED[family.name] = family
  return family


def unregister(name: str) -> None:
  """Removes a family added with `register`."""
  _REGISTERED.pop(name, None)


def _built_in() -> dict[str, Family]:
  found = {}
  for info in pkgutil.iter_modules(__path__):
    family = getattr(importlib.import_module(f"{__name__}.{info.name}"), "FAMILY", None)
    if isinstance(family, Family):
      found[family.name] = family
  return found


def families() -> dict[str, Family]:
  """Every known family by name: this package's modules that define FAMILY, and registered ones."""
  return {**_built_in(), **_REGISTERED}


def family_names() -> list[str]:
  """The names `model.family` accepts."""
  return sorted(families())


def get_family(config_or_name: ml_collections.ConfigDict | str) -> Family:
  """The family named by `config.model.family` (or the name itself); UserError if unknown."""
  name = config_or_name if isinstance(config_or_name, str) else config_or_name.model.family
  if name in _REGISTERED:
    return _REGISTERED[name]
  try:
    family = getattr(importlib.import_module(f"{__name__}.{name}"), "FAMILY", None)
  except ModuleNotFoundError:
    family = None
  if not isinstance(family, Family):
    raise UserError(f"config.model.family={name!r} is not valid: choose one of {family_names()}")
  return family


def require(family: Family, capability: str, doing: str) -> None:
  """UserError unless `family` can `capability`, naming the families that can."""
  if not family.can(capability):
    able = [name for name, f in sorted(families().items()) if f.can(capability)]
    raise UserError(f"{family.name} models cannot {doing}; families that can: {', '.join(able) or 'none'}")


def base_keys(seed: int) -> dict[str, jax.Array]:
  """A run's base keys: init, per-step (folded with the step), and the fixed sample-grid key."""
  init_key, step_key, sample_key = jax.random.split(jax.random.key(seed), 3)
  return {"init": init_key, "step": step_key, "sample": sample_key}


def make_multi_step(step_fn: Callable, steps_per_dispatch: int) -> Callable:
  """Wraps `step_fn` to run `steps_per_dispatch` steps per call, each with fold_in(key, step)."""

  def one(state, batch, base_key):
    return step_fn(state, batch, jax.random.fold_in(base_key, state.step))

  if steps_per_dispatch == 1:
    return lambda state, batches, base_key: one(state, batches[0], base_key)

  def multi(state, batches, base_key):
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    state, metrics = jax.lax.scan(lambda s, b: one(s, b, base_key), state, stacked)
    return state, jax.tree.map(jnp.mean, metrics)

  return multi


def compile_train_step(config: ml_collections.ConfigDict, mesh, state_sharding) -> Callable:
  """Jits the (multi-)step with explicit shardings: the state on `state_sharding` and donated, the
  batch split over every device, metrics replicated."""
  step_fn = get_family(config).make_train_step(config)
  multi = make_multi_step(step_fn, config.train.steps_per_dispatch)
  return jax.jit(multi,
                 in_shardings=(state_sharding, parallel.batch_sharded(mesh), parallel.replicated(mesh)),
                 out_shardings=(state_sharding, parallel.replicated(mesh)),
                 donate_argnums=(0,),
                 compiler_options=parallel.compiler_options(mesh.devices.flat[0].platform))


def init_sharded_state(config: ml_collections.ConfigDict, mesh, key: jax.Array) -> tuple[Any, Any]:
  """Initialises the train state directly onto its shardings, derived from the mesh and the
  state's shapes (`parallel.state_shardings`: replicated, or FSDP over the mesh's "fsdp" axis)."""
  init = functools.partial(get_family(config).init_state, config)
  abstract = jax.eval_shape(init, key)
  sharding = parallel.state_shardings(abstract, mesh, min_bytes=int(config.train.fsdp_min_kib * 1024))
  return jax.jit(init, out_shardings=sharding)(key), sharding
