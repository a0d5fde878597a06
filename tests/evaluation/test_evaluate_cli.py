"""`python -m aigc_jax.evaluate` and the periodic-evaluation hook, on a 2-step DCGAN run."""

import glob
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from aigc_jax import generation, runs, train
from aigc_jax.config import base_config
from aigc_jax.errors import UserError
from aigc_jax.evaluation import scoring


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  config = base_config()
  config.data.dataset, config.data.image_size = "digits", 8
  config.data.data_dir = str(workdir / "tfds")
  config.model.width, config.model.latent_dim = 8, 8
  config.train.batch_size, config.train.num_steps = 16, 2
  config.train.checkpoint_every = config.train.sample_every = config.train.log_every = 2
  train.train_and_evaluate(config, str(workdir))
  return str(workdir), config


def test_evaluate_run_writes_metrics_json(run_dir):
  workdir, _ = run_dir
  result = scoring.evaluate_run(workdir, num_samples=150, extractor="digits", progress=False)
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f) == result
  assert result["step"] == 2 and result["reference"] == "digits:train"
  m = result["metrics"]
  assert np.isfinite(m["fid"]) and m["fid"] > 0 and 0 <= m["coverage"] <= 1
  assert len(glob.glob(os.path.join(workdir, "reference_digits_digits_train_8px_150_*.npz"))) == 1
  table = scoring.format_table(result)
  assert "fid" in table and "150 samples" in table
  with pytest.raises(UserError, match="cannot take 5000 images"):
    scoring.evaluate_run(workdir, num_samples=5000, extractor="digits", progress=False)
  with pytest.raises(UserError, match="--batch_size=0: need at least 1"):
    scoring.evaluate_run(workdir, num_samples=150, extractor="digits", batch_size=0, progress=False)


def test_periodic_evaluation_hook(run_dir):
  workdir, config = run_dir
  _, state, _ = runs.load_run(workdir)
  config = config.copy_and_resolve_references()
  config.train.eval_num_samples = 120
  first = scoring.evaluate_during_training(config, state, workdir)
  assert {"eval/fid", "eval/kid", "eval/precision", "eval/style_gram_distance"} <= set(first)
  assert all(isinstance(v, float) for v in first.values())
  assert scoring.evaluate_during_training(config, state, workdir) == first  # fixed eval noise


def test_cli_bad_extractor_is_one_line_and_exit_2(run_dir):
  workdir, _ = run_dir
  proc = subprocess.run([sys.executable, "-m", "aigc_jax.evaluate", f"--workdir={workdir}",
                         "--features=vgg"], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == "error: --features='vgg': choose one of digits, inception"


def test_generate_fn_truncation_scales_the_latents(run_dir):
  """psi scales z ~ N(0, I): psi=1 is the family's own sampling, psi=0 every image from z = 0."""
  workdir, config = run_dir
  _, state, _ = runs.load_run(workdir)
  key = jax.random.key(3)
  plain = generation.batch_generator(config, state, 8)(key, 8)
  # The same latents as a grid drawn from the key (up to the jitted program's float rounding).
  np.testing.assert_allclose(plain, np.asarray(generation.from_key(config, state, key, 8)),
                             rtol=1e-5, atol=1e-5)
  zero = generation.batch_generator(config, state, 8, {"trunc": 0.0})(key, 8)
  np.testing.assert_array_equal(zero, np.broadcast_to(zero[:1], zero.shape))
  assert not np.array_equal(plain, np.broadcast_to(plain[:1], plain.shape))


def test_evaluate_a_shipped_model(tmp_path, monkeypatch):
  """--model scores the shipped weights with the same samples as sampling them by hand."""
  from aigc_jax import pretrained
  from aigc_jax.evaluation import features, pipeline
  load = pretrained.load

  def load_with_test_data_dir(name):  # The reference digits go to tmp_path, not ~/tensorflow_datasets.
    config, state = load(name)
    config.data.data_dir = str(tmp_path / "tfds")
    return config, state

  monkeypatch.setattr(pretrained, "load", load_with_test_data_dir)
  config, state = pretrained.load("dcgan_mnist")
  result = scoring.evaluate_run(str(tmp_path / "out"), model="dcgan_mnist", num_samples=120,
                                 extractor="digits", reference="digits:train", seed=5, progress=False)
  with open(tmp_path / "out" / "metrics.json") as f:
    assert json.load(f) == result
  assert result["model"] == "dcgan_mnist" and result["step"] == config.train.num_steps
  extractor = features.get_extractor("digits")
  fake, _ = pipeline.generated_summary(extractor, generation.batch_generator(config, state, 500),
                                       jax.random.key(5), 120)
  real = pipeline.reference_summary(extractor, pipeline.parse_reference("digits:train", config.data),
                                    120, str(tmp_path / "out"))
  expected = pipeline.compute_metrics(fake, real)
  assert result["metrics"]["fid"] == pytest.approx(expected["fid"], rel=1e-6)
  assert result["metrics"]["precision"] == expected["precision"]


def test_evaluate_a_shipped_model_bad_arguments(tmp_path):
  with pytest.raises(UserError, match="--step picks a checkpoint of a run"):
    scoring.evaluate_run(str(tmp_path), model="dcgan_mnist", step=3, num_samples=10, extractor="digits")
  with pytest.raises(UserError, match="is not a shipped model"):
    scoring.evaluate_run(str(tmp_path), model="nope", num_samples=10, extractor="digits")
  with pytest.raises(UserError, match="--seed=4294967296 is not valid: a seed is an integer from 0 to 4294967295"):
    scoring.evaluate_run(str(tmp_path), model="dcgan_mnist", seed=2 ** 32, num_samples=10, extractor="digits")
  # --manual_dir replaces the folder the model's config recorded on the machine that trained it.
  missing = str(tmp_path / "no_idx_here")
  with pytest.raises(UserError, match=f"'{missing}' does not exist"):
    scoring.evaluate_run(str(tmp_path), model="dcgan_mnist", num_samples=10, extractor="digits",
                          reference="mnist_idx:test", manual_dir=missing, progress=False)
