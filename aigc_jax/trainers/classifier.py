"""Digit classifier training (cross-entropy, Adam), evaluation and feature extraction."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from aigc_jax.models.lenet import LeNet
from aigc_jax.trainers import common
from aigc_jax.trainers.family import Family


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
  """Returns the pure step `(state, batch, key) -> (state, metrics)` minimising cross-entropy.

  With `train.grad_accum_steps` > 1, dropout masks are drawn per micro-batch.
  """
  model = build_model(config)
  opt = common.adam(config, config.train.learning_rate)

  def train_step(state: ClassifierState, batch: dict, key: jax.Array) -> tuple[ClassifierState, dict]:
    def loss_fn(params, micro, key):
      logits = model.apply({"params": params}, micro["image"], train=True,
                           rngs={"dropout": key})["logits"]
      return _loss_and_accuracy(logits, micro["label"])

    (loss, accuracy), grads = common.accumulate_gradients(
        loss_fn, state.params, {"image": batch["image"], "label": batch["label"]},
        config.train.grad_accum_steps, key=key)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state)
    return new_state, {"loss": loss, "accuracy": accuracy}

  return train_step


def classify(config: ml_collections.ConfigDict, state: ClassifierState, images: jax.Array) -> jax.Array:
  """Class logits of `images` (float [-1, 1]) in inference mode."""
  return build_model(config).apply({"params": state.params}, images, train=False)["logits"]


FAMILY = Family(
    name="classifier", model_names=("lenet",), section=None, defaults=None,
    validate=lambda config: None, init_state=init_state, make_train_step=make_train_step,
    classify=classify)
