"""Digit classifier training (cross-entropy, Adam), evaluation and feature extraction."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from aigc_jax.models.lenet import LeNet
from aigc_jax.trainers import common


@flax.struct.dataclass
class ClassifierState:
  """Everything a classifier run carries from step to step."""
  step: jax.Array
  params: Any
  opt_state: Any


def build_model(config: ml_collections.ConfigDict) -> LeNet:
  """The LeNet for `config` (10 classes unless model.num_classes says otherwise)."""
  return LeNet(num_classes=config.model.num_classes or 10)


def init_state(config: ml_collections.ConfigDict, key: jax.Array) -> ClassifierState:
  """Initialises LeNet parameters and the Adam state."""
  size, channels = config.data.image_size, config.data.channels
  params = build_model(config).init(key, jnp.zeros((1, size, size, channels)))["params"]
  opt = common.adam(config, config.train.learning_rate)
  return ClassifierState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt.init(params))


def _loss_and_accuracy(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return loss, jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def make_train_step(config: ml_collections.ConfigDict) -> Callable:
  """Returns the pure step `(state, batch, key) -> (state, metrics)` minimising cross-entropy."""
  model = build_model(config)
  opt = common.adam(config, config.train.learning_rate)

  def train_step(state: ClassifierState, batch: dict, key: jax.Array) -> tuple[ClassifierState, dict]:
    def loss_fn(params):
      logits = model.apply({"params": params}, batch["image"], train=True,
                           rngs={"dropout": key})["logits"]
      return _loss_and_accuracy(logits, batch["label"])

    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state)
    return new_state, {"loss": loss, "accuracy": accuracy}

  return train_step


def make_features_fn(params: Any, num_classes: int = 10) -> Callable[[jax.Array], dict]:
  """A jitted `images -> {"conv", "features", "logits"}` for inference with `params`."""
  model = LeNet(num_classes=num_classes)
  return jax.jit(lambda images: model.apply({"params": params}, images, train=False))


def evaluate(config: ml_collections.ConfigDict, state: ClassifierState, images, labels,
             batch_size: int = 1000) -> dict[str, float]:
  """Mean cross-entropy and accuracy of the classifier on `images` (float [-1,1]) and `labels`."""
  features = make_features_fn(state.params, config.model.num_classes or 10)
  labels = np.asarray(labels)
  loss_sum, correct = 0.0, 0
  for i in range(0, len(labels), batch_size):
    logits = features(jnp.asarray(images[i:i + batch_size]))["logits"]
    loss, accuracy = _loss_and_accuracy(logits, jnp.asarray(labels[i:i + batch_size]))
    n = len(labels[i:i + batch_size])
    loss_sum += float(loss) * n
    correct += round(float(accuracy) * n)
  return {"loss": loss_sum / len(labels), "accuracy": correct / len(labels)}
