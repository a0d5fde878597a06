"""Flat draws equal JAX's draws of the full shape, bit for bit."""

import flax.linen as nn
import jax
import numpy as np

from aigc_jax.diffusion import flat_random


def test_flat_draws_equal_jax_draws_of_the_shape():
  key = jax.random.key(0)
  np.testing.assert_array_equal(flat_random.normal(key, (2, 1, 2, 2)), jax.random.normal(key, (2, 1, 2, 2)))
  np.testing.assert_array_equal(flat_random.bernoulli(key, 0.7, (2, 1, 2, 2)),
                                jax.random.bernoulli(key, 0.7, (2, 1, 2, 2)))


def test_matrix_drawn_kernels_equal_flax_lecun_normal():
  key, init = jax.random.key(1), nn.initializers.lecun_normal()
  np.testing.assert_array_equal(flat_random.as_matrix(init)(key, (3, 3, 1, 2)), init(key, (3, 3, 1, 2)))
