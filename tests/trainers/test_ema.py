"""The EMA decay follows StyleGAN2-ADA's formula, ramp-up included."""

import jax.numpy as jnp
import numpy as np

from aigc_jax.trainers import ema


def test_ema_decay_follows_stylegan2_ada_formula():
  # Ramp-up: the half-life is capped at images_seen * rampup.
  np.testing.assert_allclose(ema.ema_decay(jnp.asarray(1000), 64, 5000, 0.05), 0.5 ** (64 / 50), rtol=1e-6)
  np.testing.assert_allclose(ema.ema_decay(jnp.asarray(10 ** 6), 64, 5000, 0.05), 0.5 ** (64 / 5000), rtol=1e-6)
  np.testing.assert_allclose(ema.ema_decay(jnp.asarray(0), 64, 5000, 0.0), 0.5 ** (64 / 5000), rtol=1e-6)
  assert float(ema.ema_decay(jnp.asarray(0), 64, 5000, 0.05)) == 0.0
