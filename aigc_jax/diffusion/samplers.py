"""Samplers for the three objectives, each a pure function with its loop inside the compiled program.

Every sampler is `sampler(model, noise, key, *, settings..., frames=None)`: `model` is the view of
the network the objective defines (with any class labels and guidance already applied), `noise`
the unit Gaussian initial noise [N,H,W,C], `key` the randomness of the stochastic samplers: one
key, or one per image ([N] keys, so that an image's draws do not depend on the rest of the batch);
step i uses fold_in(key, i); the deterministic samplers take `key=None`. The steps run in a
`lax.fori_loop`; with `frames=k` the result is instead [k, N, H, W, C]: the iterate after each of
`frame_steps(steps, k)` steps (from the start to the end), for a GIF of one sample being denoised.
Schedules are numpy float64 (settings are static), cast to float32 once.

- `edm`: Karras et al. 2022, Algorithm 2 (Algorithm 1 with `s_churn=0`), D(x, sigma) integrated
  from sigma_max to 0 over the rho-schedule `edm_sigmas`, Heun (`order=2`, the last step to
  sigma = 0 Euler, so `steps` steps cost 2 steps - 1 evaluations) or Euler (`order=1`).
- `flow`: the velocity v(x, t) integrated from t = 1 (noise) to 0 on a uniform grid, Euler or Heun
  (the last step to t = 0 Euler, as in `edm`).
- `ddim` (Song et al. 2021, Eq. 12) and `ancestral` (Ho et al. 2020, Algorithm 2 with the
  posterior variance beta~) over `ddpm_timesteps`, a subsequence of the T training timesteps; the
  betas of a subsequence are those that give its abar (Nichol & Dhariwal's respacing), so
  `ancestral` equals `ddim` with eta = 1.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.diffusion import flat_random

Model = Callable[[jax.Array, jax.Array], jax.Array]
Step = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def frame_steps(num_steps: int, frames: int) -> np.ndarray:
  """How many steps have run at each of `frames` trajectory frames: 0 .. num_steps, evenly
  (one frame: the end only)."""
  if frames == 1:
    return np.array([num_steps])
  return np.round(np.linspace(0, num_steps, frames)).astype(np.int32)


def _step_key(key: jax.Array | None, i: jax.Array) -> jax.Array | None:
  if key is None:
    return None
  if key.ndim == 0:
    return jax.random.fold_in(key, i)
  return jax.vmap(jax.random.fold_in, in_axes=(0, None))(key, i)


def _normal(key: jax.Array, x: jax.Array) -> jax.Array:
  """Unit Gaussian noise like x: from one key, or each image's from its own key."""
  if key.ndim == 0:
    return flat_random.normal(key, x.shape, x.dtype)
  return jax.vmap(lambda k: flat_random.normal(k, x.shape[1:], x.dtype))(key)


def _run(step: Step, x: jax.Array, key: jax.Array | None, num_steps: int,
         frames: int | None) -> jax.Array:
  """Runs `step(i, x, key_i)` for i < num_steps: the final x, or the x at each frame."""
  def body(i, x):
    return step(i, x, _step_key(key, i))

  if frames is None:
    return jax.lax.fori_loop(0, num_steps, body, x)
  ends = frame_steps(num_steps, frames)
  starts = np.concatenate([[0], ends[:-1]]).astype(np.int32)

  def segment(x, bounds):
    x = jax.lax.fori_loop(bounds[0], bounds[1], body, x)
    return x, x

  return jax.lax.scan(segment, x, (jnp.asarray(starts), jnp.asarray(ends)))[1]


def _f32(a: np.ndarray) -> jax.Array:
  return jnp.asarray(a, jnp.float32)


# --- EDM ---------------------------------------------------------------------------------------

def edm_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float) -> np.ndarray:
  """EDM's noise levels (Eq. 5): (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) -
  sigma_max^(1/rho)))^rho for i < N = steps, then sigma_N = 0."""
  i = np.arange(steps, dtype=np.float64)
  inv_rho = 1.0 / rho
  sigmas = (sigma_max ** inv_rho + i / max(steps - 1, 1) *
            (sigma_min ** inv_rho - sigma_max ** inv_rho)) ** rho
  return np.append(sigmas, 0.0)


def edm_gammas(sigmas: np.ndarray, s_churn: float, s_min: float, s_max: float) -> np.ndarray:
  """Algorithm 2's gamma_i: min(S_churn / N, sqrt(2) - 1) where S_min <= t_i <= S_max, else 0."""
  steps = len(sigmas) - 1
  gamma = min(s_churn / steps, math.sqrt(2.0) - 1.0)
  t = sigmas[:-1]
  return np.where((t >= s_min) & (t <= s_max), gamma, 0.0)


def edm(denoiser: Model, noise: jax.Array, key: jax.Array | None, *, steps: int, sigma_min: float,
        sigma_max: float, rho: float, order: int = 2, s_churn: float = 0.0, s_min: float = 0.0,
        s_max: float = math.inf, s_noise: float = 1.0, frames: int | None = None) -> jax.Array:
  """EDM's sampler: x_0 = sigma_max * noise, then Heun/Euler steps of dx/dsigma = (x - D(x, sigma)) / sigma,
  each first raising sigma to t_hat = (1 + gamma_i) t_i with fresh noise when s_churn > 0."""
  sigmas = edm_sigmas(steps, sigma_min, sigma_max, rho)
  gammas = edm_gammas(sigmas, s_churn, s_min, s_max)
  t_hats = sigmas[:-1] * (1.0 + gammas)
  churn_stds = np.sqrt(t_hats ** 2 - sigmas[:-1] ** 2) * s_noise
  sigmas, t_hats, churn_stds = _f32(sigmas), _f32(t_hats), _f32(churn_stds)

  def step(i, x, key):
    t_hat, t_next = t_hats[i], sigmas[i + 1]
    if s_churn > 0:
      x = x + churn_stds[i] * _normal(key, x)
    d = (x - denoiser(x, t_hat)) / t_hat
    x_next = x + (t_next - t_hat) * d
    if order == 1:
      return x_next

    def heun():
      d_next = (x_next - denoiser(x_next, t_next)) / t_next
      return x + (t_next - t_hat) * 0.5 * (d + d_next)

    return jax.lax.cond(t_next > 0, heun, lambda: x_next)

  return _run(step, sigmas[0] * noise, key, steps, frames)


# --- Flow --------------------------------------------------------------------------------------

def flow_times(steps: int) -> np.ndarray:
  """The uniform time grid 1 = t_0 > ... > t_N = 0."""
  return np.linspace(1.0, 0.0, steps + 1)


def flow(velocity: Model, noise: jax.Array, key: jax.Array | None, *, steps: int, order: int = 2,
         frames: int | None = None) -> jax.Array:
  """Integrates dx/dt = v(x, t) from x_1 = noise to t = 0 with Euler (`order=1`) or Heun steps."""
  times = _f32(flow_times(steps))

  def step(i, x, key):
    del key  # deterministic
    t, t_next = times[i], times[i + 1]
    v = velocity(x, t)
    x_next = x + (t_next - t) * v
    if order == 1:
      return x_next
    heun = lambda: x + (t_next - t) * 0.5 * (v + velocity(x_next, t_next))
    return jax.lax.cond(t_next > 0, heun, lambda: x_next)

  return _run(step, noise, key, steps, frames)


# --- DDPM --------------------------------------------------------------------------------------

def ddpm_timesteps(steps: int, num_timesteps: int) -> np.ndarray:
  """`steps` training timesteps from T-1 down to 0, evenly spaced."""
  return np.round(np.linspace(num_timesteps - 1, 0, steps)).astype(np.int32)


def _alpha_bar_pairs(steps: int, alpha_bars: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(timesteps, abar at each, abar at the next, 1 after the last) in float64."""
  timesteps = ddpm_timesteps(steps, len(alpha_bars))
  a = np.asarray(alpha_bars, np.float64)[timesteps]
  return timesteps, a, np.append(a[1:], 1.0)


def ddim(epsilon: Model, noise: jax.Array, key: jax.Array | None, *, steps: int, alpha_bars: np.ndarray,
         eta: float = 0.0, frames: int | None = None) -> jax.Array:
  """DDIM: x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - s^2) eps + s z, x0_hat =
  (x - sqrt(1 - abar) eps) / sqrt(abar), s = eta sqrt((1 - abar_prev)/(1 - abar)) sqrt(1 - abar/abar_prev)."""
  timesteps, a, a_prev = _alpha_bar_pairs(steps, alpha_bars)
  s = eta * np.sqrt((1 - a_prev) / (1 - a)) * np.sqrt(1 - a / a_prev)
  coef = {"sqrt_a": np.sqrt(a), "sqrt_1ma": np.sqrt(1 - a), "sqrt_a_prev": np.sqrt(a_prev),
          "eps": np.sqrt(np.maximum(1 - a_prev - s ** 2, 0.0)), "s": s}
  coef = {k: _f32(v) for k, v in coef.items()}
  timesteps = jnp.asarray(timesteps)

  def step(i, x, key):
    eps = epsilon(x, timesteps[i])
    x0 = (x - coef["sqrt_1ma"][i] * eps) / coef["sqrt_a"][i]
    x_prev = coef["sqrt_a_prev"][i] * x0 + coef["eps"][i] * eps
    if eta > 0:
      x_prev = x_prev + coef["s"][i] * _normal(key, x)
    return x_prev

  return _run(step, noise, key, steps, frames)


def ancestral(epsilon: Model, noise: jax.Array, key: jax.Array, *, steps: int,
              alpha_bars: np.ndarray, frames: int | None = None) -> jax.Array:
  """DDPM ancestral sampling: x_prev = (x - beta / sqrt(1 - abar) eps) / sqrt(alpha) + sqrt(beta~) z
  with alpha = abar / abar_prev, beta = 1 - alpha, beta~ = (1 - abar_prev) / (1 - abar) beta."""
  timesteps, a, a_prev = _alpha_bar_pairs(steps, alpha_bars)
  alpha = a / a_prev
  beta = 1 - alpha
  coef = {"inv_sqrt_alpha": 1 / np.sqrt(alpha), "eps": beta / np.sqrt(1 - a),
          "std": np.sqrt((1 - a_prev) / (1 - a) * beta)}
  coef = {k: _f32(v) for k, v in coef.items()}
  timesteps = jnp.asarray(timesteps)

  def step(i, x, key):
    eps = epsilon(x, timesteps[i])
    mean = coef["inv_sqrt_alpha"][i] * (x - coef["eps"][i] * eps)
    return mean + coef["std"][i] * _normal(key, x)

  return _run(step, noise, key, steps, frames)
