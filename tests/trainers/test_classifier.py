"""Classifier trainer: it learns a separable toy task; evaluate matches a numpy computation."""

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.config import base_config
from aigc_jax.evaluation import scoring
from aigc_jax.trainers import classifier


def _config():
  c = base_config()
  c.model.family, c.model.name = "classifier", "lenet"
  c.data.image_size, c.data.channels = 8, 1
  c.train.learning_rate, c.train.b1 = 3e-3, 0.9
  return c


def _toy_batch(n, seed):
  """Class 0: bright left half; class 1: bright right half; plus noise."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n).astype(np.int32)
  images = np.full((n, 8, 8, 1), -1.0, np.float32)
  for i, y in enumerate(labels):
    images[i, :, (4 * y):(4 * y + 4)] = 1.0
  images += rng.normal(scale=0.3, size=images.shape).astype(np.float32)
  return {"image": images, "label": labels}


def test_training_learns_and_evaluate_matches_numpy():
  config = _config()
  state = classifier.init_state(config, jax.random.key(0))
  step = jax.jit(classifier.make_train_step(config))
  test = _toy_batch(64, seed=99)
  before = scoring.held_out_metrics(config, state, test["image"], test["label"])
  for i in range(30):
    state, metrics = step(state, _toy_batch(32, i), jax.random.key(i))
  assert int(state.step) == 30
  assert set(metrics) == {"loss", "accuracy"}
  after = scoring.held_out_metrics(config, state, test["image"], test["label"], batch_size=24)
  assert after["accuracy"] >= 0.95 and after["loss"] < before["loss"]

  logits = np.asarray(classifier.classify(config, state, jnp.asarray(test["image"])), np.float64)
  log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  assert abs(after["loss"] + log_p[np.arange(64), test["label"]].mean()) < 1e-5
  assert after["accuracy"] == np.mean(logits.argmax(1) == test["label"])
