"""parallel.compiler_options: which XLA options hot steps compile with."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import parallel


def _conv(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_cpu_steps_compile_convolutions_without_ynnpack(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  options = parallel.compiler_options("cpu")
  if not options:
    pytest.skip("this jaxlib's CPU compiler has no YNNPACK fusion option")
  x, kernel = jnp.ones((2, 8, 8, 16)), jnp.ones((3, 3, 16, 32))
  if "ynn_fusion" not in jax.jit(_conv).lower(x, kernel).compile().as_text():
    pytest.skip("this jaxlib's CPU compiler no longer hands convolutions to YNNPACK")
  compiled = jax.jit(_conv, compiler_options=options).lower(x, kernel).compile()
  assert "ynn_fusion" not in compiled.as_text()
  np.testing.assert_allclose(compiled(x, kernel), _conv(x, kernel), rtol=1e-6)


def test_a_users_own_xla_flag_wins(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
  assert parallel.compiler_options("cpu") == {}


def test_no_options_off_the_cpu():
  assert parallel.compiler_options("gpu") == parallel.compiler_options("tpu") == {}
