"""The sample CLI: seeds name images, interpolation, and user errors that write nothing."""

import os

import numpy as np
import pytest
from PIL import Image

from aigc_jax import sample
from aigc_jax.errors import UserError
from tests.test_train import cli, run_20_steps  # noqa: F401  (fixture)


def test_parse_seeds():
  assert sample.parse_seeds("0-3,10") == [0, 1, 2, 3, 10]
  assert sample.parse_seeds("7") == [7]
  for bad in ("a-b", "5-2", "1,,2", "-3"):
    with pytest.raises(UserError, match="--seeds"):
      sample.parse_seeds(bad)




def test_same_seed_gives_the_same_image(run_20_steps, tmp_path):
  import jax
  config, state, _ = sample.load_run(run_20_steps)
  from aigc_jax import trainers
  gen = trainers.get_trainer(config).generate
  a = gen(config, state, None, 3, z=sample.latents_from_seeds([0, 1, 2], config.model.latent_dim))
  b = gen(config, state, None, 2, z=sample.latents_from_seeds([2, 0], config.model.latent_dim))
  np.testing.assert_allclose(a[2], b[0], atol=1e-6)
  np.testing.assert_allclose(a[0], b[1], atol=1e-6)
  assert not np.allclose(a[0], a[1])
  out = str(tmp_path / "grid.png")
  sample.run("generate", out, workdir=run_20_steps, seeds="0-3")
  assert Image.open(out).size[0] >= 256


def test_slerp_endpoints_and_unit_norm_path():
  import jax.numpy as jnp
  a, b = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
  path = np.asarray(sample.slerp(a, b, jnp.linspace(0, 1, 5)))
  np.testing.assert_allclose(path[0], a, atol=1e-6)
  np.testing.assert_allclose(path[-1], b, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(path, axis=1), 1.0, atol=1e-6)
  np.testing.assert_allclose(path[2], [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)


def test_interpolate_writes_a_gif_with_one_frame_per_step(run_20_steps, tmp_path):
  out = str(tmp_path / "walk.gif")
  sample.run("interpolate", out, workdir=run_20_steps, seeds="3,7", frames=6)
  assert Image.open(out).n_frames == 6


@pytest.mark.parametrize("kwargs, message", [
    ({"step": 999}, "--step=999 has no checkpoint"),
    ({"seeds": "x"}, "--seeds"),
])
def test_user_errors_write_nothing(run_20_steps, tmp_path, kwargs, message):
  out = tmp_path / "grid.png"
  with pytest.raises(UserError, match=message):
    sample.run("generate", str(out), workdir=run_20_steps, **kwargs)
  assert not out.exists()


def test_cli_errors_are_one_line(tmp_path, run_20_steps):
  rc, _, err = cli("aigc_jax.sample", f"--workdir={tmp_path}", "--out", str(tmp_path / "g.png"))
  assert rc == 2 and "Traceback" not in err and "no training run" in err.strip().splitlines()[-1]
  rc, _, err = cli("aigc_jax.sample", f"--workdir={run_20_steps}", "--out=/nonexistent/dir/g.png")
  assert rc == 2 and "does not exist" in err.strip().splitlines()[-1]
  assert not os.path.exists(tmp_path / "g.png")
