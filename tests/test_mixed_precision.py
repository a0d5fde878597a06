"""train.compute_dtype=bfloat16: float32 params and optimiser state, bf16 convolutions, and GAN and
VAE steps that train like the float32 run."""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import config as config_lib
from aigc_jax.trainers import gan, vae

STEPS = 4


def _key(seed: int) -> jax.Array:
  # RBG keys compile far faster than threefry on CPU (seconds per init), and any typed key works.
  return jax.random.key(seed, impl="rbg")


def _config(family: str, compute_dtype: str):
  c = config_lib.base_config()
  c.data.image_size, c.data.channels = 8, 1
  c.model.latent_dim, c.model.width = 8, 4
  c.train.batch_size = 16
  c.train.compute_dtype = compute_dtype
  if family == "vae":
    c.model.family, c.model.name = "vae", "conv_vae"
    c.train.learning_rate = 3e-3
  config_lib.validate(c)
  return c


def _batch(config) -> dict:
  rng = np.random.default_rng(0)
  n, size = config.train.batch_size, config.data.image_size
  # Smooth blobs rather than noise, so a VAE can reduce its loss within a few steps.
  yy, xx = np.mgrid[:size, :size] / size
  centres = rng.uniform(0.2, 0.8, (n, 2, 1, 1))
  images = np.exp(-((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) * 20) * 2 - 1
  return {"image": jnp.asarray(images[..., None], jnp.float32), "label": jnp.zeros(n, jnp.int32)}


def _run(trainer, config, state):
  """The state after STEPS steps on one batch from `state`, each step's metrics, the step's jaxpr."""
  step = jax.jit(trainer.make_train_step(config))
  batch, metrics = _batch(config), []
  final = state
  for i in range(STEPS):
    final, m = step(final, batch, _key(i + 1))
    metrics.append(jax.tree.map(float, m))
  return final, metrics, step.trace(state, batch, _key(0)).jaxpr


def _float_dtypes(tree) -> set:
  return {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def _conv_dtypes(closed_jaxpr) -> set:
  """Operand dtypes of every convolution and matmul in the step (forward and backward)."""
  dtypes = set()

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
        dtypes.update(str(v.aval.dtype) for v in eqn.invars)
      for param in eqn.params.values():
        for sub in param if isinstance(param, (tuple, list)) else (param,):
          if isinstance(sub, jax.extend.core.ClosedJaxpr):
            visit(sub.jaxpr)
          elif isinstance(sub, jax.extend.core.Jaxpr):
            visit(sub)

  visit(closed_jaxpr.jaxpr)
  return dtypes


@pytest.fixture(scope="module", params=["gan", "vae"])
def runs(request):
  """Per compute dtype: (abstract initial state, final state, metrics, jaxpr), from one init."""
  trainer = {"gan": gan, "vae": vae}[request.param]
  configs = {dtype: _config(request.param, dtype) for dtype in ("float32", "bfloat16")}
  # Both runs start from the same (float32-initialised) state, so their losses are comparable.
  state = jax.jit(functools.partial(trainer.init_state, configs["float32"]))(_key(0))
  return request.param, {
      dtype: (jax.eval_shape(functools.partial(trainer.init_state, config), _key(0)),
              *_run(trainer, config, state))
      for dtype, config in configs.items()}


def test_params_and_optimiser_state_stay_float32(runs):
  _, by_dtype = runs
  initial, final, _, _ = by_dtype["bfloat16"]
  assert _float_dtypes(initial) == {jnp.dtype(jnp.float32)}
  assert _float_dtypes(final) == {jnp.dtype(jnp.float32)}


def test_convolutions_and_matmuls_compute_in_bfloat16(runs):
  _, by_dtype = runs
  assert _conv_dtypes(by_dtype["bfloat16"][3]) == {"bfloat16"}
  assert _conv_dtypes(by_dtype["float32"][3]) == {"float32"}


def test_bfloat16_steps_are_finite_and_close_to_float32(runs):
  family, by_dtype = runs
  low, full = by_dtype["bfloat16"][2], by_dtype["float32"][2]
  keys = ("d_loss", "g_loss") if family == "gan" else ("loss",)
  for key in keys:
    low_values = np.array([m[key] for m in low])
    full_values = np.array([m[key] for m in full])
    assert np.isfinite(low_values).all()
    # bf16 keeps ~3 significant digits; over a few steps the runs stay within 3 %.
    np.testing.assert_allclose(low_values, full_values, rtol=0.03)
  if family == "vae":
    assert low[-1]["loss"] < low[0]["loss"]
