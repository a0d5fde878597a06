"""Diffusion and flow-matching family: a U-Net trained with EDM, flow matching or DDPM, sampled by
jitted samplers, with an EMA of the weights, label dropout and classifier-free guidance.

Options, each a `diffusion.*` config key: the objective (`objective`: `edm` with `sigma_data`,
`p_mean`, `p_std`; `flow`; `ddpm` with `ddpm_schedule` and `ddpm_timesteps`), the U-Net's
`channel_mult`, `num_res_blocks`, `attn_resolutions` and `dropout` (its base width is
`model.width`), a linear learning-rate warm-up (`lr_warmup_steps`) and cosine decay
(`lr_decay_steps`), label dropout for guidance
(`label_dropout`, conditional models only), the EMA sampled from (`ema_half_life_images`,
`ema_rampup`, the GAN's EMA), and sampling defaults that `sample` can override: `sampler` (edm:
heun, euler, stochastic with `s_churn`, `s_min`, `s_max`, `s_noise`; flow: heun, euler; ddpm: ddim
with `ddim_eta`, ancestral), `steps`, `guidance` (convention in `aigc_jax.diffusion.guidance`: 1 is
the conditional model alone, 0 the unconditional one), and EDM's `sigma_min`, `sigma_max`, `rho`.

A seed is the initial noise: `noise(config, key, 1)[0]` is its image's N(0, I) noise, and the
stochastic samplers draw each image's further noise from a key made of that image's initial noise,
so a seed gives the same image at any grid position and in any batch.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from aigc_jax import models
from aigc_jax.diffusion import flat_random, guidance, objectives, samplers
from aigc_jax.errors import UserError
from aigc_jax.models import unet
from aigc_jax.trainers import common, ema
from aigc_jax.trainers.family import Family, SampleOption

OBJECTIVES = ("edm", "flow", "ddpm")
SAMPLERS = {"edm": ("heun", "euler", "stochastic"), "flow": ("heun", "euler"),
            "ddpm": ("ddim", "ancestral")}
DDPM_SCHEDULES = ("linear", "cosine")
MODEL_NAMES = ("unet",)
# Image sizes the U-Net takes: powers of two, and MNIST's 28 (28 -> 14 -> 7).
IMAGE_SIZES = (8, 16, 28, 32, 64, 128, 256)


@flax.struct.dataclass
class DiffusionState:
  """Everything a diffusion run carries from step to step."""
  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any  # moving average of params; None when diffusion.ema_half_life_images = 0


def defaults() -> ml_collections.ConfigDict:
  """The `diffusion` config section: every key with its default (EDM on a small U-Net)."""
  c = ml_collections.ConfigDict()
  c.objective = "edm"             # edm | flow | ddpm
  c.sigma_data = 0.5              # edm: the data's standard deviation in the preconditioning
  c.p_mean = -1.2                 # edm: ln(sigma) ~ N(p_mean, p_std^2) in training
  c.p_std = 1.2
  c.sigma_min = 0.002             # edm sampling: the noise levels' range and the schedule's rho
  c.sigma_max = 80.0
  c.rho = 7.0
  c.ddpm_schedule = "linear"      # ddpm: linear | cosine betas
  c.ddpm_timesteps = 1000         # ddpm: T
  c.channel_mult = [1, 2, 2]      # U-Net: channels per level in units of model.width
  c.num_res_blocks = 2            # U-Net: residual blocks per level (the decoder has one more)
  c.attn_resolutions = [8]        # U-Net: feature-map sizes with self-attention
  c.dropout = 0.1                 # U-Net: dropout in every residual block
  c.label_dropout = 0.1           # conditional models (others ignore it): probability of training on the null class; 0: off
  c.lr_warmup_steps = 0           # learning rate ramps linearly from 0 over this many steps; 0: off
  c.lr_decay_steps = 0            # after the warm-up it falls along a cosine to 0 at this step and stays 0; 0: off
  c.ema_half_life_images = 500_000  # EMA half-life in images (EDM's ema_halflife_kimg * 1000); 0: off
  c.ema_rampup = 0.05             # EMA half-life is at most this fraction of the images seen; 0: off
  c.sampler = "heun"              # edm: heun | euler | stochastic; flow: heun | euler; ddpm: ddim | ancestral
  c.steps = 18                    # sampler steps (edm heun: 2 * steps - 1 network evaluations)
  c.guidance = 1.0                # classifier-free guidance weight: 1 conditional, 0 unconditional
  c.s_churn = 40.0                # edm stochastic: EDM's S_churn, S_min, S_max, S_noise (its ImageNet-64 values)
  c.s_min = 0.05
  c.s_max = 50.0
  c.s_noise = 1.003
  c.ddim_eta = 0.0                # ddim: 0 deterministic, 1 ancestral
  return c


# --- Validation --------------------------------------------------------------------------------

def _fail(key: str, value: Any, allowed: str) -> None:
  raise UserError(f"config.{key}={value!r} is not valid: {allowed}")


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _check_sampling(config: ml_collections.ConfigDict, sampler: Any, steps: Any, guidance_weight: Any,
                    prefix: str) -> None:
  """Checks sampler, steps and guidance, reported under `prefix` (config keys or sample flags)."""
  d = config.diffusion
  allowed = SAMPLERS.get(d.objective, ())
  if sampler not in allowed:
    raise UserError(f"{prefix}sampler={sampler!r} is not valid: diffusion.objective={d.objective!r} "
                    f"allows {', '.join(allowed)}")
  max_steps = d.ddpm_timesteps if d.objective == "ddpm" else None
  if not _is_int(steps) or steps < 1 or (max_steps and steps > max_steps):
    limit = f" and at most diffusion.ddpm_timesteps ({max_steps})" if max_steps else ""
    raise UserError(f"{prefix}steps={steps!r} is not valid: must be an integer >= 1{limit}")
  if not _is_number(guidance_weight) or guidance_weight < 0:
    raise UserError(f"{prefix}guidance={guidance_weight!r} is not valid: must be a number >= 0 "
                    "(1: the conditional model, 0: unconditional)")
  if guidance_weight != 1 and not (config.model.num_classes and d.label_dropout > 0):
    raise UserError(f"{prefix}guidance={guidance_weight!r} is not valid: guidance needs a "
                    "class-conditional model trained with diffusion.label_dropout > 0; use 1")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises UserError naming the first `diffusion.*` or `model.*` key whose value cannot work."""
  d = config.diffusion
  if config.model.name not in MODEL_NAMES:
    _fail("model.name", config.model.name, f"model.family='diffusion' allows {', '.join(MODEL_NAMES)}")
  if not _is_int(config.model.width) or config.model.width < 1:
    _fail("model.width", config.model.width, "must be a positive integer")
  if config.data.image_size not in IMAGE_SIZES:
    _fail("data.image_size", config.data.image_size,
          f"the U-Net takes {', '.join(map(str, IMAGE_SIZES))} px")
  if d.objective not in OBJECTIVES:
    _fail("diffusion.objective", d.objective, f"choose one of {', '.join(OBJECTIVES)}")
  for key in ("sigma_data", "p_std", "sigma_min", "sigma_max", "rho"):
    if not _is_number(d[key]) or d[key] <= 0:
      _fail(f"diffusion.{key}", d[key], "must be a positive number")
  if not _is_number(d.p_mean):
    _fail("diffusion.p_mean", d.p_mean, "must be a number")
  if d.sigma_min >= d.sigma_max:
    _fail("diffusion.sigma_min", d.sigma_min, f"must be below diffusion.sigma_max ({d.sigma_max})")
  if d.ddpm_schedule not in DDPM_SCHEDULES:
    _fail("diffusion.ddpm_schedule", d.ddpm_schedule, f"choose one of {', '.join(DDPM_SCHEDULES)}")
  if not _is_int(d.ddpm_timesteps) or d.ddpm_timesteps < 2:
    _fail("diffusion.ddpm_timesteps", d.ddpm_timesteps, "must be an integer >= 2")
  mult = list(d.channel_mult)
  if not mult or not all(_is_int(m) and m > 0 for m in mult):
    _fail("diffusion.channel_mult", d.channel_mult, "must be a non-empty list of positive integers")
  size = config.data.image_size
  if size % 2 ** (len(mult) - 1):
    _fail("diffusion.channel_mult", d.channel_mult,
          f"{len(mult)} levels halve data.image_size={size} {len(mult) - 1} times, which must "
          "divide it evenly")
  sizes = unet.resolutions(size, len(mult))
  if any(r not in sizes for r in d.attn_resolutions):
    _fail("diffusion.attn_resolutions", d.attn_resolutions,
          f"the U-Net's levels are at {', '.join(map(str, sizes))} px")
  if not _is_int(d.num_res_blocks) or d.num_res_blocks < 1:
    _fail("diffusion.num_res_blocks", d.num_res_blocks, "must be an integer >= 1")
  for key in ("dropout", "label_dropout"):
    if not _is_number(d[key]) or not 0 <= d[key] < 1:
      _fail(f"diffusion.{key}", d[key], "must be in [0, 1)")
  if not _is_int(d.lr_warmup_steps) or d.lr_warmup_steps < 0:
    _fail("diffusion.lr_warmup_steps", d.lr_warmup_steps, "must be 0 (off) or a positive integer")
  if not _is_int(d.lr_decay_steps) or d.lr_decay_steps < 0 or 0 < d.lr_decay_steps <= d.lr_warmup_steps:
    _fail("diffusion.lr_decay_steps", d.lr_decay_steps,
          "must be 0 (off) or an integer above diffusion.lr_warmup_steps")
  if not _is_number(d.ema_half_life_images) or d.ema_half_life_images < 0:
    _fail("diffusion.ema_half_life_images", d.ema_half_life_images, "must be 0 (no EMA) or positive")
  if not _is_number(d.ema_rampup) or d.ema_rampup < 0:
    _fail("diffusion.ema_rampup", d.ema_rampup, "must be 0 (no ramp-up) or positive")
  for key in ("s_churn", "s_min", "s_max"):
    if not _is_number(d[key]) or d[key] < 0:
      _fail(f"diffusion.{key}", d[key], "must be a number >= 0")
  if not _is_number(d.s_noise) or d.s_noise <= 0:
    _fail("diffusion.s_noise", d.s_noise, "must be a positive number")
  if not _is_number(d.ddim_eta) or d.ddim_eta < 0:
    _fail("diffusion.ddim_eta", d.ddim_eta, "must be a number >= 0 (0: deterministic, 1: ancestral)")
  _check_sampling(config, d.sampler, d.steps, d.guidance, "config.diffusion.")


# --- Model and training ------------------------------------------------------------------------

def build_unet(config: ml_collections.ConfigDict) -> unet.UNet:
  """Returns the U-Net the config describes."""
  d = config.diffusion
  return unet.UNet(image_size=config.data.image_size, channels=config.data.channels,
                   width=config.model.width, channel_mult=tuple(d.channel_mult),
                   num_res_blocks=d.num_res_blocks, attn_resolutions=tuple(d.attn_resolutions),
                   dropout=d.dropout, num_classes=config.model.num_classes,
                   dtype=models.compute_dtype(config))


def learning_rate(config: ml_collections.ConfigDict) -> optax.ScalarOrSchedule:
  """The learning rate by step: `train.learning_rate` after the optional warm-up and cosine decay."""
  peak = config.train.learning_rate
  warmup, decay = config.diffusion.lr_warmup_steps, config.diffusion.lr_decay_steps
  if decay:
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, decay, end_value=0.0)
  return optax.linear_schedule(0.0, peak, warmup) if warmup else peak


def _optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return common.adam(config, learning_rate(config))


def _uses_ema(config: ml_collections.ConfigDict) -> bool:
  return config.diffusion.ema_half_life_images > 0


def init_state(config: ml_collections.ConfigDict, key: jax.Array) -> DiffusionState:
  """Initialises the U-Net, its Adam state and the EMA copy."""
  size, channels = config.data.image_size, config.data.channels
  labels = jnp.zeros((1,), jnp.int32) if config.model.num_classes else None
  params, _ = common.init_variables(build_unet(config), key, jnp.zeros((1, size, size, channels)),
                                    jnp.zeros((1,)), labels, train=False)
  return DiffusionState(step=jnp.zeros((), jnp.int32), params=params,
                        opt_state=_optimizer(config).init(params),
                        # A copy, not the same buffers: the train step donates both trees.
                        ema_params=jax.tree.map(jnp.copy, params) if _uses_ema(config) else None)


def _alpha_bars(config: ml_collections.ConfigDict) -> np.ndarray:
  d = config.diffusion
  return objectives.ddpm_alpha_bars(objectives.ddpm_betas(d.ddpm_schedule, d.ddpm_timesteps))


def training_inputs(config: ml_collections.ConfigDict, key: jax.Array,
                    images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The configured objective's per-image noise level (sigma, or time t) and noise, from `key`."""
  d = config.diffusion
  if d.objective == "edm":
    return objectives.edm_training_inputs(key, images, d.p_mean, d.p_std)
  if d.objective == "flow":
    return objectives.flow_training_inputs(key, images)
  return objectives.ddpm_training_inputs(key, images, d.ddpm_timesteps)


def objective_loss(config: ml_collections.ConfigDict, net: objectives.Net, images: jax.Array,
                   labels: jax.Array | None, level: jax.Array, noise: jax.Array) -> jax.Array:
  """The configured objective's per-image loss at noise levels `level` with `noise`."""
  d = config.diffusion
  if d.objective == "edm":
    return objectives.edm_loss(net, images, labels, level, noise, d.sigma_data)
  if d.objective == "flow":
    return objectives.flow_loss(net, images, labels, level, noise)
  return objectives.ddpm_loss(net, images, labels, level, noise, _alpha_bars(config))


def make_train_step(config: ml_collections.ConfigDict) -> Callable:
  """Returns the pure step `(state, batch, key) -> (state, metrics)`: one Adam step on the
  objective's loss (labels dropped to the null class at `diffusion.label_dropout`), then the EMA."""
  network = build_unet(config)
  opt = _optimizer(config)
  d = config.diffusion
  num_classes = config.model.num_classes

  def train_step(state: DiffusionState, batch: dict, key: jax.Array) -> tuple[DiffusionState, dict]:
    images = batch["image"]
    input_key, label_key, dropout_key = jax.random.split(key, 3)
    # Drawn for the whole batch, so micro-batches (train.grad_accum_steps) train on the same draws.
    level, noise = training_inputs(config, input_key, images)
    labels = None
    if num_classes:
      labels = batch["label"]
      if d.label_dropout > 0:
        labels = guidance.drop_labels(label_key, labels, d.label_dropout, num_classes)

    def loss_fn(params, micro, micro_key):
      net = lambda x, noise_labels, class_labels: network.apply(
          {"params": params}, x, noise_labels, class_labels, train=True,
          rngs={"dropout": micro_key})
      return jnp.mean(objective_loss(config, net, micro["image"], micro["label"], micro["level"],
                                     micro["noise"])), {}

    # train.grad_accum_steps micro-batches share one update (common.accumulate_gradients); each
    # draws its own dropout masks.
    (loss, _), grads = common.accumulate_gradients(
        loss_fn, state.params, {"image": images, "label": labels, "level": level, "noise": noise},
        config.train.grad_accum_steps, key=dropout_key)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if _uses_ema(config):
      ema_params = ema.update(ema_params, params, state.step, images.shape[0],
                              d.ema_half_life_images, d.ema_rampup)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=ema_params)
    return new_state, {"loss": loss}

  return train_step


# --- Sampling ----------------------------------------------------------------------------------

SAMPLE_OPTIONS = (
    SampleOption("sampler", None, "sampler: edm heun|euler|stochastic, flow heun|euler, "
                 "ddpm ddim|ancestral (default: config.diffusion.sampler)", str),
    SampleOption("steps", None, "sampler steps (default: config.diffusion.steps)", int),
    SampleOption("guidance", None, "classifier-free guidance weight: 1 the conditional model, "
                 "0 unconditional, > 1 stronger (default: config.diffusion.guidance)", float),
)


def sample_settings(config: ml_collections.ConfigDict, options: Mapping[str, Any]) -> dict:
  """The options with those not given taken from the config; UserError for a bad value."""
  known = {o.name for o in SAMPLE_OPTIONS}
  unknown = sorted(set(options) - known)
  if unknown:
    raise UserError(f"--{unknown[0]} is not a diffusion sampling option; they are "
                    f"{', '.join(sorted(known))}")
  d = config.diffusion
  settings = {"sampler": d.sampler, "steps": d.steps, "guidance": d.guidance}
  settings.update({k: v for k, v in options.items() if v is not None})
  _check_sampling(config, settings["sampler"], settings["steps"], settings["guidance"], "--")
  return settings


def noise(config: ml_collections.ConfigDict, key: jax.Array, num: int) -> jax.Array:
  """`num` draws of the samplers' unit Gaussian initial noise [num, H, W, C] from one key."""
  size, channels = config.data.image_size, config.data.channels
  return flat_random.normal(key, (num, size, size, channels))  # = jax.random.normal's values


def _model(config: ml_collections.ConfigDict, state: DiffusionState, labels: jax.Array | None,
           weight: float) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The objective's view of the (EMA) network, labels and guidance applied: (x, level) -> output."""
  network = build_unet(config)
  params = state.ema_params if _uses_ema(config) else state.params
  net = lambda x, noise_labels, class_labels: network.apply(
      {"params": params}, x, noise_labels, class_labels, train=False)
  d = config.diffusion
  if d.objective == "edm":
    view = lambda x, sigma, y: objectives.edm_denoiser(net, x, sigma, y, d.sigma_data)
  elif d.objective == "flow":
    view = lambda x, t, y: objectives.flow_velocity(net, x, t, y)
  else:
    view = lambda x, t, y: objectives.ddpm_epsilon(net, x, t, y)
  if config.model.num_classes:
    if labels is None:
      raise ValueError("a conditional model needs labels")
    view = guidance.guided(view, weight, config.model.num_classes)
  return lambda x, level: view(x, jnp.full((x.shape[0],), level), labels)


def _sample(config: ml_collections.ConfigDict, state: DiffusionState, noise_batch: jax.Array,
            labels: jax.Array | None, keys: jax.Array, options: Mapping[str, Any],
            frames: int | None) -> jax.Array:
  s = sample_settings(config, options)
  d = config.diffusion
  model = _model(config, state, labels, s["guidance"])
  if d.objective == "edm":
    kw = dict(steps=s["steps"], sigma_min=d.sigma_min, sigma_max=d.sigma_max, rho=d.rho,
              order=1 if s["sampler"] == "euler" else 2, frames=frames)
    if s["sampler"] == "stochastic":
      kw.update(s_churn=d.s_churn, s_min=d.s_min, s_max=d.s_max, s_noise=d.s_noise)
    return samplers.edm(model, noise_batch, keys, **kw)
  if d.objective == "flow":
    return samplers.flow(model, noise_batch, None, steps=s["steps"],
                         order=1 if s["sampler"] == "euler" else 2, frames=frames)
  if s["sampler"] == "ddim":
    return samplers.ddim(model, noise_batch, keys, steps=s["steps"], alpha_bars=_alpha_bars(config),
                         eta=d.ddim_eta, frames=frames)
  return samplers.ancestral(model, noise_batch, keys, steps=s["steps"],
                            alpha_bars=_alpha_bars(config), frames=frames)


def generate(config: ml_collections.ConfigDict, state: DiffusionState, noise_batch: jax.Array,
             labels: jax.Array | None, keys: jax.Array, options: Mapping[str, Any]) -> jax.Array:
  """Samples one image in [-1, 1] from each initial noise (and label), with the EMA weights if on;
  `keys` (one per image) drive the stochastic samplers' fresh noise."""
  return jnp.clip(_sample(config, state, noise_batch, labels, keys, options, None), -1.0, 1.0)


def trajectory(config: ml_collections.ConfigDict, state: DiffusionState, noise_batch: jax.Array,
               labels: jax.Array | None, keys: jax.Array, options: Mapping[str, Any],
               frames: int) -> jax.Array:
  """[frames, N, H, W, C] in [-1, 1]: the sampler's iterate from the noise to the sample. EDM's
  iterate x = y + sigma n is shown as x / sqrt(1 + sigma^2), the variance-preserving view that
  DDPM's and flow's iterates already are, so its first frames are noise rather than saturated."""
  xs = _sample(config, state, noise_batch, labels, keys, options, frames)
  d = config.diffusion
  if d.objective == "edm":
    steps = sample_settings(config, options)["steps"]
    sigmas = samplers.edm_sigmas(steps, d.sigma_min, d.sigma_max, d.rho)
    sigmas = sigmas[samplers.frame_steps(steps, frames)]
    xs = xs / jnp.asarray(np.sqrt(1.0 + sigmas ** 2), jnp.float32)[:, None, None, None, None]
  return jnp.clip(xs, -1.0, 1.0)


def sampling_fields(config: ml_collections.ConfigDict, state: DiffusionState) -> dict:
  """The weights sampling uses (the EMA ones when on), as a state dict of arrays."""
  field = "ema_params" if _uses_ema(config) else "params"
  return {field: jax.device_get(flax.serialization.to_state_dict(getattr(state, field)))}


def with_sampling_fields(config: ml_collections.ConfigDict, state: DiffusionState,
                         fields: dict) -> DiffusionState:
  """`state` (freshly initialised) with the fields of `sampling_fields` put back (the EMA weights
  as the trained ones too, so a run started from them trains on from there)."""
  restored = {name: flax.serialization.from_state_dict(getattr(state, name), value)
              for name, value in fields.items()}
  if "ema_params" in restored:
    restored["params"] = jax.tree.map(np.copy, restored["ema_params"])  # the step donates both trees
  return state.replace(**restored)


FAMILY = Family(
    name="diffusion", model_names=MODEL_NAMES, section="diffusion", defaults=defaults,
    validate=validate, init_state=init_state, make_train_step=make_train_step, noise=noise,
    generate=generate, sample_options=SAMPLE_OPTIONS, sample_settings=sample_settings,
    trajectory=trajectory,
    sampling_fields=sampling_fields, with_sampling_fields=with_sampling_fields,
    sampling_keys=("sigma_min", "sigma_max", "rho", "sampler", "steps", "guidance", "s_churn", "s_min",
                   "s_max", "s_noise", "ddim_eta"))
