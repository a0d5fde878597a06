"""Evaluates a trained generator: realism, diversity and style metrics, as a table and metrics.json.

    python -m aigc_jax.evaluate --workdir=DIR --num_samples=10000 --features=digits \
        [--reference=DATASET:SPLIT] [--manual_dir=IDX_FOLDER]
    python -m aigc_jax.evaluate --model=dcgan_mnist --workdir=OUT --reference=mnist_idx:test \
        --manual_dir=IDX_FOLDER --seed=1   # a shipped model, as its model card scores it
    python -m aigc_jax.evaluate --fake_dir=SAMPLES --reference=REAL_DIR|STATS.npz --features=inception
    python -m aigc_jax.evaluate --reference=REAL_DIR --save_stats=STATS.npz --features=inception

Samples from the run's checkpoint (or the shipped pretrained `--model`), extracts
features of generated and reference images (the reference summary is cached in
the workdir), prints the metrics and writes `metrics.json` there.
`evaluate_during_training` is the hook `train.py` calls every
`config.train.eval_every` steps.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aigc_jax import checkpoints, parallel, trainers
from aigc_jax.errors import UserError
from aigc_jax.evaluation import features, pipeline, references


def make_generate_fn(config: ml_collections.ConfigDict, state: Any, batch_size: int,
                     psi: float = 1.0) -> Callable:
  """A `generate_fn(key, n[, labels])` that runs one jitted, fixed-size batch per call.

  Latents are z ~ N(0, psi^2 I): `psi` < 1 is the truncation trick (1: none).
  """
  trainer = trainers.get_trainer(config)
  if not hasattr(trainer, "generate"):
    raise UserError(f"model.family={config.model.family!r} does not generate images")

  @functools.partial(jax.jit, compiler_options=parallel.compiler_options(jax.default_backend()))
  def batch(state, key, labels):
    z = psi * jax.random.normal(key, (batch_size, config.model.latent_dim), jnp.float32)
    return trainer.generate(config, state, None, batch_size, labels, z=z)

  def generate_fn(key, n, labels=None):
    padded = None
    if labels is not None:
      padded = jnp.asarray(np.resize(np.asarray(labels, np.int32), batch_size))
    return np.asarray(batch(state, key, padded))[:n]

  return generate_fn


def default_extractor(config: ml_collections.ConfigDict) -> str:
  """"digits" for grayscale data (the LeNet features), "inception" for colour."""
  return "digits" if config.data.channels == 1 else "inception"


def evaluate_run(workdir: str, *, num_samples: int, extractor: str, reference: str | None = None,
                 step: int | None = None, seed: int = 0, batch_size: int = 500,
                 inception_weights: str = features.INCEPTION_WEIGHTS, progress: bool = True,
                 model: str | None = None, manual_dir: str | None = None, resize: str = "pytorch_fid",
                 repeats: int = 1, reference_size: int | None = None, save_stats: str | None = None) -> dict:
  """Scores the checkpoint at `step` (default: latest) of `workdir`, or the shipped pretrained
  `model` (then `workdir` only receives the outputs); writes and returns metrics.json.

  `manual_dir` replaces the reference's IDX folder (data.dataset "mnist_idx"): a shipped model's
  config names the folder of the machine it was trained on. `repeats` scores sample seeds
  seed, seed+1, ...; `reference_size` images of the reference (default: all) are summarised.
  """
  from aigc_jax import pretrained, sample

  if num_samples < 2:
    raise UserError(f"--num_samples={num_samples}: need at least 2")
  if batch_size < 1:
    raise UserError(f"--batch_size={batch_size}: need at least 1")
  if repeats < 1:
    raise UserError(f"--repeats={repeats}: need at least 1")
  ex = features.get_extractor(extractor, inception_weights=inception_weights, resize=resize)
  if model is None:
    config, state, step = sample.load_run(workdir, step)
  elif step is not None:
    raise UserError("--step picks a checkpoint of a run; a shipped --model has one")
  else:
    config, state = pretrained.load(model)
    step = config.train.num_steps
  generate_fn = make_generate_fn(config, state, batch_size)
  ref = references.parse(reference, config.data, manual_dir)
  real = references.load_reference(ex, ref, num=reference_size, cache_dir=workdir, save_stats=save_stats)
  bar = _progress_bar(num_samples * repeats, "generated images") if progress else None
  scores = pipeline.score_generator(ex, generate_fn, real, num_samples=num_samples,
                                    seeds=range(seed, seed + repeats), batch_size=batch_size,
                                    num_classes=config.model.num_classes, progress=bar.update if bar else None)
  if bar:
    bar.close()
  result = {"step": step, "features": extractor, "num_samples": num_samples, "reference": ref.label,
            **pipeline.reference_fields(ex, real), **scores}
  if model is not None:
    result["model"] = model
  write_result(workdir, result)
  return result


def write_result(workdir: str, result: dict) -> None:
  """Writes `result` as `workdir`/metrics.json."""
  checkpoints.write_file(checkpoints.join(workdir, "metrics.json"), json.dumps(result, indent=2).encode())


def _progress_bar(total: int, unit: str):
  from tqdm import tqdm
  return tqdm(total=total, unit=" " + unit, file=sys.stderr, mininterval=1.0)


format_table = pipeline.format_table


def evaluate_during_training(config: ml_collections.ConfigDict, state: Any, workdir: str,
                             step: int) -> dict[str, float]:
  """Periodic evaluation for train.py: held-out accuracy (classifier) or generator metrics."""
  del step  # the same samples every time: metrics move only because the model does
  if config.model.family == "classifier":
    from aigc_jax import data
    from aigc_jax.trainers import classifier
    split = config.data.eval_split
    x, y = data.load_examples(config.data, split, data.dataset_size(config.data, split))
    return {f"eval/{k}": v for k, v in classifier.evaluate(config, state, x, y).items()}
  state = jax.device_get(state)
  num = min(config.train.eval_num_samples, _reference_size(config))
  result = pipeline.evaluate_generator(config, make_generate_fn(config, state, 500), num_samples=num,
                                       extractor=default_extractor(config), cache_dir=workdir)
  return {f"eval/{k}": v for k, v in result.items()}


def _reference_size(config: ml_collections.ConfigDict) -> int:
  from aigc_jax import data
  return data.dataset_size(config.data, config.data.eval_split)


def main(argv: Sequence[str]) -> None:
  """CLI: evaluate a run and print the table."""
  del argv
  from absl import flags
  f = flags.FLAGS
  if f.features not in features.EXTRACTORS:
    raise UserError(f"--features={f.features!r}: choose one of {', '.join(features.EXTRACTORS)}")
  if f.fake_dir is not None:
    if f.model or f.step is not None or f.repeats != 1:
      raise UserError("--fake_dir scores a folder: --model, --step and --repeats apply to a run")
    ex = features.get_extractor(f.features, inception_weights=f.inception_weights, resize=f.resize)
    result = pipeline.evaluate_folder(f.fake_dir, f.reference, extractor=ex, reference_size=f.reference_size,
                                      manual_dir=f.manual_dir, cache_dir=f.workdir, save_stats=f.save_stats)
    if f.workdir is not None:
      write_result(f.workdir, result)
  elif f.workdir is None:
    if f.save_stats is None:
      raise UserError("--workdir names the run to score (or where a --model's outputs go); "
                      "--fake_dir scores a folder instead")
    ex = features.get_extractor(f.features, inception_weights=f.inception_weights, resize=f.resize)
    references.save_reference_stats(ex, f.reference, f.save_stats, num=f.reference_size)
    print(f"wrote {f.save_stats}", file=sys.stderr)
    return
  else:
    result = evaluate_run(f.workdir, num_samples=f.num_samples, extractor=f.features,
                          reference=f.reference, step=f.step, seed=f.seed, batch_size=f.batch_size,
                          inception_weights=f.inception_weights, model=f.model, manual_dir=f.manual_dir,
                          resize=f.resize, repeats=f.repeats, reference_size=f.reference_size,
                          save_stats=f.save_stats)
  for line in result["warnings"]:
    print(f"warning: {line}", file=sys.stderr)
  print(format_table(result))
  if f.workdir is not None:
    print(f"wrote {checkpoints.join(f.workdir, 'metrics.json')}", file=sys.stderr)


def _define_flags() -> None:
  from absl import flags
  from aigc_jax import pretrained
  flags.DEFINE_string("workdir", None, "Training run directory to evaluate (with --model or --fake_dir: "
                      "where metrics.json and the reference cache go).")
  flags.DEFINE_string("fake_dir", None, "Score this folder of images (e.g. any model's samples) instead "
                      "of a run; needs --reference.")
  flags.DEFINE_string("model", None, "A shipped pretrained model to evaluate instead of the run in "
                      f"--workdir: {', '.join(pretrained.NAMES)}.")
  flags.DEFINE_string("manual_dir", None, "Folder of the reference's MNIST-format IDX files, for "
                      "--reference=mnist_idx:SPLIT (default: the config's data.manual_dir).")
  flags.DEFINE_integer("num_samples", 10_000, "Generated images per seed (a --fake_dir: all its images).")
  flags.DEFINE_string("features", "digits", "Feature extractor: digits (LeNet) or inception.")
  flags.DEFINE_string("reference", None, "Reference: a folder of images, an .npz of mu and sigma "
                      "(pytorch-fid's, EDM's, clean-fid's) or DATASET:SPLIT (default: the run's "
                      "dataset and data.eval_split).")
  flags.DEFINE_integer("reference_size", None, "Reference images summarised (default: the whole "
                       "split or folder).")
  flags.DEFINE_string("save_stats", None, "Also write the reference's statistics to this .npz in "
                      "pytorch-fid's format (alone, without --workdir or --fake_dir: only that).")
  flags.DEFINE_integer("repeats", 1, "Score this many sample seeds (--seed, --seed+1, ...) and report "
                       "each metric's mean and standard deviation.")
  flags.DEFINE_enum("resize", "pytorch_fid", ["pytorch_fid", "clean"], "Inception's resize to 299 px: "
                    "pytorch_fid (bilinear) or clean (clean-fid's antialiased bicubic).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_integer("seed", 0, "PRNG seed for the generated samples.")
  flags.DEFINE_integer("batch_size", 500, "Images generated per jitted call.")
  flags.DEFINE_string("inception_weights", features.INCEPTION_WEIGHTS,
                      "Converted FID Inception weights (.npz); see aigc_jax.evaluation.convert_inception.")


if __name__ == "__main__":
  from aigc_jax.errors import run_main
  _define_flags()
  run_main(main)
