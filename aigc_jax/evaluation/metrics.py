"""Realism, diversity and style metrics over feature arrays.

Second-order statistics and the Frechet distance are float64 (numpy/SciPy, with as
many BLAS threads as there are idle CPUs: see `_idle_cpus`); the
O(n^2) parts (KID kernels, nearest-neighbour radii, pairwise distances) run in
JAX in blocks, so 10k x 10k comparisons never hold a full distance matrix.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import threadpoolctl

from aigc_jax.errors import UserError

BLOCK = 1024  # rows of a distance block: [BLOCK, n] float32 stays ~40 MB at n = 10k


def _psd_eigvals_clean(w: np.ndarray) -> np.ndarray:
  """Zeroes eigenvalues below the numerical rank threshold (they are rounding noise)."""
  tol = max(float(w.max(initial=0.0)), 0.0) * w.shape[0] * np.finfo(np.float64).eps
  return np.where(w > tol, w, 0.0)


def _idle_cpus() -> int:
  """CPUs this process may use that no other runnable task holds right now (at least 1).

  OpenBLAS threads wait for each other at every step, so a thread on a core busy with other
  work stalls the rest, while threads on idle cores help: BLAS gets only the cores idle now
  (benchmarks/RESULTS.md, "Evaluation").
  """
  try:
    cpus = len(os.sched_getaffinity(0))
    with open("/proc/loadavg", encoding="ascii") as f:
      runnable = int(f.read().split()[3].split("/")[0])  # counts this thread too
  except (AttributeError, OSError, ValueError, IndexError):  # not Linux
    return 1
  return max(1, cpus - (runnable - 1))


def sqrtm_psd(sigma: np.ndarray) -> np.ndarray:
  """Symmetric square root of a positive semi-definite matrix, in float64."""
  sigma = np.asarray(sigma, np.float64)
  with threadpoolctl.threadpool_limits(_idle_cpus(), user_api="blas"):
    w, v = scipy.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(_psd_eigvals_clean(w))) @ v.T


def _congruence_eigvals(a: np.ndarray, s: np.ndarray) -> np.ndarray:
  """Eigenvalues of A S A for symmetric A and positive semi-definite S.

  With S = G G^T (Cholesky), A S A = (A G)(A G)^T: one triangular product and one symmetric
  rank-k update, about half the work of two general products. Cholesky is backward stable, so
  this is as accurate; when S is numerically singular it fails and two products are used.
  """
  # Both are symmetric, so their transposes are the same matrices in the Fortran order LAPACK
  # and BLAS want, and are passed without a copy.
  try:
    g = scipy.linalg.cholesky(s.T, lower=True, check_finite=False)
  except np.linalg.LinAlgError:
    m = a @ s @ a
    return scipy.linalg.eigvalsh((m + m.T) / 2, check_finite=False)
  b = scipy.linalg.blas.dtrmm(1.0, g, a.T, side=1, lower=1)  # A G
  return scipy.linalg.eigvalsh(scipy.linalg.blas.dsyrk(1.0, b), lower=False, overwrite_a=True,
                               check_finite=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, *, sqrt_sigma1: np.ndarray | None = None) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

  tr sqrt(S1 S2) is taken from the eigenvalues of the symmetric A S2 A with
  A = sqrt(S1), which are real and non-negative even for singular covariances.
  Pass `sqrt_sigma1` (from `sqrtm_psd`) to reuse a cached reference root.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  a = sqrtm_psd(sigma1) if sqrt_sigma1 is None else np.asarray(sqrt_sigma1, np.float64)
  with threadpoolctl.threadpool_limits(_idle_cpus(), user_api="blas"):
    eigvals = _congruence_eigvals(a, sigma2)
  tr_covmean = np.sqrt(_psd_eigvals_clean(eigvals)).sum()
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


@dataclasses.dataclass
class FeatureStats:
  """Streaming mean and covariance: float64 sums of features and outer products.

  Sums are taken around a shift (the first batch's mean) so that features with
  a large common offset lose no precision to cancellation.
  """
  count: int
  shift: np.ndarray
  sum: np.ndarray
  outer: np.ndarray

  @classmethod
  def empty(cls, dim: int) -> "FeatureStats":
    """Statistics of no samples yet."""
    return cls(0, np.zeros(dim), np.zeros(dim), np.zeros((dim, dim)))

  def update(self, features) -> None:
    """Adds a batch of features [B, D]."""
    x = np.asarray(features, np.float64)
    if self.count == 0:
      self.shift = x.mean(axis=0)
    x = x - self.shift
    self.count += x.shape[0]
    self.sum += x.sum(axis=0)
    self.outer += x.T @ x

  @property
  def mean(self) -> np.ndarray:
    """Mean feature vector."""
    return self.shift + self.sum / self.count

  @property
  def cov(self) -> np.ndarray:
    """Unbiased covariance (divides by count - 1, like numpy.cov)."""
    m = self.sum / self.count
    return (self.outer - self.count * np.outer(m, m)) / (self.count - 1)


def _sqdist(x: jax.Array, y: jax.Array) -> jax.Array:
  xx = jnp.sum(x * x, axis=1)[:, None]
  yy = jnp.sum(y * y, axis=1)[None, :]
  xy = jnp.dot(x, y.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(xx + yy - 2.0 * xy, 0.0)


def _blocks(x: np.ndarray, fn) -> np.ndarray:
  """Applies a jitted `fn(rows, first_row_index)` to fixed-size row blocks of `x`.

  The last block is zero-padded to the same size, so `fn` compiles once.
  """
  n = x.shape[0]
  size = min(BLOCK, n)
  out = []
  for start in range(0, n, size):
    rows = x[start:start + size]
    pad = size - rows.shape[0]
    if pad:
      rows = np.concatenate([rows, np.zeros((pad, x.shape[1]), x.dtype)])
    out.append(np.asarray(fn(rows, start))[:size - pad])
  return np.concatenate(out)


def _self_mask(num_rows: int, num_cols: int, start) -> jax.Array:
  """True where row `start + i` of the data meets column i itself."""
  return (start + jnp.arange(num_rows))[:, None] == jnp.arange(num_cols)[None, :]


@functools.partial(jax.jit, static_argnames="k")
def _kth_neighbours(rows, data, start, k: int):
  """Squared distances to the 1st..k-th nearest other points of `data`, [rows, k]."""
  d = jnp.where(_self_mask(rows.shape[0], data.shape[0], start), jnp.inf, _sqdist(rows, data))
  return -jax.lax.top_k(-d, k)[0]


def _radii(x: np.ndarray, k: int) -> np.ndarray:
  if x.shape[0] <= k:
    raise UserError(f"nearest-neighbour metrics need more than k={k} samples per set, got {x.shape[0]}")
  data = jnp.asarray(x)
  return _blocks(x, lambda rows, start: _kth_neighbours(rows, data, start, k))


def _centered(real, fake) -> tuple[np.ndarray, np.ndarray]:
  """float32 copies centred on the real mean, which keeps |x|^2 + |y|^2 - 2xy accurate."""
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  center = real.mean(axis=0)
  return (real - center).astype(np.float32), (fake - center).astype(np.float32)


@jax.jit
def _cross_block(fake_rows, valid, fake_radii, real, real_radii_pr, real_radii_dc):
  """One block of fake rows against all real points.

  Per fake row: inside some real k-NN ball (precision); how many real open balls
  contain it (density). Per real point, over this block's valid rows: whether some
  fake ball contains it (recall); its nearest fake distance (coverage).
  """
  d = _sqdist(fake_rows, real)
  precision = jnp.any(d <= real_radii_pr[None, :], axis=1)
  density = jnp.sum(d < real_radii_dc[None, :], axis=1)
  recall = jnp.any((d <= fake_radii[:, None]) & valid[:, None], axis=0)
  nearest = jnp.min(jnp.where(valid[:, None], d, jnp.inf), axis=0)
  return precision, density, recall, nearest


def precision_recall_density_coverage(real, fake, k_pr: int = 3, k_dc: int = 5) -> dict[str, float]:
  """Precision/recall (Kynkaanniemi et al. 2019, k_pr) and density/coverage (Naeem et al. 2020, k_dc).

  k-NN radii exclude the point itself; balls are closed for precision/recall and
  open for density/coverage, as in the reference implementations. Three blocked
  passes: real-real, fake-fake, fake-real.
  """
  real, fake = _centered(real, fake)
  real_radii = _radii(real, max(k_pr, k_dc))
  r_pr, r_dc = jnp.asarray(real_radii[:, k_pr - 1]), jnp.asarray(real_radii[:, k_dc - 1])
  fake_radii = _radii(fake, k_pr)[:, k_pr - 1]
  real_j, n = jnp.asarray(real), fake.shape[0]
  size = min(BLOCK, n)
  precision, density, recall, nearest = [], [], np.zeros(real.shape[0], bool), np.full(real.shape[0], np.inf)
  for start in range(0, n, size):
    rows, radii = fake[start:start + size], fake_radii[start:start + size]
    valid = np.arange(size) < rows.shape[0]
    pad = size - rows.shape[0]
    rows = np.concatenate([rows, np.zeros((pad, rows.shape[1]), rows.dtype)])
    radii = np.concatenate([radii, np.zeros(pad, radii.dtype)])
    p, dn, rc, nr = jax.device_get(_cross_block(rows, valid, radii, real_j, r_pr, r_dc))
    precision.append(p[:size - pad])
    density.append(dn[:size - pad])
    recall |= rc
    nearest = np.minimum(nearest, nr)
  return {"precision": float(np.concatenate(precision).mean()), "recall": float(recall.mean()),
          "density": float(np.concatenate(density).mean() / k_dc),
          "coverage": float(np.mean(nearest < real_radii[:, k_dc - 1]))}


def precision_recall(real, fake, k: int = 3) -> dict[str, float]:
  """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN balls (self excluded)."""
  out = precision_recall_density_coverage(real, fake, k_pr=k, k_dc=k)
  return {"precision": out["precision"], "recall": out["recall"]}


def density_coverage(real, fake, k: int = 5) -> dict[str, float]:
  """Density and coverage (Naeem et al. 2020) with k-NN balls around the real samples."""
  out = precision_recall_density_coverage(real, fake, k_pr=k, k_dc=k)
  return {"density": out["density"], "coverage": out["coverage"]}


@jax.jit
def _row_distance_sums(rows, data, start):
  d = jnp.where(_self_mask(rows.shape[0], data.shape[0], start), 0.0, _sqdist(rows, data))
  return jnp.sum(jnp.sqrt(d), axis=1)


def mean_pairwise_distance(features) -> float:
  """Mean Euclidean distance over all pairs of distinct samples (a diversity measure)."""
  x = np.asarray(features, np.float64)
  n = x.shape[0]
  if n < 2:
    raise UserError(f"pairwise diversity needs at least 2 samples, got {n}")
  x = (x - x.mean(axis=0)).astype(np.float32)
  data = jnp.asarray(x)
  total = _blocks(x, lambda rows, start: _row_distance_sums(rows, data, start)).astype(np.float64).sum()
  return float(total / (n * (n - 1)))


def diversity(real, fake) -> dict[str, float]:
  """Mean pairwise distance of the generated set, of the real set, and their ratio."""
  d_fake, d_real = mean_pairwise_distance(fake), mean_pairwise_distance(real)
  return {"diversity": d_fake, "diversity_real": d_real, "diversity_ratio": d_fake / d_real}


@jax.jit
def _grams(x, y):
  hp = jax.lax.Precision.HIGHEST
  return (jnp.dot(x, x.T, precision=hp), jnp.dot(y, y.T, precision=hp), jnp.dot(x, y.T, precision=hp))


def _mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
  m = kxx.shape[0]
  off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))
  return float(off(kxx) + off(kyy) - 2.0 * kxy.sum() / (m * m))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _subset_indices(key, subsets: int, n: int, size: int):
  """[subsets, size] indices, each row drawn without replacement."""
  return jax.vmap(lambda k: jax.random.permutation(k, n)[:size])(jax.random.split(key, subsets))


def kernel_inception_distance(f1, f2, subsets: int = 100, subset_size: int = 1000, *,
                              key: jax.Array | None = None) -> dict[str, float]:
  """Unbiased MMD^2 with the kernel (x.y/d + 1)^3: mean and std over random subsets.

  Dot products run in JAX (float32); the cubic kernel and its sums in float64.
  `key` picks the subsets (default: `jax.random.key(0)`, so results repeat).
  """
  f1, f2 = np.asarray(f1, np.float32), np.asarray(f2, np.float32)
  for name, f in (("first", f1), ("second", f2)):
    if f.shape[0] < subset_size:
      raise UserError(f"KID needs at least subset_size={subset_size} samples per set; the {name} "
                      f"set has {f.shape[0]} (lower the subset size or add samples)")
  d = f1.shape[1]
  key = jax.random.key(0) if key is None else key
  idx1, idx2 = (np.asarray(_subset_indices(k, subsets, f.shape[0], subset_size))
                for k, f in zip(jax.random.split(key), (f1, f2)))
  values = []
  for i1, i2 in zip(idx1, idx2):
    kernels = [np.asarray(g, np.float64) / d + 1.0 for g in _grams(f1[i1], f2[i2])]
    values.append(_mmd2_unbiased(*[k * k * k for k in kernels]))
  return {"kid": float(np.mean(values)), "kid_std": float(np.std(values))}


def inception_score(logits, splits: int = 10) -> dict[str, float]:
  """exp(E KL(p(y|x) || p(y))) per split of the samples: mean and std over splits."""
  logits = np.asarray(logits, np.float64)
  n = logits.shape[0]
  if n < splits:
    raise UserError(f"inception score with {splits} splits needs at least {splits} samples, got {n}")
  log_p = logits - logits.max(axis=1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
  scores = []
  for i in range(splits):
    part = log_p[i * n // splits:(i + 1) * n // splits]
    log_py = np.log(np.exp(part).mean(axis=0))
    scores.append(np.exp(np.mean(np.sum(np.exp(part) * (part - log_py), axis=1))))
  return {"inception_score": float(np.mean(scores)), "inception_score_std": float(np.std(scores))}


def gram_distance(gram1, gram2) -> float:
  """Relative Frobenius distance ||G1 - G2|| / ||G2|| between mean Gram matrices (style)."""
  gram1, gram2 = np.asarray(gram1, np.float64), np.asarray(gram2, np.float64)
  return float(np.linalg.norm(gram1 - gram2) / np.linalg.norm(gram2))


def class_consistency(logits, labels) -> float:
  """Fraction of samples the classifier assigns to their requested class."""
  return float(np.mean(np.argmax(np.asarray(logits), axis=1) == np.asarray(labels)))
