"""Exports a trained classifier run to the package's digit-feature weights, with its accuracy.

    python -m aigc_jax.evaluation.export_classifier --workdir=DIR \
        --output=aigc_jax/weights/lenet_mnist.npz

Accuracy and loss are measured on the run's `config.data.eval_split` (held out
from `config.data.split`) and printed, so the model card can quote them.
"""

from __future__ import annotations

from typing import Sequence

from aigc_jax.evaluation import features


def export(workdir: str, output: str, step: int | None = None) -> dict[str, float]:
  """Writes the run's params to `output`; returns held-out {"accuracy", "loss", "num_examples"}."""
  from aigc_jax import data, runs
  from aigc_jax.evaluation import scoring

  config, state, step = runs.load_run(workdir, step)
  features.save_lenet_params(output, state.params)
  split = config.data.eval_split
  images, labels = data.load_examples(config.data, split, data.dataset_size(config.data, split))
  result = scoring.held_out_metrics(config, state, images, labels)
  return {**result, "num_examples": len(labels), "step": step}


def main(argv: Sequence[str]) -> None:
  """CLI: export --workdir to --output and print the held-out metrics."""
  del argv
  from absl import flags
  f = flags.FLAGS
  result = export(f.workdir, f.output, f.step)
  print(f"step {result['step']}: held-out accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} "
        f"on {result['num_examples']} images; wrote {f.output}")


if __name__ == "__main__":
  from absl import flags
  from aigc_jax.errors import run_main
  flags.DEFINE_string("workdir", None, "classifier run directory", required=True)
  flags.DEFINE_string("output", features.DIGITS_WEIGHTS, "where to write the .npz")
  flags.DEFINE_integer("step", None, "checkpoint step (default: latest)")
  run_main(main)
