"""GAN training: state, adversarial losses and the pure D-then-G train step."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from aigc_jax import models
from aigc_jax.trainers import common


@flax.struct.dataclass
class GANState:
  """Everything a GAN run carries from step to step."""
  step: jax.Array
  g_params: Any
  g_collections: dict     # e.g. batch_stats of the generator
  g_opt_state: Any
  d_params: Any
  d_collections: dict
  d_opt_state: Any


def _optimizers(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, ...]:
  return (common.adam(config, config.train.learning_rate),
          common.adam(config, config.gan.d_learning_rate))


def _labels(config: ml_collections.ConfigDict, batch: dict) -> jax.Array | None:
  return batch["label"] if config.model.num_classes else None


def init_state(config: ml_collections.ConfigDict, key: jax.Array) -> GANState:
  """Initialises generator, discriminator and both Adam states."""
  generator, discriminator = models.build_generator(config), models.build_discriminator(config)
  g_key, d_key = jax.random.split(key)
  z = jnp.zeros((1, config.model.latent_dim), jnp.float32)
  labels = jnp.zeros((1,), jnp.int32) if config.model.num_classes else None
  size, channels = config.data.image_size, config.data.channels
  g_params, g_collections = common.init_variables(generator, g_key, z, labels, train=False)
  d_params, d_collections = common.init_variables(
      discriminator, d_key, jnp.zeros((1, size, size, channels)), labels, train=False)
  g_opt, d_opt = _optimizers(config)
  return GANState(step=jnp.zeros((), jnp.int32), g_params=g_params, g_collections=g_collections,
                  g_opt_state=g_opt.init(g_params), d_params=d_params,
                  d_collections=d_collections, d_opt_state=d_opt.init(d_params))


def discriminator_loss(kind: str, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """The discriminator's loss for real and fake logits, averaged over the batch."""
  if kind == "non_saturating":
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))
  if kind == "hinge":
    return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))
  if kind == "least_squares":
    return 0.5 * (jnp.mean((real_logits - 1.0) ** 2) + jnp.mean(fake_logits ** 2))
  raise ValueError(f"unknown GAN loss {kind!r}")


def generator_loss(kind: str, fake_logits: jax.Array) -> jax.Array:
  """The generator's loss for the discriminator's logits on its samples."""
  if kind == "non_saturating":
    return jnp.mean(jax.nn.softplus(-fake_logits))
  if kind == "hinge":
    return -jnp.mean(fake_logits)
  if kind == "least_squares":
    return 0.5 * jnp.mean((fake_logits - 1.0) ** 2)
  raise ValueError(f"unknown GAN loss {kind!r}")


def make_train_step(config: ml_collections.ConfigDict) -> Callable:
  """Returns the pure step `(state, batch, key) -> (state, metrics)`: D update, then G update."""
  generator, discriminator = models.build_generator(config), models.build_discriminator(config)
  g_opt, d_opt = _optimizers(config)
  loss_kind = config.gan.loss

  def train_step(state: GANState, batch: dict, key: jax.Array) -> tuple[GANState, dict]:
    real = batch["image"]
    labels = _labels(config, batch)
    z = jax.random.normal(key, (real.shape[0], config.model.latent_dim), jnp.float32)

    # One generator forward serves both updates: D sees its output detached, and G's gradient
    # flows back through the saved VJP (as in the PyTorch DCGAN example, with no second forward).
    def generate(g_params):
      return common.apply_train(generator, g_params, state.g_collections, z, labels)
    fake, g_vjp, g_collections = jax.vjp(generate, state.g_params, has_aux=True)

    def d_loss_fn(d_params):
      real_logits, d_coll = common.apply_train(discriminator, d_params, state.d_collections, real, labels)
      fake_logits, d_coll = common.apply_train(discriminator, d_params, d_coll,
                                               jax.lax.stop_gradient(fake), labels)
      loss = discriminator_loss(loss_kind, real_logits, fake_logits)
      return loss, (d_coll, real_logits, fake_logits)

    (d_loss, (d_collections, real_logits, fake_logits)), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True)(state.d_params)
    d_updates, d_opt_state = d_opt.update(d_grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    def g_loss_fn(fake_images):
      logits, d_coll = common.apply_train(discriminator, d_params, d_collections, fake_images, labels)
      return generator_loss(loss_kind, logits), d_coll

    (g_loss, d_collections), fake_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
    (g_grads,) = g_vjp(fake_grad)
    g_updates, g_opt_state = g_opt.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    new_state = state.replace(step=state.step + 1, g_params=g_params, g_collections=g_collections,
                              g_opt_state=g_opt_state, d_params=d_params,
                              d_collections=d_collections, d_opt_state=d_opt_state)
    metrics = {"d_loss": d_loss, "g_loss": g_loss,
               "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
               "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits))}
    return new_state, metrics

  return train_step


def generate(config: ml_collections.ConfigDict, state: GANState, key: jax.Array, num: int,
             labels: jax.Array | None = None, z: jax.Array | None = None) -> jax.Array:
  """Samples `num` images in [-1, 1] (from `z` when given, else from `key`)."""
  generator = models.build_generator(config)
  if z is None:
    z = jax.random.normal(key, (num, config.model.latent_dim), jnp.float32)
  if config.model.num_classes and labels is None:
    labels = jnp.arange(num, dtype=jnp.int32) % config.model.num_classes
  return common.apply_eval(generator, state.g_params, state.g_collections, z, labels)
