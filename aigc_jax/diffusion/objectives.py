"""Training objectives of diffusion and flow models, each as the paper writes it.

A network is `net(x, noise_labels, class_labels) -> output` with images [N,H,W,C] and one noise
label per image; every objective says what goes in and what the output means, and gives the view
of the model its samplers integrate:

- `edm` (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
  Table 1 and Eq. 7): x = y + sigma * n; the denoiser D(x, sigma) = c_skip x + c_out F(c_in x,
  c_noise) is trained towards y with weight lambda(sigma) at ln(sigma) ~ N(P_mean, P_std^2).
- `flow` (flow matching / rectified flow, Lipman et al. 2023, Liu et al. 2023): x_t = (1 - t) x0 +
  t eps with t ~ U(0, 1); the network is the velocity v(x_t, t), trained towards eps - x0. Its
  noise label is 999 t, the range of a DDPM timestep, as in rectified flow's code.
- `ddpm` (Ho et al. 2020, Eq. 14; cosine schedule of Nichol & Dhariwal 2021): x_t = sqrt(abar_t) x0
  + sqrt(1 - abar_t) eps at a timestep t ~ U{0, ..., T-1}; the network predicts eps from (x_t, t).

Losses are per example (the mean over pixels), given the noise level and noise explicitly so they
can be checked by hand; `*_training_inputs` draws those as the papers do.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.diffusion import flat_random

Net = Callable[[jax.Array, jax.Array, jax.Array | None], jax.Array]
FLOW_NOISE_LABEL_SCALE = 999.0


def _per_image(a: jax.Array, ndim: int) -> jax.Array:
  """Broadcasts a per-image scalar [N] against [N, H, W, C]."""
  return jnp.reshape(a, a.shape + (1,) * (ndim - a.ndim))


def _pixel_mean(x: jax.Array) -> jax.Array:
  return jnp.mean(x, axis=tuple(range(1, x.ndim)))


# --- EDM ---------------------------------------------------------------------------------------

def edm_preconditioning(sigma: jax.Array, sigma_data: float) -> tuple[jax.Array, ...]:
  """EDM's (c_skip, c_out, c_in, c_noise) at noise level `sigma` (Table 1)."""
  c_skip = sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)
  c_out = sigma * sigma_data / jnp.sqrt(sigma ** 2 + sigma_data ** 2)
  c_in = 1.0 / jnp.sqrt(sigma ** 2 + sigma_data ** 2)
  c_noise = jnp.log(sigma) / 4.0
  return c_skip, c_out, c_in, c_noise


def edm_loss_weight(sigma: jax.Array, sigma_data: float) -> jax.Array:
  """EDM's lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2, i.e. 1 / c_out^2."""
  return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def edm_denoiser(net: Net, x: jax.Array, sigma: jax.Array, labels: jax.Array | None,
                 sigma_data: float) -> jax.Array:
  """D(x, sigma) = c_skip x + c_out F(c_in x, c_noise), with one sigma per image ([N])."""
  c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sigma_data)
  out = net(_per_image(c_in, x.ndim) * x, c_noise, labels)
  return _per_image(c_skip, x.ndim) * x + _per_image(c_out, x.ndim) * out


def edm_training_inputs(key: jax.Array, images: jax.Array, p_mean: float,
                        p_std: float) -> tuple[jax.Array, jax.Array]:
  """(sigma [N] with ln(sigma) ~ N(P_mean, P_std^2), unit noise n like images)."""
  sigma_key, noise_key = jax.random.split(key)
  sigma = jnp.exp(p_mean + p_std * jax.random.normal(sigma_key, images.shape[:1], jnp.float32))
  return sigma, flat_random.normal(noise_key, images.shape)


def edm_loss(net: Net, images: jax.Array, labels: jax.Array | None, sigma: jax.Array,
             noise: jax.Array, sigma_data: float) -> jax.Array:
  """lambda(sigma) |D(y + sigma n, sigma) - y|^2 per image, averaged over its pixels."""
  denoised = edm_denoiser(net, images + _per_image(sigma, images.ndim) * noise, sigma, labels,
                          sigma_data)
  return edm_loss_weight(sigma, sigma_data) * _pixel_mean((denoised - images) ** 2)


# --- Flow matching -----------------------------------------------------------------------------

def flow_interpolate(x0: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
  """The linear path x_t = (1 - t) x0 + t eps, one t per image."""
  t = _per_image(t, x0.ndim)
  return (1.0 - t) * x0 + t * eps


def flow_target(x0: jax.Array, eps: jax.Array) -> jax.Array:
  """The path's velocity d x_t / dt = eps - x0."""
  return eps - x0


def flow_velocity(net: Net, x: jax.Array, t: jax.Array, labels: jax.Array | None) -> jax.Array:
  """v(x, t): the network's output at noise label 999 t."""
  return net(x, FLOW_NOISE_LABEL_SCALE * t, labels)


def flow_training_inputs(key: jax.Array, images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(t [N] ~ U(0, 1), unit noise eps like images)."""
  t_key, noise_key = jax.random.split(key)
  t = jax.random.uniform(t_key, images.shape[:1], jnp.float32)
  return t, flat_random.normal(noise_key, images.shape)


def flow_loss(net: Net, images: jax.Array, labels: jax.Array | None, t: jax.Array,
              noise: jax.Array) -> jax.Array:
  """|v(x_t, t) - (eps - x0)|^2 per image, averaged over its pixels."""
  v = flow_velocity(net, flow_interpolate(images, noise, t), t, labels)
  return _pixel_mean((v - flow_target(images, noise)) ** 2)


# --- DDPM --------------------------------------------------------------------------------------

def ddpm_betas(schedule: str, num_timesteps: int) -> np.ndarray:
  """beta_t for t = 0..T-1 in float64: `linear` (Ho et al.'s 1e-4..0.02 at T=1000, scaled by
  1000/T as Nichol & Dhariwal) or `cosine` (abar(t) = f(t)/f(0), f(t) = cos((t/T + s)/(1 + s) pi/2)^2,
  s = 0.008, each beta capped at 0.999)."""
  if schedule == "linear":
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
  if schedule == "cosine":
    f = lambda t: math.cos((t / num_timesteps + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1.0 - f(t + 1) / f(t), 0.999) for t in range(num_timesteps)])
  raise ValueError(f"unknown DDPM schedule {schedule!r}")


def ddpm_alpha_bars(betas: np.ndarray) -> np.ndarray:
  """abar_t = prod_{s <= t} (1 - beta_s)."""
  return np.cumprod(1.0 - betas)


def ddpm_noisy(x0: jax.Array, eps: jax.Array, alpha_bar: jax.Array) -> jax.Array:
  """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, one abar_t per image."""
  alpha_bar = _per_image(alpha_bar, x0.ndim)
  return jnp.sqrt(alpha_bar) * x0 + jnp.sqrt(1.0 - alpha_bar) * eps


def ddpm_epsilon(net: Net, x: jax.Array, t: jax.Array, labels: jax.Array | None) -> jax.Array:
  """eps(x, t): the network's output at noise label t (the timestep index)."""
  return net(x, t.astype(jnp.float32), labels)


def ddpm_training_inputs(key: jax.Array, images: jax.Array,
                         num_timesteps: int) -> tuple[jax.Array, jax.Array]:
  """(t [N] ~ U{0..T-1} int32, unit noise eps like images)."""
  t_key, noise_key = jax.random.split(key)
  t = jax.random.randint(t_key, images.shape[:1], 0, num_timesteps, jnp.int32)
  return t, flat_random.normal(noise_key, images.shape)


def ddpm_loss(net: Net, images: jax.Array, labels: jax.Array | None, t: jax.Array,
              noise: jax.Array, alpha_bars: jax.Array) -> jax.Array:
  """|eps - eps(x_t, t)|^2 per image (Ho et al.'s simple loss), averaged over its pixels."""
  x_t = ddpm_noisy(images, noise, jnp.asarray(alpha_bars, jnp.float32)[t])
  return _pixel_mean((noise - ddpm_epsilon(net, x_t, t, labels)) ** 2)
