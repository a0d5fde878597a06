"""Augmentation: DiffAugment ops against numpy, ADA's identity at p=0, its colour matrices, its
gradients, and p's adaptation in the right direction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import augment
from aigc_jax.trainers import gan

N, S = 6, 8


def _images(channels=1, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (N, S, S, channels)).astype(np.float32)


def _shift(image, dy, dx):
  """numpy reference: image moved by (dy, dx) whole pixels, zeros shifted in."""
  out = np.zeros_like(image)
  h, w = image.shape[:2]
  out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = image[max(-dy, 0):h - max(dy, 0),
                                                                    max(-dx, 0):w - max(dx, 0)]
  return out


def test_translation_is_a_whole_pixel_shift_with_zero_fill():
  x = _images()
  y = np.asarray(augment.translation(jax.random.key(0), jnp.asarray(x)))
  s = int(S * 0.125 + 0.5)
  shifts = set()
  for i in range(N):
    matches = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)
               if np.allclose(y[i], _shift(x[i], dy, dx), atol=1e-6)]
    assert len(matches) == 1, i
    shifts.add(matches[0])
  assert len(shifts) > 1  # Per-example shifts.


def test_cutout_zeroes_one_square_and_keeps_the_rest():
  x = np.ones((N, S, S, 1), np.float32)
  y = np.asarray(augment.cutout(jax.random.key(1), jnp.asarray(x)))[..., 0]
  size = S // 2
  for i in range(N):
    rows, cols = np.nonzero(y[i] == 0)
    assert len(rows) > 0 and set(np.unique(y[i])) <= {0.0, 1.0}
    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert h <= size and w <= size and len(rows) == h * w  # One axis-aligned rectangle, clipped at borders.


def test_color_matches_numpy_with_the_same_draws():
  x = _images(3)
  key = jax.random.key(2)
  kb, ks, kc = jax.random.split(key, 3)
  b, s, c = (np.asarray(jax.random.uniform(k, (N, 1, 1, 1))) for k in (kb, ks, kc))
  ref = x.astype(np.float64) + (b - 0.5)
  m = ref.mean(axis=3, keepdims=True)
  ref = (ref - m) * (2 * s) + m
  m = ref.mean(axis=(1, 2, 3), keepdims=True)
  ref = (ref - m) * (c + 0.5) + m
  np.testing.assert_allclose(augment.color(key, jnp.asarray(x)), ref, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_ada_is_the_identity_at_p0_and_changes_every_example_at_p1(channels):
  x = jnp.asarray(_images(channels))
  np.testing.assert_allclose(augment.ada(jax.random.key(0), x, jnp.float32(0.0)), x, atol=1e-5)
  y = np.asarray(augment.ada(jax.random.key(0), x, jnp.float32(1.0)))
  assert np.isfinite(y).all()
  assert all(not np.allclose(y[i], x[i], atol=1e-3) for i in range(N))


def test_ada_geometric_groups_split_the_bgc_warp_into_blit_then_geom():
  key, p, size = jax.random.key(7), jnp.float32(1.0), 16
  blit = np.asarray(augment.ada_matrices(key, 64, size, size, p, ("blit",)), np.float64)
  geom = augment.ada_matrices(key, 64, size, size, p, ("geom",))
  both = augment.ada_matrices(key, 64, size, size, p)
  # blit: flips, quarter turns and whole-pixel shifts map the pixel grid onto itself.
  np.testing.assert_allclose(blit, np.round(blit), atol=1e-4)
  assert np.all(np.abs(np.linalg.det(blit[:, :, :2])) > 1 - 1e-5)
  assert not np.allclose(blit[:, :, :2], np.eye(2))
  geom_linear = np.asarray(geom)[:, :, :2]
  assert np.mean(np.abs(geom_linear - np.round(geom_linear)) > 1e-3) > 0.5
  np.testing.assert_allclose(both, augment.transforms.compose_affine(blit, geom), atol=1e-4)


def test_ada_pipelines_apply_only_their_groups():
  assert set(augment.ADA_GROUPS) == set(gan.ADA_PIPELINES)
  key, p = jax.random.key(1), jnp.float32(1.0)
  x = jnp.asarray(_images(3))
  flat = jnp.full_like(x, 0.3)  # any warp with reflect padding keeps a constant image
  np.testing.assert_allclose(augment.ada(key, flat, p, "bg"), flat, atol=1e-5)
  assert not np.allclose(augment.ada(key, flat, p, "bgc"), flat, atol=1e-3)
  np.testing.assert_allclose(augment.ada(key, x, p, "color"),
                             augment.ada_color(jax.random.split(key)[1], x, p), atol=1e-6)
  for pipeline in ("blit", "geom", "bg"):  # blit's draws include the identity (no flip, 0 deg, 0 px)
    y = np.asarray(augment.ada(key, x, p, pipeline))
    changed = sum(not np.allclose(y[i], x[i], atol=1e-3) for i in range(N))
    assert changed >= (1 if pipeline == "blit" else N), pipeline
  # bgc is the geometry of bg followed by the colour ops, on the same draws.
  np.testing.assert_allclose(augment.ada(key, x, p, "bgc"),
                             augment.ada_color(jax.random.split(key)[1], augment.ada(key, x, p, "bg"), p),
                             atol=1e-5)


def test_ada_colour_matrices_preserve_luma_under_hue_and_invert_it_under_luma_flip():
  # Grey pixels lie on the luma axis: hue rotation and saturation leave them unchanged, so at p=1
  # each grey pixel maps to +-contrast * value + brightness, the same value in all channels.
  grey = jnp.broadcast_to(jnp.linspace(-1, 1, S)[None, :, None, None], (N, S, S, 3))
  y = np.asarray(augment.ada_color(jax.random.key(3), grey, jnp.float32(1.0)))
  np.testing.assert_allclose(y[..., 0], y[..., 1], atol=1e-5)
  np.testing.assert_allclose(y[..., 0], y[..., 2], atol=1e-5)
  slopes = (y[:, -1, 0, 0] - y[:, 0, 0, 0]) / 2.0
  assert (slopes < 0).any() and (slopes > 0).any()  # Luma flip on about half the examples.


def test_ada_adds_brightness_before_contrast_and_luma_flip():
  # ADA's colour matrix is Sat·Hue·Flip·Contrast·Bright: a grey pixel v maps to s*c*(v + b), so
  # offset / slope recovers b ~ N(0, 0.2^2) exactly. Adding b last instead would give b / (s*c),
  # whose spread is 0.2 * E[1/c^2]^0.5 = 0.2255 for ADA's log2-lognormal contrast (sigma 0.5).
  n = 20_000
  grey = jnp.broadcast_to(jnp.array([0.0, 1.0])[None, None, :, None], (n, 1, 2, 3))
  y = np.asarray(augment.ada_color(jax.random.key(5), grey, jnp.float32(1.0)), np.float64)[:, 0, :, 0]
  b = y[:, 0] / (y[:, 1] - y[:, 0])
  assert abs(b.std() - 0.2) < 0.006 and abs(b.mean()) < 0.006


def test_augmentations_pass_gradients_to_the_images():
  x = jnp.asarray(_images(3))
  ops = [lambda k, v: augment.diffaugment(k, v, ("color", "translation", "cutout")),
         lambda k, v: augment.ada(k, v, jnp.float32(0.5))]
  for op in ops:
    g = jax.grad(lambda v: jnp.sum(op(jax.random.key(4), v) ** 2))(x)
    assert np.isfinite(g).all() and np.abs(g).sum() > 0


@pytest.mark.parametrize("logits, expected", [
    (np.array([3.0, 2.0, 1.0, 0.5]), 0.5 + 4 / 400),   # Over-confident D (all reals positive): p up.
    (np.array([3.0, -2.0, -1.0, 0.5]), 0.5 - 4 / 400),  # E[sign] = 0 < 0.6: p down.
])
def test_ada_p_moves_towards_the_target(logits, expected):
  p = augment.ada_adjust(jnp.float32(0.5), jnp.mean(jnp.sign(jnp.asarray(logits))), len(logits), 0.6, 400.0)
  np.testing.assert_allclose(p, expected, rtol=1e-6)


def test_ada_p_stays_in_unit_interval():
  assert float(augment.ada_adjust(jnp.float32(1.0), jnp.float32(1.0), 8, 0.6, 1.0)) == 1.0
  assert float(augment.ada_adjust(jnp.float32(0.0), jnp.float32(-1.0), 8, 0.6, 1.0)) == 0.0
