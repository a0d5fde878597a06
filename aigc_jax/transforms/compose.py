"""Composition of random ops: pipelines, per-example probability and per-example choice.

An op is a pure function `op(key, images) -> images` over NHWC batches; these
combinators build new ops from old ones, splitting the key so that every part
draws independent randomness.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Op = Callable[[jax.Array, jax.Array], jax.Array]


def identity(key: jax.Array, images: jax.Array) -> jax.Array:
  """Returns the images unchanged."""
  del key
  return images


def sequential(*ops: Op) -> Op:
  """An op applying `ops` one after another, each with its own key."""
  if not ops:
    return identity

  def run(key: jax.Array, images: jax.Array) -> jax.Array:
    for k, op in zip(jax.random.split(key, len(ops)), ops):
      images = op(k, images)
    return images

  return run


def with_probability(op: Op, p: float) -> Op:
  """An op applying `op` to each example independently with probability p."""
  if p >= 1.0:
    return op

  def run(key: jax.Array, images: jax.Array) -> jax.Array:
    k_mask, k_op = jax.random.split(key)
    keep = jax.random.bernoulli(k_mask, p, (images.shape[0],))[:, None, None, None]
    return jnp.where(keep, op(k_op, images).astype(images.dtype), images)

  return run


def random_choice(*ops: Op) -> Op:
  """An op applying one of `ops`, chosen uniformly and independently for each example."""
  if len(ops) == 1:
    return ops[0]

  def run(key: jax.Array, images: jax.Array) -> jax.Array:
    k_pick, *keys = jax.random.split(key, len(ops) + 1)
    pick = jax.random.randint(k_pick, (images.shape[0],), 0, len(ops))
    outs = jnp.stack([op(k, images).astype(images.dtype) for k, op in zip(keys, ops)])
    return jnp.take_along_axis(outs, pick[None, :, None, None, None], axis=0)[0]

  return run
