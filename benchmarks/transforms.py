"""Images/s of a batched rotate+scale warp (bilinear, constant border, float32 RGB).

Contenders: aigc_jax.transforms.warp_affine (jitted), OpenCV (cv2.warpAffine per
image), dm-pix (jitted vmap of affine_transform) and tf.image
(ImageProjectiveTransformV3 in a tf.function); plus our bicubic. The contenders
run interleaved, round after round, and the table reports medians, because
OpenCV's figures swing by up to 2x from run to run on a shared CPU.

  pip install dm-pix   # benchmark extra, not a package dependency
  python benchmarks/transforms.py [--sizes 64,256] [--batch 256] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from aigc_jax.transforms import geometric  # noqa: E402


def _matrices(n: int, size: int) -> np.ndarray:
  rng = np.random.default_rng(0)
  c = (size - 1) / 2.0
  return np.stack([cv2.getRotationMatrix2D((c, c), a, s)
                   for a, s in zip(rng.uniform(-30, 30, n), rng.uniform(0.8, 1.2, n))]).astype(np.float32)


def _inverse_3x3(m: np.ndarray) -> np.ndarray:
  full = np.concatenate([m, np.broadcast_to([[0, 0, 1]], (len(m), 1, 3))], axis=1).astype(np.float64)
  return np.linalg.inv(full)


def contenders(images: np.ndarray, m: np.ndarray) -> dict:
  """Maps a name to a zero-argument function that warps the whole batch and waits for the result."""
  n, h, w, _ = images.shape
  x, mj = jnp.asarray(images), jnp.asarray(m)
  ours = jax.jit(lambda a, b: geometric.warp_affine(a, b, order=1))
  ours_cubic = jax.jit(lambda a, b: geometric.warp_affine(a, b, order=3))
  out = {
      "aigc_jax bilinear": lambda: ours(x, mj).block_until_ready(),
      "aigc_jax bicubic": lambda: ours_cubic(x, mj).block_until_ready(),
      "opencv": lambda: np.stack([cv2.warpAffine(images[i], m[i], (w, h), flags=cv2.INTER_LINEAR)
                                  for i in range(n)]),
  }
  inv = _inverse_3x3(m)
  try:
    import dm_pix
    # dm-pix maps output (y, x, c) to input coordinates, scipy-style.
    mats = np.zeros((n, 4, 4), np.float32)
    mats[:, 0, 0], mats[:, 0, 1], mats[:, 0, 3] = inv[:, 1, 1], inv[:, 1, 0], inv[:, 1, 2]
    mats[:, 1, 0], mats[:, 1, 1], mats[:, 1, 3] = inv[:, 0, 1], inv[:, 0, 0], inv[:, 0, 2]
    mats[:, 2, 2] = mats[:, 3, 3] = 1.0
    pix = jax.jit(jax.vmap(lambda a, b: dm_pix.affine_transform(a, b, order=1, mode="constant")))
    pm = jnp.asarray(mats)
    out["dm-pix"] = lambda: pix(x, pm).block_until_ready()
  except ImportError:
    print("dm-pix not installed (pip install dm-pix); skipping it")
  try:
    import tensorflow as tf
    t = tf.constant(np.concatenate([inv[:, 0], inv[:, 1], inv[:, 2, :2]], axis=1).astype(np.float32))
    timg = tf.constant(images)
    fn = tf.function(lambda: tf.raw_ops.ImageProjectiveTransformV3(
        images=timg, transforms=t, output_shape=[h, w], fill_value=0.0, interpolation="BILINEAR",
        fill_mode="CONSTANT"))
    out["tf.image"] = lambda: fn().numpy()
  except ImportError:
    print("tensorflow not installed; skipping tf.image")
  return out


def main() -> None:
  """Runs the interleaved rounds and prints a table of median images/s and ratios to OpenCV."""
  parser = argparse.ArgumentParser()
  parser.add_argument("--sizes", default="64,256")
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--rounds", type=int, default=7)
  args = parser.parse_args()
  print(f"{time.strftime('%Y-%m-%d')} {platform.machine()} {os.cpu_count()} CPUs, jax {jax.__version__}, "
        f"cv2 {cv2.__version__}, batch {args.batch}, median of {args.rounds} interleaved rounds")
  for size in map(int, args.sizes.split(",")):
    images = np.random.default_rng(1).uniform(-1, 1, (args.batch, size, size, 3)).astype(np.float32)
    fns = contenders(images, _matrices(args.batch, size))
    reference = fns["opencv"]()
    for name, fn in fns.items():  # Compile, warm up, and check that all compute the same warp.
      err = float(np.mean(np.abs(np.asarray(fn()) - reference)))
      print(f"{name}: mean |difference| to opencv {err:.4f}")
    times = {name: [] for name in fns}
    for _ in range(args.rounds):
      for name, fn in fns.items():
        start = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - start)
    rate = {name: args.batch / float(np.median(t)) for name, t in times.items()}
    print(f"\n{size}x{size} RGB float32")
    print(f"{'contender':<20}{'img/s':>10}{'vs opencv':>11}")
    for name, r in rate.items():
      print(f"{name:<20}{r:>10.0f}{r / rate['opencv']:>10.2f}x")


if __name__ == "__main__":
  main()
