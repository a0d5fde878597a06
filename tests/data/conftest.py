"""Fixtures for the data tests: tiny MNIST-format IDX folders written into tmp dirs."""

import gzip
import os

import numpy as np
import pytest


def write_idx(path: str, array: np.ndarray, magic: int | None = None) -> None:
  """Writes a uint8 array as an IDX file (gzipped if `path` ends in .gz)."""
  magic = 0x0800 + array.ndim if magic is None else magic
  header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def indexed_images(n: int, offset: int = 0) -> np.ndarray:
  """28x28 uint8 images whose pixel (0, 0) holds the image's index, the rest random ink."""
  images = np.random.default_rng(offset).integers(0, 256, (n, 28, 28), dtype=np.uint8)
  images[:, 0, 0] = np.arange(offset, offset + n)
  return images


def write_mnist_folder(folder: str, splits: dict, gz: bool) -> dict:
  """Writes {split: (images, labels)} as train-*/t10k-* IDX files; returns the arrays."""
  os.makedirs(folder, exist_ok=True)
  suffix = ".gz" if gz else ""
  for split, (images, labels) in splits.items():
    prefix = {"train": "train", "test": "t10k"}[split]
    write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte{suffix}"), images)
    write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{suffix}"), labels)
  return splits


@pytest.fixture(scope="session")
def mnist_folder(tmp_path_factory):
  """A gzipped IDX folder: train = 10 indexed images, test = 4 images indexed 100..103."""
  folder = str(tmp_path_factory.mktemp("idx"))
  splits = {"train": (indexed_images(10), np.arange(10) % 10),
            "test": (indexed_images(4, offset=100), np.array([3, 1, 4, 1]))}
  return folder, write_mnist_folder(folder, splits, gz=True)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One TFDS data_dir shared by the session, so each dataset is prepared once."""
  return str(tmp_path_factory.mktemp("tfds"))
