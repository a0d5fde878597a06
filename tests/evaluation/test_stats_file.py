"""Statistics files: pytorch-fid's format written, and pytorch-fid's, EDM's and clean-fid's read."""

import numpy as np
import pytest

from aigc_jax.errors import UserError
from aigc_jax.evaluation import stats_file


def _moments(dim=6, seed=0):
  x = np.random.default_rng(seed).normal(size=(50, dim))
  return x.mean(axis=0), np.cov(x, rowvar=False)


def test_written_file_is_pytorch_fids_format_and_reads_back(tmp_path):
  mu, sigma = _moments()
  path = str(tmp_path / "stats.npz")
  stats_file.write_stats(path, mu, sigma)
  with np.load(path) as f:  # what pytorch-fid's compute_statistics_of_path reads
    assert sorted(f.files) == ["mu", "sigma"]
    assert f["mu"].dtype == np.float64 and f["sigma"].dtype == np.float64
    np.testing.assert_array_equal(f["mu"][:], mu)
    np.testing.assert_array_equal(f["sigma"][:], sigma)
  got_mu, got_sigma = stats_file.read_stats(path, feature_dim=6)
  np.testing.assert_array_equal(got_mu, mu)
  np.testing.assert_array_equal(got_sigma, sigma)
  with pytest.raises(UserError, match="exists"):  # like pytorch-fid's --save-stats
    stats_file.write_stats(path, mu, sigma)
  with pytest.raises(UserError, match="must end in .npz"):
    stats_file.write_stats(str(tmp_path / "stats.bin"), mu, sigma)


def test_reads_other_tools_files(tmp_path):
  mu, sigma = _moments()
  # EDM's `fid.py ref` saves float64 mu and sigma with np.savez; clean-fid's statistics are
  # float32 from np.savez_compressed; ADM-style reference batches add more arrays beside them.
  np.savez(tmp_path / "edm.npz", mu=mu, sigma=sigma)
  np.savez_compressed(tmp_path / "clean.npz", mu=mu.astype(np.float32), sigma=sigma.astype(np.float32))
  np.savez(tmp_path / "adm.npz", mu=mu, sigma=sigma, mu_s=mu[:2], sigma_s=sigma[:2, :2])
  for name in ("edm", "adm"):
    np.testing.assert_array_equal(stats_file.read_stats(str(tmp_path / f"{name}.npz"))[1], sigma)
  got = stats_file.read_stats(str(tmp_path / "clean.npz"))
  assert got[1].dtype == np.float64
  np.testing.assert_allclose(got[1], sigma, rtol=1e-6)


def test_bad_statistics_files_are_one_line(tmp_path):
  mu, sigma = _moments()
  cases = {
      "missing.npz": None,
      "feats.npz": dict(feats=np.zeros((3, 6))),  # clean-fid's KID features, not statistics
      "shape.npz": dict(mu=mu, sigma=sigma[:5]),
      "nan.npz": dict(mu=mu, sigma=np.where(np.eye(6) > 0, np.nan, sigma)),
      "pickle.npz": dict(mu=np.array([{"a": 1}], dtype=object), sigma=sigma),
  }
  messages = {"missing.npz": "not found", "feats.npz": "no 'mu' or 'sigma' array .*holds feats",
              "shape.npz": r"expected \[D\] and \[D, D\]", "nan.npz": "not finite",
              "pickle.npz": "cannot read statistics file"}
  for name, arrays in cases.items():
    if arrays is not None:
      np.savez(tmp_path / name, **arrays)
    with pytest.raises(UserError, match=messages[name]):
      stats_file.read_stats(str(tmp_path / name))
  (tmp_path / "text.npz").write_text("not a zip")
  with pytest.raises(UserError, match="cannot read statistics file"):
    stats_file.read_stats(str(tmp_path / "text.npz"))
  np.savez(tmp_path / "ok.npz", mu=mu, sigma=sigma)
  with pytest.raises(UserError, match="statistics of 6-d features; these features are 2048-d"):
    stats_file.read_stats(str(tmp_path / "ok.npz"), feature_dim=2048)
