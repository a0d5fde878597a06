"""Times the evaluation metrics against the textbook routes, and a whole 10k-sample digits evaluation.

    python -m benchmarks.metrics [--n=10000] [--dim=2048] [--mnist=../shared/data/mnist]

Features are synthetic (correlated Gaussians, like pool3 statistics in scale). Compared:
FID via `scipy.linalg.sqrtm(S1 @ S2)`, via eigh, and via eigh against a cached reference
root; KID; PR/DC in JAX blocks vs a naive float64 numpy version. With --mnist, a DCGAN
(random weights: timing does not depend on quality) is evaluated end to end on 10k samples
against the MNIST test split with the digits features, cold and with the reference cached.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import scipy.linalg

from aigc_jax.evaluation import metrics


def _timed(fn, repeats: int = 1):
  best, out = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    best = min(best, time.perf_counter() - start)
  return best, out


def _features(seed: int, n: int, d: int, shift: float) -> np.ndarray:
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d)
  return (np.abs(rng.normal(size=(n, d)).astype(np.float32) @ mix) + shift).astype(np.float32)


def _fid_sqrtm(mu1, s1, mu2, s2) -> float:
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def _naive_prdc(real, fake, k_pr: int = 3, k_dc: int = 5) -> dict[str, float]:
  def dist(a, b):
    return np.sqrt(np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0))
  real, fake = real.astype(np.float64), fake.astype(np.float64)
  d_rr, d_ff, d_rf = dist(real, real), dist(fake, fake), dist(real, fake)
  r3, f3 = np.sort(d_rr, 1)[:, k_pr], np.sort(d_ff, 1)[:, k_pr]
  r5 = np.sort(d_rr, 1)[:, k_dc]
  return {"precision": (d_rf <= r3[:, None]).any(0).mean(), "recall": (d_rf.T <= f3[:, None]).any(0).mean(),
          "density": (d_rf < r5[:, None]).sum(0).mean() / k_dc, "coverage": (d_rf.min(1) < r5).mean()}


def bench_features(n: int, d: int) -> list[tuple[str, float, str]]:
  rows = []
  real, fake = _features(0, n, d, 0.0), _features(1, n, d, 0.05)
  t, (sr, sf) = _timed(lambda: tuple(_stream(x) for x in (real, fake)))
  rows.append((f"FID statistics, 2 x {n} x {d} (streaming float64, batches of 1000)", t, ""))
  args = (sr.mean, sr.cov, sf.mean, sf.cov)
  t_sqrtm, v_sqrtm = _timed(lambda: _fid_sqrtm(*args))
  t_eigh, v_eigh = _timed(lambda: metrics.frechet_distance(*args))
  t_root, root = _timed(lambda: metrics.sqrtm_psd(sr.cov))
  t_cached, v_cached = _timed(lambda: metrics.frechet_distance(*args, sqrt_sigma1=root), repeats=3)
  rows.append(("FID distance, scipy.linalg.sqrtm(S1 @ S2)", t_sqrtm, f"FID {v_sqrtm:.6f}"))
  rows.append(("FID distance, eigh route (no cache)", t_eigh, f"FID {v_eigh:.6f}"))
  rows.append(("reference root sqrtm_psd(S1), once per reference set", t_root, ""))
  rows.append(("FID distance, eigh route, cached reference root", t_cached,
               f"FID {v_cached:.6f}; {t_sqrtm / t_cached:.0f}x the sqrtm route"))
  t_kid, kid = _timed(lambda: metrics.kernel_inception_distance(real, fake))
  rows.append((f"KID, 100 subsets of 1000, {d}-d", t_kid, f"KID {kid['kid']:.6f} +- {kid['kid_std']:.6f}"))
  t_jax, ours = _timed(lambda: metrics.precision_recall_density_coverage(real, fake))
  rows.append((f"PR (k=3) + DC (k=5), {n} x {n}, JAX blocks", t_jax,
               ", ".join(f"{k} {v:.4f}" for k, v in ours.items())))
  t_naive, naive = _timed(lambda: _naive_prdc(real, fake))
  same = all(abs(naive[k] - ours[k]) < 1e-3 for k in ours)
  rows.append((f"PR + DC, {n} x {n}, naive float64 numpy (3 full matrices)", t_naive,
               f"{t_naive / t_jax:.1f}x slower; same values to 1e-3: {same}"))
  return rows


def _stream(x: np.ndarray) -> metrics.FeatureStats:
  stats = metrics.FeatureStats.empty(x.shape[1])
  for i in range(0, len(x), 1000):
    stats.update(x[i:i + 1000])
  return stats


def bench_digits_evaluation(mnist_dir: str, n: int) -> list[tuple[str, float, str]]:
  import jax

  from aigc_jax import generation
  from aigc_jax.evaluation import pipeline
  from aigc_jax.trainers import gan
  from configs import dcgan_mnist

  config = dcgan_mnist.get_config()
  config.data.dataset, config.data.manual_dir, config.data.eval_split = "mnist_idx", mnist_dir, "test"
  state = gan.init_state(config, jax.random.key(0))
  generate_fn = generation.batch_generator(config, state, 500)
  rows = []
  with tempfile.TemporaryDirectory() as cache:
    for label in ("cold: reference extracted and cached", "warm: reference statistics from cache"):
      t, result = _timed(lambda: pipeline.evaluate_generator(config, generate_fn, num_samples=n,
                                                             extractor="digits", cache_dir=cache))
      rows.append((f"whole digits evaluation, {n} DCGAN samples ({label})", t,
                   f"FID {result['fid']:.2f}, {len(result)} metrics"))
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=10_000)
  parser.add_argument("--dim", type=int, default=2048)
  parser.add_argument("--mnist", default=os.path.join("..", "shared", "data", "mnist"))
  args = parser.parse_args()
  rows = bench_features(args.n, args.dim)
  if os.path.isdir(args.mnist):
    rows += bench_digits_evaluation(args.mnist, args.n)
  print("| what | seconds | notes |\n|---|---|---|")
  for what, seconds, notes in rows:
    print(f"| {what} | {seconds:.2f} | {notes} |")


if __name__ == "__main__":
  main()
