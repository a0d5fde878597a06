"""Evaluation pipeline on scikit-learn digits with the shipped LeNet features (no ../shared)."""

import jax
import ml_collections
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf
from sklearn.datasets import load_digits

from aigc_jax import data
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
                                    cache_dir=str(tmp_path))
  assert sum(calls) == 300
  assert out["fid"] > 0 and 0 <= out["precision"] <= 1 and out["kid_std"] >= 0
  cached = list(tmp_path.glob("reference_digits_digits_train_8px_300_*.npz"))
  assert cached
  # A URL cache (TensorFlow's in-memory filesystem standing in for gs://) works the same way.
  url = "ram://eval_cache"
  assert pipeline.evaluate_generator(config, generate, num_samples=300, extractor=extractor,
                                     cache_dir=url) == out
  assert tf.io.gfile.glob(url + "/reference_digits_digits_train_8px_300_*.npz")
  monkeypatch.setattr(data, "load_images", lambda *a: pytest.fail("reference not cached"))
  for cache_dir in (str(tmp_path), url):
    again = pipeline.evaluate_generator(config, generate, num_samples=300, extractor=extractor,
                                        cache_dir=cache_dir)
    assert again == out

  config.model.num_classes = 10
  by_class = {c: real[real_labels == c] for c in range(10)}

  def generate_conditional(key, n, labels):
    return np.stack([by_class[int(c)][0] for c in labels])

  cond = pipeline.evaluate_generator(config, generate_conditional, num_samples=300,
                                     extractor=extractor, cache_dir=str(tmp_path))
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


def test_reference_cache_names_differ_when_the_images_would():
  data = ml_collections.ConfigDict({"dataset": "mnist_idx", "split": "test", "image_size": 28,
                                    "channels": 1, "manual_dir": "/data/mnist",
                                    "synthetic_source": "digits", "synthetic_spec": ""})
  name = pipeline._cache_name("digits", data, 100)
  assert name.startswith("reference_digits_mnist_idx_test_28px_100_") and name.endswith(".npz")
  assert pipeline._cache_name("digits", data, 100) == name
  for key, value in (("manual_dir", "/data/fashion_mnist"), ("channels", 3), ("synthetic_spec", "flip_lr"),
                     ("folder", "/photos"), ("crop", "none"), ("background", "black")):
    other = ml_collections.ConfigDict(data.to_dict())
    other[key] = value
    assert pipeline._cache_name("digits", other, 100) != name, key
