"""Spectral normalisation (Miyato et al. 2018) for convolution kernels.

`SpectralConv` is `flax.linen.Conv` whose kernel is divided by an estimate of
its largest singular value (of the kernel reshaped to [kh*kw*in, out]). The
estimate comes from one power-iteration step per training call, continuing
from a vector `u` kept in the mutable "spectral" collection, so it lives in the
train state and is checkpointed with it. In inference mode `u` is read, not
updated.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

COLLECTION = "spectral"


def _normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  return x / (jnp.linalg.norm(x) + eps)


def power_iteration(matrix: jax.Array, u: jax.Array, num_steps: int = 1) -> tuple[jax.Array, jax.Array]:
  """Runs power iteration on `matrix` [m, n] from right vector `u` [n]; returns (left v [m], new u [n])."""
  for _ in range(num_steps):
    v = _normalize(matrix @ u)
    u = _normalize(matrix.T @ v)
  return v, u


def spectral_norm(matrix: jax.Array, u: jax.Array, num_steps: int = 1) -> tuple[jax.Array, jax.Array]:
  """Estimates the largest singular value of `matrix` from `u`; returns (sigma, new u).

  Gradients reach `matrix` only through sigma = v^T W u with v and u held fixed (SNGAN).
  """
  v, u = power_iteration(jax.lax.stop_gradient(matrix), u, num_steps)
  return v @ matrix @ u, u


class SpectralConv(nn.Module):
  """A convolution whose kernel has spectral norm ~1 (power iteration state in "spectral")."""

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Any = "SAME"
  use_bias: bool = True
  dtype: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Applies the normalised convolution; updates `u` when training."""
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), jnp.float32)
    matrix = kernel.reshape(-1, self.features)
    u = self.variable(COLLECTION, "u", lambda: _normalize(
        jax.random.normal(self.make_rng("params"), (self.features,), jnp.float32)))
    sigma, new_u = spectral_norm(matrix, u.value)
    if train and not self.is_initializing():
      u.value = new_u
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype or x.dtype), (kernel / sigma).astype(self.dtype or x.dtype),
        self.strides, self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32).astype(y.dtype)
    return y
