"""Inception-v3 in the FID configuration (pytorch-fid's port of the 2015 TF graph), in Flax.

Module names follow the PyTorch state dict ("Mixed_5b.branch1x1.conv.weight"),
so converting weights is a renaming plus transposes (`convert_inception`).
Outputs: the 2048-d pool3 features, the 1008 logits, and Mixed_6e (for style).
Inputs reach 299 px by one of two tools' rules (`RESIZE_MODES`): pytorch-fid's
bilinear interpolation or clean-fid's antialiased bicubic.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.errors import UserError
from aigc_jax.models.lenet import resize_bilinear

FID_SIZE = 299
NUM_LOGITS = 1008
NUM_FEATURES = 2048
# pytorch_fid: F.interpolate(bilinear, align_corners=False), no antialiasing (pytorch-fid, torch-fidelity
# without its TF mode). clean: clean-fid's PIL bicubic of each channel as a float image, antialiased
# when shrinking, clipped to the pixel range.
RESIZE_MODES = ("pytorch_fid", "clean")
CONVERT_COMMAND = ("python -m aigc_jax.evaluation.convert_inception "
                   "--input=pt_inception-2015-12-05-6726825d.pth --output={path}")


def bicubic_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out, in] weights of PIL's BICUBIC resize (Keys' cubic, a = -0.5), antialiased when shrinking.

  PIL's rule: output pixel i samples the input at (i + 0.5) * in / out; the kernel is widened
  by the shrink factor (not when growing) and its taps are renormalised to sum to 1. Computed
  in float64: positions rounded to float32 (as `jax.image.resize` computes them) move a
  299 px resize's output by up to 0.005 of 255.
  """
  scale = in_size / out_size
  stretch = max(scale, 1.0)
  centre = (np.arange(out_size) + 0.5) * scale
  x = np.abs(np.arange(in_size)[None, :] + 0.5 - centre[:, None]) / stretch
  a = -0.5
  weights = np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                     np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))
  return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_clean(images: jax.Array, height: int, width: int) -> jax.Array:
  """Resizes NHWC images in [-1, 1] like clean-fid: PIL BICUBIC of each channel as a float image,
  clipped to the pixel range (0..255 there, [-1, 1] here: the affine map commutes with both)."""
  if images.shape[1:3] == (height, width):
    return images
  wh = jnp.asarray(bicubic_resize_matrix(images.shape[1], height))
  ww = jnp.asarray(bicubic_resize_matrix(images.shape[2], width))
  out = jnp.einsum("yh,xw,bhwc->byxc", wh, ww, images, precision=jax.lax.Precision.HIGHEST)
  return jnp.clip(out, -1.0, 1.0)


def resize(images: jax.Array, mode: str, size: int) -> jax.Array:
  """Resizes NHWC images to `size` x `size` by the rule `mode` names (one of `RESIZE_MODES`)."""
  if mode == "pytorch_fid":
    return resize_bilinear(images, size, size)
  if mode == "clean":
    return resize_clean(images, size, size)
  raise UserError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")


class BasicConv(nn.Module):
  """Convolution without bias, batch norm (eps 1e-3, running statistics) and ReLU."""
  features: int
  kernel: Sequence[int]
  strides: int = 1
  padding: Sequence[int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, tuple(self.kernel), self.strides,
                padding=[(p, p) for p in self.padding], use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool(x: jax.Array) -> jax.Array:
  # The FID graph averages over the valid pixels only at the borders.
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), (2, 2))


class InceptionA(nn.Module):
  """35x35 block (FID variant: average pooling excludes padding)."""
  pool_features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = BasicConv(64, (1, 1), name="branch1x1")(x)
    b5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
    b5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = BasicConv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Grid reduction 35 -> 17."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = BasicConv(384, (3, 3), strides=2, name="branch3x3")(x)
    bd = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = BasicConv(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
  """17x17 block with factorised 7x7 convolutions."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = self.channels_7x7
    b1 = BasicConv(192, (1, 1), name="branch1x1")(x)
    b7 = BasicConv(c, (1, 1), name="branch7x7_1")(x)
    b7 = BasicConv(c, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv(c, (1, 1), name="branch7x7dbl_1")(x)
    bd = BasicConv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv(c, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv(192, (1, 1), name="branch_pool")(_avg_pool(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Grid reduction 17 -> 8."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
    b3 = BasicConv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
    b7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
  """8x8 block; the FID graph average-pools in Mixed_7b and max-pools in Mixed_7c."""
  max_pool_branch: bool

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = BasicConv(320, (1, 1), name="branch1x1")(x)
    b3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
    bd = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
    if self.max_pool_branch:
      pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool(x)
    bp = BasicConv(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3FID(nn.Module):
  """Images in [-1, 1] (1 or 3 channels, any size) -> {"pool", "logits", "mixed_6e"}.

  Gray is repeated to RGB, then inputs are resized to `resize_to` (299 for FID) by the
  rule `resize_mode` names (see `RESIZE_MODES`).
  """
  resize_to: int = FID_SIZE
  resize_mode: str = "pytorch_fid"

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    x = images.astype(jnp.float32)
    if x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    x = resize(x, self.resize_mode, self.resize_to)
    x = BasicConv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool(x)
    x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool(x)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    x = InceptionC(128, name="Mixed_6b")(x)
    x = InceptionC(160, name="Mixed_6c")(x)
    x = InceptionC(160, name="Mixed_6d")(x)
    mixed_6e = InceptionC(192, name="Mixed_6e")(x)
    x = InceptionD(name="Mixed_7a")(mixed_6e)
    x = InceptionE(max_pool_branch=False, name="Mixed_7b")(x)
    x = InceptionE(max_pool_branch=True, name="Mixed_7c")(x)
    pool = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(NUM_LOGITS, name="fc")(pool)
    return {"pool": pool, "logits": logits, "mixed_6e": mixed_6e}


@functools.lru_cache(maxsize=1)
def _expected_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
  abstract = jax.eval_shape(lambda: InceptionV3FID(75).init(jax.random.key(0), jnp.zeros((1, 75, 75, 3))))
  return tuple((k, tuple(v.shape)) for k, v in traverse_util.flatten_dict(abstract, sep="/").items())


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """Flat variable names of the FID Inception and their shapes (no weights are created)."""
  return dict(_expected_shapes())


def check_variables(got: dict[str, np.ndarray]) -> None:
  """Raises UserError unless flat variables `got` have exactly the FID Inception's names and shapes."""
  expected = expected_shapes()
  missing = sorted(set(expected) - set(got))
  extra = sorted(set(got) - set(expected))
  if missing or extra:
    raise UserError(f"Inception weights do not match the FID architecture: missing {missing[:3]}, "
                    f"unexpected {extra[:3]}")
  for name, shape in expected.items():
    if shape != tuple(got[name].shape):
      raise UserError(f"Inception weight {name} has shape {tuple(got[name].shape)}, expected {shape}")


def load_variables(path: str) -> dict:
  """Loads converted FID Inception weights from an .npz file; UserError says how to make one."""
  if not os.path.isfile(path):
    raise UserError(f"Inception weights {path!r} not found; convert pytorch-fid's "
                    f"pt_inception-2015-12-05-6726825d.pth with: {CONVERT_COMMAND.format(path=path)}")
  with np.load(path) as data:
    flat = {k: data[k] for k in data.files}
  check_variables(flat)
  return traverse_util.unflatten_dict(flat, sep="/")
