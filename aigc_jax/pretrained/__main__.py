"""CLI: export a training run as a shipped model (`python -m aigc_jax.pretrained --workdir=RUN --name=NAME`)."""

from absl import flags

from aigc_jax import pretrained
from aigc_jax.errors import run_main

flags.DEFINE_string("workdir", None, "Training run to export.", required=True)
flags.DEFINE_string("name", None, "Model name, e.g. dcgan_mnist.", required=True)
flags.DEFINE_string("directory", ".", "Where to write NAME.json and NAME.msgpack (the shipped "
                    f"models are in {pretrained.DIR}).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest usable one).")
flags.DEFINE_bool("overwrite", False, "Replace NAME.json and NAME.msgpack if they exist.")


def main(argv) -> None:
  """Exports --workdir as --name and prints the files written."""
  del argv
  F = flags.FLAGS
  for path in pretrained.export(F.workdir, F.name, F.directory, F.step, F.overwrite):
    print(f"wrote {path}")


if __name__ == "__main__":
  run_main(main)
