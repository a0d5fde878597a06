"""`mnist_idx`: a TFDS builder that prepares a folder of MNIST-format IDX files.

Works offline on any copy of MNIST, Fashion-MNIST or KMNIST: the folder holds
`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
`t10k-labels-idx1-ubyte`, each optionally gzipped; whichever of the train/t10k pairs are
present become the "train"/"test" splits. The folder is TFDS's manual_dir, so plain TFDS
works too: `tfds.load("mnist_idx", download_and_prepare_kwargs={"download_config":
tfds.download.DownloadConfig(manual_dir=FOLDER)})`.
"""

from __future__ import annotations

import hashlib
import os
import re

import tensorflow_datasets as tfds

from aigc_jax.mnist_format import IMAGE_SHAPE, expected_names, find_splits, read_split


def folder_config(folder: str) -> tfds.core.BuilderConfig:
  """A builder config named after `folder` and its files' contents, so each set is prepared separately.

  Contents, not sizes: MNIST and Fashion-MNIST files have the same sizes, and swapping one for
  the other in a folder must not reuse the prepared copy of the first.
  """
  splits = find_splits(folder)
  real = os.path.realpath(folder)
  h = hashlib.sha1(real.encode())
  for path in sorted(p for pair in splits.values() for p in pair):
    h.update(os.path.basename(path).encode())
    with open(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
  stem = re.sub(r"[^a-z0-9]+", "_", os.path.basename(real).lower()).strip("_") or "folder"
  return tfds.core.BuilderConfig(name=f"{stem}_{h.hexdigest()[:10]}",
                                 description=f"IDX files from {real}")


class MnistIdx(tfds.core.GeneratorBasedBuilder):
  """Any MNIST-format IDX folder (MNIST, Fashion-MNIST, KMNIST): 28x28 grey images, 10 classes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"Put MNIST-format IDX files in manual_dir: {expected_names()}."

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=IMAGE_SHAPE),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        # Keep the source order, so "the first N images of a split" means what users expect.
        disable_shuffling=True,
        homepage="http://yann.lecun.com/exdb/mnist/",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    splits = find_splits(os.fspath(dl_manager.manual_dir))
    return {split: self._generate_examples(*paths) for split, paths in splits.items()}

  def _generate_examples(self, images_path: str, labels_path: str):
    images, labels = read_split(images_path, labels_path)
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": int(label)}
