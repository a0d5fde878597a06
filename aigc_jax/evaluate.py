"""Evaluates a trained generator: realism, diversity and style metrics, as a table and metrics.json.

    python -m aigc_jax.evaluate --workdir=DIR --num_samples=10000 --features=digits \
        [--reference=DATASET:SPLIT] [--manual_dir=IDX_FOLDER]
    python -m aigc_jax.evaluate --model=dcgan_mnist --workdir=OUT --reference=mnist_idx:test \
        --manual_dir=IDX_FOLDER --seed=1   # a shipped model, as its model card scores it

Samples from the run's checkpoint (or the shipped pretrained `--model`), extracts
features of generated and reference images (the reference summary is cached in
the workdir), prints the metrics and writes `metrics.json` there.
`evaluate_during_training` is the hook `train.py` calls every
`config.train.eval_every` steps.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aigc_jax import checkpoints, parallel, trainers
from aigc_jax.errors import UserError
from aigc_jax.evaluation import features, pipeline


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
                 model: str | None = None, manual_dir: str | None = None) -> dict:
  """Scores the checkpoint at `step` (default: latest) of `workdir`, or the shipped pretrained
  `model` (then `workdir` only receives the outputs); writes and returns metrics.json.

  `manual_dir` sets the reference's IDX folder (data.dataset "mnist_idx"). A shipped model names
  no folder: without `manual_dir` or `reference` it is scored against `pretrained.default_reference`.
  """
  from aigc_jax import pretrained, sample

  if num_samples < 2:
    raise UserError(f"--num_samples={num_samples}: need at least 2")
  if batch_size < 1:
    raise UserError(f"--batch_size={batch_size}: need at least 1")
  ex = features.get_extractor(extractor, inception_weights=inception_weights)
  if model is None:
    config, state, step = sample.load_run(workdir, step)
  elif step is not None:
    raise UserError("--step picks a checkpoint of a run; a shipped --model has one")
  else:
    config, state = pretrained.load(model)
    step = config.train.num_steps
  defaulted = model is not None and reference is None and manual_dir is None
  if defaulted:
    reference = pretrained.default_reference(config)
  generate_fn = make_generate_fn(config, state, batch_size)
  data_config = pipeline.parse_reference(reference, config.data)
  if manual_dir is not None:
    data_config.manual_dir = os.path.abspath(manual_dir)
  try:
    real = pipeline.reference_summary(ex, data_config, num_samples, cache_dir=workdir)
  except UserError as e:
    if not (defaulted and reference):
      raise
    raise UserError(f"{e}; --model={model} is scored against {reference} unless given "
                    "--manual_dir=/path/to/mnist (MNIST's IDX files) or --reference=DATASET:SPLIT") from e
  bar = _progress_bar(num_samples, "generated images") if progress else None
  fake, labels = pipeline.generated_summary(ex, generate_fn, jax.random.key(seed), num_samples,
                                            batch_size=batch_size, num_classes=config.model.num_classes,
                                            progress=bar.update if bar else None)
  if bar:
    bar.close()
  result = {"step": step, "features": extractor, "num_samples": num_samples,
            "reference": f"{data_config.dataset}:{data_config.split}",
            "metrics": pipeline.compute_metrics(fake, real, labels)}
  if model is not None:
    result["model"] = model
  checkpoints.write_file(checkpoints.join(workdir, "metrics.json"), json.dumps(result, indent=2).encode())
  return result


def _progress_bar(total: int, unit: str):
  from tqdm import tqdm
  return tqdm(total=total, unit=" " + unit, file=sys.stderr, mininterval=1.0)


def format_table(result: dict) -> str:
  """The metrics as an aligned two-column text table."""
  rows = [(name, f"{value:.6g}") for name, value in result["metrics"].items()]
  width = max(len(name) for name, _ in rows)
  header = (f"{result['model'] + ', ' if 'model' in result else ''}step {result['step']}, "
            f"{result['num_samples']} samples, {result['features']} features, reference {result['reference']}")
  return "\n".join([header] + [f"  {name:<{width}}  {value}" for name, value in rows])


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
  result = evaluate_run(f.workdir, num_samples=f.num_samples, extractor=f.features,
                        reference=f.reference, step=f.step, seed=f.seed, batch_size=f.batch_size,
                        inception_weights=f.inception_weights, model=f.model, manual_dir=f.manual_dir)
  print(format_table(result))
  print(f"wrote {checkpoints.join(f.workdir, 'metrics.json')}", file=sys.stderr)


def _define_flags() -> None:
  from absl import flags
  from aigc_jax import pretrained
  flags.DEFINE_string("workdir", None, "Training run directory to evaluate (with --model: where "
                      "metrics.json and the reference cache go).", required=True)
  flags.DEFINE_string("model", None, "A shipped pretrained model to evaluate instead of the run in "
                      f"--workdir: {', '.join(pretrained.NAMES)}.")
  flags.DEFINE_string("manual_dir", None, "Folder of the reference's MNIST-format IDX files, for "
                      "--reference=mnist_idx:SPLIT (default: the config's data.manual_dir; a shipped "
                      "--model without it is scored against TFDS's mnist).")
  flags.DEFINE_integer("num_samples", 10_000, "Generated (and reference) images.")
  flags.DEFINE_string("features", "digits", "Feature extractor: digits (LeNet) or inception.")
  flags.DEFINE_string("reference", None, "Reference set DATASET:SPLIT (default: the run's "
                      "dataset and data.eval_split).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_integer("seed", 0, "PRNG seed for the generated samples.")
  flags.DEFINE_integer("batch_size", 500, "Images generated per jitted call.")
  flags.DEFINE_string("inception_weights", features.INCEPTION_WEIGHTS,
                      "Converted FID Inception weights (.npz); see aigc_jax.evaluation.convert_inception.")


if __name__ == "__main__":
  from aigc_jax.errors import run_main
  _define_flags()
  run_main(main)
