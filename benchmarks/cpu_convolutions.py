"""XLA:CPU with and without `parallel.compiler_options("cpu")`: why CPU steps use Eigen's convolutions.

XLA:CPU hands convolutions to YNNPACK by default. For each convolution-heavy program the project
compiles (the train step of each benchmark config, Inception and LeNet features, sampling from the
shipped dcgan_mnist), this compiles it
twice, with XLA's defaults and with the project's CPU options, and times the two round-robin in
each repeat (so machine noise hits both alike); medians are printed with the speed-up.

  python -m benchmarks.cpu_convolutions [--repeats=5] [--steps=3] [--cases=DCGAN,Inception]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from aigc_jax import generation, parallel, pretrained, trainers
from aigc_jax.evaluation import inception
from aigc_jax.models.lenet import LeNet
from benchmarks.train_step import step_configs, pseudo_images


def _train_step(config, options):
  """run() for `steps_per_dispatch` train steps of `config`, compiled with `options`."""
  mesh = parallel.create_mesh(jax.devices()[:1])
  key = jax.random.key(0)
  state, sharding = trainers.init_sharded_state(config, mesh, key)
  step = trainers.make_multi_step(trainers.get_family(config).make_train_step(config), 1)
  images = pseudo_images(config)
  batch = parallel.host_to_global({"image": images, "label": np.zeros(len(images), np.int32)}, mesh)
  compiled = jax.jit(step, donate_argnums=(0,)).lower(state, [batch], key).compile(options)
  holder = [state]

  def run() -> None:
    holder[0], metrics = compiled(holder[0], [batch], key)
    jax.block_until_ready(metrics)

  return run


def _features(model, images, options):
  variables = jax.jit(model.init)(jax.random.key(0), images)
  compiled = jax.jit(model.apply).lower(variables, images).compile(options)
  return lambda: jax.block_until_ready(compiled(variables, images))


def _sampling(name: str, num: int, options):
  config, state = pretrained.load(name)
  generate = trainers.get_family(config).generate
  labels = generation.cycled_labels(config, np.arange(num))

  def grid(state, key):
    noise, keys = generation.key_noise(config, key, num)
    return generate(config, state, noise, labels, keys, {})

  compiled = jax.jit(grid).lower(state, jax.random.key(0)).compile(options)
  return lambda: jax.block_until_ready(compiled(state, jax.random.key(0)))


def _cases() -> dict:
  """name: (build(options) -> run, images or steps per run)."""
  cases = {f"{name} train step": (lambda options, c=config: _train_step(c, options), config.train.batch_size)
           for name, config in step_configs("float32").items()}
  rng = np.random.default_rng(0)
  photos = rng.uniform(-1, 1, (50, 64, 64, 3)).astype(np.float32)
  digits = rng.uniform(-1, 1, (1000, 28, 28, 1)).astype(np.float32)
  cases["Inception features (64 px -> 299)"] = (
      lambda options: _features(inception.InceptionV3FID(inception.FID_SIZE), photos, options), len(photos))
  cases["LeNet features"] = (lambda options: _features(LeNet(num_classes=10), digits, options), len(digits))
  cases["dcgan_mnist sampling (shipped)"] = (lambda options: _sampling("dcgan_mnist", 500, options), 500)
  return cases


def main() -> None:
  """Prints a markdown table: img/s with XLA's defaults and with the project's CPU options."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--steps", type=int, default=3, help="calls per timed repeat")
  parser.add_argument("--cases", default="", help="comma-separated case-name prefixes to run")
  args = parser.parse_args()
  options = parallel.compiler_options("cpu")
  if jax.default_backend() != "cpu" or not options:
    raise SystemExit("runs on a CPU backend whose jaxlib has the YNNPACK fusion option")
  cases = {n: c for n, c in _cases().items()
           if not args.cases or any(n.startswith(p) for p in args.cases.split(","))}
  print(f"jax {jax.__version__}, options {options}")
  print("| program | XLA defaults img/s | Eigen convolutions img/s | speed-up |")
  print("|---|---|---|---|")
  for name, (build, images) in cases.items():
    runs = {"default": build({}), "eigen": build(options)}
    times = {k: [] for k in runs}
    for run in runs.values():
      run()  # warm-up
    for _ in range(args.repeats):
      for k, run in runs.items():
        start = time.perf_counter()
        for _ in range(args.steps):
          run()
        times[k].append((time.perf_counter() - start) / args.steps)
    rate = {k: images / statistics.median(v) for k, v in times.items()}
    speed_up = rate["eigen"] / rate["default"]
    print(f"| {name} | {rate['default']:,.1f} | {rate['eigen']:,.1f} | {speed_up:.2f}x |", flush=True)


if __name__ == "__main__":
  main()
