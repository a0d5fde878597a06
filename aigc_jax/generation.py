"""Images from a trained generator, by seed or by key, for any family that can generate.

A seed names one image: its noise is `family.noise(config, key(seed), 1)[0]` and the per-image key
of stochastic samplers is `fold_in(key(seed), 1)`, so the same seed gives the same image in any grid.
Grids drawn from one key (training samples, evaluation batches) split it the same way.
Conditional models without given labels cycle through the classes (image i gets class i % K, or
seed % K by seed).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aigc_jax import parallel, trainers
from aigc_jax.errors import UserError


def cycled_labels(config: ml_collections.ConfigDict, indices: Sequence[int] | np.ndarray) -> jax.Array | None:
  """Class index % num_classes for each index (seeds or positions); None for unconditional models."""
  if not config.model.num_classes:
    return None
  return jnp.asarray(np.asarray(indices, np.int64) % config.model.num_classes, jnp.int32)


def class_labels(config: ml_collections.ConfigDict, class_idx: int | None, num: int) -> jax.Array | None:
  """`num` copies of class `class_idx` (UserError if the model has no such class); None passes."""
  if class_idx is None:
    return None
  if not config.model.num_classes:
    raise UserError("--class needs a class-conditional model (this one has model.num_classes=0)")
  if not 0 <= class_idx < config.model.num_classes:
    raise UserError(f"--class={class_idx} is out of range: 0..{config.model.num_classes - 1}")
  return jnp.full((num,), class_idx, jnp.int32)


def _seed_keys(seeds: Sequence[int]) -> jax.Array:
  return jax.vmap(jax.random.key)(jnp.asarray(np.asarray(seeds, np.uint32)))


def seed_noise(config: ml_collections.ConfigDict, seeds: Sequence[int]) -> jax.Array:
  """The initial noise of each seed's image, stacked."""
  family = trainers.get_family(config)
  return jax.vmap(lambda k: family.noise(config, k, 1)[0])(_seed_keys(seeds))


def seed_sampler_keys(seeds: Sequence[int]) -> jax.Array:
  """Each seed's key for samplers that draw fresh noise on the way."""
  return jax.vmap(lambda k: jax.random.fold_in(k, 1))(_seed_keys(seeds))


def key_noise(config: ml_collections.ConfigDict, key: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
  """(noise, per-image sampler keys) of `num` images drawn from one key."""
  noise = trainers.get_family(config).noise(config, key, num)
  return noise, jax.random.split(jax.random.fold_in(key, 1), num)


def make_generate(config: ml_collections.ConfigDict, options: Mapping[str, Any] | None = None,
                  what: str = "generate") -> Callable:
  """The family's jitted `(state, noise, labels, keys) -> images` with sampling `options` fixed.

  `what` is "generate" or "trajectory" (then `frames` is an option of the call: the
  result is [frames, N, H, W, C]).
  """
  family = trainers.get_family(config)
  trainers.require(family, what, "generate images" if what == "generate" else "show a sampling trajectory")
  options = dict(options or {})
  family.check_options(options)
  fn = getattr(family, what)
  platform = jax.default_backend()

  if what == "trajectory":
    def run(state, noise, labels, keys, frames):
      return fn(config, state, noise, labels, keys, options, frames)
    return jax.jit(run, static_argnums=4, compiler_options=parallel.compiler_options(platform))

  def run(state, noise, labels, keys):
    return fn(config, state, noise, labels, keys, options)
  return jax.jit(run, compiler_options=parallel.compiler_options(platform))


def from_seeds(config: ml_collections.ConfigDict, state: Any, seeds: Sequence[int],
               labels: jax.Array | None = None, options: Mapping[str, Any] | None = None) -> jax.Array:
  """One image per seed ([N,H,W,C] in [-1, 1]); conditional models default to class seed % K."""
  if labels is None:
    labels = cycled_labels(config, seeds)
  return make_generate(config, options)(state, seed_noise(config, seeds), labels, seed_sampler_keys(seeds))


def from_key(config: ml_collections.ConfigDict, state: Any, key: jax.Array, num: int,
             labels: jax.Array | None = None, options: Mapping[str, Any] | None = None) -> jax.Array:
  """`num` images drawn from one key; conditional models default to class i % K for image i."""
  if labels is None:
    labels = cycled_labels(config, np.arange(num))
  noise, keys = key_noise(config, key, num)
  return make_generate(config, options)(state, noise, labels, keys)


def batch_generator(config: ml_collections.ConfigDict, state: Any, batch_size: int,
                    options: Mapping[str, Any] | None = None) -> Callable:
  """A `generate_fn(key, n[, labels])` running one jitted batch of `batch_size` per call (evaluation)."""
  generate = make_generate(config, options)

  def generate_fn(key, n, labels=None):
    padded = None
    if labels is not None:
      padded = jnp.asarray(np.resize(np.asarray(labels, np.int32), batch_size))
    noise, keys = key_noise(config, key, batch_size)
    return np.asarray(generate(state, noise, padded, keys))[:n]

  return generate_fn


def slerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
  """Spherical interpolation between noises a and b (any shape) at fractions t ([T]) -> [T, *shape]."""
  shape = a.shape
  a, b = a.reshape(-1), b.reshape(-1)
  a_n, b_n = a / jnp.linalg.norm(a), b / jnp.linalg.norm(b)
  omega = jnp.arccos(jnp.clip(jnp.dot(a_n, b_n), -1.0, 1.0))
  t = t[:, None]
  so = jnp.sin(omega)
  safe = jnp.where(so < 1e-6, 1.0, so)
  out = (jnp.sin((1 - t) * omega) * a + jnp.sin(t * omega) * b) / safe
  return jnp.where(so < 1e-6, (1 - t) * a + t * b, out).reshape((-1,) + shape)


def lerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
  """Straight-line interpolation between a and b at fractions t ([T]) -> [T, *shape]."""
  t = t.reshape((-1,) + (1,) * a.ndim)
  return (1 - t) * a + t * b
