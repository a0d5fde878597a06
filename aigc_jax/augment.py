"""Differentiable augmentation of the discriminator's inputs: DiffAugment and ADA.

Both are built from `aigc_jax.transforms` (affine matrices and `warp_affine`)
and are differentiable with respect to the images, so the generator learns
through them. They are applied to real and generated images alike, in the D
step and in the G step, so D never sees un-augmented data and the augmentation
does not leak into the samples.

- DiffAugment (Zhao et al. 2020): translation (up to 1/8 of the size, zero
  padding), cutout (a square of half the size) and colour (brightness,
  saturation, contrast), each on every example.
- ADA (Karras et al. 2020): the "blit" group (x-flip, 90-degree rotation,
  integer translation) and the "geom" group (isotropic scaling, arbitrary
  rotation, anisotropic scaling, fractional translation), as one warp with
  reflect padding, then the "color" group (brightness, contrast, luma flip, hue
  rotation and saturation), each op applied to each example with probability p.
  `gan.ada_pipeline` picks the groups by StyleGAN2-ADA's names (default "bgc":
  all three). `ada_adjust` moves p by the sign of E[sign(D(real))] - target.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from aigc_jax import transforms

Augment = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def _per_example(key: jax.Array, images: jax.Array, shape=()) -> jax.Array:
  return jax.random.uniform(key, (images.shape[0],) + shape, jnp.float32)


def translation(key: jax.Array, images: jax.Array, ratio: float = 0.125) -> jax.Array:
  """Shifts each example by up to `ratio` of its size (whole pixels), filling with zeros."""
  n, h, w, _ = images.shape
  kx, ky = jax.random.split(key)
  sx, sy = int(w * ratio + 0.5), int(h * ratio + 0.5)
  tx = jax.random.randint(kx, (n,), -sx, sx + 1).astype(jnp.float32)
  ty = jax.random.randint(ky, (n,), -sy, sy + 1).astype(jnp.float32)
  return transforms.warp_affine(images, transforms.translation_matrix(tx, ty), order=0)


def cutout(key: jax.Array, images: jax.Array, ratio: float = 0.5) -> jax.Array:
  """Zeroes a square of `ratio` of the size at a random centre in each example."""
  n, h, w, _ = images.shape
  kx, ky = jax.random.split(key)
  size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
  cy = jax.random.randint(ky, (n, 1, 1), 0, h + 1 - size_y % 2)
  cx = jax.random.randint(kx, (n, 1, 1), 0, w + 1 - size_x % 2)
  rows = jnp.arange(h)[None, :, None] - (cy - size_y // 2)
  cols = jnp.arange(w)[None, None, :] - (cx - size_x // 2)
  inside = (rows >= 0) & (rows < size_y) & (cols >= 0) & (cols < size_x)
  return images * (~inside)[..., None].astype(images.dtype)


def color(key: jax.Array, images: jax.Array) -> jax.Array:
  """Random brightness (+U(-0.5,0.5)), saturation (x U(0,2)) and contrast (x U(0.5,1.5)) per example."""
  kb, ks, kc = jax.random.split(key, 3)
  shape = (1, 1, 1)
  x = images + (_per_example(kb, images, shape) - 0.5)
  mean = jnp.mean(x, axis=3, keepdims=True)
  x = (x - mean) * (_per_example(ks, images, shape) * 2.0) + mean
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) * (_per_example(kc, images, shape) + 0.5) + mean


DIFFAUGMENT_OPS = {"translation": translation, "cutout": cutout, "color": color}


def diffaugment(key: jax.Array, images: jax.Array, policy: Sequence[str]) -> jax.Array:
  """Applies the DiffAugment ops named in `policy`, in the order colour, translation, cutout."""
  keys = jax.random.split(key, 3)
  for k, name in zip(keys, ("color", "translation", "cutout")):
    if name in policy:
      images = DIFFAUGMENT_OPS[name](k, images)
  return images


def _lognormal(key: jax.Array, n: int, std: float) -> jax.Array:
  return jnp.exp(std * jax.random.normal(key, (n,), jnp.float32))


def _gate(key: jax.Array, n: int, p: jax.Array, value: jax.Array, identity: float) -> jax.Array:
  """`value` where a per-example coin with probability p comes up, else `identity`."""
  return jnp.where(jax.random.uniform(key, (n,)) < p, value, identity)


# gan.ada_pipeline -> the op groups it applies.
ADA_GROUPS = {"blit": ("blit",), "geom": ("geom",), "color": ("color",), "bg": ("blit", "geom"),
              "bgc": ("blit", "geom", "color")}


def ada_matrices(key: jax.Array, n: int, height: int, width: int, p: jax.Array,
                 groups: Sequence[str] = ("blit", "geom")) -> jax.Array:
  """Draws ADA's geometric ops of `groups` ("blit", "geom") as n source-to-destination affine maps [n, 2, 3].

  The draws are the same whichever groups are on; a group that is off keeps its ops at the identity.
  """
  keys = iter(jax.random.split(key, 16))
  center = ((width - 1) / 2.0, (height - 1) / 2.0)
  p_rot = 1.0 - jnp.sqrt(1.0 - p)  # Two rotation stages: P(any rotation) stays p.
  flip = _gate(next(keys), n, p, 1.0 - 2.0 * jax.random.bernoulli(next(keys), 0.5, (n,)), 1.0)
  quarter = _gate(next(keys), n, p, 90.0 * jax.random.randint(next(keys), (n,), 0, 4), 0.0)
  shift = jnp.round(jax.random.uniform(next(keys), (2, n), minval=-0.125, maxval=0.125)
                    * jnp.array([[width], [height]]))
  shift = jnp.where(jax.random.uniform(next(keys), (n,)) < p, shift, 0.0)
  iso = _gate(next(keys), n, p, _lognormal(next(keys), n, 0.2 * math.log(2)), 1.0)
  rot1 = _gate(next(keys), n, p_rot, jax.random.uniform(next(keys), (n,), minval=-180, maxval=180), 0.0)
  aniso = _gate(next(keys), n, p, _lognormal(next(keys), n, 0.2 * math.log(2)), 1.0)
  rot2 = _gate(next(keys), n, p_rot, jax.random.uniform(next(keys), (n,), minval=-180, maxval=180), 0.0)
  frac = 0.125 * jax.random.normal(next(keys), (2, n)) * jnp.array([[width], [height]])
  frac = jnp.where(jax.random.uniform(next(keys), (n,)) < p, frac, 0.0)
  if "blit" not in groups:
    flip, quarter, shift = jnp.ones_like(flip), jnp.zeros_like(quarter), jnp.zeros_like(shift)
  if "geom" not in groups:
    iso, aniso = jnp.ones_like(iso), jnp.ones_like(aniso)
    rot1, rot2, frac = jnp.zeros_like(rot1), jnp.zeros_like(rot2), jnp.zeros_like(frac)
  return transforms.compose_affine(
      transforms.scale_matrix(flip, 1.0, center),
      transforms.rotation_matrix(quarter, center),
      transforms.translation_matrix(shift[0], shift[1]),
      transforms.scale_matrix(iso, iso, center),
      transforms.rotation_matrix(rot1, center),
      transforms.scale_matrix(aniso, 1.0 / aniso, center),
      transforms.rotation_matrix(rot2, center),
      transforms.translation_matrix(frac[0], frac[1]))


def ada_color(key: jax.Array, images: jax.Array, p: jax.Array) -> jax.Array:
  """ADA's colour pipeline: per-example brightness, contrast, luma flip, hue and saturation."""
  n, c = images.shape[0], images.shape[-1]
  keys = iter(jax.random.split(key, 10))
  luma = jnp.full((c,), 1.0 / math.sqrt(c))
  outer = jnp.outer(luma, luma)
  eye = jnp.eye(c)
  brightness = _gate(next(keys), n, p, 0.2 * jax.random.normal(next(keys), (n,)), 0.0)
  contrast = _gate(next(keys), n, p, _lognormal(next(keys), n, 0.5 * math.log(2)), 1.0)
  flip = _gate(next(keys), n, p, jax.random.bernoulli(next(keys), 0.5, (n,)).astype(jnp.float32), 0.0)
  matrix = contrast[:, None, None] * (eye - 2.0 * flip[:, None, None] * outer)
  if c == 3:
    # Hue: rotation about the luma axis (Rodrigues); saturation: scale off the luma axis.
    theta = _gate(next(keys), n, p, jax.random.uniform(next(keys), (n,), minval=-math.pi, maxval=math.pi), 0.0)
    cross = jnp.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / math.sqrt(3)
    hue = (jnp.cos(theta)[:, None, None] * (eye - outer) + outer
           + jnp.sin(theta)[:, None, None] * cross)
    sat = _gate(next(keys), n, p, _lognormal(next(keys), n, math.log(2)), 1.0)
    matrix = matrix @ hue @ (outer + sat[:, None, None] * (eye - outer))
  # Brightness first, as in ADA: contrast scales the offset and the luma flip negates it.
  return jnp.einsum("nij,nhwj->nhwi", matrix, images + brightness[:, None, None, None])


def ada(key: jax.Array, images: jax.Array, p: jax.Array, pipeline: str = "bgc") -> jax.Array:
  """Applies the ops of ADA's `pipeline` (see ADA_GROUPS), each to each example with probability p."""
  groups = ADA_GROUPS[pipeline]
  n, h, w, _ = images.shape
  k_geom, k_color = jax.random.split(key)
  geometric = [g for g in groups if g != "color"]
  if geometric:
    images = transforms.warp_affine(images, ada_matrices(k_geom, n, h, w, p, geometric), mode="reflect")
  return ada_color(k_color, images, p) if "color" in groups else images


def ada_adjust(p: jax.Array, real_sign: jax.Array, batch_size: int, target: float,
               speed_images: float) -> jax.Array:
  """Moves p towards keeping `real_sign` = E[sign(D(real))] over a batch of `batch_size` at `target`:
  up when D is over-confident, down when not."""
  return jnp.clip(p + jnp.sign(real_sign - target) * (batch_size / speed_images), 0.0, 1.0)


def make_augment(config: ml_collections.ConfigDict) -> Augment:
  """Returns the config's `augment(key, images, p) -> images` (p matters for ADA only)."""
  kind = config.gan.augment
  if kind == "none":
    return lambda key, images, p: images
  if kind == "diffaugment":
    policy = tuple(op.strip() for op in config.gan.diffaugment.split(",") if op.strip())
    return lambda key, images, p: diffaugment(key, images, policy)
  if kind == "ada":
    pipeline = config.gan.ada_pipeline
    return lambda key, images, p: ada(key, images, p, pipeline)
  raise ValueError(f"unknown augmentation {kind!r}")
