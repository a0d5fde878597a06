"""Scoring a trained model: generator metrics against a reference set, or held-out accuracy.

`evaluate_model` scores a loaded `(config, state)` and `evaluate_run` a run's checkpoint or a
shipped model, writing metrics.json (the evaluate CLI calls it); `evaluate_during_training` is
what train.py runs every `train.eval_every` steps. Which score a model gets is asked of its family:
families that generate get the generator metrics, families that classify get held-out accuracy.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from aigc_jax import checkpoints, generation, runs, trainers
from aigc_jax.errors import UserError, check_seed
from aigc_jax.evaluation import features, pipeline, references


def default_extractor(config: ml_collections.ConfigDict) -> str:
  """"digits" for grayscale data (the LeNet features), "inception" for colour."""
  return "digits" if config.data.channels == 1 else "inception"


def held_out_metrics(config: ml_collections.ConfigDict, state: Any, images, labels,
                     batch_size: int = 1000) -> dict[str, float]:
  """Mean cross-entropy and accuracy of a classifying family's model on `images` and `labels`."""
  family = trainers.get_family(config)
  trainers.require(family, "classify", "classify images")
  logits_fn = jax.jit(lambda state, x: family.classify(config, state, x))
  labels = np.asarray(labels)
  loss_sum, correct = 0.0, 0
  for i in range(0, len(labels), batch_size):
    logits = logits_fn(state, jnp.asarray(images[i:i + batch_size]))
    y = jnp.asarray(labels[i:i + batch_size])
    loss_sum += float(jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y)))
    correct += int(jnp.sum(jnp.argmax(logits, axis=-1) == y))
  return {"loss": loss_sum / len(labels), "accuracy": correct / len(labels)}


def evaluate_model(config: ml_collections.ConfigDict, state: Any, *, num_samples: int,
                   extractor: str | features.Extractor, reference: str | None = None,
                   manual_dir: str | None = None, seed: int = 0, repeats: int = 1, batch_size: int = 500,
                   reference_size: int | None = None, save_stats: str | None = None,
                   options: Mapping[str, Any] | None = None, cache_dir: str | None = None,
                   progress: bool = False, reference_hint: str | None = None) -> dict:
  """Generator metrics of `num_samples` images from `state` (per sample seed: seed, seed + 1, ...
  for `repeats` seeds) against the reference.

  `reference` is a folder, an .npz of statistics or "DATASET:SPLIT" (default: the run's dataset
  and eval split), all of it unless `reference_size` says; `manual_dir` replaces its IDX folder;
  `save_stats` also writes its statistics (pytorch-fid's format); `options` are the family's
  sampling options; `reference_hint` ends the error line when the reference cannot be had.
  Generated images are scored as their saved PNGs would be (uint8).
  """
  if num_samples < 2:
    raise UserError(f"--num_samples={num_samples}: need at least 2")
  if batch_size < 1:
    raise UserError(f"--batch_size={batch_size}: need at least 1")
  if repeats < 1:
    raise UserError(f"--repeats={repeats}: need at least 1")
  check_seed("--seed", seed)
  check_seed("--seed", seed + repeats - 1)
  if isinstance(extractor, str):
    extractor = features.get_extractor(extractor)
  generate_fn = generation.batch_generator(config, state, batch_size, options)
  ref = references.parse(reference, config.data, manual_dir)
  try:
    real = references.load_reference(extractor, ref, num=reference_size, cache_dir=cache_dir,
                                     save_stats=save_stats)
  except UserError as e:
    if not reference_hint:
      raise
    raise UserError(f"{e}; {reference_hint}") from e
  bar = _progress_bar(num_samples * repeats, "generated images") if progress else None
  scores = pipeline.score_generator(extractor, generate_fn, real, num_samples=num_samples,
                                    seeds=range(seed, seed + repeats), batch_size=batch_size,
                                    num_classes=config.model.num_classes,
                                    progress=bar.update if bar else None)
  if bar:
    bar.close()
  return {"features": extractor.name, "num_samples": num_samples, "reference": ref.label,
          "sampling": trainers.get_family(config).settings(config, options),
          **pipeline.reference_fields(extractor, real), **scores}


def evaluate_run(workdir: str, *, num_samples: int, extractor: str, reference: str | None = None,
                 step: int | None = None, seed: int = 0, repeats: int = 1, batch_size: int = 500,
                 inception_weights: str = features.INCEPTION_WEIGHTS, resize: str = "pytorch_fid",
                 reference_size: int | None = None, save_stats: str | None = None,
                 progress: bool = True, model: str | None = None, manual_dir: str | None = None,
                 options: Mapping[str, Any] | None = None) -> dict:
  """Scores the checkpoint at `step` (default: the newest usable one) of `workdir`, or the shipped
  pretrained `model` (then `workdir` only receives the outputs); writes and returns metrics.json.

  A shipped model names no data folder: without `reference` or `manual_dir` it is scored against
  `pretrained.default_reference` (TFDS's mnist for the MNIST models).
  """
  ex = features.get_extractor(extractor, inception_weights=inception_weights, resize=resize)
  config, state, step = runs.load(None if model else workdir, model, step)
  trainers.require(trainers.get_family(config), "generate", "generate images to score")
  hint = None
  if model is not None and reference is None and manual_dir is None:
    from aigc_jax import pretrained  # A shipped model names no data folder: score it on what a user has.
    reference = pretrained.default_reference(config)
    hint = reference and (f"--model={model} is scored against {reference} unless given --manual_dir="
                          "/path/to/mnist (MNIST's IDX files) or --reference=DATASET:SPLIT")
  result = {"step": step, **evaluate_model(
      config, state, num_samples=num_samples, extractor=ex, reference=reference, manual_dir=manual_dir,
      seed=seed, repeats=repeats, batch_size=batch_size, reference_size=reference_size,
      save_stats=save_stats, options=options, cache_dir=workdir, progress=progress,
      reference_hint=hint)}
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


def evaluate_during_training(config: ml_collections.ConfigDict, state: Any, workdir: str) -> dict[str, float]:
  """Periodic evaluation: generator metrics for families that generate, else held-out accuracy.

  The same samples every time (the key is the run's seed): metrics move only because the model does.
  """
  from aigc_jax import data
  family = trainers.get_family(config)
  split = config.data.eval_split
  if family.can("generate"):
    state = jax.device_get(state)
    num = min(config.train.eval_num_samples, data.dataset_size(config.data, split))
    # A synthetic stream has no end: its reference is as many images as are generated.
    size = num if config.data.dataset == "synthetic" else None
    result = evaluate_model(config, state, num_samples=num, extractor=default_extractor(config),
                            seed=config.seed, reference_size=size, cache_dir=workdir)["metrics"]
  elif family.can("classify"):
    x, y = data.load_examples(config.data, split, data.dataset_size(config.data, split))
    result = held_out_metrics(config, state, x, y)
  else:
    return {}
  return {f"eval/{k}": v for k, v in result.items()}
