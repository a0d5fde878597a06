"""Metrics against closed forms and naive float64 numpy/scipy references written here."""

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance

from aigc_jax.errors import UserError
from aigc_jax.evaluation import metrics


def _gaussian(seed, n, d, shift=0.0, scale=1.0):
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(d, d)) / np.sqrt(d)
  return rng.normal(size=(n, d)) @ mix * scale + shift


def _fid_reference(x1, x2):
  """FID with tr sqrt(S1 S2) = nuclear norm of Xc1 Xc2^T / (n-1): exact for any rank."""
  c1, c2 = x1 - x1.mean(0), x2 - x2.mean(0)
  cross = c1 @ c2.T / np.sqrt((len(x1) - 1) * (len(x2) - 1))
  tr_covmean = np.linalg.svd(cross, compute_uv=False).sum()
  s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
  diff = x1.mean(0) - x2.mean(0)
  return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean


def _stats(x):
  return x.mean(0), np.cov(x, rowvar=False)


def test_fid_identical_sets_is_zero():
  x = _gaussian(0, 300, 32, scale=3.0)
  mu, s = _stats(x)
  assert abs(metrics.frechet_distance(mu, s, mu, s)) <= 1e-6


def test_fid_equal_covariance_is_squared_mean_distance():
  x = _gaussian(1, 200, 16)
  _, s = _stats(x)
  mu1, mu2 = np.arange(16.0), np.arange(16.0)[::-1] * 0.5
  expected = np.sum((mu1 - mu2) ** 2)
  assert metrics.frechet_distance(mu1, s, mu2, s) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n1,n2,d", [(400, 300, 24), (20, 15, 40)])  # second: rank-deficient
def test_fid_matches_independent_reference(n1, n2, d):
  x1, x2 = _gaussian(2, n1, d), _gaussian(3, n2, d, shift=0.3, scale=1.5)
  (mu1, s1), (mu2, s2) = _stats(x1), _stats(x2)
  expected = _fid_reference(x1, x2)
  assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
  cached = metrics.frechet_distance(mu1, s1, mu2, s2, sqrt_sigma1=metrics.sqrtm_psd(s1))
  assert cached == pytest.approx(expected, rel=1e-6)


def test_fid_with_a_constant_feature_matches_reference():
  # A feature that never varies makes S2 exactly singular: Cholesky fails and the two-product
  # route must give the same value as the full-rank route does elsewhere.
  x1, x2 = _gaussian(7, 300, 10), _gaussian(8, 300, 10, shift=0.5)
  x2[:, 3] = 2.0
  (mu1, s1), (mu2, s2) = _stats(x1), _stats(x2)
  with pytest.raises(np.linalg.LinAlgError):
    np.linalg.cholesky(s2)
  expected = _fid_reference(x1, x2)
  assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_fid_matches_scipy_sqrtm_on_full_rank():
  x1, x2 = _gaussian(4, 500, 12), _gaussian(5, 500, 12, shift=1.0)
  (mu1, s1), (mu2, s2) = _stats(x1), _stats(x2)
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
  assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_sqrtm_psd_squares_back():
  x = _gaussian(6, 10, 20)  # rank 9 covariance
  s = np.cov(x, rowvar=False)
  a = metrics.sqrtm_psd(s)
  np.testing.assert_allclose(a @ a, s, atol=1e-12)


@pytest.mark.parametrize("batch", [1, 7, 64, 500])
def test_streaming_stats_match_numpy_cov(batch):
  x = _gaussian(7, 500, 10, shift=1000.0)
  stats = metrics.FeatureStats.empty(10)
  for i in range(0, len(x), batch):
    stats.update(x[i:i + batch])
  assert stats.count == 500
  np.testing.assert_allclose(stats.mean, x.mean(0), rtol=0, atol=1e-10)
  np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=0, atol=1e-10)


def _kid_reference(x, y):
  d, m = x.shape[1], len(x)
  k = lambda a, b: (a @ b.T / d + 1) ** 3
  kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
  return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
          - 2 * kxy.mean())


def test_kid_one_full_subset_matches_reference():
  x, y = _gaussian(8, 120, 16), _gaussian(9, 120, 16, shift=0.2)
  out = metrics.kernel_inception_distance(x, y, subsets=1, subset_size=120)
  assert out["kid"] == pytest.approx(_kid_reference(x, y), rel=1e-5)
  assert out["kid_std"] == 0.0


def test_kid_is_unbiased_and_grows_with_shift():
  rng = np.random.default_rng(10)
  unbiased, biased = [], []
  for _ in range(150):
    x, y = rng.normal(size=(2, 16, 4))
    unbiased.append(metrics.kernel_inception_distance(x, y, subsets=1, subset_size=16)["kid"])
    k = lambda a, b: (a @ b.T / 4 + 1) ** 3
    biased.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
  sem = np.std(unbiased) / np.sqrt(len(unbiased))
  assert abs(np.mean(unbiased)) < 3 * sem
  assert np.mean(biased) > 10 * sem  # the V-statistic would fail the line above
  base = _gaussian(11, 200, 8)
  kids = [metrics.kernel_inception_distance(base, _gaussian(12, 200, 8, shift=s), subsets=10,
                                            subset_size=100)["kid"] for s in (0.0, 0.3, 1.0)]
  assert kids[0] < kids[1] < kids[2]


def test_kid_rejects_small_sets():
  with pytest.raises(UserError, match="subset_size=50"):
    metrics.kernel_inception_distance(np.zeros((40, 3)), np.zeros((60, 3)), subset_size=50)


def _prdc_reference(real, fake, k):
  d_rr = scipy.spatial.distance.cdist(real, real)
  d_ff = scipy.spatial.distance.cdist(fake, fake)
  d_rf = scipy.spatial.distance.cdist(real, fake)
  r_real = np.sort(d_rr, axis=1)[:, k]  # column 0 is the point itself
  r_fake = np.sort(d_ff, axis=1)[:, k]
  return {
      "precision": (d_rf <= r_real[:, None]).any(axis=0).mean(),
      "recall": (d_rf.T <= r_fake[:, None]).any(axis=0).mean(),
      "density": (d_rf < r_real[:, None]).sum(axis=0).mean() / k,
      "coverage": (d_rf.min(axis=1) < r_real).mean(),
  }


@pytest.mark.parametrize("block", [7, 1024])
def test_precision_recall_density_coverage_match_naive(monkeypatch, block):
  monkeypatch.setattr(metrics, "BLOCK", block)
  real, fake = _gaussian(13, 150, 6), _gaussian(14, 130, 6, shift=0.4, scale=0.8)
  got = {**metrics.precision_recall(real, fake, k=3), **metrics.density_coverage(real, fake, k=5)}
  ref3, ref5 = _prdc_reference(real, fake, 3), _prdc_reference(real, fake, 5)
  expected = {"precision": ref3["precision"], "recall": ref3["recall"],
              "density": ref5["density"], "coverage": ref5["coverage"]}
  for name, value in expected.items():
    assert got[name] == pytest.approx(value, abs=1e-12), name
  assert 0.0 < got["precision"] < 1.0 and 0.0 < got["coverage"] < 1.0


def test_identical_sets_have_full_precision_recall_coverage():
  x = _gaussian(15, 100, 5)
  pr, dc = metrics.precision_recall(x, x), metrics.density_coverage(x, x)
  assert pr == {"precision": 1.0, "recall": 1.0}
  assert dc["coverage"] == 1.0


@pytest.mark.parametrize("block", [9, 1024])
def test_mean_pairwise_distance_matches_pdist(monkeypatch, block):
  monkeypatch.setattr(metrics, "BLOCK", block)
  x = _gaussian(16, 60, 7, shift=50.0)
  expected = scipy.spatial.distance.pdist(x).mean()
  assert metrics.mean_pairwise_distance(x) == pytest.approx(expected, rel=1e-5)
  div = metrics.diversity(real=x, fake=x[:30] * 0.5)
  assert div["diversity_real"] == pytest.approx(expected, rel=1e-5)
  assert div["diversity_ratio"] == pytest.approx(
      scipy.spatial.distance.pdist(x[:30] * 0.5).mean() / expected, rel=1e-5)


def test_inception_score_closed_forms():
  confident = np.full((100, 10), -1e3)
  confident[np.arange(100), np.arange(100) % 10] = 0.0  # one-hot, classes balanced per split
  out = metrics.inception_score(confident, splits=10)
  assert out["inception_score"] == pytest.approx(10.0, rel=1e-9)
  assert metrics.inception_score(np.zeros((50, 7)), splits=5)["inception_score"] == pytest.approx(1.0)


def test_inception_score_matches_naive():
  logits = np.random.default_rng(17).normal(size=(90, 6)) * 2
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  scores = []
  for part in np.split(p, 3):
    py = part.mean(0)
    scores.append(np.exp(np.mean([np.sum(q * np.log(q / py)) for q in part])))
  out = metrics.inception_score(logits, splits=3)
  assert out["inception_score"] == pytest.approx(np.mean(scores), rel=1e-10)
  assert out["inception_score_std"] == pytest.approx(np.std(scores), rel=1e-8)


def test_gram_distance_and_class_consistency():
  g = np.eye(3)
  assert metrics.gram_distance(g, g) == 0.0
  assert metrics.gram_distance(2 * g, g) == pytest.approx(1.0)
  logits = np.eye(4)[[0, 1, 2, 2]]
  assert metrics.class_consistency(logits, [0, 1, 2, 3]) == 0.75
