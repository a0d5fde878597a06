"""Normalisation layers: spectral normalisation of convolution kernels and batch norm.

`SpectralConv` (Miyato et al. 2018) is a convolution (applied by a given op, e.g. the
`layers` forms) whose kernel, with `flax.linen.Conv`'s parameters, is divided by an estimate of
its largest singular value (of the kernel reshaped to [kh*kw*in, out]). The
estimate comes from one power-iteration step per training call, continuing
from a vector `u` kept in the mutable "spectral" collection, so it lives in the
train state and is checkpointed with it. In inference mode `u` is read, not
updated.

`BatchNorm` is `flax.linen.BatchNorm` over every axis but the last (the same
parameters, running statistics, function and gradients), with each of its
sums over (N, H, W), forward and backward, a product with a vector of ones
(in float32 steps; bfloat16 ones keep plain reductions).
XLA:CPU rewrites such large sums into tree reductions (reduce-window), a
large share of a CPU train step; as matrix-vector products they take a few
BLAS calls (benchmarks/RESULTS.md, "Train step").
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.models import layers

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
  """A convolution whose kernel has spectral norm ~1 (power iteration state in "spectral").

  `op(x, kernel)` applies the normalised [kh, kw, in, features] kernel (e.g. `layers.conv_down_2x`).
  """

  features: int
  kernel_size: Sequence[int]
  op: Callable[[jax.Array, jax.Array], jax.Array]
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
    y = self.op(x.astype(self.dtype or x.dtype), (kernel / sigma).astype(self.dtype or x.dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32).astype(y.dtype)
    return y


def _channel_sums(rows: jax.Array, matvec: bool) -> jax.Array:
  """Sums float32 [M, C] rows over M: as a product with ones if `matvec`, else a plain reduction.

  Only float32 steps take the product: bfloat16 ones run on accelerators, where reductions are
  fast and a float32 matmul would leave the bfloat16 units (TPUs emulate it in several passes).
  """
  return layers.channel_sums(rows) if matvec else jnp.sum(rows, axis=0)


def _batch_statistics(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and (biased) variance of [..., C] over all leading axes, float32, as flax computes them."""
  rows = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
  matvec = x.dtype == jnp.float32
  mean = _channel_sums(rows, matvec) / rows.shape[0]
  return mean, jnp.maximum(_channel_sums(rows * rows, matvec) / rows.shape[0] - mean * mean, 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float):
  """(scale * (x - mean) / sqrt(var + epsilon) + bias in float32, mean, var) with batch statistics over
  all axes of x but the last."""
  return _batch_norm_train_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_train_fwd(x, scale, bias, epsilon):
  mean, var = _batch_statistics(x)
  inv = jax.lax.rsqrt(var + epsilon)
  y = (x - mean) * (inv * scale) + bias
  return (y, mean, var), (x, mean, inv, scale)


def _batch_norm_train_bwd(epsilon, residuals, cotangents):
  del epsilon
  x, mean, inv, scale = residuals
  g, g_mean, g_var = cotangents
  rows = x.size // x.shape[-1]
  centred = x - mean
  x_hat = centred * inv
  g_rows = g.reshape(-1, g.shape[-1])
  matvec = x.dtype == jnp.float32
  d_bias = _channel_sums(g_rows, matvec)
  d_scale = _channel_sums(g_rows * x_hat.reshape(g_rows.shape), matvec)
  # The usual batch-norm input gradient, plus the (normally zero) paths through mean and var.
  dx = ((scale * inv / rows) * (rows * g - d_bias - x_hat * d_scale)
        + g_mean / rows + (2.0 / rows) * g_var * centred)
  return dx.astype(x.dtype), d_scale, d_bias


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class BatchNorm(nn.Module):
  """`flax.linen.BatchNorm` over all axes but the last: same parameters, batch_stats and function."""

  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32
  scale_init: Callable[..., jax.Array] = nn.initializers.ones
  bias_init: Callable[..., jax.Array] = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Normalises [..., C] by batch statistics (training; updates the running ones) or the running ones."""
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(features, jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(features, jnp.float32))
    scale = self.param("scale", self.scale_init, features, self.param_dtype)
    bias = self.param("bias", self.bias_init, features, self.param_dtype)
    if self.use_running_average:
      y = (x - ra_mean.value) * (jax.lax.rsqrt(ra_var.value + self.epsilon) * scale) + bias
    else:
      y, mean, var = batch_norm_train(x, scale, bias, self.epsilon)
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y.astype(self.dtype or jnp.promote_types(x.dtype, self.param_dtype))
