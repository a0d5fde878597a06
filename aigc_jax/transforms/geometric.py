"""Geometric transforms of NHWC batches: affine and perspective warps, flips, crops, elastic.

Matrices follow OpenCV: pixel coordinates with x right and y down, pixel
centres at integers, and a matrix maps source to destination (the meaning of
`cv2.warpAffine(src, M, (W, H))` without `WARP_INVERSE_MAP`). Every warp is
differentiable with respect to the images and to the matrix entries. The
`random_*` ops draw per-example parameters from a key: `op(key, images, ...)`.
"""

from __future__ import annotations

from typing import Sequence

import functools

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.transforms import sampling

Range = tuple[float, float]


def _stack_affine(a, b, c, d, e, f) -> jax.Array:
  """Builds [...,2,3] matrices from broadcastable entries."""
  a, b, c, d, e, f = jnp.broadcast_arrays(*(jnp.asarray(v, jnp.float32) for v in (a, b, c, d, e, f)))
  return jnp.stack([jnp.stack([a, b, c], -1), jnp.stack([d, e, f], -1)], -2)


def rotation_matrix(angle_deg, center: Sequence[float], scale=1.0) -> jax.Array:
  """Rotation by angle_deg counter-clockwise on screen about center (x, y), as cv2.getRotationMatrix2D."""
  theta = jnp.deg2rad(jnp.asarray(angle_deg, jnp.float32))
  alpha, beta = scale * jnp.cos(theta), scale * jnp.sin(theta)
  cx, cy = center
  return _stack_affine(alpha, beta, (1 - alpha) * cx - beta * cy, -beta, alpha, beta * cx + (1 - alpha) * cy)


def scale_matrix(sx, sy, center: Sequence[float] = (0.0, 0.0)) -> jax.Array:
  """Scaling by (sx, sy) about center (x, y)."""
  cx, cy = center
  return _stack_affine(sx, 0.0, cx - sx * cx, 0.0, sy, cy - sy * cy)


def translation_matrix(tx, ty) -> jax.Array:
  """Translation by (tx, ty) pixels."""
  return _stack_affine(1.0, 0.0, tx, 0.0, 1.0, ty)


def shear_matrix(shear_x_deg, shear_y_deg=0.0, center: Sequence[float] = (0.0, 0.0)) -> jax.Array:
  """Shear about center: x += tan(shear_x) * (y - cy), y += tan(shear_y) * (x - cx)."""
  kx = jnp.tan(jnp.deg2rad(jnp.asarray(shear_x_deg, jnp.float32)))
  ky = jnp.tan(jnp.deg2rad(jnp.asarray(shear_y_deg, jnp.float32)))
  cx, cy = center
  return _stack_affine(1.0, kx, -kx * cy, ky, 1.0, -ky * cx)


def _to_3x3(m: jax.Array) -> jax.Array:
  last = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 1.0], m.dtype), m.shape[:-2] + (1, 3))
  return jnp.concatenate([m, last], axis=-2)


def compose_affine(*matrices: jax.Array) -> jax.Array:
  """The affine map applying matrices[0] first, then matrices[1], ... ([...,2,3] each)."""
  out = _to_3x3(jnp.asarray(matrices[0], jnp.float32))
  for m in matrices[1:]:
    out = _to_3x3(jnp.asarray(m, jnp.float32)) @ out
  return out[..., :2, :]


def invert_affine(m: jax.Array) -> jax.Array:
  """Inverse of [...,2,3] affine matrices."""
  a, b, c = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
  d, e, f = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
  inv_det = 1.0 / (a * e - b * d)
  return _stack_affine(e * inv_det, -b * inv_det, (b * f - c * e) * inv_det,
                       -d * inv_det, a * inv_det, (c * d - a * f) * inv_det)


def _grid(h: int, w: int) -> tuple[jax.Array, jax.Array]:
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
  return ys, xs


@functools.partial(jax.jit, static_argnames=("order", "mode"))
def warp_affine(images: jax.Array, matrices: jax.Array, *, order: int = 1, mode: str = "constant",
                cval: float = 0.0) -> jax.Array:
  """Warps [N,H,W,C] images by forward affine maps [N,2,3] (or one [2,3]), as cv2.warpAffine."""
  n, h, w, _ = images.shape
  inv = jnp.broadcast_to(invert_affine(jnp.asarray(matrices, jnp.float32)), (n, 2, 3))

  def coords(inv):
    gy, gx = _grid(h, w)
    row = lambda i: inv[:, i, 0, None, None] * gx + inv[:, i, 1, None, None] * gy + inv[:, i, 2, None, None]
    return row(1), row(0)

  return sampling.warp(images, coords, inv, order=order, mode=mode, cval=cval)


@functools.partial(jax.jit, static_argnames=("order", "mode"))
def warp_perspective(images: jax.Array, homographies: jax.Array, *, order: int = 1,
                     mode: str = "constant", cval: float = 0.0) -> jax.Array:
  """Warps [N,H,W,C] images by forward 3x3 homographies [N,3,3] (or one), as cv2.warpPerspective."""
  n, h, w, _ = images.shape
  inv = jnp.broadcast_to(jnp.linalg.inv(jnp.asarray(homographies, jnp.float32)), (n, 3, 3))

  def coords(inv):
    gy, gx = _grid(h, w)
    row = lambda i: inv[:, i, 0, None, None] * gx + inv[:, i, 1, None, None] * gy + inv[:, i, 2, None, None]
    xs, ys, ws = row(0), row(1), row(2)
    # OpenCV sends points whose w is 0 to (0, 0); keep that, without a NaN gradient.
    inv_w = jnp.where(ws == 0, 0.0, 1.0 / jnp.where(ws == 0, 1.0, ws))
    return ys * inv_w, xs * inv_w

  return sampling.warp(images, coords, inv, order=order, mode=mode, cval=cval)


def homography_from_points(src: jax.Array, dst: jax.Array) -> jax.Array:
  """The 3x3 homographies mapping 4 points src [...,4,2] (x, y) onto dst, as cv2.getPerspectiveTransform."""
  x, y = src[..., 0], src[..., 1]
  u, v = dst[..., 0], dst[..., 1]
  zero, one = jnp.zeros_like(x), jnp.ones_like(x)
  rows_u = jnp.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
  rows_v = jnp.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
  a = jnp.concatenate([rows_u, rows_v], axis=-2)
  b = jnp.concatenate([u, v], axis=-1)
  h = jnp.linalg.solve(a, b[..., None])[..., 0]
  return jnp.concatenate([h, jnp.ones_like(h[..., :1])], -1).reshape(h.shape[:-1] + (3, 3))


def hflip(images: jax.Array) -> jax.Array:
  """Mirrors images left-right."""
  return images[:, :, ::-1]


def vflip(images: jax.Array) -> jax.Array:
  """Mirrors images top-bottom."""
  return images[:, ::-1]


def _per_example(key: jax.Array, n: int, p: float) -> jax.Array:
  return jax.random.bernoulli(key, p, (n,))[:, None, None, None]


@jax.jit
def random_flip(key: jax.Array, images: jax.Array, horizontal: float = 0.5,
                vertical: float = 0.0) -> jax.Array:
  """Flips each example left-right with probability `horizontal`, top-bottom with `vertical`."""
  kh, kv = jax.random.split(key)
  n = images.shape[0]
  images = jnp.where(_per_example(kh, n, horizontal), hflip(images), images)
  return jnp.where(_per_example(kv, n, vertical), vflip(images), images)


def _uniform(key: jax.Array, n: int, bounds: Range) -> jax.Array:
  lo, hi = bounds
  return jax.random.uniform(key, (n,), jnp.float32, lo, hi)


def random_affine_matrices(key: jax.Array, n: int, height: int, width: int, rotate: Range = (-15.0, 15.0),
                           scale: Range = (0.9, 1.1), translate: tuple[float, float] = (0.1, 0.1),
                           shear: Range = (0.0, 0.0)) -> jax.Array:
  """Draws n affine maps [n,2,3] about the image centre; translate is a fraction of (W, H)."""
  ka, ks, kx, ky, kh = jax.random.split(key, 5)
  center = ((width - 1) / 2.0, (height - 1) / 2.0)
  tx = _uniform(kx, n, (-translate[0] * width, translate[0] * width))
  ty = _uniform(ky, n, (-translate[1] * height, translate[1] * height))
  return compose_affine(shear_matrix(_uniform(kh, n, shear), 0.0, center),
                        rotation_matrix(_uniform(ka, n, rotate), center, _uniform(ks, n, scale)),
                        translation_matrix(tx, ty))


@functools.partial(jax.jit, static_argnames=("order", "mode"))
def random_affine(key: jax.Array, images: jax.Array, rotate: Range = (-15.0, 15.0),
                  scale: Range = (0.9, 1.1), translate: tuple[float, float] = (0.1, 0.1),
                  shear: Range = (0.0, 0.0), *, order: int = 1, mode: str = "constant",
                  cval: float = 0.0) -> jax.Array:
  """Rotates (degrees), scales, translates (fraction of size) and shears (degrees) each example at random."""
  n, h, w, _ = images.shape
  m = random_affine_matrices(key, n, h, w, rotate, scale, translate, shear)
  return warp_affine(images, m, order=order, mode=mode, cval=cval)


@functools.partial(jax.jit, static_argnames=("order", "mode"))
def random_perspective(key: jax.Array, images: jax.Array, distortion: float = 0.3, *, order: int = 1,
                       mode: str = "constant", cval: float = 0.0) -> jax.Array:
  """Moves each corner by up to distortion/2 of the image size at random and warps to match."""
  n, h, w, _ = images.shape
  # The outer pixel edges, not the corner pixels' centres, which coincide in a one-pixel-wide image.
  corners = jnp.asarray([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]], jnp.float32)
  shift = jax.random.uniform(key, (n, 4, 2), jnp.float32, -0.5, 0.5) * distortion * jnp.asarray([w, h], jnp.float32)
  hom = homography_from_points(jnp.broadcast_to(corners, (n, 4, 2)), corners + shift)
  return warp_perspective(images, hom, order=order, mode=mode, cval=cval)


def crop_matrix(x0, y0, crop_w, crop_h, out_w: int, out_h: int) -> jax.Array:
  """Maps the box [x0, x0+crop_w] x [y0, y0+crop_h] (pixel edges) onto an out_w x out_h image."""
  sx, sy = out_w / crop_w, out_h / crop_h
  return _stack_affine(sx, 0.0, (0.5 - x0) * sx - 0.5, 0.0, sy, (0.5 - y0) * sy - 0.5)


@functools.partial(jax.jit, static_argnames=("order",))
def random_crop_resize(key: jax.Array, images: jax.Array, scale: Range = (0.5, 1.0),
                       ratio: Range = (3 / 4, 4 / 3), *, order: int = 1) -> jax.Array:
  """Crops a random box (area fraction in `scale`, aspect in `ratio`) per example, resized to full size."""
  n, h, w, _ = images.shape
  ka, kr, kx, ky = jax.random.split(key, 4)
  area = _uniform(ka, n, scale)
  aspect = jnp.exp(_uniform(kr, n, (jnp.log(ratio[0]), jnp.log(ratio[1]))))
  cw = jnp.minimum(w * jnp.sqrt(area * aspect), w)
  ch = jnp.minimum(h * jnp.sqrt(area / aspect), h)
  x0 = jax.random.uniform(kx, (n,)) * (w - cw)
  y0 = jax.random.uniform(ky, (n,)) * (h - ch)
  return warp_affine(images, crop_matrix(x0, y0, cw, ch, w, h), order=order, mode="edge")


def gaussian_kernel(sigma: float) -> np.ndarray:
  """A normalised 1-D Gaussian of radius ceil(3 sigma)."""
  radius = max(1, int(np.ceil(3 * sigma)))
  k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  return (k / k.sum()).astype(np.float32)


def gaussian_blur(fields: jax.Array, sigma: float) -> jax.Array:
  """Blurs [N,H,W] fields with a separable Gaussian, reflecting at the borders."""
  k = jnp.asarray(gaussian_kernel(sigma))
  r = (k.shape[0] - 1) // 2
  x = fields
  for axis in (1, 2):
    pad = [(0, 0)] * 3
    pad[axis] = (r, r)
    xp = jnp.pad(x, pad, mode="symmetric")
    size = x.shape[axis]
    x = sum(k[i] * jax.lax.slice_in_dim(xp, i, i + size, axis=axis) for i in range(k.shape[0]))
  return x


@functools.partial(jax.jit, static_argnames=("sigma", "order", "mode"))
def elastic(key: jax.Array, images: jax.Array, alpha: float = 2.0, sigma: float = 3.0, *, order: int = 1,
            mode: str = "reflect", cval: float = 0.0) -> jax.Array:
  """Elastic distortion: a Gaussian-smoothed random displacement field with RMS `alpha` pixels."""
  n, h, w, _ = images.shape
  noise = jax.random.uniform(key, (2, n, h, w), jnp.float32, -1.0, 1.0)
  # Divide by the smoothed field's expected std so that alpha is the RMS displacement.
  k = gaussian_kernel(sigma)
  std = np.sqrt(1.0 / 3.0) * float(np.sum(k ** 2))
  dy, dx = (gaussian_blur(f, sigma) * (alpha / std) for f in noise)
  gy, gx = _grid(h, w)
  return sampling.sample(images, gy + dy, gx + dx, order=order, mode=mode, cval=cval)
