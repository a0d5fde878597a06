"""normalization.BatchNorm against flax.linen.BatchNorm and a float64 numpy reference."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.models import normalization

SHAPE = (4, 3, 5, 6)  # N, H, W, C


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  x = (rng.normal(size=SHAPE) * 3 + 2).astype(np.float32)  # far from zero mean / unit variance
  variables = {"params": {"scale": rng.uniform(0.5, 2, SHAPE[-1]).astype(np.float32),
                          "bias": rng.normal(size=SHAPE[-1]).astype(np.float32)},
               "batch_stats": {"mean": rng.normal(size=SHAPE[-1]).astype(np.float32),
                               "var": rng.uniform(0.5, 2, SHAPE[-1]).astype(np.float32)}}
  return x, variables, rng


def _modules(train: bool, dtype=None):
  kwargs = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype)
  return normalization.BatchNorm(**kwargs), nn.BatchNorm(**kwargs)


def _numpy_batch_norm(x, scale, bias, eps=1e-5):
  x = np.asarray(x, np.float64)
  mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
  return (x - mean) / np.sqrt(var + eps) * scale + bias, mean, var


def test_variables_match_flax():
  x = jnp.zeros(SHAPE)
  ours, theirs = _modules(train=True)
  shapes = lambda m: jax.tree.map(jnp.shape, m.init(jax.random.key(0), x))
  assert shapes(ours) == shapes(theirs)
  np.testing.assert_array_equal(*(jax.tree.leaves(m.init(jax.random.key(0), x)) for m in (ours, theirs)))


@pytest.mark.parametrize("train", [True, False])
def test_output_and_running_statistics_match_flax(train):
  x, variables, _ = _inputs()
  ours, theirs = _modules(train)
  (y, new), (y_ref, new_ref) = (m.apply(variables, x, mutable=["batch_stats"]) for m in (ours, theirs))
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(new_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_training_output_and_gradients_match_float64_reference():
  x, variables, rng = _inputs(1)
  scale, bias = (np.asarray(variables["params"][k], np.float64) for k in ("scale", "bias"))
  y_ref, mean, var = _numpy_batch_norm(x, scale, bias)
  cotangent = rng.normal(size=SHAPE)
  # d<y, g>/dx by hand: the batch-norm backward formula in float64.
  m = x.size // SHAPE[-1]
  x_hat = (x - mean) / np.sqrt(var + 1e-5)
  d_bias, d_scale = cotangent.sum((0, 1, 2)), (cotangent * x_hat).sum((0, 1, 2))
  dx_ref = scale / np.sqrt(var + 1e-5) / m * (m * cotangent - d_bias - x_hat * d_scale)

  def loss(x, params):
    y, _ = normalization.BatchNorm(use_running_average=False, momentum=0.9).apply(
        {"params": params, "batch_stats": variables["batch_stats"]}, x, mutable=["batch_stats"])
    return jnp.sum(y * cotangent.astype(np.float32)), y

  (dx, dparams), y = jax.grad(loss, argnums=(0, 1), has_aux=True)(x, variables["params"])
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(dparams["scale"], d_scale, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(dparams["bias"], d_bias, rtol=1e-5, atol=1e-4)


def test_gradients_through_mean_and_variance_outputs_match_autodiff():
  """The statistics are outputs too (for the running averages): their cotangents reach x."""
  x, variables, rng = _inputs(2)
  scale, bias = variables["params"]["scale"], variables["params"]["bias"]
  weights = [rng.normal(size=s).astype(np.float32) for s in (SHAPE, SHAPE[-1:], SHAPE[-1:])]

  def reference(x):
    mean = jnp.mean(x, (0, 1, 2))
    var = jnp.mean(x * x, (0, 1, 2)) - mean * mean
    return ((x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias, mean, var)

  def loss(f):
    return lambda x: sum(jnp.sum(out * w) for out, w in zip(f(x), weights))

  ours = jax.grad(loss(lambda x: normalization.batch_norm_train(x, scale, bias, 1e-5)))(x)
  np.testing.assert_allclose(ours, jax.grad(loss(reference))(x), rtol=1e-4, atol=1e-5)


def test_second_order_gradients_match_flax():
  """R1 / gradient penalties differentiate the input gradient again (D's batch norm included)."""
  x, variables, _ = _inputs(3)

  def penalty(module):
    def grad_norm(params):
      def out(x):
        y, _ = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                            mutable=["batch_stats"])
        return jnp.sum(jnp.tanh(y))
      return jnp.sum(jax.grad(out)(x) ** 2)
    return jax.grad(grad_norm)(variables["params"])

  ours, theirs = _modules(train=True)
  for a, b in zip(jax.tree.leaves(penalty(ours)), jax.tree.leaves(penalty(theirs))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bfloat16_computes_statistics_in_float32():
  x, variables, _ = _inputs(4)
  ours, theirs = _modules(train=True, dtype=jnp.bfloat16)
  xb = jnp.asarray(x, jnp.bfloat16)
  (y, new), (y_ref, new_ref) = (m.apply(variables, xb, mutable=["batch_stats"]) for m in (ours, theirs))
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.float32(y), np.float32(y_ref), rtol=2e-2, atol=2e-2)
  for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(new_ref)):
    assert a.dtype == jnp.float32
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
