"""Noise fields against a float64 numpy reference, closed forms and statistics."""

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.transforms import noise, sampling


def _numpy_perlin(angles, height, width, scale):
  """Textbook 2-D Perlin noise in float64 from given lattice gradient angles."""
  out = np.zeros((height, width))
  fade = lambda t: t * t * t * (t * (t * 6 - 15) + 10)
  for y in range(height):
    for x in range(width):
      u, v = (x + 0.5) / scale, (y + 0.5) / scale
      i, j = int(np.floor(u)), int(np.floor(v))
      dots = {}
      for dj in (0, 1):
        for di in (0, 1):
          a = angles[j + dj, i + di]
          dots[dj, di] = np.cos(a) * (u - i - di) + np.sin(a) * (v - j - dj)
      sx, sy = fade(u - i), fade(v - j)
      top = dots[0, 0] * (1 - sx) + dots[0, 1] * sx
      bottom = dots[1, 0] * (1 - sx) + dots[1, 1] * sx
      out[y, x] = (top * (1 - sy) + bottom * sy) * np.sqrt(2)
  return out


def test_perlin_matches_numpy_reference_at_any_size():
  key = jax.random.key(0)
  h, w, scale = 10, 13, 3.7  # Neither side is a multiple of the cell size.
  field = np.asarray(noise.perlin(key, 2, h, w, scale))
  gh, gw = int(np.ceil(h / scale)) + 1, int(np.ceil(w / scale)) + 1
  angles = np.asarray(jax.random.uniform(key, (2, gh, gw), jnp.float32, 0.0, 2 * np.pi), np.float64)
  for n in range(2):
    np.testing.assert_allclose(field[n], _numpy_perlin(angles[n], h, w, scale), atol=1e-5)
  assert not np.allclose(field[0], field[1])


def test_noise_ranges_and_keys():
  key = jax.random.key(1)
  for fn in (noise.perlin, noise.value_noise):
    a = np.asarray(fn(key, 3, 17, 11, 4.0))
    assert a.shape == (3, 17, 11) and np.abs(a).max() <= 1.0 + 1e-6 and a.std() > 0.1
    np.testing.assert_array_equal(a, fn(key, 3, 17, 11, 4.0))
    assert not np.allclose(a, fn(jax.random.key(2), 3, 17, 11, 4.0))


def test_fbm_is_the_normalised_octave_sum():
  key = jax.random.key(3)
  out = np.asarray(noise.fbm(key, 2, 12, 9, octaves=2, persistence=0.4, lacunarity=3.0, scale=6.0))
  # Octave lattices come from one uniform draw, in order: 3x3 cells of 6 px, then 7x6 of 2 px.
  u = np.asarray(jax.random.uniform(key, (2, 3 * 3 + 7 * 6)), np.float64) * 2 * np.pi
  for n in range(2):
    first = _numpy_perlin(u[n, :9].reshape(3, 3), 12, 9, 6.0)
    second = _numpy_perlin(u[n, 9:].reshape(7, 6), 12, 9, 2.0)
    np.testing.assert_allclose(out[n], (first + 0.4 * second) / 1.4, atol=1e-5)


def test_fbm_warp_is_a_displaced_sampling():
  key = jax.random.key(4)
  img = jax.random.uniform(jax.random.key(5), (2, 9, 10, 3), minval=-1, maxval=1)
  np.testing.assert_allclose(noise.fbm_warp(key, img, 0.0), img, atol=1e-6)
  ky, kx = jax.random.split(key)
  dy = 3.0 * noise.fbm(ky, 2, 9, 10, octaves=2, scale=5.0)
  dx = 3.0 * noise.fbm(kx, 2, 9, 10, octaves=2, scale=5.0)
  gy, gx = np.mgrid[0:9, 0:10].astype(np.float32)
  ref = sampling.sample(img, gy + dy, gx + dx, mode="reflect")
  np.testing.assert_allclose(noise.fbm_warp(key, img, 3.0, octaves=2, scale=5.0), ref, atol=1e-5)
  assert float(jnp.abs(ref - img).mean()) > 0.05


def test_pixel_noise_statistics():
  key = jax.random.key(6)
  zeros = jnp.zeros((4, 32, 32, 3))
  g = np.asarray(noise.gaussian_noise(key, zeros, 0.1))
  assert abs(g.std() - 0.1) < 0.005 and abs(g.mean()) < 0.005
  u = np.asarray(noise.uniform_noise(key, zeros, 0.2))
  assert np.abs(u).max() <= 0.2 and abs(u.std() - 0.2 / np.sqrt(3)) < 0.005
  s = np.asarray(noise.speckle(key, zeros, 0.1))  # Intensity 0.5: the noise shows one for one.
  assert abs(s.std() - 0.1) < 0.005
  np.testing.assert_array_equal(noise.speckle(key, -jnp.ones((1, 4, 4, 1)), 0.5), -1.0)  # Black stays black.
  sp = np.asarray(noise.salt_pepper(key, zeros, 0.1))
  hit = np.any(sp != 0, axis=-1)
  assert abs(hit.mean() - 0.1) < 0.02
  assert set(np.unique(sp[hit])) == {-1.0, 1.0} and np.all(sp[hit] == sp[hit][:, :1])
  assert np.abs(np.asarray(noise.gaussian_noise(key, jnp.ones((1, 8, 8, 1)), 1.0))).max() <= 1.0


def test_colormap_interpolates_stops():
  field = jnp.asarray([[[-1.0, 0.0, 1.0, 0.5]]])
  rgb = np.asarray(noise.colormap(field, jnp.asarray([[-1.0, 0, 0], [0, 1, 0], [1, 1, 1]])))
  np.testing.assert_allclose(rgb[0, 0], [[-1, 0, 0], [0, 1, 0], [1, 1, 1], [0.5, 1, 0.5]], atol=1e-6)
  gray = noise.colormap(field, noise.palette("gray"))
  np.testing.assert_allclose(gray, jnp.repeat(field[..., None], 3, -1), atol=1e-6)


def test_textures_span_the_range():
  every_kind = jax.jit(lambda k: [noise.texture(k, 2, 16, 20, kind) for kind in noise.TEXTURES])
  for kind, t in zip(noise.TEXTURES, every_kind(jax.random.key(7))):
    t = np.asarray(t)
    assert t.shape == (2, 16, 20) and t.min() >= -1 - 1e-5 and t.max() <= 1 + 1e-5 and t.max() - t.min() > 1.0, kind
    assert not np.allclose(t[0], t[1]), kind


def test_random_textures_and_blend():
  key = jax.random.key(8)
  for c in (1, 3):
    imgs, kinds = noise.random_textures(key, 6, 12, 12, c)
    assert imgs.shape == (6, 12, 12, c) and kinds.shape == (6,)
    assert float(jnp.abs(imgs).max()) <= 1.0 + 1e-5
    np.testing.assert_array_equal(imgs, noise.random_textures(key, 6, 12, 12, c)[0])
  img = jnp.zeros((2, 8, 8, 3))
  np.testing.assert_allclose(noise.blend_texture(key, img, 0.0), img)
  mixed = noise.blend_texture(key, img, 0.5)
  np.testing.assert_allclose(mixed, 0.5 * noise.texture(key, 2, 8, 8, "clouds")[..., None] * jnp.ones(3), atol=1e-6)
