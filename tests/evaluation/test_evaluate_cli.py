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


def test_evaluate_run_writes_metrics_json(run_dir, tmp_path):
  """The whole reference split, two sample seeds (mean and std), the reference's statistics saved."""
  workdir, _ = run_dir
  stats = str(tmp_path / "digits_train.npz")
  result = scoring.evaluate_run(workdir, num_samples=150, extractor="digits", seed=3, repeats=2,
                                 save_stats=stats, progress=False)
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f) == result
  assert result["step"] == 2 and result["reference"] == "digits:train"
  m = result["metrics"]
  assert np.isfinite(m["fid"]) and m["fid"] > 0 and 0 <= m["coverage"] <= 1
  assert len(glob.glob(os.path.join(workdir, "reference_digits_digits_train_8px_all_*.npz"))) == 1
  assert result["reference_size"] == 1797 and result["warnings"] == []
  assert result["seeds"] == [3, 4] and [r["seed"] for r in result["per_seed"]] == [3, 4]
  assert set(result["metrics_std"]) == set(m)
  assert m["fid"] == pytest.approx(np.mean([r["metrics"]["fid"] for r in result["per_seed"]]))
  with np.load(stats) as f:
    assert f["mu"].shape == (128,) and f["sigma"].shape == (128, 128)
  table = scoring.format_table(result)
  assert result["sampling"] == {"trunc": 1.0}
  assert "fid" in table and "150 samples x 2 seeds, trunc=1.0" in table and "(1797 images)" in table
  with pytest.raises(UserError, match="cannot take 5000 images"):
    scoring.evaluate_run(workdir, num_samples=150, extractor="digits", reference_size=5000, progress=False)
  with pytest.raises(UserError, match="--batch_size=0: need at least 1"):
    scoring.evaluate_run(workdir, num_samples=150, extractor="digits", batch_size=0, progress=False)
  with pytest.raises(UserError, match="--repeats=0: need at least 1"):
    scoring.evaluate_run(workdir, num_samples=150, extractor="digits", repeats=0, progress=False)


def test_cli_scores_a_folder_against_a_folder(tmp_path):
  """Like `python -m pytorch_fid FAKE REAL`, with --save_stats; 100 images < 128 feature dims warn."""
  from aigc_jax import images
  from aigc_jax.evaluation import features, pipeline
  from sklearn.datasets import load_digits
  digits = images.to_uint8(load_digits().images[..., None] / 8.0 - 1.0)
  for name, part in (("fake", digits[:100]), ("real", digits[100:300])):
    os.makedirs(tmp_path / name)
    for i, image in enumerate(part):
      images.save_png(str(tmp_path / name / f"{i}.png"), image)
  stats = str(tmp_path / "real.npz")
  proc = subprocess.run([sys.executable, "-m", "aigc_jax.evaluate", f"--fake_dir={tmp_path / 'fake'}",
                         f"--reference={tmp_path / 'real'}", f"--save_stats={stats}", f"--workdir={tmp_path}"],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "warning: 100 generated images for 128-d features" in proc.stderr
  header = proc.stdout.splitlines()[0]
  assert header.endswith(f"100 samples, digits features, reference {tmp_path / 'real'} (200 images)")
  with open(tmp_path / "metrics.json") as f:
    written = json.load(f)
  assert "metrics_std" not in written and "seeds" not in written  # one set of images
  again = pipeline.evaluate_folder(str(tmp_path / "fake"), stats, extractor=features.get_extractor("digits"))
  assert again["metrics"]["fid"] == pytest.approx(written["metrics"]["fid"], rel=1e-9)
  assert "  fid " in proc.stdout and f"{written['metrics']['fid']:.6g}" in proc.stdout


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
                                 extractor="digits", reference="digits:train", reference_size=300, seed=5,
                                 progress=False)
  with open(tmp_path / "out" / "metrics.json") as f:
    assert json.load(f) == result
  assert result["model"] == "dcgan_mnist" and result["step"] == config.train.num_steps
  extractor = features.get_extractor("digits")
  fake, _ = pipeline.generated_summary(extractor, generation.batch_generator(config, state, 500),
                                       jax.random.key(5), 120)
  real = pipeline.reference_summary(extractor, pipeline.parse_reference("digits:train", config.data),
                                    300, str(tmp_path / "out"))
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
