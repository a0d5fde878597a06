"""Samplers driven by closed-form ideal models instead of a network.

For 2-D Gaussian data N(MU, COV) the ideal denoiser (and velocity, and epsilon) is affine, so a
deterministic sampler is an affine map of its noise: its output mean and covariance are exact from
three runs (noise 0, e1, e2) and are compared with the exact solution of the probability-flow ODE
(a closed form per eigendirection of COV), with the error shrinking at the sampler's order as steps
grow. Stochastic samplers are checked by Monte Carlo, and every sampler on a weighted mixture of
three points lands on the points in the mixture's proportions.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.diffusion import objectives, samplers

MU = np.array([0.3, -0.2])
COV = np.array([[0.25, 0.1], [0.1, 0.16]])
POINTS = np.array([[-0.6, -0.4], [0.5, -0.3], [0.0, 0.6]])
WEIGHTS = np.array([0.5, 0.3, 0.2])
EDM = dict(sigma_min=0.002, sigma_max=80.0, rho=7.0)
ALPHA_BARS = {s: objectives.ddpm_alpha_bars(objectives.ddpm_betas(s, 1000)) for s in ("linear", "cosine")}


def _flat(x):
  return x.reshape(x.shape[0], 2)


def _f32(a):
  return jnp.asarray(a, jnp.float32)


# --- Ideal models for N(MU, COV) ------------------------------------------------------------

_S2, _Q = np.linalg.eigh(COV)


def _cov_function(f):
  """Q diag(f(s2)) Q^T for COV = Q diag(s2) Q^T: e.g. (COV + sigma^2 I)^-1 without a solver."""
  return _f32(_Q) @ jnp.diag(f(_f32(_S2))) @ _f32(_Q).T


def gaussian_denoiser(x, sigma):
  """E[y | y + sigma n = x] = MU + COV (COV + sigma^2 I)^-1 (x - MU)."""
  gain = _cov_function(lambda s2: s2 / (s2 + sigma ** 2))
  return (_f32(MU) + (_flat(x) - _f32(MU)) @ gain.T).reshape(x.shape)


def gaussian_velocity(x, t):
  """E[eps - x0 | x_t = x] for x_t = (1 - t) x0 + t eps, whose covariance is (1-t)^2 COV + t^2 I."""
  r = _flat(x) - (1 - t) * _f32(MU)
  x0 = _f32(MU) + r @ _cov_function(lambda s2: (1 - t) * s2 / ((1 - t) ** 2 * s2 + t ** 2)).T
  eps = r @ _cov_function(lambda s2: t / ((1 - t) ** 2 * s2 + t ** 2)).T
  return (eps - x0).reshape(x.shape)


def gaussian_epsilon(alpha_bars):
  alpha_bars = _f32(alpha_bars)

  def epsilon(x, t):
    """E[eps | sqrt(a) x0 + sqrt(1 - a) eps = x], whose covariance is a COV + (1 - a) I."""
    a = alpha_bars[t]
    gain = _cov_function(lambda s2: jnp.sqrt(1 - a) / (a * s2 + 1 - a))
    return ((_flat(x) - jnp.sqrt(a) * _f32(MU)) @ gain.T).reshape(x.shape)

  return epsilon


def ode_then_denoise(start_scale, sigma_start, sigma_end):
  """Mean and covariance of D(x(sigma_end), sigma_end) where x(sigma_start) = start_scale * noise
  and x follows EDM's ODE: per eigendirection (variance s2) x - mu shrinks by
  sqrt((s2 + sigma_end^2) / (s2 + sigma_start^2)), then D shrinks it by s2 / (s2 + sigma_end^2)."""
  s2, q = _S2, _Q
  shrink = np.sqrt((s2 + sigma_end ** 2) / (s2 + sigma_start ** 2)) * s2 / (s2 + sigma_end ** 2)
  m = q @ np.diag(shrink) @ q.T
  return MU - m @ MU, start_scale ** 2 * m @ m.T


def affine_moments(sampler):
  """The exact output mean and covariance of a sampler that is affine in its N(0, I) noise."""
  basis = np.zeros((3, 1, 1, 2), np.float32)
  basis[1, ..., 0] = basis[2, ..., 1] = 1.0
  out = np.asarray(_flat(jax.jit(sampler)(jnp.asarray(basis))), np.float64)
  a = (out[1:] - out[0]).T
  return out[0], a @ a.T


def moment_errors(sampler, target, steps_list):
  mean, cov = target
  errors = []
  for steps in steps_list:
    m, c = affine_moments(lambda n: sampler(n, steps))
    errors.append(max(np.abs(m - mean).max(), np.abs(c - cov).max()))
  return np.array(errors)


EDM_TARGET = ode_then_denoise(EDM["sigma_max"], EDM["sigma_max"], EDM["sigma_min"])


def _ddim_target(alpha_bars):
  # DDIM with eta = 0 solves the same ODE in x / sqrt(abar) and sigma = sqrt((1 - abar) / abar).
  a_T, a_0 = alpha_bars[-1], alpha_bars[0]
  return ode_then_denoise(1 / math.sqrt(a_T), math.sqrt((1 - a_T) / a_T), math.sqrt((1 - a_0) / a_0))


@pytest.mark.parametrize("name, sampler, target, steps_list, min_ratio, final_tol", [
    ("edm heun", lambda n, s: samplers.edm(gaussian_denoiser, n, None, steps=s, **EDM),
     EDM_TARGET, (16, 32, 64), 3.5, 3e-3),
    ("edm euler", lambda n, s: samplers.edm(gaussian_denoiser, n, None, steps=s, order=1, **EDM),
     EDM_TARGET, (16, 32, 64), 1.7, 0.03),
    ("flow heun", lambda n, s: samplers.flow(gaussian_velocity, n, None, steps=s),
     (MU, COV), (8, 16, 32), 3.5, 1e-3),
    ("flow euler", lambda n, s: samplers.flow(gaussian_velocity, n, None, steps=s, order=1),
     (MU, COV), (8, 16, 32), 1.7, 0.03),
    ("ddim linear", lambda n, s: samplers.ddim(gaussian_epsilon(ALPHA_BARS["linear"]), n, None,
                                               steps=s, alpha_bars=ALPHA_BARS["linear"]),
     _ddim_target(ALPHA_BARS["linear"]), (16, 32, 64), 1.7, 0.03),
])
def test_deterministic_samplers_converge_to_the_exact_ode_solution(name, sampler, target, steps_list,
                                                                   min_ratio, final_tol):
  errors = moment_errors(sampler, target, steps_list)
  ratios = errors[:-1] / errors[1:]
  # Halving the step roughly halves a first-order error and quarters a second-order one.
  assert np.all(ratios > min_ratio), (name, errors)
  assert errors[-1] < final_tol, (name, errors)


def test_edm_ode_target_is_the_data_up_to_the_prior_mismatch():
  # The sampler starts from N(0, sigma_max^2 I), not N(MU, COV + sigma_max^2 I): a bias of
  # about MU * sqrt(COV) / sigma_max in the mean, and nearly none in the covariance.
  mean, cov = EDM_TARGET
  np.testing.assert_allclose(mean, MU, atol=0.003)
  np.testing.assert_allclose(cov, COV, atol=1e-4)


def _monte_carlo_errors(sampler, n=16384):
  noise = jax.random.normal(jax.random.key(1), (n, 1, 1, 2))
  out = np.asarray(_flat(jax.jit(sampler)(noise)), np.float64)
  return np.abs(out.mean(0) - MU).max(), np.abs(np.cov(out.T) - COV).max()


@pytest.mark.parametrize("name, sampler, steps", [
    ("ancestral", lambda n, s: samplers.ancestral(gaussian_epsilon(ALPHA_BARS["linear"]), n,
                                                  jax.random.key(2), steps=s,
                                                  alpha_bars=ALPHA_BARS["linear"]), 256),
    ("edm stochastic", lambda n, s: samplers.edm(gaussian_denoiser, n, jax.random.key(2), steps=s,
                                                 s_churn=40, s_min=0.05, s_max=50, **EDM), 128),
])
def test_stochastic_samplers_reproduce_mean_and_covariance(name, sampler, steps):
  # 16,384 samples: standard errors about 0.004 in the mean and 0.003 in the covariance.
  mean_error, cov_error = _monte_carlo_errors(lambda n: sampler(n, steps))
  assert mean_error < 0.015 and cov_error < 0.015, (name, mean_error, cov_error)
  few_mean, few_cov = _monte_carlo_errors(lambda n: sampler(n, 4))
  assert few_cov > 0.1, (name, few_cov)  # the error at 4 steps is far above the Monte Carlo floor


def test_ancestral_equals_ddim_with_eta_one():
  ab = ALPHA_BARS["cosine"]
  noise = jax.random.normal(jax.random.key(3), (64, 1, 1, 2))
  kw = dict(steps=10, alpha_bars=ab)
  a = samplers.ancestral(gaussian_epsilon(ab), noise, jax.random.key(4), **kw)
  d = samplers.ddim(gaussian_epsilon(ab), noise, jax.random.key(4), eta=1.0, **kw)
  np.testing.assert_allclose(a, d, atol=1e-4)


# --- A weighted mixture of three points -----------------------------------------------------

def _posterior_mean(x, scale, std):
  """E[x0 | x] for x = scale * x0 + std * n, x0 one of POINTS with WEIGHTS."""
  d2 = jnp.sum((x[:, None, :] - scale * _f32(POINTS)[None]) ** 2, -1)
  w = jax.nn.softmax(jnp.log(_f32(WEIGHTS)) - d2 / (2 * std ** 2), axis=-1)
  return w @ _f32(POINTS)


def mixture_denoiser(x, sigma):
  return _posterior_mean(_flat(x), 1.0, sigma).reshape(x.shape)


def mixture_velocity(x, t):
  x0 = _posterior_mean(_flat(x), 1 - t, t)
  return ((_flat(x) - x0) / t).reshape(x.shape)  # (x - E[x0|x]) / t = E[eps - x0 | x]


def mixture_epsilon(alpha_bars):
  alpha_bars = _f32(alpha_bars)

  def epsilon(x, t):
    a = alpha_bars[t]
    x0 = _posterior_mean(_flat(x), jnp.sqrt(a), jnp.sqrt(1 - a))
    return ((_flat(x) - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)).reshape(x.shape)

  return epsilon


MIXTURE_SAMPLERS = {
    "edm heun": lambda n, s: samplers.edm(mixture_denoiser, n, None, steps=s, **EDM),
    "edm stochastic": lambda n, s: samplers.edm(mixture_denoiser, n, jax.random.key(5), steps=s,
                                                s_churn=40, s_min=0.05, s_max=50, **EDM),
    "flow heun": lambda n, s: samplers.flow(mixture_velocity, n, None, steps=s),
    "ddim cosine": lambda n, s: samplers.ddim(mixture_epsilon(ALPHA_BARS["cosine"]), n, None,
                                              steps=s, alpha_bars=ALPHA_BARS["cosine"]),
    "ddim eta 0.5": lambda n, s: samplers.ddim(mixture_epsilon(ALPHA_BARS["cosine"]), n,
                                               jax.random.key(5), steps=s, eta=0.5,
                                               alpha_bars=ALPHA_BARS["cosine"]),
    "ancestral": lambda n, s: samplers.ancestral(mixture_epsilon(ALPHA_BARS["linear"]), n,
                                                 jax.random.key(5), steps=s,
                                                 alpha_bars=ALPHA_BARS["linear"]),
}


def _distances_to_points(out):
  out = np.asarray(_flat(out), np.float64)
  return np.linalg.norm(out[:, None] - POINTS[None], axis=-1)


@pytest.mark.parametrize("name", sorted(MIXTURE_SAMPLERS))
def test_samplers_land_on_the_points_in_their_proportions(name):
  noise = jax.random.normal(jax.random.key(6), (3000, 1, 1, 2))
  d = _distances_to_points(jax.jit(lambda n: MIXTURE_SAMPLERS[name](n, 32))(noise))
  assert d.min(1).max() < 1e-3, name
  fractions = np.bincount(d.argmin(1), minlength=3) / len(d)
  np.testing.assert_allclose(fractions, WEIGHTS, atol=0.04)  # ~5 standard errors at 3,000 samples


def test_flow_lands_closer_to_the_points_as_steps_grow():
  # Its last step lands on E[x0 | x_t] at t = 1/steps, a blend of the points while t is large.
  noise = jax.random.normal(jax.random.key(7), (1000, 1, 1, 2))
  mean_distance = [_distances_to_points(jax.jit(lambda n: samplers.flow(mixture_velocity, n, None,
                                                                        steps=s))(noise)).min(1).mean()
                   for s in (2, 4, 8)]
  assert mean_distance[0] > mean_distance[1] > mean_distance[2], mean_distance


# --- Schedules and trajectories ------------------------------------------------------------

def test_edm_sigmas_follow_the_rho_schedule():
  n, lo, hi, rho = 18, 0.002, 80.0, 7.0
  got = samplers.edm_sigmas(n, lo, hi, rho)
  assert got.shape == (n + 1,) and got[-1] == 0.0
  np.testing.assert_allclose(got[[0, n - 1]], [hi, lo], rtol=1e-12)
  # sigma_i^(1/rho) is linear in i.
  np.testing.assert_allclose(np.diff(got[:-1] ** (1 / rho)), (lo ** (1 / rho) - hi ** (1 / rho)) / (n - 1),
                             rtol=1e-9)
  np.testing.assert_allclose(samplers.edm_sigmas(5, 1.0, 5.0, 1.0), [5, 4, 3, 2, 1, 0], rtol=1e-12)


def test_edm_gammas_apply_churn_only_inside_its_range():
  sigmas = np.array([80.0, 10.0, 1.0, 0.1, 0.0])
  np.testing.assert_allclose(samplers.edm_gammas(sigmas, 0.8, 0.5, 20.0), [0, 0.2, 0.2, 0])
  np.testing.assert_allclose(samplers.edm_gammas(sigmas, 40.0, 0.0, math.inf), [math.sqrt(2) - 1] * 4)


def test_heun_costs_two_evaluations_per_step_but_one_for_the_last():
  calls = []

  def counting(x, sigma):
    jax.debug.callback(lambda: calls.append(1))
    return gaussian_denoiser(x, sigma)

  samplers.edm(counting, jnp.zeros((1, 1, 1, 2)), None, steps=18, **EDM).block_until_ready()
  jax.effects_barrier()
  assert len(calls) == 35


def test_ddpm_timesteps_span_the_schedule_without_repeats():
  t = samplers.ddpm_timesteps(50, 1000)
  assert t[0] == 999 and t[-1] == 0 and np.all(np.diff(t) < 0)
  assert list(samplers.ddpm_timesteps(4, 4)) == [3, 2, 1, 0]


def test_trajectory_frames_run_from_the_initial_noise_to_the_final_sample():
  noise = jax.random.normal(jax.random.key(8), (4, 1, 1, 2))
  kw = dict(steps=10, s_churn=5, order=1, **EDM)  # stochastic: both loops number the steps alike
  final = samplers.edm(gaussian_denoiser, noise, jax.random.key(9), **kw)
  frames = samplers.edm(gaussian_denoiser, noise, jax.random.key(9), frames=6, **kw)
  assert frames.shape == (6, 4, 1, 1, 2)
  np.testing.assert_allclose(frames[0], EDM["sigma_max"] * noise, rtol=1e-6)
  np.testing.assert_allclose(frames[-1], final, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(samplers.frame_steps(10, 6), [0, 2, 4, 6, 8, 10])
  np.testing.assert_array_equal(samplers.frame_steps(10, 1), [10])


def test_a_middle_frame_is_the_iterate_after_that_many_steps():
  noise = jax.random.normal(jax.random.key(10), (3, 1, 1, 2))
  frames = samplers.flow(gaussian_velocity, noise, None, steps=8, order=1, frames=5)
  x, times = noise, samplers.flow_times(8)
  for i in range(8):  # Euler by hand
    x = x + (times[i + 1] - times[i]) * gaussian_velocity(x, times[i])
    if i + 1 in (2, 4, 6):
      np.testing.assert_allclose(frames[(i + 1) // 2], x, rtol=1e-5, atol=1e-6)


def test_per_image_keys_make_an_image_independent_of_its_batch():
  noise = jax.random.normal(jax.random.key(11), (3, 1, 1, 2))
  keys = jax.random.split(jax.random.key(12), 3)
  ab = ALPHA_BARS["linear"]
  sample = jax.jit(lambda n, k: samplers.ancestral(gaussian_epsilon(ab), n, k, steps=6, alpha_bars=ab))
  batch = sample(noise, keys)
  alone = sample(noise[1:2], keys[1:2])
  np.testing.assert_allclose(batch[1:2], alone, rtol=1e-5, atol=1e-6)
