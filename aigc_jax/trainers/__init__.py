"""Per-family training logic: state, losses, pure train steps, generation; sharded compilation.

Each family module (`gan`, `vae`, `classifier`) exposes `init_state(config, key)`,
`make_train_step(config)` and, for generators, `generate(config, state, key, num, labels)`.
This package adds what turns a family's step into a sharded, jitted, multi-step update
(`init_sharded_state`, `compile_train_step`). It imports no TensorFlow, so steps can be built
and timed wherever JAX runs, with any input pipeline.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from aigc_jax import parallel


def get_trainer(config: ml_collections.ConfigDict) -> ModuleType:
  """Returns the trainer module for `config.model.family`."""
  return importlib.import_module(f"aigc_jax.trainers.{config.model.family}")


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
  """Jits the (multi-)step with explicit shardings: state replicated and donated, batch split."""
  step_fn = get_trainer(config).make_train_step(config)
  multi = make_multi_step(step_fn, config.train.steps_per_dispatch)
  return jax.jit(multi,
                 in_shardings=(state_sharding, parallel.batch_sharded(mesh), parallel.replicated(mesh)),
                 out_shardings=(state_sharding, parallel.replicated(mesh)),
                 donate_argnums=(0,),
                 compiler_options=parallel.compiler_options(mesh.devices.flat[0].platform))


def init_sharded_state(config: ml_collections.ConfigDict, mesh, key: jax.Array) -> tuple[Any, Any]:
  """Initialises the train state directly onto its (replicated) shardings."""
  trainer = get_trainer(config)
  init = functools.partial(trainer.init_state, config)
  abstract = jax.eval_shape(init, key)
  sharding = jax.tree.map(lambda _: parallel.replicated(mesh), abstract)
  return jax.jit(init, out_shardings=sharding)(key), sharding
