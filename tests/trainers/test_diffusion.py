"""Diffusion family: validation errors are one line, training lowers the loss and keeps the EMA,
a seed is the same image in any batch, guidance weights mean what they say, trajectories end at
the sample, and the sampling fields rebuild a state that samples the same."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from aigc_jax import config as config_lib
from aigc_jax.errors import UserError
from aigc_jax.diffusion import objectives
from aigc_jax.trainers import diffusion, ema
from aigc_jax.trainers.family import Family


def tiny_config(objective="edm", num_classes=10):
  c = config_lib.base_config()
  c.diffusion = diffusion.defaults()
  c.model.family, c.model.name = "diffusion", "unet"
  c.model.width, c.model.num_classes = 8, num_classes
  c.data.image_size, c.data.channels = 8, 1
  c.train.batch_size, c.train.learning_rate, c.train.b1 = 16, 3e-3, 0.9
  d = c.diffusion
  # One level (8 px): compiling the U-Net's train step is most of these tests' time.
  d.objective, d.channel_mult, d.num_res_blocks, d.attn_resolutions = objective, (1,), 1, ()
  d.dropout, d.label_dropout = 0.0, 0.2
  d.ema_half_life_images, d.ema_rampup = 160, 0.0
  d.sampler, d.steps = ("ddim", 5) if objective == "ddpm" else ("heun", 4)
  return c


def pseudo_batch(config, seed=0):
  """Four fixed 8x8 patterns (their index is the label), each with a little noise."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:8, :8] / 7.0
  patterns = np.stack([xx, yy, (xx + yy) / 2, ((xx * 4).astype(int) % 2) * 1.0]) * 1.6 - 0.8
  labels = np.arange(config.train.batch_size) % 4
  images = patterns[labels][..., None] + rng.normal(0, 0.02, (config.train.batch_size, 8, 8, 1))
  return {"image": jnp.asarray(images, jnp.float32), "label": jnp.asarray(labels, jnp.int32)}


@functools.cache
def trained():
  """(config, initial state, state after 40 steps, step fn, loss at a fixed key before/after)."""
  config = tiny_config()
  step = jax.jit(diffusion.make_train_step(config))
  state0 = jax.jit(functools.partial(diffusion.init_state, config))(jax.random.key(0))
  batch = pseudo_batch(config)
  fixed_key = jax.random.key(99)
  loss_before = float(step(state0, batch, fixed_key)[1]["loss"])
  state = state0
  for i in range(40):
    state, metrics = step(state, batch, jax.random.key(i))
    assert np.isfinite(float(metrics["loss"]))
  loss_after = float(step(state, batch, fixed_key)[1]["loss"])
  return config, state0, state, step, loss_before, loss_after


def test_the_family_describes_itself():
  assert isinstance(diffusion.FAMILY, Family) and diffusion.FAMILY.section == "diffusion"
  assert diffusion.FAMILY.model_names == ("unet",)
  assert {o.name for o in diffusion.FAMILY.sample_options} == {"sampler", "steps", "guidance"}
  for objective in ("edm", "flow", "ddpm"):
    diffusion.validate(tiny_config(objective))
  config = config_lib.base_config()
  config.diffusion = diffusion.defaults()
  config.model.family, config.model.name = "diffusion", "unet"
  diffusion.validate(config)  # the defaults work on the base config
  # The settings recorded beside a score: those given, the rest from the config.
  assert diffusion.FAMILY.settings(tiny_config(), {"steps": 7, "guidance": None}) == {
      "sampler": "heun", "steps": 7, "guidance": 1.0}


@pytest.mark.parametrize("key, value, message", [
    ("model.name", "dcgan", "allows unet"),
    ("data.image_size", 12, "8, 16, 28"),
    ("diffusion.objective", "score", "edm, flow, ddpm"),
    ("diffusion.sigma_data", 0.0, "positive"),
    ("diffusion.sigma_min", 100.0, "below diffusion.sigma_max"),
    ("diffusion.rho", -1.0, "positive"),
    ("diffusion.ddpm_schedule", "quadratic", "linear, cosine"),
    ("diffusion.ddpm_timesteps", 1, ">= 2"),
    ("diffusion.channel_mult", (), "non-empty"),
    ("diffusion.channel_mult", (1, 1, 1, 1, 1), "divide it evenly"),
    ("diffusion.attn_resolutions", (4,), "levels are at 8 px"),
    ("diffusion.num_res_blocks", 0, ">= 1"),
    ("diffusion.dropout", 1.0, "[0, 1)"),
    ("diffusion.label_dropout", -0.1, "[0, 1)"),
    ("diffusion.lr_warmup_steps", -5, "0 (off)"),
    ("diffusion.lr_decay_steps", -3, "above diffusion.lr_warmup_steps"),
    ("diffusion.ema_half_life_images", -1, "no EMA"),
    ("diffusion.sampler", "ddim", "allows heun, euler, stochastic"),
    ("diffusion.steps", 0, ">= 1"),
    ("diffusion.guidance", -1.0, ">= 0"),
    ("diffusion.s_noise", 0.0, "positive"),
    ("diffusion.ddim_eta", -0.5, ">= 0"),
])
def test_each_bad_value_is_one_line_naming_the_key(key, value, message):
  config = tiny_config()
  section, name = key.split(".")
  with config.unlocked():
    config[section][name] = value
  with pytest.raises(UserError) as err:
    diffusion.validate(config)
  text = str(err.value)
  assert "\n" not in text and text.startswith(f"config.{key}=") and message in text, text


def test_the_learning_rate_warms_up_linearly_then_falls_along_a_cosine_to_zero():
  config = tiny_config()
  config.train.learning_rate = 1e-3
  config.diffusion.lr_warmup_steps, config.diffusion.lr_decay_steps = 4, 12
  steps = np.array([0, 2, 4, 6, 8, 10, 12, 30])
  ramp = np.minimum(steps / 4, 1.0)
  fall = 0.5 * (1 + np.cos(np.pi * np.clip((steps - 4) / 8, 0.0, 1.0)))
  expected = 1e-3 * np.where(steps < 4, ramp, fall)
  schedule = diffusion.learning_rate(config)
  np.testing.assert_allclose([float(schedule(s)) for s in steps], expected, rtol=1e-5, atol=1e-9)


def test_guidance_needs_a_conditional_model_trained_with_label_dropout():
  for num_classes, label_dropout in ((0, 0.2), (10, 0.0)):
    config = tiny_config(num_classes=num_classes)
    config.diffusion.label_dropout, config.diffusion.guidance = label_dropout, 2.0
    with pytest.raises(UserError, match="guidance needs a class-conditional model"):
      diffusion.validate(config)


@pytest.mark.parametrize("objective, options, flag, message", [
    ("edm", {"steps": 0}, "--steps=0", ">= 1"),
    ("edm", {"steps": 2.5}, "--steps=2.5", "integer"),
    ("ddpm", {"steps": 1001}, "--steps=1001", "at most diffusion.ddpm_timesteps (1000)"),
    ("flow", {"sampler": "stochastic"}, "--sampler='stochastic'", "allows heun, euler"),
    ("ddpm", {"sampler": "heun"}, "--sampler='heun'", "allows ddim, ancestral"),
    ("edm", {"guidance": -2.0}, "--guidance=-2.0", ">= 0"),
    ("edm", {"trunc": 0.7}, "--trunc", "sampler, steps"),
])
def test_bad_sample_options_are_one_line(objective, options, flag, message):
  with pytest.raises(UserError) as err:
    diffusion.sample_settings(tiny_config(objective), options)
  text = str(err.value)
  assert "\n" not in text and text.startswith(flag) and message in text, text
  # The defaults are filled in from the config.
  assert diffusion.sample_settings(tiny_config(objective), {"steps": 3})["sampler"] == tiny_config(objective).diffusion.sampler


def test_training_on_pseudo_data_lowers_the_loss():
  _, _, _, _, before, after = trained()
  assert after < 0.7 * before, (before, after)


def test_the_initialised_unet_outputs_zero_so_the_denoiser_starts_as_c_skip_x():
  config, state0, _, _, _, _ = trained()
  batch = pseudo_batch(config)
  out = jax.jit(lambda p: diffusion.build_unet(config).apply(
      {"params": p}, batch["image"], jnp.ones((16,)), batch["label"], train=False))(state0.params)
  assert out.shape == batch["image"].shape and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, 0.0)


def test_ema_follows_the_shared_formula():
  config, state0, _, step, _, _ = trained()
  state1, _ = step(state0, pseudo_batch(config), jax.random.key(0))
  d = config.diffusion
  update = jax.jit(ema.update, static_argnums=(3, 4, 5))
  expected = update(state0.ema_params, state1.params, state0.step, config.train.batch_size,
                    d.ema_half_life_images, d.ema_rampup)
  for got, want in zip(jax.tree.leaves(state1.ema_params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert int(state1.step) == 1


def _seed_noise(config, seeds):
  return jnp.concatenate([diffusion.noise(config, jax.random.key(s), 1) for s in seeds])


def _keys_of(noise):
  """Per-image sampler keys that follow the image: derived from its noise's first value."""
  words = jax.lax.bitcast_convert_type(noise.reshape(noise.shape[0], -1)[:, 0], jnp.uint32)
  return jax.vmap(jax.random.key)(words)


@functools.partial(jax.jit, static_argnames=("config", "options"))
def _generate(config, state, noise, labels, options):
  """generate, jitted: a frozen (hashable) config and the options as (name, value) pairs."""
  return diffusion.generate(config, state, noise, labels, _keys_of(noise), dict(options))


def _frozen(config):
  return ml_collections.FrozenConfigDict(config)


OPTIONS = (("steps", 3),)


def test_a_seed_is_the_same_image_at_any_grid_position_even_with_a_stochastic_sampler():
  config, _, state, _, _, _ = trained()
  options = (("sampler", "stochastic"), ("steps", 3))
  first = _generate(_frozen(config), state, _seed_noise(config, [3, 5]), jnp.asarray([1, 2]), options)
  second = _generate(_frozen(config), state, _seed_noise(config, [5, 9]), jnp.asarray([2, 2]), options)
  assert first.shape == (2, 8, 8, 1) and float(jnp.abs(first).max()) <= 1.0
  np.testing.assert_allclose(first[1], second[0], atol=1e-4)  # last bits may depend on the position
  assert float(jnp.abs(first[0] - first[1]).max()) > 1e-2


def test_guidance_zero_ignores_the_label_and_weight_one_uses_it():
  config, _, state, _, _, _ = trained()
  noise = jnp.tile(_seed_noise(config, [7]), (2, 1, 1, 1))
  labels = jnp.asarray([0, 1])
  unconditional = _generate(_frozen(config), state, noise, labels, (("guidance", 0.0),) + OPTIONS)
  # The same input at two batch positions may differ in the last bits.
  np.testing.assert_allclose(unconditional[0], unconditional[1], atol=1e-4)
  conditional = _generate(_frozen(config), state, noise, labels, OPTIONS)  # config.diffusion.guidance = 1
  assert float(jnp.abs(conditional[0] - conditional[1]).max()) > 1e-2


def test_the_trajectory_starts_in_noise_and_ends_at_the_sample():
  config, _, state, _, _, _ = trained()
  noise, labels = _seed_noise(config, [1, 2]), jnp.asarray([0, 3])
  frames = jax.jit(lambda s, n, y: diffusion.trajectory(config, s, n, y, _keys_of(n), dict(OPTIONS), 3))(
      state, noise, labels)
  assert frames.shape == (3, 2, 8, 8, 1)
  np.testing.assert_allclose(frames[-1], _generate(_frozen(config), state, noise, labels, OPTIONS), atol=1e-5)
  # sigma_max * noise in the variance-preserving view: the noise itself, up to 1/sqrt(1 + 1/80^2).
  np.testing.assert_allclose(frames[0], jnp.clip(noise, -1, 1), atol=1e-3)


def test_sampling_fields_rebuild_a_state_that_samples_the_same():
  config, _, state, _, _, _ = trained()
  fields = diffusion.sampling_fields(config, state)
  assert set(fields) == {"ema_params"}
  blank = jax.tree.map(jnp.zeros_like, state)
  rebuilt = diffusion.with_sampling_fields(config, blank, fields)
  noise, labels = _seed_noise(config, [4, 6]), jnp.asarray([2, 5])
  np.testing.assert_array_equal(_generate(_frozen(config), rebuilt, noise, labels, OPTIONS),
                                _generate(_frozen(config), state, noise, labels, OPTIONS))


@pytest.mark.parametrize("objective", ["flow", "ddpm"])
def test_objective_loss_is_the_configured_objective(objective):
  config = tiny_config(objective)
  net = lambda x, c, y: 0.5 * x + 0.01 * c.reshape(-1, 1, 1, 1)  # a stand-in network
  images = pseudo_batch(config)["image"]
  alpha_bars = objectives.ddpm_alpha_bars(objectives.ddpm_betas("linear", 1000))

  @jax.jit
  def both(key):
    if objective == "flow":
      t, noise = objectives.flow_training_inputs(key, images)
      expected = objectives.flow_loss(net, images, None, t, noise)
    else:
      t, noise = objectives.ddpm_training_inputs(key, images, 1000)
      expected = objectives.ddpm_loss(net, images, None, t, noise, alpha_bars)
    level, drawn = diffusion.training_inputs(config, key, images)
    return diffusion.objective_loss(config, net, images, None, level, drawn), expected, (level, drawn), (t, noise)

  got, expected, draws, expected_draws = both(jax.random.key(3))
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  for a, b in zip(draws, expected_draws):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("objective, sampler", [("flow", "euler"), ("ddpm", "ancestral")])
def test_flow_and_ddpm_models_sample(objective, sampler):
  # The trained network's weights fit any objective's U-Net of the same shape.
  _, _, state, _, _, _ = trained()
  config = tiny_config(objective)
  out = _generate(_frozen(config), state, _seed_noise(config, [0, 1]), jnp.asarray([0, 1]),
                  (("sampler", sampler),) + OPTIONS)
  assert out.shape == (2, 8, 8, 1) and np.all(np.isfinite(out)) and float(jnp.abs(out).max()) <= 1.0


def test_a_128_px_rgb_train_step():
  """Folder-sized images: the U-Net's levels halve 128 px down to 16 px; one step runs and learns."""
  config = tiny_config(num_classes=0)
  config.data.image_size, config.data.channels = 128, 3
  config.model.width, config.train.batch_size = 4, 2
  config.diffusion.channel_mult = (1, 1, 1, 1)
  config_lib.validate(config)
  state = jax.jit(functools.partial(diffusion.init_state, config))(jax.random.key(0))
  images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 128, 128, 3)), jnp.float32)
  step = jax.jit(diffusion.make_train_step(config))
  new, metrics = step(state, {"image": images, "label": jnp.zeros((2,), jnp.int32)}, jax.random.key(1))
  assert int(new.step) == 1 and np.isfinite(float(metrics["loss"]))
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new.params, state.params)
  assert max(jax.tree.leaves(moved)) > 0
