"""Input-pipeline throughput: img/s of `aigc_jax.data` at 28x28 and 64x64, and resume cost.

Source: the MNIST-format folder at ../shared/data/mnist (its 10,000-image test split, through
the `mnist_idx` builder) when present, else the offline `digits`. For each resolution it
times host batches (tf.data -> numpy), device batches (`create_train_iterator`: sharded
global jax.Arrays, prefetched) and on-device batches (`data.on_device`: gathered on the devices
from the split kept there), after warm-up, as the median of several repeats, and the
time to the first batch when resuming at step 0 vs step 10^6.

  python benchmarks/input_pipeline.py [--batch_size=64] [--batches=200] [--repeats=3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import jax

from aigc_jax import parallel
from aigc_jax.config import base_config
from aigc_jax.data import pipeline

_MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")


def mnist_config(image_size: int, data_dir: str, batch_size: int, random_flip: bool):
  """The base config at `image_size`, on the local MNIST IDX files when present."""
  config = base_config()
  config.train.batch_size = batch_size
  config.data.update(data_dir=data_dir, image_size=image_size, random_flip=random_flip)
  if os.path.isdir(_MNIST):
    config.data.update(dataset="mnist_idx", manual_dir=os.path.abspath(_MNIST), split="test")
  return config


def images_per_second(iterator, batch_size: int, batches: int, repeats: int, sync) -> float:
  """Median img/s over `repeats` timed runs of `batches` batches, after a warm-up."""
  for _ in range(20):
    sync(next(iterator))
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(batches):
      sync(next(iterator))
    rates.append(batches * batch_size / (time.perf_counter() - start))
  return statistics.median(rates)


def _first_batch_seconds(config, mesh, start_step: int) -> float:
  start = time.perf_counter()
  it = pipeline.create_train_iterator(config, mesh, start_step=start_step)
  jax.block_until_ready(next(it))
  seconds = time.perf_counter() - start
  it.close()
  return seconds


def _run(args: argparse.Namespace, data_dir: str) -> None:
  mesh = parallel.create_mesh()
  source = "MNIST test split (mnist_idx)" if os.path.isdir(_MNIST) else "digits"
  print(f"source: {source}; batch {args.batch_size}; devices: {jax.device_count()} "
        f"x {jax.devices()[0].device_kind}; CPU cores: {os.cpu_count()}")
  print("| size | flip | host img/s | device img/s | on-device img/s | resume@0 s | resume@1e6 s |")
  print("|---|---|---|---|---|---|---|")
  for size in (28, 64):
    for flip in (False, True):
      config = mnist_config(size, data_dir, args.batch_size, flip)
      pipeline.load_images(config.data, config.data.split, 1)  # prepares the dataset once
      host = images_per_second(pipeline.local_batches(config.data, batch_size=args.batch_size, seed=0),
                   args.batch_size, args.batches, args.repeats, sync=lambda b: b)
      device_it = pipeline.create_train_iterator(config, mesh)
      device = images_per_second(device_it, args.batch_size, args.batches, args.repeats,
                     sync=jax.block_until_ready)
      device_it.close()
      config.data.on_device = True
      with pipeline.create_train_iterator(config, mesh) as on_device_it:
        on_device = images_per_second(on_device_it, args.batch_size, args.batches, args.repeats,
                          sync=jax.block_until_ready)
      config.data.on_device = False
      resume0 = _first_batch_seconds(config, mesh, 0)
      resume_far = _first_batch_seconds(config, mesh, 10**6)
      print(f"| {size}x{size} | {flip} | {host:,.0f} | {device:,.0f} | {on_device:,.0f} | {resume0:.2f} | "
            f"{resume_far:.2f} |", flush=True)


def main() -> None:
  """Prints a markdown table of input-pipeline throughput."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--batches", type=int, default=200)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory(prefix="aigc_jax_bench_") as data_dir:
    _run(args, data_dir)


if __name__ == "__main__":
  main()
