"""U-Net: levels from the image size, parameter count from the architecture's description, class
conditioning with a null class, dropout, and bfloat16 compute (its zero output at initialisation
is checked on the family's initial state, tests/trainers/test_diffusion.py)."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.models import unet

CONFIG = dict(image_size=28, channels=1, width=8, channel_mult=(1, 2, 2), num_res_blocks=1,
              attn_resolutions=(7,), num_classes=10)
N = 2
NOISE_LABELS = jnp.asarray([-0.5, 0.8])
LABELS = jnp.asarray([3, 7], jnp.int32)
# Compiled forwards use a smaller net: one level at 8 px, with attention.
SMALL = dict(image_size=8, channels=1, width=8, channel_mult=(1,), num_res_blocks=1,
             attn_resolutions=(8,), num_classes=10)
X = jnp.asarray(np.random.default_rng(0).normal(size=(N, 8, 8, 1)), jnp.float32)


def _shapes(**overrides):
  model = unet.UNet(**{**CONFIG, **overrides})
  size, channels = model.image_size, model.channels
  return jax.eval_shape(lambda k: model.init(k, jnp.zeros((N, size, size, channels)), jnp.zeros((N,)),
                                             jnp.zeros((N,), jnp.int32), train=False), jax.random.key(0))


@functools.cache
def random_params(seed=1):
  """Random weights everywhere (an initialised net outputs 0, which would hide the inputs' effect)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape), jnp.float32), _shapes(**SMALL)["params"])


@functools.partial(jax.jit, static_argnames=("train", "dtype"))
def forward(params, labels, key=None, train=False, dtype=jnp.float32):
  model = unet.UNet(**SMALL, dropout=0.3, dtype=dtype)
  rngs = {"dropout": key} if train else {}
  return model.apply({"params": params}, X, NOISE_LABELS, labels, train=train, rngs=rngs)


def test_levels_halve_the_image_size():
  assert unet.resolutions(28, 3) == (28, 14, 7)
  assert unet.resolutions(32, 4) == (32, 16, 8, 4)
  assert unet.resolutions(256, 6) == (256, 128, 64, 32, 16, 8)
  with pytest.raises(ValueError, match="28"):
    unet.resolutions(28, 4)
  for size, mult in ((8, (1, 2)), (16, (1, 2, 2)), (64, (1, 1, 2, 2))):
    model = unet.UNet(image_size=size, channels=3, width=4, channel_mult=mult, num_res_blocks=1)
    out = jax.eval_shape(lambda k: model.init_with_output(k, jnp.zeros((1, size, size, 3)), jnp.zeros((1,)),
                                                          train=False)[0], jax.random.key(0))
    assert out.shape == (1, size, size, 3) and out.dtype == jnp.float32


def test_group_counts_divide_the_channels():
  assert [unet.num_groups(c) for c in (4, 8, 64, 128, 256, 96, 144, 6)] == [1, 2, 16, 32, 32, 24, 24, 1]


def test_positional_embedding_is_the_transformer_sinusoid():
  x = np.array([0.0, 1.5, 999.0])
  got = np.asarray(unet.positional_embedding(jnp.asarray(x), 8), np.float64)
  freqs = 10_000.0 ** (-np.arange(4) / 4)
  np.testing.assert_allclose(got, np.concatenate([np.cos(np.outer(x, freqs)), np.sin(np.outer(x, freqs))], 1),
                             atol=2e-4)  # float32 arguments up to 999 rad


def _expected_parameter_count(image_size, channels, width, channel_mult, num_res_blocks,
                              attn_resolutions, num_classes):
  conv = lambda k, i, o: k * k * i * o + o
  dense = lambda i, o: i * o + o
  emb = 4 * width
  res = lambda i, o: 2 * i + conv(3, i, o) + dense(emb, o) + 2 * o + conv(3, o, o) + (conv(1, i, o) if i != o else 0)
  attn = lambda c: 2 * c + dense(c, 3 * c) + dense(c, c)
  total = dense(width, emb) + dense(emb, emb) + (num_classes + 1) * emb
  ch = width * channel_mult[0]
  total += conv(3, channels, ch)
  skips, size = [ch], image_size
  for level, mult in enumerate(channel_mult):
    for _ in range(num_res_blocks):
      total += res(ch, width * mult) + (attn(width * mult) if size in attn_resolutions else 0)
      ch = width * mult
      skips.append(ch)
    if level < len(channel_mult) - 1:
      skips.append(ch)
      size //= 2
  total += 2 * res(ch, ch) + (attn(ch) if size in attn_resolutions else 0)
  for level in reversed(range(len(channel_mult))):
    for _ in range(num_res_blocks + 1):
      total += res(ch + skips.pop(), width * channel_mult[level])
      ch = width * channel_mult[level]
      total += attn(ch) if size in attn_resolutions else 0
    size *= 2
  return total + 2 * ch + conv(3, ch, channels)


def test_parameter_count_follows_the_architecture():
  for overrides in ({}, {"num_res_blocks": 2, "attn_resolutions": (14, 7)}, {"channel_mult": (1, 2, 3)}):
    params = _shapes(**overrides)["params"]
    count = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
    assert count == _expected_parameter_count(**{**CONFIG, **overrides})
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))


def test_attention_only_at_the_configured_resolutions():
  names = list(_shapes()["params"])
  # At 7 px: one encoder block, the middle, and two decoder blocks.
  assert sum(name.startswith("SelfAttention") for name in names) == 4
  assert sum(name.startswith("SelfAttention") for name in _shapes(attn_resolutions=())["params"]) == 0
  assert _shapes()["params"]["class_embed"]["embedding"].shape == (11, 32)  # the null class's row


def test_the_class_label_and_the_null_class_change_the_output():
  params = random_params()
  out = forward(params, LABELS)
  assert np.abs(np.asarray(out - forward(params, jnp.asarray([4, 7])))[0]).max() > 1e-2
  np.testing.assert_array_equal(out[1], forward(params, jnp.asarray([4, 7]))[1])  # image 1 unchanged
  null = forward(params, jnp.full((N,), 10, jnp.int32))
  assert np.all(np.isfinite(null)) and np.abs(np.asarray(null - out)).max() > 1e-2


def test_dropout_is_random_in_training_only():
  params = random_params()
  a = forward(params, LABELS, jax.random.key(1), train=True)
  b = forward(params, LABELS, jax.random.key(2), train=True)
  assert np.abs(np.asarray(a - b)).max() > 1e-2
  np.testing.assert_array_equal(a, forward(params, LABELS, jax.random.key(1), train=True))
  assert np.abs(np.asarray(a - forward(params, LABELS))).max() > 1e-2


def test_dropout_equals_flax_dropout():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(6, 8)), jnp.float32)
  rngs = {"dropout": jax.random.key(3)}
  ours = unet.Dropout(0.3).apply({}, x, train=True, rngs=rngs)
  theirs = nn.Dropout(0.3, deterministic=False).apply({}, x, rngs=rngs)
  np.testing.assert_array_equal(ours, theirs)


def test_bfloat16_compute_keeps_float32_parameters_and_output():
  params = random_params()
  out32 = forward(params, LABELS)
  out16 = forward(params, LABELS, dtype=jnp.bfloat16)
  assert out16.dtype == jnp.float32
  scale = float(jnp.abs(out32).max())
  assert float(jnp.abs(out16 - out32).max()) < 0.1 * scale
