"""VAE training: state, the negative ELBO (Bernoulli or Gaussian likelihood, beta-weighted KL).

Options, each a config key: beta (`vae.beta`), a linear KL warm-up from 0 to
beta (`vae.kl_warmup_steps`), a fixed or learned decoder standard deviation for
the Gaussian likelihood (`vae.decoder_std`, `vae.learn_decoder_std`), and class
conditioning of encoder and decoder (`model.num_classes`).
"""

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
class VAEState:
  """Everything a VAE run carries from step to step."""
  step: jax.Array
  params: Any
  opt_state: Any


def _labels(config: ml_collections.ConfigDict, batch: dict) -> jax.Array | None:
  return batch["label"] if config.model.num_classes else None


def init_state(config: ml_collections.ConfigDict, key: jax.Array) -> VAEState:
  """Initialises the VAE and its Adam state."""
  vae = models.build_vae(config)
  size, channels = config.data.image_size, config.data.channels
  labels = jnp.zeros((1,), jnp.int32) if config.model.num_classes else None
  init_key, noise_key = jax.random.split(key)
  params = vae.init(init_key, jnp.zeros((1, size, size, channels)), noise_key, labels)["params"]
  return VAEState(step=jnp.zeros((), jnp.int32), params=params,
                  opt_state=common.adam(config, config.train.learning_rate).init(params))


def negative_log_likelihood(likelihood: str, out: jax.Array, images: jax.Array,
                            decoder_std: float | jax.Array) -> jax.Array:
  """-log p(x|z) in nats per image: Bernoulli on pixels mapped to [0,1], or Gaussian with std `decoder_std`."""
  axes = tuple(range(1, images.ndim))
  if likelihood == "bernoulli":
    targets = (images + 1.0) / 2.0
    return jnp.sum(optax.sigmoid_binary_cross_entropy(out, targets), axis=axes)
  if likelihood == "gaussian":
    var = decoder_std ** 2
    return jnp.sum(0.5 * (images - out) ** 2 / var + 0.5 * jnp.log(2 * jnp.pi * var), axis=axes)
  raise ValueError(f"unknown likelihood {likelihood!r}")


def kl_to_standard_normal(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) in nats per example."""
  return 0.5 * jnp.sum(jnp.exp(logvar) + mean ** 2 - 1.0 - logvar, axis=-1)


def kl_weight(step: jax.Array, beta: float, warmup_steps: int) -> jax.Array:
  """The KL weight at `step` (0-based): beta * min(1, (step + 1) / warmup_steps), or beta without warm-up."""
  if not warmup_steps:
    return jnp.asarray(beta, jnp.float32)
  return beta * jnp.minimum(1.0, (step + 1).astype(jnp.float32) / warmup_steps)


def decoder_std(config: ml_collections.ConfigDict, params: Any) -> jax.Array | float:
  """The Gaussian decoder's standard deviation: learned (from params) or the config's constant."""
  if config.vae.learn_decoder_std:
    return jnp.exp(params["decoder_log_std"])
  return config.vae.decoder_std


def make_train_step(config: ml_collections.ConfigDict) -> Callable:
  """Returns the pure step `(state, batch, key) -> (state, metrics)` minimising the weighted -ELBO."""
  vae = models.build_vae(config)
  opt = common.adam(config, config.train.learning_rate)
  likelihood = config.vae.likelihood

  def train_step(state: VAEState, batch: dict, key: jax.Array) -> tuple[VAEState, dict]:
    images = batch["image"]
    weight = kl_weight(state.step, config.vae.beta, config.vae.kl_warmup_steps)

    def loss_fn(params):
      out, mean, logvar = vae.apply({"params": params}, images, key, _labels(config, batch))
      std = decoder_std(config, params)
      nll = negative_log_likelihood(likelihood, out.astype(jnp.float32), images, std)
      kl = kl_to_standard_normal(mean.astype(jnp.float32), logvar.astype(jnp.float32))
      return jnp.mean(nll + weight * kl), (nll, kl, std)

    (loss, (nll, kl, std)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state)
    metrics = {"loss": loss, "nll": jnp.mean(nll), "kl": jnp.mean(kl), "elbo": -jnp.mean(nll + kl),
               "kl_weight": weight}
    if config.vae.learn_decoder_std:
      metrics["decoder_std"] = std
    return new_state, metrics

  return train_step


def decoded_images(config: ml_collections.ConfigDict, out: jax.Array) -> jax.Array:
  """Maps decoder outputs to images in [-1, 1] (the likelihood's mean)."""
  out = out.astype(jnp.float32)
  if config.vae.likelihood == "bernoulli":
    return jax.nn.sigmoid(out) * 2.0 - 1.0
  return jnp.clip(out, -1.0, 1.0)


def generate(config: ml_collections.ConfigDict, state: VAEState, key: jax.Array, num: int,
             labels: jax.Array | None = None, z: jax.Array | None = None) -> jax.Array:
  """Decodes `num` draws from the prior (or the given `z`) into images in [-1, 1]."""
  vae = models.build_vae(config)
  z, labels = common.generator_inputs(config, key, num, labels, z)
  out = vae.apply({"params": state.params}, z, labels, method=vae.decode)
  return decoded_images(config, out)


def encode(config: ml_collections.ConfigDict, state: VAEState, images: jax.Array,
           labels: jax.Array | None = None) -> jax.Array:
  """Returns the posterior means of `images`."""
  vae = models.build_vae(config)
  mean, _ = vae.apply({"params": state.params}, images, labels, method=vae.encode)
  return mean


def reconstruct(config: ml_collections.ConfigDict, state: VAEState, images: jax.Array,
                labels: jax.Array | None = None) -> jax.Array:
  """Decodes the posterior means of `images` back into images in [-1, 1]."""
  return generate(config, state, None, images.shape[0], labels, z=encode(config, state, images, labels))
