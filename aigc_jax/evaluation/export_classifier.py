"""Exports a trained classifier run to the package's digit-feature weights, with its accuracy.

    python -m aigc_jax.evaluation.export_classifier --workdir=DIR --output=lenet_mnist.npz
    python -m aigc_jax.evaluation.export_classifier --workdir=DIR \
        --output=aigc_jax/weights/lenet_mnist.npz --overwrite   # replace the shipped weights

Accuracy and loss are measured on the run's `config.data.eval_split` (held out
from `config.data.split`) and printed, so the model card can quote them. Everything
is checked, and the accuracy measured, before the output is written.
"""

from __future__ import annotations

from typing import Sequence

from aigc_jax.evaluation import features


def export(workdir: str, output: str, step: int | None = None,
           overwrite: bool = False) -> dict[str, float]:
  """Writes the run's params to `output`; returns held-out {"accuracy", "loss", "num_examples", "step"}.

  An existing `output` (the shipped weights among them) is replaced only with `overwrite`.
  """
  from aigc_jax import checkpoints, config as config_lib, data, runs, trainers
  from aigc_jax.evaluation import scoring

  checkpoints.check_outputs([output], overwrite)
  family = trainers.get_family(config_lib.complete(checkpoints.read_config(workdir)))
  trainers.require(family, "classify", "be exported as the digit classifier")  # before any checkpoint is read
  config, state, step = runs.load_run(workdir, step)
  split = config.data.eval_split
  images, labels = data.load_examples(config.data, split, data.dataset_size(config.data, split))
  result = scoring.held_out_metrics(config, state, images, labels)
  features.save_lenet_params(output, state.params)
  return {**result, "num_examples": len(labels), "step": step}


def main(argv: Sequence[str]) -> None:
  """CLI: export --workdir to --output and print the held-out metrics."""
  del argv
  from absl import flags
  f = flags.FLAGS
  result = export(f.workdir, f.output, f.step, f.overwrite)
  print(f"step {result['step']}: held-out accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} "
        f"on {result['num_examples']} images; wrote {f.output}")


if __name__ == "__main__":
  from absl import flags
  from aigc_jax.errors import run_main
  flags.DEFINE_string("workdir", None, "classifier run directory", required=True)
  flags.DEFINE_string("output", None, "where to write the .npz (the shipped weights: "
                      f"{features.DIGITS_WEIGHTS})", required=True)
  flags.DEFINE_integer("step", None, "checkpoint step (default: the newest usable one)")
  flags.DEFINE_bool("overwrite", False, "replace --output if it exists")
  run_main(main)
