"""Model quality on real MNIST: trains GAN/VAE/diffusion variants for a fixed budget and scores their samples.

    python benchmarks/quality.py --mnist_dir=../shared/data/mnist --steps=3000 \
        --variants=dcgan,hinge_sn,cgan --root=/tmp/quality [--write_results]
    python benchmarks/quality.py --mnist_dir=../shared/data/mnist --models=edm_mnist --sampler=stochastic
    python benchmarks/quality.py --mnist_dir=../shared/data/mnist --models=edm_mnist --model_overrides=diffusion.s_min=0.01

Each variant is a config from configs/ plus overrides, trained on the MNIST test
split (or its first 2,000 images for the `2k*` and `*_2k` data-efficiency variants)
with `aigc_jax.train.train_and_evaluate` into ROOT/NAME (ROOT/NAME_seedS for each
other `--seeds` value S); a finished run is only re-scored, so the script can be
re-run to add variants or seeds; `--models` scores shipped models as they are instead, as their
model cards do. Samples are scored
against the full MNIST test split with the shipped LeNet digit classifier
(`--features=digits`), at each `--truncations` psi (families with truncation) or at the diffusion
sampler and step count of `--sampler`/`--sampling_steps`/`--guidance` (default: the config's): Frechet classifier distance (FCD: FID on its features),
precision/recall (k=3), density/coverage (k=5), the fraction of samples it
labels with confidence >= 0.9, the smallest and largest class share among the
samples, and for conditional models the fraction classified as the class asked
for, over all samples and for the worst class. `--write_results` puts the command line and the table at the top of RESULTS.md's
"## Model quality" section, in place of the previous run's; the notes and sweeps after it stay.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
import re
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from aigc_jax import (checkpoints, config as config_lib, errors, generation, images as images_lib, mnist_format,  # noqa: E402
                      parallel, pretrained, trainers)
from aigc_jax.evaluation import features, pipeline  # noqa: E402

SUBSET = "test[:2000]"
# Every variant names its D settings, so that it keeps its meaning when configs/dcgan_mnist.py changes.
BATCH_NORM_D = {"model.d_norm": "batch", "gan.r1_gamma": 0.0}
SPECTRAL_D = {"model.d_norm": "spectral", "gan.r1_gamma": 0.0}
R1_D = {"model.d_norm": "none", "gan.r1_gamma": 1.0}
# configs/dcgan_mnist.py's earlier sizes (all with a batch-norm D), so the older rows in RESULTS.md
# stay reproducible: width 32, batch 64; width 64, batch 64; width 64, batch 128; width 128, batch 128.
W32 = {"model.width": 32, "train.batch_size": 64, **BATCH_NORM_D}
W64 = {"model.width": 64, "train.batch_size": 64, **BATCH_NORM_D}
W64_B128 = {"model.width": 64, "train.batch_size": 128, **BATCH_NORM_D}
W128 = {"model.width": 128, "train.batch_size": 128, **BATCH_NORM_D}
# name: (config file, overrides). Budgets (steps) come from --steps.
VARIANTS = {
    "dcgan": ("dcgan_mnist", {}),
    "dcgan_w32": ("dcgan_mnist", W32),
    "dcgan_no_ema": ("dcgan_mnist", {**W32, "gan.ema_half_life_images": 0}),
    "hinge_sn": ("dcgan_mnist", {**W32, "gan.loss": "hinge", **SPECTRAL_D}),
    "ns_r1": ("dcgan_mnist", {**W32, **R1_D}),
    "lsgan": ("dcgan_mnist", {**W32, "gan.loss": "least_squares"}),
    "wgan_gp": ("dcgan_mnist", {**W32, "gan.loss": "wgan_gp", "model.d_norm": "none", "gan.n_critic": 2,
                                "train.b1": 0.0, "train.b2": 0.9}),
    "cgan": ("cgan_mnist", {}),
    "dcgan_2k": ("dcgan_mnist", {**W32, "data.split": SUBSET}),
    "dcgan_2k_diffaug": ("dcgan_mnist", {**W32, "data.split": SUBSET, "gan.augment": "diffaugment"}),
    "dcgan_2k_ada": ("dcgan_mnist", {**W32, "data.split": SUBSET, "gan.augment": "ada"}),
    "vae": ("vae_mnist", {}),
    "edm": ("edm_mnist", {}),
    "edm_cond": ("edm_mnist_cond", {}),
    "flow": ("edm_mnist", {"diffusion.objective": "flow"}),
    "ddpm": ("edm_mnist", {"diffusion.objective": "ddpm", "diffusion.ddpm_schedule": "cosine",
                           "diffusion.sampler": "ddim", "diffusion.steps": 50}),
    "w64": ("dcgan_mnist", W64),
    "w64_b128": ("dcgan_mnist", W64_B128),
    "w64_ttur": ("dcgan_mnist", {**W64, "train.learning_rate": 1e-4, "gan.d_learning_rate": 4e-4}),
    "w64_mbstd": ("dcgan_mnist", {**W64, "model.d_minibatch_std": 4}),
    "w64_hinge_sn": ("dcgan_mnist", {**W64, "gan.loss": "hinge", **SPECTRAL_D}),
    "w64_sn": ("dcgan_mnist", {**W64, **SPECTRAL_D}),
    "w64_r1": ("dcgan_mnist", {**W64, **R1_D}),
    "w64_ema20k": ("dcgan_mnist", {**W64, "gan.ema_half_life_images": 20_000}),
    # `w64_b128` with one change each.
    "b128_sn": ("dcgan_mnist", {**W64_B128, **SPECTRAL_D}),
    "b128_lr1e4": ("dcgan_mnist", {**W64_B128, "train.learning_rate": 1e-4, "gan.d_learning_rate": 1e-4}),
    "b256": ("dcgan_mnist", {**W64_B128, "train.batch_size": 256}),
    "w128": ("dcgan_mnist", W128),
    # Width 128 with an un-normalised D and R1: what configs/dcgan_mnist.py sets.
    "w128_r1": ("dcgan_mnist", {**W128, **R1_D}),
}
# Data efficiency: the first 2,000 images, at width 64 and at width 128 (batch 128), with each D
# (batch norm; spectral norm; none, with R1) and each augmentation.
for _d, _o in (("", BATCH_NORM_D), ("_sn", SPECTRAL_D), ("_r1", R1_D)):
  for _a, _aug in (("", "none"), ("_diffaug", "diffaugment"), ("_ada", "ada")):
    VARIANTS[f"2k{_d}{_a}"] = ("dcgan_mnist", {**W64_B128, "data.split": SUBSET, **_o, "gan.augment": _aug})
    VARIANTS[f"2k_w128{_d}{_a}"] = ("dcgan_mnist", {**W128, "data.split": SUBSET, **_o, "gan.augment": _aug})
# ADA's op groups one at a time and blit + geom, with the shipped config's D (bgc: 2k_w128_r1_ada).
for _pipeline in ("blit", "geom", "color", "bg"):
  VARIANTS[f"2k_w128_r1_ada_{_pipeline}"] = ("dcgan_mnist", {**W128, "data.split": SUBSET, **R1_D,
                                                             "gan.augment": "ada", "gan.ada_pipeline": _pipeline})

FLAGS = flags.FLAGS
flags.DEFINE_string("mnist_dir", os.path.join(ROOT, "..", "shared", "data", "mnist"), "Folder of MNIST IDX files.")
flags.DEFINE_list("variants", ["dcgan", "hinge_sn", "cgan", "dcgan_2k", "dcgan_2k_diffaug", "dcgan_2k_ada"],
                  f"Variants to train and score: {', '.join(VARIANTS)}.")
flags.DEFINE_list("models", [], "Shipped models (aigc_jax.pretrained, e.g. edm_mnist) to score as "
                  "they are, instead of training --variants.")
flags.DEFINE_list("steps", ["3000"], "Training budgets per variant (batch size from the config); each "
                  "later budget resumes the run and is scored again.")
flags.DEFINE_integer("num_samples", 10_000, "Generated images scored per variant.")
flags.DEFINE_list("seeds", ["0"], "config.seed values to train each variant with (init, latents, "
                  "batch order); seed 0's run is kept as NAME, seed s's as NAME_seedS.")
flags.DEFINE_list("truncations", ["1.0"], "Truncation psi values to score each variant at (1.0: none); "
                  "families without truncation are scored once.")
flags.DEFINE_string("sampler", None, "Diffusion variants: the sampler to score with (default: the config's).")
flags.DEFINE_integer("sampling_steps", None, "Diffusion variants: sampler steps (default: the config's).")
flags.DEFINE_float("guidance", None, "Conditional diffusion variants: guidance weight (default: the config's).")
flags.DEFINE_list("model_overrides", [], "SECTION.KEY=VALUE sampling settings to score --models at instead of "
                  "their configs' (e.g. diffusion.s_min=0.01; each value typed as the config's).")
flags.DEFINE_string("root", "/tmp/aigc_quality", "Where the runs are kept.")
flags.DEFINE_bool("write_results", False, "Replace the previous run's table at the top of RESULTS.md's "
                  "Model quality section.")
flags.DEFINE_integer("steps_per_dispatch", 1, "Train steps per jitted call (speed only; same results).")
flags.DEFINE_bool("in_memory", False, "Train from the IDX files held in memory instead of the TFDS "
                  "pipeline, and score against them (for machines without TensorFlow); same steps, another "
                  "batch order.")


def variant_config(name: str, mnist_dir: str, steps: int) -> ml_collections.ConfigDict:
  """The config of variant `name` on the MNIST IDX files in `mnist_dir`, trained for `steps`."""
  config_file, overrides = VARIANTS[name]
  spec = importlib.util.spec_from_file_location(config_file, os.path.join(ROOT, "configs", f"{config_file}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data.dataset, config.data.manual_dir = "mnist_idx", os.path.abspath(mnist_dir)
  config.data.split = config.data.eval_split = "test"
  config.train.num_steps = steps
  config.train.checkpoint_every = config.train.sample_every = steps
  config.update_from_flattened_dict(overrides)
  return config


def class_scores(logits: np.ndarray, requested: np.ndarray | None, num_classes: int = 10) -> dict[str, float | int]:
  """Confident fraction (max softmax >= 0.9), min/max class share, and for requested classes the
  accuracy over all samples and that of the worst class (and which class that is)."""
  logits = logits.astype(np.float64)
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs /= probs.sum(axis=1, keepdims=True)
  predicted = probs.argmax(axis=1)
  shares = np.bincount(predicted, minlength=num_classes) / len(predicted)
  out = {"confident_0.9": float(np.mean(probs.max(axis=1) >= 0.9)),
         "min_class_share": float(shares.min()), "max_class_share": float(shares.max())}
  if requested is not None:
    out["conditional_accuracy"] = float(np.mean(predicted == requested))
    classes = np.unique(requested)
    accuracies = [np.mean(predicted[requested == c] == c) for c in classes]
    out["worst_class_accuracy"] = float(min(accuracies))
    out["worst_class"] = int(classes[np.argmin(accuracies)])
  return out


def score(config: ml_collections.ConfigDict, state, num_samples: int, cache_dir: str,
          options: dict | None = None, reference: pipeline.SetSummary | None = None) -> dict[str, float]:
  """All quality numbers of a trained generator (with the family's sampling `options`, e.g.
  {"trunc": psi}) against the MNIST test split.

  The split's statistics are `reference` when given (`in_memory_reference`: no TensorFlow needed),
  else from the TFDS pipeline, cached in `cache_dir`."""
  extractor = features.get_extractor("digits")
  generate_fn = generation.batch_generator(config, state, 500, options)
  fake, labels = pipeline.generated_summary(extractor, generate_fn, jax.random.key(1), num_samples,
                                            num_classes=config.model.num_classes)
  real = reference
  if real is None:
    test_split = ml_collections.ConfigDict(config.data.to_dict())
    test_split.split = "test"
    real = pipeline.reference_summary(extractor, test_split, num_samples, cache_dir)
  result = pipeline.compute_metrics(fake, real, labels)
  result.update(class_scores(fake.logits, labels))
  return result


@functools.cache  # Every budget of a variant, and the reference, read the same files.
def read_mnist(mnist_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Images (float32 [N,28,28,1] in [-1,1]) and labels of "test", "train" or "test[:N]", without TensorFlow."""
  m = re.fullmatch(r"(train|test)(?:\[:(\d+)\])?", split)
  if not m:
    raise errors.UserError(f"--in_memory reads 'train', 'test' or 'test[:N]', not {split!r}")
  splits = mnist_format.find_splits(mnist_dir)
  if m[1] not in splits:
    raise errors.UserError(f"{mnist_dir!r} has no {m[1]} split")
  pixels, labels = mnist_format.read_split(*splits[m[1]])
  count = None if m[2] is None else int(m[2])
  return images_lib.to_float(pixels[:count]), labels[:count].astype(np.int32)


def memory_batch(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, step: int) -> dict:
  """Batch `step` of epochs that each draw a (seed, epoch)-seeded permutation, remainder dropped."""
  epoch, i = divmod(step, len(images) // batch_size)
  order = _epoch_order(seed, epoch, len(images))[i * batch_size:(i + 1) * batch_size]
  return {"image": images[order], "label": labels[order]}


@functools.lru_cache(maxsize=1)  # Drawn once per epoch, not once per step.
def _epoch_order(seed: int, epoch: int, num_images: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_images)


def train_in_memory(config: ml_collections.ConfigDict, workdir: str, images: np.ndarray,
                    labels: np.ndarray):
  """Trains like `train.train_and_evaluate` (keys, steps, checkpoints, resuming) from arrays in memory."""
  config_lib.validate(config, jax.device_count())
  mesh = parallel.create_mesh()
  keys = trainers.base_keys(config.seed)
  step_key = keys["step"]
  state, sharding = trainers.init_sharded_state(config, mesh, keys["init"])
  manager = checkpoints.create_manager(workdir, config)
  if manager.latest_step() is not None:
    state, step_key = checkpoints.restore(manager, manager.latest_step(), state, step_key)
  checkpoints.write_config(workdir, config)
  train_step = trainers.compile_train_step(config, mesh, sharding)
  k, batch_size = config.train.steps_per_dispatch, config.train.batch_size
  start = int(jax.device_get(state.step))
  for step in range(start, config.train.num_steps, k):
    batches = [parallel.host_to_global(memory_batch(images, labels, batch_size, config.seed, s), mesh)
               for s in range(step, step + k)]
    state, _ = train_step(state, batches, step_key)
  if start < config.train.num_steps:
    checkpoints.save(manager, config.train.num_steps, state, step_key)
  manager.close()
  return state


def in_memory_reference(mnist_dir: str, num_samples: int) -> pipeline.SetSummary:
  """Digit-feature statistics of the first `num_samples` test images, read without TensorFlow."""
  images = read_mnist(mnist_dir, "test")[0][:num_samples]
  return pipeline.summarize(features.get_extractor("digits"), [images]).with_sqrt_cov()


def run_variant(name: str, seed: int, reference: pipeline.SetSummary | None) -> list[dict]:
  """Trains (or resumes) variant `name` with `seed` to each budget and scores it at each truncation;
  returns table rows."""
  run = name if seed == 0 else f"{name}_seed{seed}"
  workdir = os.path.join(FLAGS.root, run)
  rows, total = [], 0.0
  for steps in map(int, FLAGS.steps):
    config = variant_config(name, FLAGS.mnist_dir, steps)
    config.seed = seed
    config.train.steps_per_dispatch = FLAGS.steps_per_dispatch
    timing = os.path.join(workdir, f"train_seconds_{steps}.txt")
    start = time.perf_counter()
    if FLAGS.in_memory:
      state = train_in_memory(config, workdir, *read_mnist(FLAGS.mnist_dir, config.data.split))
    else:
      from aigc_jax import train  # TensorFlow (the input pipeline) loads only here.
      state = train.train_and_evaluate(config, workdir)
    if not os.path.isfile(timing):  # A re-run only re-scores: keep the first run's training time.
      with open(timing, "w") as f:
        f.write(f"{time.perf_counter() - start:.1f}")
    with open(timing) as f:
      total += float(f.read())
    for label, options in _sampling(run, trainers.get_family(config)):
      rows.append({"name": label, "steps": steps, "train_s": total,
                   **score(config, state, FLAGS.num_samples, FLAGS.root, options, reference)})
      print(rows[-1], flush=True)
  return rows


def _sampling(run: str, family: trainers.Family) -> list[tuple[str, dict]]:
  """(row label, sampling options) to score a run at: each psi, or the diffusion sampler flags."""
  taken = {o.name for o in family.sample_options}
  if "trunc" in taken:
    return [(run if psi == 1.0 else f"{run}, psi={psi:g}", {"trunc": psi})
            for psi in map(float, FLAGS.truncations)]
  given = {"sampler": FLAGS.sampler, "steps": FLAGS.sampling_steps, "guidance": FLAGS.guidance}
  options = {k: v for k, v in given.items() if k in taken and v is not None}
  label = ", ".join([run] + [f"{k}={v}" for k, v in options.items()])
  return [(label, options)]


COLUMNS = (("steps", "steps", "{:,}"), ("FCD", "fid", "{:.2f}"), ("precision", "precision", "{:.3f}"), ("recall", "recall", "{:.3f}"),
           ("density", "density", "{:.3f}"), ("coverage", "coverage", "{:.3f}"),
           ("conf>=0.9", "confident_0.9", "{:.3f}"), ("min share", "min_class_share", "{:.3f}"),
           ("max share", "max_class_share", "{:.3f}"), ("cond. acc", "conditional_accuracy", "{:.3f}"),
           ("worst class acc", "worst_class_accuracy", "{:.3f}"),
           ("train s", "train_s", "{:.0f}"))


def table(rows: list[dict]) -> str:
  """A markdown table of the rows."""
  lines = ["| variant | " + " | ".join(c for c, _, _ in COLUMNS) + " |",
           "|---" * (len(COLUMNS) + 1) + "|"]
  for row in rows:
    cells = [fmt.format(row[key]) if key in row else "-" for _, key, fmt in COLUMNS]
    lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write_section(text: str, path: str = os.path.join(ROOT, "benchmarks", "RESULTS.md")) -> None:
  """Puts `text` (a command line paragraph, then a table) at the top of the '## Model quality'
  section in place of the one an earlier run wrote there, keeping the rest of the section."""
  with open(path) as f:
    content = f.read()
  heading = "## Model quality\n\n"
  previous_run = re.compile(r"^## Model quality\n\n`python benchmarks/quality\.py[^\n]*\n\n(?:\|[^\n]*\n)+", re.M)
  block = heading + text.strip() + "\n"
  if previous_run.search(content):
    content = previous_run.sub(lambda _: block, content, count=1)
  elif heading in content:
    content = content.replace(heading, block + "\n", 1)
  else:
    content = content.rstrip("\n") + "\n\n" + block
  images_lib.write_bytes_atomic(path, content.encode())


def score_model(name: str, reference: pipeline.SetSummary | None) -> list[dict]:
  """Scores the shipped model `name` at the sampling flags; returns table rows."""
  config, state = pretrained.load(name)
  config.data.dataset, config.data.manual_dir = "mnist_idx", os.path.abspath(FLAGS.mnist_dir)
  family = trainers.get_family(config)
  for setting in FLAGS.model_overrides:
    key, _, value = setting.partition("=")
    section, _, field = key.partition(".")
    if section != family.section or field not in family.sampling_keys or not value:
      raise errors.UserError(f"--model_overrides={setting!r} is not {family.section}.KEY=VALUE with KEY one of "
                             f"{name}'s sampling keys: {', '.join(family.sampling_keys)}")
    try:
      config[section][field] = type(config[section][field])(value)
    except ValueError as e:
      raise errors.UserError(f"--model_overrides={setting!r}: {e}") from e
  try:
    family.validate(config)
  except errors.UserError as e:
    raise errors.UserError(f"--model_overrides: {e}") from None
  if FLAGS.model_overrides:
    name = ", ".join([name] + FLAGS.model_overrides)
  rows = []
  for label, options in _sampling(name, family):
    rows.append({"name": label, "steps": config.train.num_steps,
                 **score(config, state, FLAGS.num_samples, FLAGS.root, options, reference)})
    print(rows[-1], flush=True)
  return rows


def main(argv) -> None:
  del argv
  unknown = [m for m in FLAGS.models if m not in pretrained.names()]
  if unknown:
    raise errors.UserError(f"unknown shipped models {unknown}; choose from {', '.join(pretrained.names())}")
  unknown = [v for v in FLAGS.variants if v not in VARIANTS]
  if unknown:
    raise errors.UserError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
  try:
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError as e:
    raise errors.UserError(f"--seeds must be integers, got {FLAGS.seeds}") from e
  # Computed once for every variant, seed, budget and psi (the TFDS path caches it on disk instead).
  reference = in_memory_reference(FLAGS.mnist_dir, FLAGS.num_samples) if FLAGS.in_memory else None
  if FLAGS.models:
    rows = [row for name in FLAGS.models for row in score_model(name, reference)]
    command = f"--models={','.join(FLAGS.models)}"
    trained = "Shipped models as they are"
  else:
    rows = [row for name in FLAGS.variants for seed in seeds for row in run_variant(name, seed, reference)]
    command = f"--steps={','.join(FLAGS.steps)} --variants={','.join(FLAGS.variants)} --seeds={','.join(FLAGS.seeds)}"
    trained = "Trained on the MNIST test split (`2k*` and `*_2k` variants: its first 2,000 images)"
  text = (f"`python benchmarks/quality.py {command} --num_samples={FLAGS.num_samples}`: "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared), jax {jax.__version__}. "
          f"{trained}, scored against {FLAGS.num_samples:,} test images with the LeNet digit features.\n\n" + table(rows))
  print(text)
  if FLAGS.write_results:
    write_section(text)


if __name__ == "__main__":
  errors.run_main(main)
