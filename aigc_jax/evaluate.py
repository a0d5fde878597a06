"""Evaluates a trained generator: realism, diversity and style metrics, as a table and metrics.json.

    python -m aigc_jax.evaluate --workdir=DIR --num_samples=10000 --features=digits \
        [--reference=DATASET:SPLIT] [--manual_dir=IDX_FOLDER]
    python -m aigc_jax.evaluate --model=dcgan_mnist --workdir=OUT --reference=mnist_idx:test \
        --manual_dir=IDX_FOLDER --seed=1   # a shipped model, as its model card scores it

Samples from the run's checkpoint (or the shipped pretrained `--model`), extracts
features of generated and reference images (the reference summary is cached in
the workdir), prints the metrics and writes `metrics.json` there. The work is
`aigc_jax.evaluation.scoring.evaluate_run`; this module parses the flags.
"""

from __future__ import annotations

import sys
from typing import Sequence

from aigc_jax import checkpoints
from aigc_jax.errors import UserError
from aigc_jax.evaluation import features, scoring


def main(argv: Sequence[str]) -> None:
  """CLI: evaluate a run and print the table."""
  del argv
  from absl import flags
  f = flags.FLAGS
  if f.features not in features.EXTRACTORS:
    raise UserError(f"--features={f.features!r}: choose one of {', '.join(features.EXTRACTORS)}")
  from aigc_jax import sample
  options = sample.given_options()
  result = scoring.evaluate_run(f.workdir, num_samples=f.num_samples, extractor=f.features,
                                reference=f.reference, step=f.step, seed=f.seed, batch_size=f.batch_size,
                                inception_weights=f.inception_weights, model=f.model,
                                manual_dir=f.manual_dir, options=options)
  print(scoring.format_table(result))
  print(f"wrote {checkpoints.join(f.workdir, 'metrics.json')}", file=sys.stderr)


def _define_flags() -> None:
  from absl import flags
  from aigc_jax import pretrained, sample
  sample.define_option_flags()
  flags.DEFINE_string("workdir", None, "Training run directory to evaluate (with --model: where "
                      "metrics.json and the reference cache go).", required=True)
  flags.DEFINE_string("model", None, "A shipped pretrained model to evaluate instead of the run in "
                      f"--workdir: {', '.join(pretrained.names())}.")
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
