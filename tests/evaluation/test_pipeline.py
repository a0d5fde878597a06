"""Evaluation pipeline on scikit-learn digits with the shipped LeNet features (no ../shared)."""

import os

import jax
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf
from sklearn.datasets import load_digits

from aigc_jax import data, images as images_lib
from aigc_jax.config import base_config
from aigc_jax.errors import UserError
from aigc_jax.evaluation import features, metrics, pipeline
from aigc_jax.models.lenet import LeNet


@pytest.fixture(scope="module")
def digits():
  d = load_digits()
  return (d.images[..., None] / 8.0 - 1.0).astype(np.float32), d.target.astype(np.int32)


@pytest.fixture(scope="module")
def extractor():
  return features.digits_extractor(batch_size=128)


def _fid(a, b):
  return metrics.frechet_distance(a.stats.mean, a.stats.cov, b.stats.mean, b.stats.cov)


def test_fid_rises_with_noise_and_blur(digits, extractor):
  images, _ = digits
  real = pipeline.summarize(extractor, [images[:900]])
  held = images[900:]
  noise = np.random.default_rng(0).normal(size=held.shape).astype(np.float32)
  noisy = [_fid(real, pipeline.summarize(extractor, [np.clip(held + s * noise, -1, 1)]))
           for s in (0.0, 0.2, 0.5, 1.0)]
  blurred = [_fid(real, pipeline.summarize(extractor, [scipy.ndimage.gaussian_filter(held, (0, s, s, 0))]))
             for s in (0.0, 0.7, 1.5)]
  assert np.all(np.diff(noisy) > 0), noisy
  assert np.all(np.diff(blurred) > 0), blurred
  assert noisy[-1] > 3 * noisy[0]


def test_metrics_do_not_depend_on_batch_size(digits, extractor):
  images, labels = digits
  real_x, fake_x = images[:700], np.clip(images[700:1300] * 0.8 + 0.1, -1, 1)
  small = features.digits_extractor(features.load_lenet_params(), batch_size=48)
  results = []
  for ex, cuts in ((extractor, [600]), (small, [5, 333, 600])):
    parts = np.split(fake_x, cuts[:-1])
    fake = pipeline.summarize(ex, parts)
    real = pipeline.summarize(ex, np.split(real_x, [100, 101]))
    results.append(pipeline.compute_metrics(fake, real, labels[700:1300], kid_subsets=5,
                                            kid_subset_size=200))
  assert set(results[0]) >= {"fid", "kid", "precision", "recall", "density", "coverage", "diversity",
                             "inception_score", "style_gram_distance", "class_consistency"}
  for name, value in results[0].items():
    assert results[1][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_summary_stats_gram_and_logits_match_direct_computation(digits, extractor):
  images, _ = digits
  x = images[:300]
  summary = pipeline.summarize(extractor, [x[:130], x[130:]], max_kept=200)
  out = LeNet().apply({"params": features.load_lenet_params()}, x)
  feats = np.asarray(out["features"], np.float64)
  np.testing.assert_allclose(summary.stats.mean, feats.mean(0), atol=1e-5)
  np.testing.assert_allclose(summary.stats.cov, np.cov(feats, rowvar=False), atol=1e-4)
  conv = np.asarray(out["conv"], np.float64).reshape(300, -1, 64)
  grams = np.einsum("bpc,bpd->cd", conv, conv) / conv.shape[1]
  np.testing.assert_allclose(summary.gram_sum, grams, rtol=1e-4)
  np.testing.assert_allclose(summary.logits, out["logits"], atol=1e-4)
  assert summary.features.shape == (200, 128) and summary.count == 300


def test_summary_bytes_round_trip(digits, extractor):
  summary = pipeline.summarize(extractor, [digits[0][:50]]).with_sqrt_cov()
  loaded = pipeline.SetSummary.from_bytes(summary.to_bytes())
  assert loaded.count == 50
  for name in ("gram_sum", "features", "logits", "sqrt_cov"):
    np.testing.assert_array_equal(getattr(loaded, name), getattr(summary, name))
  np.testing.assert_array_equal(loaded.stats.cov, summary.stats.cov)


def _digits_config(tmp_path):
  config = base_config()
  config.data.dataset, config.data.image_size = "digits", 8
  config.data.data_dir = str(tmp_path / "tfds")
  config.data.eval_split = "train"
  return config


def test_evaluate_generator_end_to_end_with_cache(tmp_path, monkeypatch, extractor):
  config = _digits_config(tmp_path)
  real, real_labels = data.load_examples(config.data, "train", 400)
  calls = []

  def generate(key, n):  # a "generator" that returns noisy real digits
    calls.append(n)
    idx = jax.random.randint(key, (n,), 0, 400)
    return np.clip(real[np.asarray(idx)] + 0.1, -1, 1)

  out = pipeline.evaluate_generator(config, generate, num_samples=300, extractor=extractor,
                                    reference_size=400, cache_dir=str(tmp_path))
  assert sum(calls) == 300
  assert out["fid"] > 0 and 0 <= out["precision"] <= 1 and out["kid_std"] >= 0
  cached = list(tmp_path.glob("reference_digits_digits_train_8px_400_*.npz"))
  assert cached
  # A URL cache (TensorFlow's in-memory filesystem standing in for gs://) works the same way.
  url = "ram://eval_cache"
  assert pipeline.evaluate_generator(config, generate, num_samples=300, extractor=extractor,
                                     reference_size=400, cache_dir=url) == out
  assert tf.io.gfile.glob(url + "/reference_digits_digits_train_8px_400_*.npz")
  monkeypatch.setattr(data, "reference_batches", lambda *a: pytest.fail("reference not cached"))
  for cache_dir in (str(tmp_path), url):
    again = pipeline.evaluate_generator(config, generate, num_samples=300, extractor=extractor,
                                        reference_size=400, cache_dir=cache_dir)
    assert again == out

  config.model.num_classes = 10
  by_class = {c: real[real_labels == c] for c in range(10)}

  def generate_conditional(key, n, labels):
    return np.stack([by_class[int(c)][0] for c in labels])

  cond = pipeline.evaluate_generator(config, generate_conditional, num_samples=300,
                                     extractor=extractor, reference_size=400, cache_dir=str(tmp_path))
  wanted = np.arange(300) % 10
  logits = extractor.apply(np.resize(generate_conditional(None, 300, wanted), (384, 8, 8, 1)),
                           np.ones(384, np.float32))["logits"][:300]
  assert cond["class_consistency"] == pytest.approx(np.mean(np.argmax(logits, 1) == wanted))


def test_user_errors(tmp_path, digits, extractor):
  with pytest.raises(UserError, match="unknown feature extractor 'vgg'"):
    features.get_extractor("vgg")
  with pytest.raises(UserError, match="DATASET:SPLIT"):
    pipeline.parse_reference("digits", base_config().data)
  with pytest.raises(UserError, match="'digit:train' names an unknown dataset; choose one of digits, mnist_idx"):
    pipeline.parse_reference("digit:train", base_config().data)
  fake = pipeline.summarize(extractor, [digits[0][:60]])
  real = pipeline.summarize(extractor, [digits[0][60:100]])
  with pytest.raises(UserError, match="KID needs 60 reference images"):
    pipeline.compute_metrics(fake, real)
  with pytest.raises(UserError, match="inception_fid.npz.*convert_inception"):
    features.get_extractor("inception", inception_weights=str(tmp_path / "inception_fid.npz"))


def _save_pngs(folder, float_images):
  os.makedirs(folder, exist_ok=True)
  for i, image in enumerate(images_lib.to_uint8(float_images)):
    images_lib.save_png(os.path.join(folder, f"{i:04d}.png"), image)
  return str(folder)


def test_generated_images_are_scored_as_their_saved_pngs(tmp_path, digits, extractor):
  """The quantisation path: a float image and its PNG round trip give identical features."""
  images, _ = digits
  floats = np.clip(images[:200] * 0.9 + 0.05, -1, 1)  # off the uint8 grid
  assert not np.array_equal(images_lib.to_float(images_lib.to_uint8(floats)), floats)
  generated, _ = pipeline.generated_summary(extractor, lambda key, n: floats[:n], jax.random.key(0), 200,
                                            batch_size=200)
  from_pngs = pipeline.summarize_folder(extractor, _save_pngs(tmp_path / "pngs", floats))
  np.testing.assert_array_equal(generated.features, from_pngs.features)
  np.testing.assert_array_equal(generated.logits, from_pngs.logits)
  unquantised = pipeline.summarize(extractor, [floats])
  assert not np.array_equal(unquantised.features, generated.features)


def test_scoring_a_folder_equals_scoring_the_arrays_in_memory(tmp_path, digits, extractor):
  images, _ = digits
  fake_images = images_lib.to_float(images_lib.to_uint8(np.clip(images[1000:1300] + 0.2, -1, 1)))
  fake_dir = _save_pngs(tmp_path / "fake", fake_images)
  config = _digits_config(tmp_path)
  other_size = config.data.copy_and_resolve_references()
  other_size.image_size = 16  # the dataset reference is read at the folder's size (8 px) instead
  result = pipeline.evaluate_folder(fake_dir, "digits:train", extractor=extractor, reference_size=500,
                                    data_config=other_size)
  real = pipeline.reference_summary(extractor, pipeline.parse_reference("digits:train", config.data), 500)
  expected = pipeline.compute_metrics(pipeline.summarize(extractor, [fake_images]), real)
  assert result["metrics"] == pytest.approx(expected, rel=1e-6, abs=1e-12)  # float32 Gram sums: batch cuts
  assert (result["num_samples"], result["reference"], result["reference_size"]) == (300, "digits:train", 500)
  assert result["fake_dir"] == fake_dir and result["warnings"] == []
  with pytest.raises(UserError, match="scoring a folder needs --reference"):
    pipeline.evaluate_folder(fake_dir, None, extractor=extractor)


def test_repeats_report_mean_and_sample_std_over_seeds(digits, extractor):
  images, _ = digits
  real = pipeline.summarize(extractor, [images[:400]], keep_logits=False)

  def generate(key, n):
    noise = np.asarray(jax.random.normal(key, (n, 8, 8, 1)))
    return np.clip(images[700:700 + n] + 0.3 * noise, -1, 1)

  result = pipeline.score_generator(extractor, generate, real, num_samples=100, seeds=[4, 5])
  runs = [pipeline.compute_metrics(pipeline.generated_summary(extractor, generate, jax.random.key(s), 100)[0],
                                   real) for s in (4, 5)]
  for name in ("fid", "kid", "precision", "coverage", "inception_score"):
    values = [r[name] for r in runs]
    assert result["metrics"][name] == pytest.approx(np.mean(values), rel=1e-9)
    assert result["metrics_std"][name] == pytest.approx(np.std(values, ddof=1), rel=1e-9)
  assert result["metrics_std"]["fid"] > 0
  assert [r["seed"] for r in result["per_seed"]] == [4, 5] and result["seeds"] == [4, 5]
  assert result["per_seed"][1]["metrics"] == pytest.approx(runs[1], rel=1e-12)
  table = pipeline.format_table({"step": 3, "features": "digits", "num_samples": 100,
                                 "reference": "digits:train", **result})
  assert "100 samples x 2 seeds" in table and f"{result['metrics']['fid']:.6g} ± " in table


def test_a_warning_line_when_images_are_no_more_than_feature_dimensions(digits, extractor):
  images, _ = digits
  real = pipeline.summarize(extractor, [images[:1000]])
  few = pipeline.summarize(extractor, [images[1000:1128]])  # 128 images, 128-d features
  enough = pipeline.summarize(extractor, [images[1000:1129]])
  [line] = pipeline.sample_size_warnings(few, real)
  assert line.startswith("128 generated images for 128-d features: the covariance is rank-deficient "
                         "(rank at most 127)")
  assert pipeline.sample_size_warnings(enough, real) == []
  assert len(pipeline.sample_size_warnings(few, few)) == 2
