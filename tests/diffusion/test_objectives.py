"""Objectives against the papers' closed forms and hand-computed float64 losses.

The networks here are small affine functions of (x, noise label, class label), so every loss is
computed independently in numpy float64 from the same noise levels and noise.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.diffusion import objectives

SIGMA_DATA = 0.5
SIGMAS = np.array([0.002, 0.1, 0.5, 2.0, 80.0])
RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(-1, 1, (3, 2, 2, 1))
NOISE = RNG.normal(size=IMAGES.shape)
LABELS = np.array([0, 3, 7])


def toy_net(scale, label_scale):
  """F(x, c, y) = scale x + label_scale c + 0.01 y, per image."""
  def net(x, c, y):
    per_image = lambda a: jnp.reshape(a, (-1, 1, 1, 1))
    return scale * x + per_image(label_scale * c) + per_image(0.01 * y.astype(jnp.float32))
  return net


def _per_image(a):
  return np.reshape(a, (-1, 1, 1, 1))


def test_edm_preconditioning_equals_table_1():
  got = [np.asarray(c, np.float64) for c in objectives.edm_preconditioning(jnp.asarray(SIGMAS, jnp.float32), SIGMA_DATA)]
  s, sd = SIGMAS, SIGMA_DATA
  expected = [sd ** 2 / (s ** 2 + sd ** 2), s * sd / np.sqrt(s ** 2 + sd ** 2),
              1 / np.sqrt(s ** 2 + sd ** 2), np.log(s) / 4]
  for g, e in zip(got, expected):
    np.testing.assert_allclose(g, e, rtol=2e-6)


def test_edm_preconditioning_has_the_properties_it_was_derived_from():
  c_skip, c_out, c_in, _ = (np.asarray(c, np.float64) for c in objectives.edm_preconditioning(
      jnp.asarray(SIGMAS, jnp.float32), SIGMA_DATA))
  s2, sd2 = SIGMAS ** 2, SIGMA_DATA ** 2
  # Unit-variance network input; unit-variance effective target (y - c_skip (y + n)) / c_out;
  # c_skip minimises that variance; and lambda makes the effective weight lambda c_out^2 one.
  np.testing.assert_allclose(c_in ** 2 * (s2 + sd2), 1, rtol=1e-5)
  np.testing.assert_allclose(((1 - c_skip) ** 2 * sd2 + c_skip ** 2 * s2) / c_out ** 2, 1, rtol=1e-5)
  np.testing.assert_allclose(c_skip, sd2 / (sd2 + s2), rtol=1e-6)  # argmin of (1-c)^2 sd2 + c^2 s2
  weight = np.asarray(objectives.edm_loss_weight(jnp.asarray(SIGMAS, jnp.float32), SIGMA_DATA), np.float64)
  np.testing.assert_allclose(weight * c_out ** 2, 1, rtol=1e-5)


def test_edm_training_sigmas_are_log_normal():
  sigma, noise = objectives.edm_training_inputs(jax.random.key(0), jnp.zeros((20_000, 1, 1, 1)), -1.2, 1.2)
  log_sigma = np.log(np.asarray(sigma, np.float64))
  assert abs(log_sigma.mean() + 1.2) < 0.04 and abs(log_sigma.std() - 1.2) < 0.03
  assert noise.shape == (20_000, 1, 1, 1) and abs(float(jnp.std(noise)) - 1) < 0.03


def test_edm_loss_equals_hand_computed_value():
  sigma = np.array([0.3, 1.0, 5.0])
  got = objectives.edm_loss(toy_net(0.7, 1.0), jnp.asarray(IMAGES, jnp.float32), jnp.asarray(LABELS),
                            jnp.asarray(sigma, jnp.float32), jnp.asarray(NOISE, jnp.float32), SIGMA_DATA)
  s, sd = _per_image(sigma), SIGMA_DATA
  x = IMAGES + s * NOISE
  c_skip, c_out, c_in = sd ** 2 / (s ** 2 + sd ** 2), s * sd / np.sqrt(s ** 2 + sd ** 2), 1 / np.sqrt(s ** 2 + sd ** 2)
  f = 0.7 * c_in * x + np.log(s) / 4 + 0.01 * _per_image(LABELS)
  denoised = c_skip * x + c_out * f
  expected = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2 * ((denoised - IMAGES) ** 2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_flow_path_runs_from_data_to_noise_with_constant_velocity():
  x0, eps = jnp.asarray(IMAGES, jnp.float32), jnp.asarray(NOISE, jnp.float32)
  np.testing.assert_allclose(objectives.flow_interpolate(x0, eps, jnp.zeros(3)), IMAGES, rtol=1e-6)
  np.testing.assert_allclose(objectives.flow_interpolate(x0, eps, jnp.ones(3)), NOISE, rtol=1e-6)
  # The target is the path's time derivative, by finite differences.
  t, h = jnp.full((3,), 0.4), 1e-2
  fd = (objectives.flow_interpolate(x0, eps, t + h) - objectives.flow_interpolate(x0, eps, t - h)) / (2 * h)
  np.testing.assert_allclose(fd, objectives.flow_target(x0, eps), rtol=1e-3, atol=1e-4)


def test_flow_loss_equals_hand_computed_value():
  t = np.array([0.1, 0.5, 0.9])
  got = objectives.flow_loss(toy_net(0.5, 1 / 999), jnp.asarray(IMAGES, jnp.float32), jnp.asarray(LABELS),
                             jnp.asarray(t, jnp.float32), jnp.asarray(NOISE, jnp.float32))
  x_t = (1 - _per_image(t)) * IMAGES + _per_image(t) * NOISE
  v = 0.5 * x_t + _per_image(t) + 0.01 * _per_image(LABELS)  # the noise label 999 t, scaled back
  expected = ((v - (NOISE - IMAGES)) ** 2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_flow_training_times_are_uniform():
  t, _ = objectives.flow_training_inputs(jax.random.key(1), jnp.zeros((20_000, 1, 1, 1)))
  t = np.asarray(t)
  assert t.min() >= 0 and t.max() < 1
  assert abs(t.mean() - 0.5) < 0.01 and abs(t.var() - 1 / 12) < 0.003


def test_linear_betas_are_ho_et_al_scaled_to_the_number_of_steps():
  betas = objectives.ddpm_betas("linear", 1000)
  np.testing.assert_allclose(betas[[0, -1]], [1e-4, 0.02], rtol=1e-12)
  np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) / 999, rtol=1e-9)
  np.testing.assert_allclose(objectives.ddpm_betas("linear", 250)[[0, -1]], [4e-4, 0.08], rtol=1e-12)
  product = 1.0
  for beta in betas[:10]:
    product *= 1 - beta
  np.testing.assert_allclose(objectives.ddpm_alpha_bars(betas)[9], product, rtol=1e-12)


def test_cosine_alpha_bars_follow_the_squared_cosine():
  t_max, s = 1000, 0.008
  alpha_bars = objectives.ddpm_alpha_bars(objectives.ddpm_betas("cosine", t_max))
  f = lambda t: np.cos((t / t_max + s) / (1 + s) * np.pi / 2) ** 2
  t = np.arange(1, 900)  # abar_t of step t is abar(t + 1) in the paper's continuous time
  np.testing.assert_allclose(alpha_bars[t - 1], f(t) / f(0), rtol=1e-9)
  assert objectives.ddpm_betas("cosine", t_max)[-1] == 0.999  # the cap at the end


def test_ddpm_loss_equals_hand_computed_value():
  alpha_bars = objectives.ddpm_alpha_bars(objectives.ddpm_betas("linear", 1000))
  t = np.array([0, 499, 999])
  got = objectives.ddpm_loss(toy_net(0.3, 1e-3), jnp.asarray(IMAGES, jnp.float32), jnp.asarray(LABELS),
                             jnp.asarray(t), jnp.asarray(NOISE, jnp.float32), alpha_bars)
  a = _per_image(alpha_bars[t])
  x_t = np.sqrt(a) * IMAGES + np.sqrt(1 - a) * NOISE
  eps = 0.3 * x_t + 1e-3 * _per_image(t) + 0.01 * _per_image(LABELS)
  expected = ((NOISE - eps) ** 2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_ddpm_training_timesteps_cover_the_schedule():
  t, noise = objectives.ddpm_training_inputs(jax.random.key(2), jnp.zeros((5000, 1, 1, 1)), 10)
  assert t.dtype == jnp.int32 and noise.shape == (5000, 1, 1, 1)
  np.testing.assert_allclose(np.bincount(np.asarray(t), minlength=10) / 5000, 0.1, atol=0.02)
  assert math.isclose(float(np.asarray(t).max()), 9)
