"""Noise mapping: procedural noise fields, noise-driven warps, pixel noise, textures and palettes.

Fields are float32 [N,H,W] with one independent field per example, drawn from a
key at any size (the lattice need not divide the image). Textures and palettes
turn fields into images in [-1, 1], so new images can come from a seed alone.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.transforms import sampling

TEXTURES = ("clouds", "marble", "wood", "turbulence")
# RGB stops (0..255) from low to high field values.
PALETTES = {
    "gray": [(0, 0, 0), (255, 255, 255)],
    "fire": [(0, 0, 0), (128, 0, 0), (230, 90, 0), (255, 220, 60), (255, 255, 230)],
    "ocean": [(0, 10, 40), (0, 60, 120), (30, 140, 190), (200, 240, 255)],
    "forest": [(20, 30, 10), (40, 90, 30), (110, 150, 60), (220, 220, 150)],
    "sunset": [(40, 10, 60), (160, 30, 90), (250, 120, 60), (255, 220, 120)],
    "marble": [(40, 40, 50), (150, 140, 135), (235, 230, 220), (255, 255, 255)],
}


def _fade(t: jax.Array) -> jax.Array:
  return ((6 * t - 15) * t + 10) * t * t * t


def _lattice(size: int, scale: float) -> tuple[jax.Array, jax.Array, int]:
  """Cell index, in-cell fraction and lattice length for pixel centres along one axis."""
  u = (jnp.arange(size, dtype=jnp.float32) + 0.5) / scale
  i = jnp.floor(u)
  return i.astype(jnp.int32), u - i, int(np.ceil(size / scale)) + 1


def _gradient_noise(u: jax.Array, height: int, width: int, scale: float) -> jax.Array:
  """Perlin noise [N,H,W] whose lattice gradient angles are 2 pi u, u [N,gh,gw] in [0, 1)."""
  iy, fy, _ = _lattice(height, scale)
  ix, fx, _ = _lattice(width, scale)
  angle = 2 * np.pi * u
  grads = jnp.stack([jnp.cos(angle), jnp.sin(angle)])
  fy, fx = fy[:, None], fx[None, :]

  def corner(dy, dx):  # Lattice rows depend on y only and columns on x only: two 1-D takes.
    g = jnp.take(jnp.take(grads, iy + dy, axis=2, mode="clip"), ix + dx, axis=3, mode="clip")
    return g[0] * (fx - dx) + g[1] * (fy - dy)

  sy, sx = _fade(fy), _fade(fx)
  top = corner(0, 0) * (1 - sx) + corner(0, 1) * sx
  bottom = corner(1, 0) * (1 - sx) + corner(1, 1) * sx
  # A 2-D Perlin value is at most sqrt(1/2) in magnitude.
  return (top * (1 - sy) + bottom * sy) * np.sqrt(2.0)


def _value_noise(u: jax.Array, height: int, width: int, scale: float) -> jax.Array:
  """Value noise [N,H,W] with lattice values 2u - 1, u [N,gh,gw] in [0, 1)."""
  iy, fy, _ = _lattice(height, scale)
  ix, fx, _ = _lattice(width, scale)
  values = 2 * u - 1
  at = lambda dy, dx: jnp.take(jnp.take(values, iy + dy, axis=1, mode="clip"), ix + dx, axis=2, mode="clip")
  sy, sx = _fade(fy)[:, None], _fade(fx)[None, :]
  top = at(0, 0) * (1 - sx) + at(0, 1) * sx
  bottom = at(1, 0) * (1 - sx) + at(1, 1) * sx
  return top * (1 - sy) + bottom * sy


_BASES = {"perlin": _gradient_noise, "value": _value_noise}


def _lattice_shape(height: int, width: int, scale: float) -> tuple[int, int]:
  return _lattice(height, scale)[2], _lattice(width, scale)[2]


def perlin(key: jax.Array, num: int, height: int, width: int, scale: float = 8.0) -> jax.Array:
  """Gradient (Perlin) noise [num,H,W] in [-1, 1] with lattice cells of `scale` pixels."""
  return _gradient_noise(jax.random.uniform(key, (num,) + _lattice_shape(height, width, scale)), height, width, scale)


def value_noise(key: jax.Array, num: int, height: int, width: int, scale: float = 8.0) -> jax.Array:
  """Value noise [num,H,W] in [-1, 1]: random lattice values, smoothly interpolated."""
  return _value_noise(jax.random.uniform(key, (num,) + _lattice_shape(height, width, scale)), height, width, scale)


def fbm(key: jax.Array, num: int, height: int, width: int, *, octaves: int = 4, persistence: float = 0.5,
        lacunarity: float = 2.0, scale: float = 16.0, base: str = "perlin") -> jax.Array:
  """Fractal Brownian motion [num,H,W] in [-1, 1]: octaves of `base` noise, each finer and fainter.

  One uniform draw [num, sum of lattice sizes] feeds every octave in turn, row-major,
  because each separate draw costs a threefry hash in the compiled program.
  """
  scales = [scale / lacunarity ** o for o in range(octaves)]
  shapes = [_lattice_shape(height, width, s) for s in scales]
  u = jax.random.uniform(key, (num, sum(gh * gw for gh, gw in shapes)))
  total, norm, amp, start = 0.0, 0.0, 1.0, 0
  for s, (gh, gw) in zip(scales, shapes):
    lattice = u[:, start:start + gh * gw].reshape(num, gh, gw)
    total = total + amp * _BASES[base](lattice, height, width, s)
    norm, amp, start = norm + amp, amp * persistence, start + gh * gw
  return total / norm


@functools.partial(jax.jit, static_argnames=("octaves", "scale", "order", "mode"))
def fbm_warp(key: jax.Array, images: jax.Array, strength: float = 4.0, *, octaves: int = 3, scale: float = 16.0,
             order: int = 1, mode: str = "reflect", cval: float = 0.0) -> jax.Array:
  """Domain warping: displaces each pixel's sampling point by fbm fields times `strength` pixels."""
  n, h, w, _ = images.shape
  ky, kx = jax.random.split(key)
  dy = fbm(ky, n, h, w, octaves=octaves, scale=scale) * strength
  dx = fbm(kx, n, h, w, octaves=octaves, scale=scale) * strength
  gy, gx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
  return sampling.sample(images, gy + dy, gx + dx, order=order, mode=mode, cval=cval)


def _clip(images: jax.Array, noisy: jax.Array) -> jax.Array:
  return jnp.clip(noisy, -1.0, 1.0).astype(images.dtype)


@jax.jit
def gaussian_noise(key: jax.Array, images: jax.Array, std: float = 0.05) -> jax.Array:
  """Adds N(0, std^2) noise to every value, clipped to [-1, 1]."""
  return _clip(images, images + std * jax.random.normal(key, images.shape, jnp.float32))


@jax.jit
def uniform_noise(key: jax.Array, images: jax.Array, amount: float = 0.1) -> jax.Array:
  """Adds U(-amount, amount) noise to every value, clipped to [-1, 1]."""
  return _clip(images, images + jax.random.uniform(key, images.shape, jnp.float32, -amount, amount))


@jax.jit
def speckle(key: jax.Array, images: jax.Array, std: float = 0.1) -> jax.Array:
  """Multiplicative noise on intensity (x + 1) / 2: I * (1 + N(0, std^2))."""
  intensity = (images + 1.0) / 2.0
  noisy = intensity * (1.0 + std * jax.random.normal(key, images.shape, jnp.float32))
  return _clip(images, noisy * 2.0 - 1.0)


@jax.jit
def salt_pepper(key: jax.Array, images: jax.Array, amount: float = 0.02) -> jax.Array:
  """Sets a fraction `amount` of pixels (all channels) to -1 or 1 at random, half each."""
  kh, ks = jax.random.split(key)
  shape = images.shape[:3] + (1,)
  hit = jax.random.uniform(kh, shape) < amount
  salt = jnp.where(jax.random.bernoulli(ks, 0.5, shape), 1.0, -1.0).astype(images.dtype)
  return jnp.where(hit, salt, images)


def palette(name: str) -> jax.Array:
  """A named palette as [K,3] stops in [-1, 1]."""
  return jnp.asarray(PALETTES[name], jnp.float32) / 127.5 - 1.0


def colormap(fields: jax.Array, stops: jax.Array) -> jax.Array:
  """Maps fields [N,H,W] in [-1, 1] through palettes [K,3] or per-example [N,K,3] to RGB [N,H,W,3]."""
  stops = jnp.broadcast_to(stops, (fields.shape[0],) + stops.shape[-2:])
  k = stops.shape[1]
  pos = (jnp.clip(fields, -1.0, 1.0) + 1.0) / 2.0 * (k - 1)
  i = jnp.clip(jnp.floor(pos), 0, k - 2).astype(jnp.int32)
  t = (pos - i)[..., None]
  pick = jax.vmap(lambda s, idx: s[idx])
  return pick(stops, i) * (1 - t) + pick(stops, i + 1) * t


def _stretch(fields: jax.Array) -> jax.Array:
  """Rescales each field to span [-1, 1] exactly."""
  lo = fields.min(axis=(1, 2), keepdims=True)
  hi = fields.max(axis=(1, 2), keepdims=True)
  return (fields - lo) / jnp.maximum(hi - lo, 1e-6) * 2.0 - 1.0


def _shape_field(key: jax.Array, field: jax.Array, kind: str) -> jax.Array:
  """Turns an fbm field [N,H,W] into the named texture, spanning [-1, 1]."""
  num, height, width = field.shape
  kp, kq = jax.random.split(key)
  size = float(max(height, width))
  gy, gx = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32) / size, jnp.arange(width, dtype=jnp.float32) / size,
                        indexing="ij")
  p = jax.random.uniform(kp, (num, 3, 1, 1))
  if kind == "clouds":
    return _stretch(field)
  if kind == "turbulence":  # Creases where the field crosses zero.
    return _stretch(-jnp.abs(field))
  if kind == "marble":
    angle = p[:, 0] * 2 * np.pi
    stripes = (gx * jnp.cos(angle) + gy * jnp.sin(angle)) * (2 + 4 * p[:, 1])
    return jnp.sin(2 * np.pi * (stripes + 0.8 * field))
  if kind == "wood":
    cy, cx = jax.random.uniform(kq, (2, num, 1, 1), minval=-0.5, maxval=1.5)
    rings = jnp.sqrt((gy - cy) ** 2 + (gx - cx) ** 2) * (4 + 8 * p[:, 2])
    return jnp.sin(2 * np.pi * (rings + 0.3 * field))
  raise ValueError(f"unknown texture {kind!r}; choose one of {', '.join(TEXTURES)}")


def _texture_base(key: jax.Array, num: int, height: int, width: int) -> jax.Array:
  return fbm(key, num, height, width, octaves=4, scale=max(height, width) / 3.0)


@functools.partial(jax.jit, static_argnames=("num", "height", "width", "kind"))
def texture(key: jax.Array, num: int, height: int, width: int, kind: str = "clouds") -> jax.Array:
  """Procedural texture fields [num,H,W] spanning [-1, 1]: clouds, marble, wood or turbulence."""
  kf, ks = jax.random.split(key)
  return _shape_field(ks, _texture_base(kf, num, height, width), kind)


def _resample_stops(stops_rgb, k: int) -> np.ndarray:
  """Resamples a palette's stops to k evenly spaced ones."""
  v = np.asarray(stops_rgb, np.float32)
  at = np.linspace(0, 1, k)
  return np.stack([np.interp(at, np.linspace(0, 1, len(v)), v[:, c]) for c in range(3)], -1)


def random_palettes(key: jax.Array, num: int, stops: int = 4) -> jax.Array:
  """Per-example palettes [num,K,3]: a named palette or random colours, sorted dark to light."""
  kc, kn, kr = jax.random.split(key, 3)
  named = jnp.asarray(np.stack([_resample_stops(v, stops) for v in PALETTES.values()])) / 127.5 - 1.0
  colours = jax.random.uniform(kr, (num, stops, 3), minval=-1.0, maxval=1.0)
  colours = jnp.take_along_axis(colours, jnp.argsort(colours.sum(-1), axis=1)[..., None], axis=1)
  use_named = jax.random.bernoulli(kn, 0.5, (num, 1, 1))
  return jnp.where(use_named, named[jax.random.randint(kc, (num,), 0, len(PALETTES))], colours)


@functools.partial(jax.jit, static_argnames=("num", "height", "width", "channels"))
def random_textures(key: jax.Array, num: int, height: int, width: int, channels: int) -> tuple[jax.Array, jax.Array]:
  """New images [num,H,W,C] from a key alone (random texture kind and palette) and their kind ids."""
  kk, kt, kp = jax.random.split(key, 3)
  kinds = jax.random.randint(kk, (num,), 0, len(TEXTURES))
  kf, ks = jax.random.split(kt)
  base = _texture_base(kf, num, height, width)
  fields = jnp.stack([_shape_field(ks, base, kind) for kind in TEXTURES])
  field = jnp.take_along_axis(fields, kinds[None, :, None, None], axis=0)[0]
  if channels == 1:
    return field[..., None], kinds
  rgb = colormap(field, random_palettes(kp, num))
  return (rgb if channels == 3 else rgb.mean(-1, keepdims=True) * jnp.ones(channels)), kinds


@functools.partial(jax.jit, static_argnames=("kind",))
def blend_texture(key: jax.Array, images: jax.Array, alpha: float = 0.3, kind: str = "clouds") -> jax.Array:
  """Mixes each image with a fresh texture: (1 - alpha) * image + alpha * texture."""
  n, h, w, c = images.shape
  field = texture(key, n, h, w, kind)[..., None]
  return ((1 - alpha) * images + alpha * field).astype(images.dtype)
