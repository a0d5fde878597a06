"""VAE training: state, the negative ELBO (Bernoulli or Gaussian likelihood, beta-weighted KL).

Options, each a config key: beta (`vae.beta`), a linear KL warm-up from 0 to
beta (`vae.kl_warmup_steps`), a fixed or learned decoder standard deviation for
the Gaussian likelihood (`vae.decoder_std`, `vae.learn_decoder_std`), and class
conditioning of encoder and decoder (`model.num_classes`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from aigc_jax import models
from aigc_jax.config import fail
from aigc_jax.models.vae import ConvVAE
from aigc_jax.trainers import common, gan
from aigc_jax.trainers.family import Family

LIKELIHOODS = ("bernoulli", "gaussian")


@flax.struct.dataclass
class VAEState:
  """Everything a VAE run carries from step to step."""
  step: jax.Array
  params: Any
  opt_state: Any


def defaults() -> ml_collections.ConfigDict:
  """The `vae` config section: every key with its default."""
  v = ml_collections.ConfigDict()
  v.likelihood = "bernoulli"
  v.beta = 1.0
  v.decoder_std = 0.1         # gaussian likelihood: the decoder's standard deviation (initial value if learned)
  v.learn_decoder_std = False # gaussian likelihood: learn one log-std parameter instead of fixing it
  v.kl_warmup_steps = 0       # KL weight rises linearly from 0 to beta over this many steps; 0: off
  return v


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the vae.* keys."""
  v = config.vae
  if v.likelihood not in LIKELIHOODS:
    fail("vae.likelihood", v.likelihood, f"choose one of {', '.join(LIKELIHOODS)}")
  if v.decoder_std <= 0:
    fail("vae.decoder_std", v.decoder_std, "must be a positive number")
  if v.beta < 0:
    fail("vae.beta", v.beta, "must be >= 0")
  if v.learn_decoder_std and v.likelihood != "gaussian":
    fail("vae.learn_decoder_std", True, "needs vae.likelihood='gaussian'")
  if v.kl_warmup_steps < 0:
    fail("vae.kl_warmup_steps", v.kl_warmup_steps, "must be 0 (off) or positive")


def build_vae(config: ml_collections.ConfigDict) -> ConvVAE:
  """The conv VAE the config describes."""
  return ConvVAE(latent_dim=config.model.latent_dim, width=config.model.width,
                 image_size=config.data.image_size, channels=config.data.channels,
                 num_classes=config.model.num_classes, learn_std=config.vae.learn_decoder_std,
                 init_std=config.vae.decoder_std, dtype=models.compute_dtype(config))


def _labels(config: ml_collections.ConfigDict, batch: dict) -> jax.Array | None:
  return batch["label"] if config.model.num_classes else None


def init_state(config: ml_collections.ConfigDict, key: jax.Array) -> VAEState:
  """Initialises the VAE and its Adam state."""
  vae = build_vae(config)
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
  """Returns the pure step `(state, batch, key) -> (state, metrics)` minimising the weighted -ELBO.

  With `train.grad_accum_steps` = k the batch runs as k micro-batches; the reparameterisation
  noise is drawn for the whole batch first, so the step equals the plain one.
  """
  vae = build_vae(config)
  opt = common.adam(config, config.train.learning_rate)
  likelihood = config.vae.likelihood

  def train_step(state: VAEState, batch: dict, key: jax.Array) -> tuple[VAEState, dict]:
    weight = kl_weight(state.step, config.vae.beta, config.vae.kl_warmup_steps)
    inputs = {"image": batch["image"], "label": _labels(config, batch),
              "eps": jax.random.normal(key, (batch["image"].shape[0], config.model.latent_dim))}

    def loss_fn(params, micro):
      images = micro["image"]
      out, mean, logvar = vae.apply({"params": params}, images, micro["eps"], micro["label"],
                                    method=vae.reconstruct)
      std = decoder_std(config, params)
      nll = negative_log_likelihood(likelihood, out.astype(jnp.float32), images, std)
      kl = kl_to_standard_normal(mean.astype(jnp.float32), logvar.astype(jnp.float32))
      means = {"nll": jnp.mean(nll), "kl": jnp.mean(kl), "elbo": -jnp.mean(nll + kl)}
      if config.vae.learn_decoder_std:
        means["decoder_std"] = std
      return jnp.mean(nll + weight * kl), means

    (loss, means), grads = common.accumulate_gradients(loss_fn, state.params, inputs,
                                                       config.train.grad_accum_steps)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state)
    return new_state, {"loss": loss, **means, "kl_weight": weight}

  return train_step


def decoded_images(config: ml_collections.ConfigDict, out: jax.Array) -> jax.Array:
  """Maps decoder outputs to images in [-1, 1] (the likelihood's mean)."""
  out = out.astype(jnp.float32)
  if config.vae.likelihood == "bernoulli":
    return jax.nn.sigmoid(out) * 2.0 - 1.0
  return jnp.clip(out, -1.0, 1.0)


def generate(config: ml_collections.ConfigDict, state: VAEState, z: jax.Array,
             labels: jax.Array | None, keys: jax.Array, options: Mapping[str, Any]) -> jax.Array:
  """Decodes latents `z` (truncated by options["trunc"]) into images in [-1, 1]."""
  del keys  # decoding the mean is deterministic
  vae = build_vae(config)
  out = vae.apply({"params": state.params}, gan.truncation(options) * z, labels, method=vae.decode)
  return decoded_images(config, out)


def encode(config: ml_collections.ConfigDict, state: VAEState, images: jax.Array,
           labels: jax.Array | None = None) -> jax.Array:
  """Returns the posterior means of `images`."""
  vae = build_vae(config)
  mean, _ = vae.apply({"params": state.params}, images, labels, method=vae.encode)
  return mean


def sampling_fields(config: ml_collections.ConfigDict, state: VAEState) -> dict:
  """What a shipped VAE keeps: all its parameters."""
  return {"params": state.params}


def with_sampling_fields(config: ml_collections.ConfigDict, state: VAEState, fields: dict) -> VAEState:
  """`state` with a shipped VAE's parameters put back."""
  return state.replace(params=flax.serialization.from_state_dict(state.params, fields["params"]))


FAMILY = Family(
    name="vae", model_names=("conv_vae",), section="vae", defaults=defaults, validate=validate,
    init_state=init_state, make_train_step=make_train_step, noise=gan.noise, generate=generate,
    sample_options=(gan.TRUNCATION,), encode=encode, sampling_fields=sampling_fields,
    with_sampling_fields=with_sampling_fields)
