"""LeNet: output shapes for every digits size, resizing to 28 px, gray averaging."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.models.lenet import LeNet, resize_bilinear


@pytest.fixture(scope="module")
def params():
  return LeNet().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]


@pytest.mark.parametrize("size,channels", [(8, 1), (16, 1), (28, 1), (32, 3)])
def test_outputs_for_any_input_size(params, size, channels):
  x = jax.random.uniform(jax.random.key(1), (3, size, size, channels), minval=-1, maxval=1)
  out = LeNet().apply({"params": params}, x)
  assert out["logits"].shape == (3, 10)
  assert out["features"].shape == (3, 128)
  assert out["conv"].shape == (3, 8, 8, 64)
  assert np.all(np.asarray(out["features"]) >= 0)  # post-ReLU


def test_small_digits_are_upsampled_before_the_network(params):
  x = jax.random.uniform(jax.random.key(2), (2, 8, 8, 1), minval=-1, maxval=1)
  direct = LeNet().apply({"params": params}, x)["logits"]
  upsampled = LeNet().apply({"params": params}, resize_bilinear(x, 28, 28))["logits"]
  np.testing.assert_allclose(direct, upsampled, atol=1e-5)


def test_rgb_is_averaged_to_gray(params):
  gray = jax.random.uniform(jax.random.key(3), (2, 28, 28, 1), minval=-1, maxval=1)
  rgb = jnp.concatenate([gray - 0.2, gray, gray + 0.2], axis=-1)
  np.testing.assert_allclose(LeNet().apply({"params": params}, rgb)["logits"],
                             LeNet().apply({"params": params}, gray)["logits"], atol=1e-5)


def test_dropout_only_in_training(params):
  x = jnp.ones((4, 28, 28, 1))
  a = LeNet().apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(0)})
  b = LeNet().apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(a["logits"], b["logits"])
  np.testing.assert_array_equal(a["features"], b["features"])  # dropout sits after the features
