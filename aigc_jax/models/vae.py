"""Convolutional VAE: a strided-conv encoder to (mean, log-variance) and a mirrored decoder.

The encoder halves the resolution with 4x4 stride-2 convolutions (width,
width*2, ...) down to 4x4 (7x7 at 28 px; the stages of `dcgan.stages`, any
power of two from 8 to 256 px), flattens, and a dense layer gives the
posterior mean and log-variance. The decoder mirrors the DCGAN generator
(`ConvTransposeFromVector` then `ConvTranspose2x` stages, ReLU between) without
batch norm, so encode/decode need no mutable state. Its output is per-pixel and
unconstrained: Bernoulli logits or a Gaussian mean, as the trainer's likelihood
reads it. With `learn_std`, the module also holds one scalar parameter
`decoder_log_std` (the Gaussian likelihood's log standard deviation, initialised
to log(`init_std`)). Conditional models (`num_classes > 0`) concatenate a class embedding to
the encoder's features and to z.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.models.dcgan import stages
from aigc_jax.models.layers import ConvDown2x, ConvTranspose2x, ConvTransposeFromVector


class ConvVAE(nn.Module):
  """Encoder, reparameterised sampling and decoder for [N, H, W, C] images in [-1, 1]."""

  latent_dim: int
  width: int
  image_size: int
  channels: int
  num_classes: int = 0
  learn_std: bool = False
  init_std: float = 0.1
  dtype: Any = jnp.float32

  def setup(self) -> None:
    start, num_stages = stages(self.image_size)
    widths = [self.width * 2 ** i for i in range(num_stages)]
    # ConvDown2x: nn.Conv(c, 4x4, stride 2, padding 1)'s parameters and function, faster gradients.
    self.down = [ConvDown2x(c, dtype=self.dtype) for c in widths]
    self.posterior = nn.Dense(2 * self.latent_dim, dtype=self.dtype)
    self.project = ConvTransposeFromVector(widths[-1], start, dtype=self.dtype)
    self.up = [ConvTranspose2x(c, dtype=self.dtype) for c in reversed(widths[:-1])]
    self.to_pixels = ConvTranspose2x(self.channels, dtype=self.dtype)
    if self.num_classes:
      self.embed = nn.Embed(self.num_classes, self.latent_dim)
    if self.learn_std:
      self.decoder_log_std = self.param("decoder_log_std", nn.initializers.constant(math.log(self.init_std)),
                                        (), jnp.float32)

  def _with_labels(self, h: jax.Array, labels: jax.Array | None) -> jax.Array:
    if not self.num_classes:
      return h
    if labels is None:
      raise ValueError(f"a conditional model (num_classes={self.num_classes}) needs labels")
    return jnp.concatenate([h, self.embed(labels).astype(h.dtype)], axis=-1)

  def encode(self, x: jax.Array, labels: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Returns the posterior (mean, logvar), each float32 [N, latent_dim]."""
    h = x
    for conv in self.down:
      h = nn.relu(conv(h))
    h = self._with_labels(h.reshape(h.shape[0], -1), labels)
    mean, logvar = jnp.split(self.posterior(h).astype(jnp.float32), 2, axis=-1)
    return mean, logvar

  def decode(self, z: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    """Returns per-pixel likelihood parameters, float32 [N, H, W, channels]."""
    h = nn.relu(self.project(self._with_labels(z, labels)))
    for up in self.up:
      h = nn.relu(up(h))
    return self.to_pixels(h).astype(jnp.float32)

  def __call__(self, x: jax.Array, key: jax.Array,
               labels: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Encodes, samples z = mean + exp(logvar / 2) * eps with `key`, decodes: (out, mean, logvar)."""
    return self.reconstruct(x, jax.random.normal(key, (x.shape[0], self.latent_dim)), labels)

  def reconstruct(self, x: jax.Array, eps: jax.Array,
                  labels: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Encodes, takes z = mean + exp(logvar / 2) * eps for given eps [N, latent_dim], decodes."""
    mean, logvar = self.encode(x, labels)
    z = mean + jnp.exp(0.5 * logvar) * eps
    return self.decode(z, labels), mean, logvar
