"""The U-Net of diffusion and flow models, in the layout of Dhariwal & Nichol's ADM (2021).

`UNet(x, noise_labels, class_labels)` maps images [N,H,W,C] and one noise label per image (the
objective's c_noise, flow time or DDPM timestep) to an output of the images' shape. The noise label
gets a sinusoidal positional embedding of `width` channels (Vaswani et al.; Ho et al.'s timestep
embedding), then Dense(4 width), SiLU, Dense(4 width); a class-conditional model adds a learned
embedding of its label, with one extra row, index `num_classes`, for the null class that
classifier-free guidance samples with.

Level l works at resolution image_size / 2^l with width * channel_mult[l] channels: a 3x3 stem
conv, then per level `num_res_blocks` residual blocks (GroupNorm, SiLU, 3x3 conv, plus a Dense
projection of the embedding; GroupNorm, SiLU, dropout, 3x3 conv initialised to zero; a 1x1 conv
on the skip where the channel count changes), each followed by self-attention when the level's
resolution is in `attn_resolutions`, and a 2x2 average pool between levels. A middle of two
residual blocks (with attention between them at an attention resolution) joins the encoder to a
decoder of `num_res_blocks + 1` blocks per level, each fed the concatenation with the matching
encoder activation, with nearest-neighbour 2x upsampling between levels; GroupNorm, SiLU and a
zero-initialised 3x3 conv give the output, so an untrained network outputs 0. GroupNorm uses
min(32, channels / 4) groups (EDM's choice for narrow layers), or the largest divisor of the
channels below that (a decoder block of width 48 sees 96 + 48 channels); attention has one head
per 64 channels and takes its softmax in float32.

The number of levels is len(channel_mult), so image_size must halve evenly that many times minus
one: 28 with three levels runs at 28, 14, 7. Parameters are float32; `dtype` is the compute dtype.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.diffusion import flat_random

_ZERO = nn.initializers.zeros
# flax's default kernel init, drawn in the form XLA:CPU compiles fast (same values).
_KERNEL = flat_random.as_matrix(nn.initializers.lecun_normal())


def resolutions(image_size: int, num_levels: int) -> tuple[int, ...]:
  """The feature-map size at each level: image_size halved at each level after the first."""
  if num_levels < 1 or image_size % 2 ** (num_levels - 1):
    raise ValueError(f"image size {image_size} does not halve evenly {num_levels - 1} times")
  return tuple(image_size // 2 ** level for level in range(num_levels))


def positional_embedding(x: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
  """[cos(x f_i), sin(x f_i)] with f_i = max_period^(-i / (dim/2)), i < dim/2: [N] -> [N, dim]."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = x.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def num_groups(channels: int) -> int:
  """GroupNorm groups for a layer: the largest divisor of `channels` up to min(32, channels // 4)."""
  most = max(1, min(32, channels // 4))
  return next(g for g in range(most, 0, -1) if channels % g == 0)


def _norm(channels: int, dtype: Any) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=num_groups(channels), epsilon=1e-5, dtype=dtype)


def _conv(features: int, size: int, dtype: Any) -> nn.Conv:
  return nn.Conv(features, (size, size), dtype=dtype, kernel_init=_KERNEL)


class Dropout(nn.Module):
  """flax's nn.Dropout (same mask from the same "dropout" rng), its mask drawn flat."""

  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Zeroes each element with probability `rate` in training, scaling the rest by 1/(1 - rate)."""
    if not train or self.rate == 0:
      return x
    keep = flat_random.bernoulli(self.make_rng("dropout"), 1.0 - self.rate, x.shape)
    return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))


class ResBlock(nn.Module):
  """A residual block with the noise (and class) embedding added after its first conv."""

  features: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array, *, train: bool) -> jax.Array:
    """Applies the block to x [N,H,W,C_in] with embedding emb [N,E]."""
    h = _conv(self.features, 3, self.dtype)(nn.silu(_norm(x.shape[-1], self.dtype)(x)))
    h = h + nn.Dense(self.features, dtype=self.dtype)(nn.silu(emb))[:, None, None, :]
    h = nn.silu(_norm(self.features, self.dtype)(h))
    h = Dropout(self.dropout)(h, train=train)
    h = nn.Conv(self.features, (3, 3), dtype=self.dtype, kernel_init=_ZERO)(h)
    if x.shape[-1] != self.features:
      x = _conv(self.features, 1, self.dtype)(x)
    return x + h


class SelfAttention(nn.Module):
  """Multi-head self-attention over the pixels of a feature map, added residually."""

  head_channels: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Attends over the H*W positions of x [N,H,W,C]."""
    n, height, width, c = x.shape
    heads = max(1, c // self.head_channels)
    qkv = nn.Dense(3 * c, dtype=self.dtype)(_norm(c, self.dtype)(x))
    q, k, v = jnp.split(qkv.reshape(n, height * width, 3 * heads, c // heads), 3, axis=2)
    logits = jnp.einsum("nqhd,nkhd->nhqk", q, k).astype(jnp.float32) / math.sqrt(c // heads)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("nhqk,nkhd->nqhd", weights, v).reshape(n, height, width, c)
    return x + nn.Dense(c, dtype=self.dtype, kernel_init=_ZERO)(out)


def _downsample(x: jax.Array) -> jax.Array:
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


def _upsample(x: jax.Array) -> jax.Array:
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class UNet(nn.Module):
  """Maps noisy images [N,H,W,C], noise labels [N] (and class labels [N]) to [N,H,W,C] float32."""

  image_size: int = 32
  channels: int = 3
  width: int = 64
  channel_mult: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = ()
  dropout: float = 0.0
  num_classes: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, noise_labels: jax.Array, class_labels: jax.Array | None = None,
               *, train: bool) -> jax.Array:
    """Predicts the objective's target for a batch."""
    if self.num_classes and class_labels is None:
      raise ValueError(f"a conditional model (num_classes={self.num_classes}) needs labels")
    sizes = resolutions(self.image_size, len(self.channel_mult))
    emb_dim = 4 * self.width
    emb = positional_embedding(noise_labels, self.width)
    emb = nn.Dense(emb_dim, dtype=self.dtype)(emb)
    emb = nn.Dense(emb_dim, dtype=self.dtype)(nn.silu(emb))
    if self.num_classes:
      emb = emb + nn.Embed(self.num_classes + 1, emb_dim, dtype=self.dtype, name="class_embed")(
          class_labels)

    block = lambda features: ResBlock(features, self.dropout, self.dtype)
    attend = lambda level, h: (SelfAttention(dtype=self.dtype)(h)
                               if sizes[level] in self.attn_resolutions else h)

    h = _conv(self.width * self.channel_mult[0], 3, self.dtype)(x)
    skips = [h]
    for level, mult in enumerate(self.channel_mult):
      for _ in range(self.num_res_blocks):
        h = attend(level, block(self.width * mult)(h, emb, train=train))
        skips.append(h)
      if level < len(self.channel_mult) - 1:
        h = _downsample(h)
        skips.append(h)

    bottom = len(self.channel_mult) - 1
    h = block(h.shape[-1])(h, emb, train=train)
    h = attend(bottom, h)
    h = block(h.shape[-1])(h, emb, train=train)

    for level in reversed(range(len(self.channel_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = attend(level, block(self.width * self.channel_mult[level])(h, emb, train=train))
      if level > 0:
        h = _upsample(h)

    h = nn.silu(_norm(h.shape[-1], self.dtype)(h))
    out = nn.Conv(self.channels, (3, 3), dtype=self.dtype, kernel_init=_ZERO)(h)
    return out.astype(jnp.float32)
