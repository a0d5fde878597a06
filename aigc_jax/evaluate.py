"""Evaluates a trained generator: realism, diversity and style metrics, as a table and metrics.json.

    python -m aigc_jax.evaluate --workdir=DIR --num_samples=10000 --features=digits \
        [--reference=DATASET:SPLIT] [--manual_dir=IDX_FOLDER]
    python -m aigc_jax.evaluate --model=dcgan_mnist --workdir=OUT --reference=mnist_idx:test \
        --manual_dir=IDX_FOLDER --seed=1   # a shipped model, as its model card scores it
    python -m aigc_jax.evaluate --fake_dir=SAMPLES --reference=REAL_DIR|STATS.npz --features=inception
    python -m aigc_jax.evaluate --reference=REAL_DIR --save_stats=STATS.npz --features=inception

Samples from the run's checkpoint (or the shipped pretrained `--model`), extracts
features of generated and reference images (the reference summary is cached in
the workdir), prints the metrics and writes `metrics.json` there. The work is
`aigc_jax.evaluation.scoring` (a run or shipped model) and `aigc_jax.evaluation.pipeline`
(a folder); this module parses the flags.
"""

from __future__ import annotations

import sys
from typing import Sequence

from aigc_jax import checkpoints
from aigc_jax.errors import UserError
from aigc_jax.evaluation import features, pipeline, references, scoring


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
      scoring.write_result(f.workdir, result)
  elif f.workdir is None:
    if f.save_stats is None:
      raise UserError("--workdir names the run to score (or where a --model's outputs go); "
                      "--fake_dir scores a folder instead")
    ex = features.get_extractor(f.features, inception_weights=f.inception_weights, resize=f.resize)
    references.save_reference_stats(ex, f.reference, f.save_stats, num=f.reference_size)
    print(f"wrote {f.save_stats}", file=sys.stderr)
    return
  else:
    from aigc_jax import sample
    result = scoring.evaluate_run(f.workdir, num_samples=f.num_samples, extractor=f.features,
                                  reference=f.reference, step=f.step, seed=f.seed, batch_size=f.batch_size,
                                  inception_weights=f.inception_weights, model=f.model,
                                  manual_dir=f.manual_dir, resize=f.resize, repeats=f.repeats,
                                  reference_size=f.reference_size, save_stats=f.save_stats,
                                  options=sample.given_options())
  for line in result["warnings"]:
    print(f"warning: {line}", file=sys.stderr)
  print(scoring.format_table(result))
  if f.workdir is not None:
    print(f"wrote {checkpoints.join(f.workdir, 'metrics.json')}", file=sys.stderr)


def define_flags() -> None:
  """Defines evaluate's flags on absl's global FLAGS."""
  from absl import flags
  from aigc_jax import pretrained, sample
  sample.define_option_flags()
  flags.DEFINE_string("workdir", None, "Training run directory to evaluate (with --model or --fake_dir: "
                      "where metrics.json and the reference cache go).")
  flags.DEFINE_string("fake_dir", None, "Score this folder of images (e.g. any model's samples) instead "
                      "of a run; needs --reference.")
  flags.DEFINE_string("model", None, "A shipped pretrained model to evaluate instead of the run in "
                      f"--workdir: {', '.join(pretrained.names())}.")
  flags.DEFINE_string("manual_dir", None, "Folder of the reference's MNIST-format IDX files, for "
                      "--reference=mnist_idx:SPLIT (default: the config's data.manual_dir; a shipped "
                      "--model without it is scored against TFDS's mnist).")
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
  define_flags()
  run_main(main)
