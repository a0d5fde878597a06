"""Label dropout drops what it says; guidance combines the conditional and unconditional outputs."""

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.diffusion import guidance

NULL = 10


def test_label_dropout_replaces_the_stated_fraction_by_the_null_class():
  labels = jnp.asarray(np.arange(20_000) % 10, jnp.int32)
  out = np.asarray(guidance.drop_labels(jax.random.key(0), labels, 0.25, NULL))
  dropped = out == NULL
  assert abs(dropped.mean() - 0.25) < 0.015  # ~5 standard errors
  np.testing.assert_array_equal(out[~dropped], np.asarray(labels)[~dropped])
  assert np.all(np.asarray(guidance.drop_labels(jax.random.key(0), labels, 0.0, NULL)) == np.asarray(labels))
  assert np.all(np.asarray(guidance.drop_labels(jax.random.key(0), labels, 1.0, NULL)) == NULL)
  # Independent per label: the dropped fraction is the same in every class.
  per_class = [dropped[np.asarray(labels) == c].mean() for c in range(10)]
  assert max(per_class) - min(per_class) < 0.06


def _model(x, levels, labels):
  """A toy model whose output depends on all three inputs, per image."""
  per_image = lambda a: jnp.reshape(a, (-1, 1, 1, 1))
  return x * per_image(1.0 + labels.astype(jnp.float32)) + per_image(levels)


X = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 2, 1)), jnp.float32)
LEVELS = jnp.asarray([0.5, 1.0, 2.0])
LABELS = jnp.asarray([1, 4, 7], jnp.int32)


def test_weight_one_is_the_conditional_model():
  np.testing.assert_array_equal(guidance.guided(_model, 1.0, NULL)(X, LEVELS, LABELS), _model(X, LEVELS, LABELS))


def test_weight_zero_is_the_unconditional_model():
  np.testing.assert_allclose(guidance.guided(_model, 0.0, NULL)(X, LEVELS, LABELS),
                             _model(X, LEVELS, jnp.full_like(LABELS, NULL)), rtol=1e-6)


def test_other_weights_extrapolate_from_unconditional_through_conditional_in_one_evaluation():
  calls = []

  def counting(x, levels, labels):
    calls.append(x.shape[0])
    return _model(x, levels, labels)

  got = guidance.guided(counting, 2.5, NULL)(X, LEVELS, LABELS)
  x, lv, y = np.asarray(X, np.float64), np.asarray(LEVELS, np.float64)[:, None, None, None], np.asarray(LABELS)
  cond = x * (1 + y)[:, None, None, None] + lv
  uncond = x * (1 + NULL) + lv
  np.testing.assert_allclose(got, uncond + 2.5 * (cond - uncond), rtol=1e-5)
  assert calls == [6]  # both halves as one batch
