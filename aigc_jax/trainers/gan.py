"""GAN training: state, adversarial losses, regularisers, augmentation, EMA and the train step.

One train step runs `gan.n_critic` discriminator updates (fresh latents each, on
the step's real batch), then one generator update. Options, each a config key:
losses (`gan.loss`: non-saturating, hinge, least squares, WGAN-GP), lazy R1 on
reals (`gan.r1_gamma`, every `gan.r1_every` steps with the penalty scaled by
that interval, as StyleGAN2; its gradient joins that step's D gradient rather than
taking a separate optimiser step), spectral norm in D (`model.d_norm="spectral"`),
DiffAugment or ADA on every D input (`gan.augment`, with ADA's p adapted in
the state), and an exponential moving average of G's weights
(`gan.ema_half_life_images`, with StyleGAN2-ADA's ramp-up), which `generate`
samples from.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from aigc_jax import augment as augment_lib
from aigc_jax import models
from aigc_jax.trainers import common, ema


@flax.struct.dataclass
class GANState:
  """Everything a GAN run carries from step to step."""
  step: jax.Array
  g_params: Any
  g_collections: dict     # e.g. batch_stats of the generator
  g_opt_state: Any
  d_params: Any
  d_collections: dict     # batch_stats, or spectral-norm power-iteration vectors
  d_opt_state: Any
  g_ema_params: Any       # moving average of g_params; None when gan.ema_half_life_images = 0
  ada_p: jax.Array        # ADA's augmentation probability (0 unless gan.augment = "ada")


@flax.struct.dataclass
class _Critic:
  """The part of the state a discriminator update changes."""
  params: Any
  collections: dict
  opt_state: Any
  ada_p: jax.Array


def _optimizers(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, ...]:
  return (common.adam(config, config.train.learning_rate),
          common.adam(config, config.gan.d_learning_rate))


def _labels(config: ml_collections.ConfigDict, batch: dict) -> jax.Array | None:
  return batch["label"] if config.model.num_classes else None


def _uses_ema(config: ml_collections.ConfigDict) -> bool:
  return config.gan.ema_half_life_images > 0


def init_state(config: ml_collections.ConfigDict, key: jax.Array) -> GANState:
  """Initialises generator, discriminator, both Adam states, the EMA copy and ADA's p."""
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
                  d_collections=d_collections, d_opt_state=d_opt.init(d_params),
                  # A copy, not the same buffers: the train step donates both trees.
                  g_ema_params=jax.tree.map(jnp.copy, g_params) if _uses_ema(config) else None,
                  ada_p=jnp.zeros((), jnp.float32))


def discriminator_loss(kind: str, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """The discriminator's loss for real and fake logits, averaged over the batch (no penalties)."""
  if kind == "non_saturating":
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))
  if kind == "hinge":
    return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))
  if kind == "least_squares":
    return 0.5 * (jnp.mean((real_logits - 1.0) ** 2) + jnp.mean(fake_logits ** 2))
  if kind == "wgan_gp":
    return jnp.mean(fake_logits) - jnp.mean(real_logits)
  raise ValueError(f"unknown GAN loss {kind!r}")


def generator_loss(kind: str, fake_logits: jax.Array) -> jax.Array:
  """The generator's loss for the discriminator's logits on its samples."""
  if kind == "non_saturating":
    return jnp.mean(jax.nn.softplus(-fake_logits))
  if kind in ("hinge", "wgan_gp"):
    return -jnp.mean(fake_logits)
  if kind == "least_squares":
    return 0.5 * jnp.mean((fake_logits - 1.0) ** 2)
  raise ValueError(f"unknown GAN loss {kind!r}")


def input_gradient_sq_norms(d_fn: Callable[[jax.Array], jax.Array], images: jax.Array) -> jax.Array:
  """||d d_fn(x)_i / d x_i||^2 for each example i of `images` ([N]); d_fn maps images to logits [N]."""
  grads = jax.grad(lambda x: jnp.sum(d_fn(x)))(images)
  return jnp.sum(jnp.square(grads), axis=tuple(range(1, images.ndim)))


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
  """E||grad_x D(x)||^2 over real images (Mescheder et al. 2018); the loss adds gamma/2 times this."""
  return jnp.mean(input_gradient_sq_norms(d_fn, real))


def gradient_penalty(d_fn: Callable[[jax.Array], jax.Array], key: jax.Array, real: jax.Array,
                     fake: jax.Array) -> jax.Array:
  """WGAN-GP's E(||grad D(x_hat)|| - 1)^2 at x_hat = eps*real + (1-eps)*fake, eps ~ U(0,1) per example."""
  eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
  x_hat = eps * real + (1.0 - eps) * fake
  # The small constant keeps the sqrt's gradient finite where D is locally flat.
  norms = jnp.sqrt(input_gradient_sq_norms(d_fn, x_hat) + 1e-12)
  return jnp.mean(jnp.square(norms - 1.0))


def make_train_step(config: ml_collections.ConfigDict) -> Callable:
  """Returns the pure step `(state, batch, key) -> (state, metrics)`: n_critic D updates, one G update."""
  generator, discriminator = models.build_generator(config), models.build_discriminator(config)
  g_opt, d_opt = _optimizers(config)
  augment = augment_lib.make_augment(config)
  g = config.gan
  loss_kind, n_critic = g.loss, g.n_critic
  latent_dim = config.model.latent_dim

  def d_update(critic: _Critic, real, fake, labels, key, r1_now) -> tuple[_Critic, dict]:
    """One D update; adds R1 when `r1_now` (a traced bool; None: never)."""
    k_real, k_fake, k_gp = jax.random.split(key, 3)
    real_aug, fake_aug = augment(k_real, real, critic.ada_p), augment(k_fake, fake, critic.ada_p)

    def loss_fn(params):
      real_logits, coll = common.apply_train(discriminator, params, critic.collections, real_aug, labels)
      fake_logits, coll = common.apply_train(discriminator, params, coll, fake_aug, labels)
      loss = discriminator_loss(loss_kind, real_logits, fake_logits)
      extras = {}
      if loss_kind == "wgan_gp":
        d_fn = lambda x: common.apply_train(discriminator, params, coll, x, labels)[0]
        extras["gp"] = gradient_penalty(d_fn, k_gp, real_aug, fake_aug)
        loss = loss + g.gp_weight * extras["gp"]
      return loss, (coll, real_logits, fake_logits, extras)

    (loss, (coll, real_logits, fake_logits, extras)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(critic.params)
    metrics = {"d_loss": loss, "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
               "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)), **extras}
    if g.r1_gamma > 0 and r1_now is not None:
      def r1_loss(params):
        # Through the augmentation to the un-augmented reals, as StyleGAN2-ADA does.
        d_fn = lambda x: common.apply_train(discriminator, params, critic.collections,
                                            augment(k_real, x, critic.ada_p), labels)[0]
        penalty = r1_penalty(d_fn, real)
        return 0.5 * g.r1_gamma * g.r1_every * penalty, penalty

      def with_r1():
        (_, penalty), r1_grads = jax.value_and_grad(r1_loss, has_aux=True)(critic.params)
        return penalty, r1_grads

      def without_r1():
        return jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, critic.params)

      penalty, r1_grads = jax.lax.cond(r1_now, with_r1, without_r1)
      grads = jax.tree.map(jnp.add, grads, r1_grads)
      metrics["r1_penalty"] = penalty  # 0 on steps without R1, so logged means are 1/r1_every of it.
    updates, opt_state = d_opt.update(grads, critic.opt_state, critic.params)
    ada_p = critic.ada_p
    if g.augment == "ada":
      # Every critic update sees the step's one real batch: n_critic adjustments share its images.
      ada_p = augment_lib.ada_adjust(ada_p, real_logits, g.ada_target, g.ada_speed_images * g.n_critic)
      metrics["ada_p"] = ada_p
      metrics["d_real_sign"] = jnp.mean(jnp.sign(real_logits))
    critic = _Critic(params=optax.apply_updates(critic.params, updates), collections=coll,
                     opt_state=opt_state, ada_p=ada_p)
    return critic, metrics

  def train_step(state: GANState, batch: dict, key: jax.Array) -> tuple[GANState, dict]:
    real = batch["image"]
    labels = _labels(config, batch)
    n = real.shape[0]
    z_key, g_aug_key, d_key = jax.random.split(key, 3)
    z = jax.random.normal(z_key, (n, latent_dim), jnp.float32)

    # One generator forward serves the last D update and the G update: D sees its output detached,
    # and G's gradient flows back through the saved VJP (as the PyTorch DCGAN example).
    def generate_fn(g_params):
      return common.apply_train(generator, g_params, state.g_collections, z, labels)
    fake, g_vjp, g_collections = jax.vjp(generate_fn, state.g_params, has_aux=True)

    critic = _Critic(params=state.d_params, collections=state.d_collections,
                     opt_state=state.d_opt_state, ada_p=state.ada_p)
    d_keys = jax.random.split(d_key, n_critic)
    if n_critic > 1:
      def extra_critic_step(critic, key):
        k_z, k_d = jax.random.split(key)
        z_extra = jax.random.normal(k_z, (n, latent_dim), jnp.float32)
        fake_extra, _ = common.apply_train(generator, state.g_params, state.g_collections, z_extra, labels)
        # R1 only in the last update, so its lazy interval counts train steps.
        return d_update(critic, real, fake_extra, labels, k_d, None)[0], None
      critic, _ = jax.lax.scan(extra_critic_step, critic, d_keys[:-1])
    critic, metrics = d_update(critic, real, jax.lax.stop_gradient(fake), labels, d_keys[-1],
                               state.step % g.r1_every == 0)

    def g_loss_fn(fake_images):
      fake_aug = augment(g_aug_key, fake_images, critic.ada_p)
      logits, d_coll = common.apply_train(discriminator, critic.params, critic.collections, fake_aug, labels)
      return generator_loss(loss_kind, logits), d_coll

    (g_loss, d_collections), fake_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
    (g_grads,) = g_vjp(fake_grad)
    g_updates, g_opt_state = g_opt.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    g_ema_params = state.g_ema_params
    if _uses_ema(config):
      g_ema_params = ema.update(g_ema_params, g_params, state.step, n, g.ema_half_life_images,
                                g.ema_rampup)

    new_state = state.replace(step=state.step + 1, g_params=g_params, g_collections=g_collections,
                              g_opt_state=g_opt_state, d_params=critic.params,
                              d_collections=d_collections, d_opt_state=critic.opt_state,
                              g_ema_params=g_ema_params, ada_p=critic.ada_p)
    return new_state, {**metrics, "g_loss": g_loss}

  return train_step


def generate(config: ml_collections.ConfigDict, state: GANState, key: jax.Array, num: int,
             labels: jax.Array | None = None, z: jax.Array | None = None) -> jax.Array:
  """Samples `num` images in [-1, 1] (from `z` when given, else from `key`), with EMA weights if on."""
  generator = models.build_generator(config)
  z, labels = common.generator_inputs(config, key, num, labels, z)
  params = state.g_ema_params if _uses_ema(config) else state.g_params
  return common.apply_eval(generator, params, state.g_collections, z, labels)
