"""Random draws made flat and reshaped: the same numbers, in the form XLA:CPU compiles fast.

JAX's (partitionable) threefry numbers the elements of a draw in row-major order, so a draw of
shape (a, b, c, d) equals the draw of (a*b*c*d,) reshaped, bit for bit. XLA:CPU compiles the
multi-dimensional form of small draws up to ~10x slower (a normal(3, 3, 8, 16) kernel took
seconds where normal(1152,) took a fraction; benchmarks/RESULTS.md, "Diffusion"), and a U-Net
has dozens of conv kernels and dropout masks.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp


def normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """jax.random.normal(key, shape, dtype), drawn flat."""
  return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def bernoulli(key: jax.Array, p: float, shape: tuple[int, ...]) -> jax.Array:
  """jax.random.bernoulli(key, p, shape), drawn flat."""
  return jax.random.bernoulli(key, p, (math.prod(shape),)).reshape(shape)


def as_matrix(init: Callable) -> Callable:
  """A fan-in initializer for a [..., in, out] kernel drawn as the [prod(...) * in, out] matrix of
  the same fan-in, then reshaped: the same values as `init` on the kernel's own shape."""
  def matrix_init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    return init(key, (math.prod(shape[:-1]), shape[-1]), dtype).reshape(shape)
  return matrix_init
