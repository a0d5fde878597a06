"""DCGAN generator and discriminator (Radford et al. 2016) for 28 px and powers of two from 8 to 256.

At 64 px they are the pytorch/examples DCGAN: G maps the latent (a 1x1 map) to
4x4 x width*8, then doubles the size with 4x4 stride-2 transposed convolutions
(width*4, *2, *1, channels) with batch norm and ReLU between, tanh at the end;
D mirrors it with 4x4 stride-2 convolutions, LeakyReLU(0.2), batch norm on all
but the first, and a 4x4 VALID convolution to one logit. Every size has
log2(size) - 2 doubling stages from 4x4: smaller sizes drop the widest stages,
larger ones add wider ones (128 px starts from 4x4 x width*16); 28 px starts
from 7x7 (7 -> 14 -> 28). Convolutions have no bias
where batch norm follows (and none anywhere with d_norm="batch", as in the
example), and weights are initialised N(0, 0.02), batch-norm scales N(1, 0.02). With
`norm="none"` G has no batch norm and its hidden convolutions have biases, so each sample depends
on its own latent alone.

With `norm="spectral"` every D convolution is spectrally normalised
(`normalization.SpectralConv`, Miyato et al. 2018) and has a bias, and there is no batch norm.

With `minibatch_std=G > 0`, D appends one feature map before its last convolution: the
standard deviation of its features over groups of G examples, averaged to one number per
group (StyleGAN's minibatch standard deviation, Karras et al. 2018), so D can see a batch
of samples that lacks variety.

Conditional models (`num_classes > 0`) concatenate a class embedding to z in G
and add a projection term <embed(y), sum_hw features> to D's logit
(Miyato & Koyama 2018).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.models import layers
from aigc_jax.models.layers import ConvTranspose2x, ConvTransposeFromVector
from aigc_jax.models.normalization import BatchNorm, SpectralConv

_WEIGHT_INIT = nn.initializers.normal(0.02)


def _scale_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def stages(image_size: int) -> tuple[int, int]:
  """Returns (smallest feature-map size, number of 2x resolution stages) for an image size."""
  if image_size == 28:
    return 7, 2
  if 8 <= image_size <= 256 and image_size & (image_size - 1) == 0:
    return 4, image_size.bit_length() - 3  # 4 * 2**stages == image_size
  raise ValueError(f"DCGAN image size must be 28 or a power of two from 8 to 256; got {image_size}")


def minibatch_stddev(x: jax.Array, group_size: int) -> jax.Array:
  """Appends to [N,H,W,C] features a map of their std over groups of `group_size` examples."""
  n, h, w, c = x.shape
  group = min(group_size, n)
  if n % group:
    raise ValueError(f"minibatch std groups of {group} do not divide a batch of {n}")
  # Example i joins group i % (n // group), as in StyleGAN: strided, not contiguous.
  y = x.astype(jnp.float32).reshape(group, n // group, h, w, c)
  std = jnp.sqrt(jnp.var(y, axis=0) + 1e-8).mean(axis=(1, 2, 3))
  maps = jnp.broadcast_to(jnp.tile(std, group)[:, None, None, None], (n, h, w, 1))
  return jnp.concatenate([x, maps.astype(x.dtype)], axis=-1)


def _check_labels(labels: jax.Array | None, num_classes: int) -> None:
  if num_classes and labels is None:
    raise ValueError(f"a conditional model (num_classes={num_classes}) needs labels")


def _batch_norm(train: bool, dtype: Any) -> BatchNorm:
  # PyTorch's momentum 0.1 and eps 1e-5, as in the reference DCGAN.
  return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                   scale_init=_scale_init)


class Generator(nn.Module):
  """Maps latents [N, latent_dim] (and labels [N]) to images [N, H, W, channels] in [-1, 1]."""

  image_size: int = 64
  channels: int = 3
  latent_dim: int = 100
  width: int = 64
  num_classes: int = 0
  norm: str = "batch"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, labels: jax.Array | None = None, *, train: bool) -> jax.Array:
    """Generates a batch of images from latents."""
    _check_labels(labels, self.num_classes)
    if self.norm not in ("batch", "none"):
      raise ValueError(f"norm must be 'batch' or 'none', got {self.norm!r}")
    start, num_stages = stages(self.image_size)
    if self.num_classes:
      z = jnp.concatenate([z, nn.Embed(self.num_classes, self.latent_dim, name="embed")(labels)], -1)
    batch_norm = self.norm == "batch"
    normalize = (lambda x: _batch_norm(train, self.dtype)(x)) if batch_norm else (lambda x: x)
    x = ConvTransposeFromVector(self.width * 2 ** (num_stages - 1), start, use_bias=not batch_norm,
                                dtype=self.dtype, kernel_init=_WEIGHT_INIT)(z)
    x = nn.relu(normalize(x))
    for i in reversed(range(num_stages - 1)):
      x = ConvTranspose2x(self.width * 2 ** i, use_bias=not batch_norm, dtype=self.dtype,
                          kernel_init=_WEIGHT_INIT)(x)
      x = nn.relu(normalize(x))
    x = ConvTranspose2x(self.channels, use_bias=False, dtype=self.dtype, kernel_init=_WEIGHT_INIT)(x)
    return jnp.tanh(x).astype(jnp.float32)


class Discriminator(nn.Module):
  """Maps images [N, H, W, C] in [-1, 1] (and labels [N]) to real/fake logits [N]."""

  image_size: int = 64
  width: int = 64
  num_classes: int = 0
  norm: str = "batch"
  minibatch_std: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, labels: jax.Array | None = None, *,
               train: bool) -> jax.Array:
    """Scores a batch of images."""
    _check_labels(labels, self.num_classes)
    if self.norm not in ("batch", "none", "spectral"):
      raise ValueError(f"norm must be 'batch', 'none' or 'spectral', got {self.norm!r}")
    if images.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"expected {self.image_size}x{self.image_size} images, got {images.shape}")
    start, num_stages = stages(self.image_size)
    x = images
    for i in range(num_stages):
      x = self._conv(self.width * 2 ** i, 4, 2, x, train, f"Conv_{i}")
      if i > 0 and self.norm == "batch":
        x = _batch_norm(train, self.dtype)(x)
      x = nn.leaky_relu(x, 0.2)
    last = minibatch_stddev(x, self.minibatch_std) if self.minibatch_std else x
    logits = self._conv(1, start, 1, last, train, f"Conv_{num_stages}")
    logits = logits.reshape(-1).astype(jnp.float32)
    if self.num_classes:
      features = x.astype(jnp.float32).sum(axis=(1, 2))
      embed = nn.Embed(self.num_classes, features.shape[-1], name="embed")(labels)
      logits = logits + jnp.sum(embed * features, axis=-1)
    return logits

  def _conv(self, features: int, size: int, stride: int, x: jax.Array, train: bool,
             name: str) -> jax.Array:
    # A 4x4 stride-2 padding-1 conv, or (stride 1) a VALID conv of the whole size x size map.
    if self.norm == "spectral":
      op = layers.conv_down_2x if stride == 2 else layers.conv_to_vector
      return SpectralConv(features, (size, size), op, dtype=self.dtype, kernel_init=_WEIGHT_INIT,
                          name=name)(x, train=train)
    # Same parameters as nn.Conv (checkpoints agree), faster gradients on XLA:CPU; see layers.py.
    use_bias = self.norm == "none"
    if stride == 2:
      return layers.ConvDown2x(features, use_bias=use_bias, dtype=self.dtype,
                               kernel_init=_WEIGHT_INIT, name=name)(x)
    return layers.ConvToVector(features, size, use_bias=use_bias, dtype=self.dtype,
                               kernel_init=_WEIGHT_INIT, name=name)(x)
