"""The shipped MNIST models judged by a second digit classifier, independent of the project's LeNet.

    pip install torch==2.13.0                      # the CPU build
    python -m benchmarks.independent_classifier --mnist_dir=../shared/data/mnist [--num_samples=2000]

The quality metrics use the project's LeNet (`aigc_jax/weights/lenet_mnist.npz`), a lenient judge
of generated digits: a malformed digit can still get a confident label. This trains a classifier of
another design in another framework, a PyTorch CNN (two 3x3 convolutions of 32 and 64 channels,
max-pooling, dropout, a 128-unit layer; Adam, random shifts of up to 2 px), on the first 9,000
images of the MNIST test split (the only split here), checks it on the last 1,000, then classifies
`--num_samples` samples of each shipped model (seeds 0 .. N-1, class seed % 10 for conditional
models, each model's default sampling settings) and prints, for each judge side by side: the
fraction classified with confidence >= 0.9, the smallest and largest class share, and for
conditional models the fraction classified as the class asked for, over all samples and in the
worst class.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from absl import app

from aigc_jax import generation, images, pretrained, trainers
from aigc_jax.errors import UserError
from aigc_jax.evaluation import features
from benchmarks.quality import class_scores, read_mnist

HELD_OUT = 1000


def train_cnn(x: np.ndarray, y: np.ndarray, epochs: int, seed: int):
  """A PyTorch CNN trained on x [N,28,28,1] in [-1, 1] and labels y; returns it in eval mode."""
  import torch
  from torch import nn
  torch.manual_seed(seed)
  net = nn.Sequential(
      nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
      nn.Dropout(0.25), nn.Flatten(), nn.Linear(64 * 12 * 12, 128), nn.ReLU(), nn.Dropout(0.5),
      nn.Linear(128, 10))
  optimizer = torch.optim.Adam(net.parameters(), 1e-3)
  inputs, targets = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y.astype(np.int64))
  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    net.train()
    for batch in np.array_split(rng.permutation(len(x)), len(x) // 128):
      dy, dx = rng.integers(-2, 3, size=2)  # one shift per batch: digits are not always centred
      shifted = torch.roll(inputs[batch], shifts=(int(dy), int(dx)), dims=(2, 3))
      loss = nn.functional.cross_entropy(net(shifted), targets[batch])
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
  return net.eval()


def cnn_logits(net, x: np.ndarray) -> np.ndarray:
  import torch
  with torch.no_grad():
    return np.concatenate([net(torch.from_numpy(chunk.transpose(0, 3, 1, 2).copy())).numpy()
                           for chunk in np.array_split(x, max(1, len(x) // 500))])


def lenet_logits(x: np.ndarray) -> np.ndarray:
  return np.asarray(features.get_extractor("digits").apply(x, np.ones(len(x), bool))["logits"])


def samples(name: str, num: int, guidance: float | None,
            batch_size: int = 250) -> tuple[np.ndarray, np.ndarray | None]:
  """Seeds 0 .. num-1 of shipped model `name` at its defaults (and `guidance`, for the models
  guided by class), and the classes asked for (or None)."""
  config, state = pretrained.load(name)
  takes = {o.name for o in trainers.get_family(config).sample_options}
  guided = guidance is not None and "guidance" in takes and config.model.num_classes
  options = {"guidance": guidance} if guided else None
  seeds = np.arange(num)
  batches = [np.asarray(generation.from_seeds(config, state, seeds[i:i + batch_size], options=options))
             for i in range(0, num, batch_size)]
  # Quantised as a PNG of the sample would be, so the judges see what a user's files hold.
  pictures = images.to_float(images.to_uint8(np.concatenate(batches)))
  labels = generation.cycled_labels(config, seeds)
  return pictures, None if labels is None else np.asarray(labels)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--mnist_dir", default=os.path.join("..", "shared", "data", "mnist"))
  parser.add_argument("--models", default=",".join(pretrained.names()),
                      help="Shipped models to judge (default: all).")
  parser.add_argument("--num_samples", type=int, default=2000)
  parser.add_argument("--epochs", type=int, default=8)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--guidance", type=float, default=None,
                      help="Guidance weight for the models that take one (default: each model's).")
  args = parser.parse_args()
  import torch
  torch.set_num_threads(os.cpu_count())

  try:
    x, y = read_mnist(args.mnist_dir, "test")
  except (OSError, UserError, app.UsageError) as e:
    parser.error(f"--mnist_dir={args.mnist_dir!r}: {e}")
  start = time.perf_counter()
  net = train_cnn(x[:-HELD_OUT], y[:-HELD_OUT], args.epochs, args.seed)
  train_s = time.perf_counter() - start
  held_x, held_y = x[-HELD_OUT:], y[-HELD_OUT:]
  rows = []
  for judge, logits in (("CNN", cnn_logits(net, held_x)), ("LeNet", lenet_logits(held_x))):
    rows.append((f"real test[-{HELD_OUT}:]", judge, class_scores(logits, held_y)))
  for name in args.models.split(","):
    pictures, requested = samples(name, args.num_samples, args.guidance)
    for judge, logits in (("CNN", cnn_logits(net, pictures)), ("LeNet", lenet_logits(pictures))):
      rows.append((name, judge, class_scores(logits, requested)))

  columns = {"confident_0.9": "conf >= 0.9", "min_class_share": "min share", "max_class_share": "max share",
             "conditional_accuracy": "class acc", "worst_class_accuracy": "worst class acc",
             "worst_class": "worst class"}
  print(f"{platform.machine()}, torch {torch.__version__}: CNN trained on test[:-{HELD_OUT}] for "
        f"{args.epochs} epochs in {train_s:.0f} s; {args.num_samples} samples per model"
        + (f", guidance {args.guidance:g}" if args.guidance is not None else "") + "\n")
  print("| images | judge | " + " | ".join(columns.values()) + " |")
  print("|---" * (len(columns) + 2) + "|")
  for what, judge, scores in rows:
    cells = [("{:d}" if c == "worst_class" else "{:.3f}").format(scores[c]) if c in scores else "-"
             for c in columns]
    print(f"| {what} | {judge} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
