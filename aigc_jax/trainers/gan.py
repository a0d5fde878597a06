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

With `train.grad_accum_steps` = k every update runs over k micro-batches (`common.accumulate_gradients`):
the latents, the augmentations and WGAN-GP's interpolation weights are drawn for the whole batch
and sliced, so with `model.g_norm` and `model.d_norm` "none" the step equals the plain one. Batch
norm and minibatch std see micro-batch statistics (running statistics become the micro-batches'
mean), as with accumulation in any framework.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from aigc_jax import augment as augment_lib
from aigc_jax import models
from aigc_jax.config import fail
from aigc_jax.errors import UserError
from aigc_jax.models.dcgan import Discriminator, Generator
from aigc_jax.trainers import common, ema
from aigc_jax.trainers.family import Family, SampleOption

LOSSES = ("non_saturating", "hinge", "least_squares", "wgan_gp")
AUGMENTS = ("none", "diffaugment", "ada")
DIFFAUGMENT_OPS = ("translation", "cutout", "color")
ADA_PIPELINES = ("blit", "geom", "color", "bg", "bgc")  # StyleGAN2-ADA's --augpipe names
D_NORMS = ("batch", "none", "spectral")
G_NORMS = ("batch", "none")


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


def defaults() -> ml_collections.ConfigDict:
  """The `gan` config section: every key with its default."""
  g = ml_collections.ConfigDict()
  g.loss = "non_saturating"
  g.d_learning_rate = 2e-4
  g.gp_weight = 10.0          # wgan_gp: weight of the gradient penalty on real/fake interpolates
  g.r1_gamma = 0.0            # R1 penalty gamma/2 * E||grad D(real)||^2; 0: off
  g.r1_every = 16             # lazy R1: apply every k steps, scaled by k
  g.n_critic = 1              # discriminator updates per generator update
  g.ema_half_life_images = 0  # generator EMA half-life in images (StyleGAN2-ADA's ema_kimg*1000); 0: off
  g.ema_rampup = 0.05         # EMA half-life is at most this fraction of the images seen; 0: no ramp-up
  g.augment = "none"          # augmentation of D's inputs: none | diffaugment | ada
  g.diffaugment = "translation,cutout,color"  # diffaugment: comma-separated policy
  g.ada_pipeline = "bgc"      # ada: op groups (StyleGAN2-ADA's --augpipe): blit | geom | color | bg | bgc
  g.ada_target = 0.6          # ada: target for E[sign(D(real))]
  g.ada_speed_images = 100_000  # ada: images over which p can move from 0 to 1
  return g


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the gan.* keys and the model.* keys the DCGAN reads."""
  gan = config.gan
  if config.model.d_norm not in D_NORMS:
    fail("model.d_norm", config.model.d_norm, f"choose one of {', '.join(D_NORMS)}")
  if config.model.g_norm not in G_NORMS:
    fail("model.g_norm", config.model.g_norm, f"choose one of {', '.join(G_NORMS)}")
  group = config.model.d_minibatch_std
  if isinstance(group, bool) or not isinstance(group, int) or group < 0:
    fail("model.d_minibatch_std", group, "must be 0 (off) or a positive group size")
  batch, k = config.train.batch_size, config.train.grad_accum_steps
  if group and (batch // k) % group:
    of = f"train.batch_size ({batch})" if k == 1 else \
        f"the micro-batch (train.batch_size {batch} / train.grad_accum_steps {k} = {batch // k})"
    fail("model.d_minibatch_std", group, f"the group size must divide {of}")
  if gan.loss not in LOSSES:
    fail("gan.loss", gan.loss, f"choose one of {', '.join(LOSSES)}")
  for key in ("d_learning_rate", "r1_every", "n_critic", "ada_speed_images"):
    value = gan[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
      fail(f"gan.{key}", value, "must be a positive number")
  if gan.gp_weight < 0:
    fail("gan.gp_weight", gan.gp_weight, "must be >= 0")
  if gan.r1_gamma < 0:
    fail("gan.r1_gamma", gan.r1_gamma, "must be >= 0 (0: no R1 penalty)")
  if gan.ema_half_life_images < 0:
    fail("gan.ema_half_life_images", gan.ema_half_life_images, "must be 0 (no EMA) or positive")
  if gan.ema_rampup < 0:
    fail("gan.ema_rampup", gan.ema_rampup, "must be 0 (no ramp-up) or positive")
  if gan.augment not in AUGMENTS:
    fail("gan.augment", gan.augment, f"choose one of {', '.join(AUGMENTS)}")
  ops = [op.strip() for op in gan.diffaugment.split(",") if op.strip()]
  if any(op not in DIFFAUGMENT_OPS for op in ops) or (gan.augment == "diffaugment" and not ops):
    fail("gan.diffaugment", gan.diffaugment, f"a comma-separated list of {', '.join(DIFFAUGMENT_OPS)}")
  if gan.ada_pipeline not in ADA_PIPELINES:
    fail("gan.ada_pipeline", gan.ada_pipeline, f"choose one of {', '.join(ADA_PIPELINES)}")
  if not 0 < gan.ada_target < 1:
    fail("gan.ada_target", gan.ada_target, "must be in (0, 1)")
  if gan.loss == "wgan_gp" and config.model.d_norm == "batch":
    fail("model.d_norm", "batch", "gan.loss='wgan_gp' penalises per-example gradients, which batch "
         "norm couples: use model.d_norm='none' or 'spectral'")


def build_generator(config: ml_collections.ConfigDict) -> Generator:
  """The DCGAN generator the config describes."""
  return Generator(image_size=config.data.image_size, channels=config.data.channels,
                   latent_dim=config.model.latent_dim, width=config.model.width,
                   num_classes=config.model.num_classes, norm=config.model.g_norm,
                   dtype=models.compute_dtype(config))


def build_discriminator(config: ml_collections.ConfigDict) -> Discriminator:
  """The DCGAN discriminator the config describes."""
  return Discriminator(image_size=config.data.image_size, width=config.model.width,
                       num_classes=config.model.num_classes, norm=config.model.d_norm,
                       minibatch_std=config.model.d_minibatch_std, dtype=models.compute_dtype(config))


@dataclasses.dataclass(frozen=True)
class Hyper:
  """The GAN's hyper-parameters, read once from the config."""
  loss: str
  n_critic: int
  gp_weight: float
  r1_gamma: float
  r1_every: int
  ada: bool
  ada_target: float
  ada_speed_images: float
  ema_half_life_images: float
  ema_rampup: float
  latent_dim: int
  conditional: bool
  micro_batches: int  # train.grad_accum_steps

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Hyper":
    """The hyper-parameters of `config`."""
    gan = config.gan
    return cls(loss=gan.loss, n_critic=gan.n_critic, gp_weight=gan.gp_weight, r1_gamma=gan.r1_gamma,
               r1_every=gan.r1_every, ada=gan.augment == "ada", ada_target=gan.ada_target,
               ada_speed_images=gan.ada_speed_images, ema_half_life_images=gan.ema_half_life_images,
               ema_rampup=gan.ema_rampup, latent_dim=config.model.latent_dim,
               conditional=bool(config.model.num_classes),
               micro_batches=config.train.grad_accum_steps)

  @property
  def uses_ema(self) -> bool:
    """Whether G's weights are averaged (and sampled from the average)."""
    return self.ema_half_life_images > 0


@dataclasses.dataclass(frozen=True)
class Networks:
  """The modules, optimisers and augmentation one step uses."""
  generator: Generator
  discriminator: Discriminator
  g_opt: optax.GradientTransformation
  d_opt: optax.GradientTransformation
  augment: augment_lib.Augment

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Networks":
    """The networks of `config`."""
    return cls(build_generator(config), build_discriminator(config),
               common.adam(config, config.train.learning_rate),
               common.adam(config, config.gan.d_learning_rate), augment_lib.make_augment(config))


def init_state(config: ml_collections.ConfigDict, key: jax.Array) -> GANState:
  """Initialises generator, discriminator, both Adam states, the EMA copy and ADA's p."""
  nets, hp = Networks.from_config(config), Hyper.from_config(config)
  g_key, d_key = jax.random.split(key)
  z = jnp.zeros((1, hp.latent_dim), jnp.float32)
  labels = jnp.zeros((1,), jnp.int32) if hp.conditional else None
  size, channels = config.data.image_size, config.data.channels
  g_params, g_collections = common.init_variables(nets.generator, g_key, z, labels, train=False)
  d_params, d_collections = common.init_variables(
      nets.discriminator, d_key, jnp.zeros((1, size, size, channels)), labels, train=False)
  return GANState(step=jnp.zeros((), jnp.int32), g_params=g_params, g_collections=g_collections,
                  g_opt_state=nets.g_opt.init(g_params), d_params=d_params,
                  d_collections=d_collections, d_opt_state=nets.d_opt.init(d_params),
                  # A copy, not the same buffers: the train step donates both trees.
                  g_ema_params=jax.tree.map(jnp.copy, g_params) if hp.uses_ema else None,
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


def gradient_penalty(d_fn: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array,
                     eps: jax.Array) -> jax.Array:
  """WGAN-GP's E(||grad D(x_hat)|| - 1)^2 at x_hat = eps*real + (1-eps)*fake, eps [N] per example
  (drawn from U(0, 1) by the caller)."""
  eps = eps.reshape((-1,) + (1,) * (real.ndim - 1)).astype(real.dtype)
  x_hat = eps * real + (1.0 - eps) * fake
  # The small constant keeps the sqrt's gradient finite where D is locally flat.
  norms = jnp.sqrt(input_gradient_sq_norms(d_fn, x_hat) + 1e-12)
  return jnp.mean(jnp.square(norms - 1.0))


def lazy_r1_gradient(nets: Networks, hp: Hyper, critic: _Critic, real: jax.Array,
                     labels: jax.Array | None, augment_key: jax.Array,
                     r1_now: jax.Array) -> tuple[jax.Array, Any]:
  """(R1 penalty, its gradient) on steps where `r1_now`, else zeros; scaled by the lazy interval."""
  n = real.shape[0]

  def augment(images, rows):
    if hp.micro_batches == 1:
      return nets.augment(augment_key, images, critic.ada_p)
    # A micro-batch's rows of the whole batch's augmentation: the draws of the plain step (the
    # ops are per example), for k times the augmentation's cost on the steps that take R1.
    whole = jnp.zeros((n,) + images.shape[1:], images.dtype).at[rows].set(images)
    return nets.augment(augment_key, whole, critic.ada_p)[rows]

  def r1_loss(params, micro):
    # Through the augmentation to the un-augmented reals, as StyleGAN2-ADA does.
    d_fn = lambda x: common.apply_train(nets.discriminator, params, critic.collections,
                                        augment(x, micro["row"]), micro["label"])[0]
    penalty = r1_penalty(d_fn, micro["real"])
    return 0.5 * hp.r1_gamma * hp.r1_every * penalty, penalty

  def with_r1():
    (_, penalty), grads = common.accumulate_gradients(
        r1_loss, critic.params, {"real": real, "label": labels, "row": jnp.arange(n)},
        hp.micro_batches)
    return penalty, grads

  def without_r1():
    return jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, critic.params)

  return jax.lax.cond(r1_now, with_r1, without_r1)


def discriminator_update(nets: Networks, hp: Hyper, critic: _Critic, real: jax.Array, fake: jax.Array,
                         labels: jax.Array | None, key: jax.Array,
                         r1_now: jax.Array | None) -> tuple[_Critic, dict]:
  """One D update on real and (detached) fake images; adds lazy R1 when `r1_now` (None: never)."""
  k_real, k_fake, k_gp = jax.random.split(key, 3)
  # Drawn for the whole batch, so that micro-batches see the draws of the plain step.
  inputs = {"real": nets.augment(k_real, real, critic.ada_p),
            "fake": nets.augment(k_fake, fake, critic.ada_p), "label": labels}
  if hp.loss == "wgan_gp":
    inputs["eps"] = jax.random.uniform(k_gp, (real.shape[0],), jnp.float32)

  def loss_fn(params, micro):
    real_logits, coll = common.apply_train(nets.discriminator, params, critic.collections,
                                           micro["real"], micro["label"])
    fake_logits, coll = common.apply_train(nets.discriminator, params, coll, micro["fake"],
                                           micro["label"])
    loss = discriminator_loss(hp.loss, real_logits, fake_logits)
    means = {"d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
             "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
             "d_real_sign": jnp.mean(jnp.sign(real_logits))}
    if hp.loss == "wgan_gp":
      d_fn = lambda x: common.apply_train(nets.discriminator, params, coll, x, micro["label"])[0]
      means["gp"] = gradient_penalty(d_fn, micro["real"], micro["fake"], micro["eps"])
      loss = loss + hp.gp_weight * means["gp"]
    return loss, (coll, means)

  (loss, (coll, means)), grads = common.accumulate_gradients(loss_fn, critic.params, inputs,
                                                             hp.micro_batches)
  real_sign = means.pop("d_real_sign")
  metrics = {"d_loss": loss, **means}
  if hp.r1_gamma > 0 and r1_now is not None:
    penalty, r1_grads = lazy_r1_gradient(nets, hp, critic, real, labels, k_real, r1_now)
    grads = jax.tree.map(jnp.add, grads, r1_grads)
    metrics["r1_penalty"] = penalty  # 0 on steps without R1, so logged means are 1/r1_every of it.
  updates, opt_state = nets.d_opt.update(grads, critic.opt_state, critic.params)
  ada_p = critic.ada_p
  if hp.ada:
    # Every critic update sees the step's one real batch: n_critic adjustments share its images.
    ada_p = augment_lib.ada_adjust(ada_p, real_sign, real.shape[0], hp.ada_target,
                                   hp.ada_speed_images * hp.n_critic)
    metrics["ada_p"] = ada_p
    metrics["d_real_sign"] = real_sign
  critic = _Critic(params=optax.apply_updates(critic.params, updates), collections=coll,
                   opt_state=opt_state, ada_p=ada_p)
  return critic, metrics


def generate_fakes(nets: Networks, hp: Hyper, state: GANState, z: jax.Array,
                   labels: jax.Array | None) -> tuple[jax.Array, dict]:
  """G's training-mode images of latents `z` and its updated collections, micro-batch by micro-batch."""
  def generate(micro):
    return common.apply_train(nets.generator, state.g_params, state.g_collections, micro["z"],
                              micro["label"])

  inputs = {"z": z, "label": labels}
  if hp.micro_batches == 1:
    return generate(inputs)
  fakes, collections = jax.lax.map(generate, common.split_micro_batches(inputs, hp.micro_batches))
  return common.merge_micro_batches(fakes), jax.tree.map(lambda c: jnp.mean(c, axis=0), collections)


def _apply_generator_gradient(nets: Networks, state: GANState, g_grads: Any) -> tuple[Any, Any]:
  g_updates, g_opt_state = nets.g_opt.update(g_grads, state.g_opt_state, state.g_params)
  return optax.apply_updates(state.g_params, g_updates), g_opt_state


def generator_update(nets: Networks, hp: Hyper, state: GANState, critic: _Critic, fake: jax.Array,
                     g_vjp: Callable, labels: jax.Array | None,
                     key: jax.Array) -> tuple[Any, Any, dict, jax.Array]:
  """One G update through the updated D; returns (g_params, g_opt_state, D's collections, g_loss)."""
  def g_loss_fn(fake_images):
    fake_aug = nets.augment(key, fake_images, critic.ada_p)
    logits, d_coll = common.apply_train(nets.discriminator, critic.params, critic.collections,
                                        fake_aug, labels)
    return generator_loss(hp.loss, logits), d_coll

  (g_loss, d_collections), fake_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
  (g_grads,) = g_vjp(fake_grad)
  return (*_apply_generator_gradient(nets, state, g_grads), d_collections, g_loss)


def generator_update_in_micro_batches(nets: Networks, hp: Hyper, state: GANState, critic: _Critic,
                                      fake: jax.Array, z: jax.Array, labels: jax.Array | None,
                                      key: jax.Array) -> tuple[Any, Any, dict, jax.Array]:
  """`generator_update` over micro-batches, without G's activations for the whole batch.

  D's gradient with respect to the fakes goes through the whole batch's augmentation (the plain
  step's draws), D running one micro-batch at a time; G's gradient is G's VJP of it, G running
  again on each micro-batch (`generator_update` keeps G's activations from the step's one forward).
  """
  fake_aug, augment_vjp = jax.vjp(lambda images: nets.augment(key, images, critic.ada_p), fake)

  def critic_gradient(micro):
    def loss_fn(images):
      logits, d_coll = common.apply_train(nets.discriminator, critic.params, critic.collections,
                                          images, micro["label"])
      return generator_loss(hp.loss, logits), d_coll
    return jax.value_and_grad(loss_fn, has_aux=True)(micro["fake"])

  (g_losses, d_collections), micro_grads = jax.lax.map(
      critic_gradient, common.split_micro_batches({"fake": fake_aug, "label": labels}, hp.micro_batches))
  # Row by row the gradient of its own micro-batch's mean loss (the augmentation is per example).
  (fake_grad,) = augment_vjp(common.merge_micro_batches(micro_grads))

  def pullback(g_params, micro):
    # A surrogate whose gradient is G's VJP of the micro-batch's rows of fake_grad.
    images, _ = common.apply_train(nets.generator, g_params, state.g_collections, micro["z"],
                                   micro["label"])
    return jnp.vdot(images, micro["fake_grad"]), ()

  _, g_grads = common.accumulate_gradients(
      pullback, state.g_params, {"z": z, "label": labels, "fake_grad": fake_grad}, hp.micro_batches)
  d_collections = jax.tree.map(lambda c: jnp.mean(c, axis=0), d_collections)
  return (*_apply_generator_gradient(nets, state, g_grads), d_collections, jnp.mean(g_losses))


def make_train_step(config: ml_collections.ConfigDict) -> Callable:
  """Returns the pure step `(state, batch, key) -> (state, metrics)`: n_critic D updates, one G update."""
  nets, hp = Networks.from_config(config), Hyper.from_config(config)

  def train_step(state: GANState, batch: dict, key: jax.Array) -> tuple[GANState, dict]:
    real = batch["image"]
    labels = batch["label"] if hp.conditional else None
    n = real.shape[0]
    z_key, g_aug_key, d_key = jax.random.split(key, 3)
    z = jax.random.normal(z_key, (n, hp.latent_dim), jnp.float32)

    if hp.micro_batches == 1:
      # One generator forward serves the last D update and the G update: D sees its output detached,
      # and G's gradient flows back through the saved VJP (as the PyTorch DCGAN example).
      def generate_fn(g_params):
        return common.apply_train(nets.generator, g_params, state.g_collections, z, labels)
      fake, g_vjp, g_collections = jax.vjp(generate_fn, state.g_params, has_aux=True)
    else:
      fake, g_collections = generate_fakes(nets, hp, state, z, labels)

    # Discriminator updates: n_critic - 1 on fresh fakes, the last on `fake` (with lazy R1).
    critic = _Critic(params=state.d_params, collections=state.d_collections,
                     opt_state=state.d_opt_state, ada_p=state.ada_p)
    d_keys = jax.random.split(d_key, hp.n_critic)
    if hp.n_critic > 1:
      def extra_critic_step(critic, key):
        k_z, k_d = jax.random.split(key)
        z_extra = jax.random.normal(k_z, (n, hp.latent_dim), jnp.float32)
        fake_extra, _ = generate_fakes(nets, hp, state, z_extra, labels)
        # R1 only in the last update, so its lazy interval counts train steps.
        return discriminator_update(nets, hp, critic, real, fake_extra, labels, k_d, None)[0], None
      critic, _ = jax.lax.scan(extra_critic_step, critic, d_keys[:-1])
    critic, metrics = discriminator_update(nets, hp, critic, real, jax.lax.stop_gradient(fake), labels,
                                           d_keys[-1], state.step % hp.r1_every == 0)

    if hp.micro_batches == 1:
      g_params, g_opt_state, d_collections, g_loss = generator_update(
          nets, hp, state, critic, fake, g_vjp, labels, g_aug_key)
    else:
      g_params, g_opt_state, d_collections, g_loss = generator_update_in_micro_batches(
          nets, hp, state, critic, fake, z, labels, g_aug_key)

    g_ema_params = state.g_ema_params
    if hp.uses_ema:
      g_ema_params = ema.update(g_ema_params, g_params, state.step, n, hp.ema_half_life_images,
                                hp.ema_rampup)

    new_state = state.replace(step=state.step + 1, g_params=g_params, g_collections=g_collections,
                              g_opt_state=g_opt_state, d_params=critic.params,
                              d_collections=d_collections, d_opt_state=critic.opt_state,
                              g_ema_params=g_ema_params, ada_p=critic.ada_p)
    return new_state, {**metrics, "g_loss": g_loss}

  return train_step


def noise(config: ml_collections.ConfigDict, key: jax.Array, num: int) -> jax.Array:
  """`num` latents z ~ N(0, I) drawn from `key`."""
  return jax.random.normal(key, (num, config.model.latent_dim), jnp.float32)


def truncation(options: Mapping[str, Any]) -> float:
  """The truncation psi of `options` (1: none); UserError outside [0, 1]."""
  psi = options.get("trunc", 1.0)
  if not 0 <= psi <= 1:
    raise UserError(f"--trunc={psi} is not valid: the truncation psi must be in [0, 1] (1: off)")
  return psi


TRUNCATION = SampleOption("trunc", 1.0, "Truncation psi in [0, 1]: latents are scaled by psi towards "
                          "the prior's mean (1: off).")


def generate(config: ml_collections.ConfigDict, state: GANState, z: jax.Array,
             labels: jax.Array | None, keys: jax.Array, options: Mapping[str, Any]) -> jax.Array:
  """Images in [-1, 1] from latents `z` (truncated by options["trunc"]), with EMA weights if kept."""
  del keys  # the generator is deterministic given z
  params = state.g_ema_params if Hyper.from_config(config).uses_ema else state.g_params
  return common.apply_eval(build_generator(config), params, state.g_collections,
                           truncation(options) * z, labels)


def sampling_fields(config: ml_collections.ConfigDict, state: GANState) -> dict:
  """What a shipped GAN keeps: G's weights (the EMA ones when kept) and G's collections."""
  params = state.g_ema_params if Hyper.from_config(config).uses_ema else state.g_params
  return {"g_params": params, "g_collections": state.g_collections}


def with_sampling_fields(config: ml_collections.ConfigDict, state: GANState, fields: dict) -> GANState:
  """`state` with a shipped GAN's fields put back (as the EMA weights too, when kept)."""
  restored = flax.serialization.from_state_dict(
      {"g_params": state.g_params, "g_collections": state.g_collections}, fields)
  ema_params = restored["g_params"] if Hyper.from_config(config).uses_ema else None
  return state.replace(g_params=restored["g_params"], g_collections=restored["g_collections"],
                       g_ema_params=ema_params)


FAMILY = Family(
    name="gan", model_names=("dcgan",), section="gan", defaults=defaults, validate=validate,
    init_state=init_state, make_train_step=make_train_step, noise=noise, generate=generate,
    sample_options=(TRUNCATION,), sampling_fields=sampling_fields,
    with_sampling_fields=with_sampling_fields)
