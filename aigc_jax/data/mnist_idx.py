"""`mnist_idx`: a TFDS builder that prepares a folder of MNIST-format IDX files.

Works offline on any copy of MNIST, Fashion-MNIST or KMNIST: the folder holds
`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
`t10k-labels-idx1-ubyte`, each optionally gzipped; whichever of the train/t10k pairs are
present become the "train"/"test" splits. The folder is TFDS's manual_dir, so plain TFDS
works too: `tfds.load("mnist_idx", download_and_prepare_kwargs={"download_config":
tfds.download.DownloadConfig(manual_dir=FOLDER)})`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from aigc_jax.errors import UserError

IMAGE_SHAPE = (28, 28, 1)
# IDX magic numbers: two zero bytes, type 0x08 (unsigned byte), number of dimensions.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801
_PREFIXES = {"train": "train", "test": "t10k"}


def _expected_names() -> str:
  return ", ".join(f"{p}-{kind}-idx{d}-ubyte[.gz]" for p in _PREFIXES.values()
                   for kind, d in (("images", 3), ("labels", 1)))


def _find(folder: str, name: str) -> str | None:
  for candidate in (name, name + ".gz"):
    path = os.path.join(folder, candidate)
    if os.path.isfile(path):
      return path
  return None


def find_splits(folder: str | None) -> dict[str, tuple[str, str]]:
  """Maps each split present in `folder` to its (images, labels) paths; raises UserError if none."""
  if not folder or not os.path.isdir(folder):
    raise UserError(f"MNIST-format folder {folder!r} does not exist; set config.data.manual_dir "
                    f"to a folder holding {_expected_names()}")
  splits = {}
  for split, prefix in _PREFIXES.items():
    images = _find(folder, f"{prefix}-images-idx3-ubyte")
    labels = _find(folder, f"{prefix}-labels-idx1-ubyte")
    if (images is None) != (labels is None):
      missing = f"{prefix}-labels-idx1-ubyte" if labels is None else f"{prefix}-images-idx3-ubyte"
      raise UserError(f"MNIST-format folder {folder!r} lacks {missing}[.gz] to go with the other "
                      f"{prefix} file")
    if images is not None:
      splits[split] = (images, labels)
  if not splits:
    raise UserError(f"MNIST-format folder {folder!r} holds no IDX files; expected {_expected_names()}")
  return splits


def read_idx(path: str, magic: int) -> np.ndarray:
  """Reads an IDX file (gzipped or plain) of unsigned bytes; raises UserError if malformed."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise UserError(f"cannot read IDX file {path!r}: {e}") from None
  found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
  if found != magic:
    raise UserError(f"{path!r} is not an IDX file of the expected kind: magic number "
                    f"{found!r}, expected {magic:#010x}")
  ndim = magic & 0xFF
  header = 4 + 4 * ndim
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  if len(data) != header + int(np.prod(shape)):
    raise UserError(f"IDX file {path!r} is truncated or padded: its header says shape {shape}")
  return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_split(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads one split as uint8 images [N,28,28,1] and uint8 labels [N]; raises UserError if inconsistent."""
  images = read_idx(images_path, _IMAGES_MAGIC)
  labels = read_idx(labels_path, _LABELS_MAGIC)
  if images.shape[1:] != IMAGE_SHAPE[:2]:
    raise UserError(f"{images_path!r} holds {images.shape[1]}x{images.shape[2]} images; "
                    f"MNIST format is 28x28")
  if len(images) != len(labels):
    raise UserError(f"{images_path!r} holds {len(images)} images but {labels_path!r} "
                    f"{len(labels)} labels")
  if labels.size and labels.max() > 9:
    raise UserError(f"{labels_path!r} holds label {labels.max()}; MNIST format has 10 classes")
  return images[..., None], labels


def folder_config(folder: str) -> tfds.core.BuilderConfig:
  """A builder config named after `folder` and its files, so each folder is prepared separately."""
  splits = find_splits(folder)
  real = os.path.realpath(folder)
  h = hashlib.sha1(real.encode())
  for path in sorted(p for pair in splits.values() for p in pair):
    h.update(f"{os.path.basename(path)}:{os.path.getsize(path)}".encode())
  stem = re.sub(r"[^a-z0-9]+", "_", os.path.basename(real).lower()).strip("_") or "folder"
  return tfds.core.BuilderConfig(name=f"{stem}_{h.hexdigest()[:10]}",
                                 description=f"IDX files from {real}")


class MnistIdx(tfds.core.GeneratorBasedBuilder):
  """Any MNIST-format IDX folder (MNIST, Fashion-MNIST, KMNIST): 28x28 grey images, 10 classes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"Put MNIST-format IDX files in manual_dir: {_expected_names()}."

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
