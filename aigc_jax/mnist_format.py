"""MNIST-format IDX files: find a folder's train/test pairs and read them, with numpy alone.

The `mnist_idx` TFDS builder (`aigc_jax.data.mnist_idx`) prepares datasets from these; code
that must run without TensorFlow (benchmarks on accelerator machines) reads them directly.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

from aigc_jax.errors import UserError

IMAGE_SHAPE = (28, 28, 1)
# IDX magic numbers: two zero bytes, type 0x08 (unsigned byte), number of dimensions.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801
_PREFIXES = {"train": "train", "test": "t10k"}
# deflate's largest ratio (a 258-byte match in about 2 bits): a gzip file inflates to at most ~1032x.
_MAX_INFLATION = 1032
_CHUNK = 1 << 20


def expected_names() -> str:
  """The file names a folder may hold, for messages."""
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
                    f"(evaluate: --manual_dir) to a folder holding {expected_names()}")
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
    raise UserError(f"MNIST-format folder {folder!r} holds no IDX files; expected {expected_names()}")
  return splits


def _read_up_to(f, size: int) -> bytearray:
  """Up to `size` bytes of `f`, read in chunks: memory grows with what the file holds, not what it claims."""
  data = bytearray()
  while len(data) < size:
    chunk = f.read(min(size - len(data), _CHUNK))
    if not chunk:
      break
    data += chunk
  return data


def _read_promised(f, path: str, magic: int, file_size: int, gzipped: bool) -> np.ndarray:
  """Reads the header from the open file `f`, then only the bytes it promises (and one more, to detect padding)."""
  head = f.read(4)
  found = int.from_bytes(head, "big") if len(head) == 4 else None
  if found != magic:
    raise UserError(f"{path!r} is not an IDX file of the expected kind: magic number "
                    f"{found!r}, expected {magic:#010x}")
  ndim = magic & 0xFF
  dims = f.read(4 * ndim)
  if len(dims) != 4 * ndim:
    raise UserError(f"IDX file {path!r} is truncated: it ends inside its header")
  shape = tuple(int.from_bytes(dims[4 * i:4 * i + 4], "big") for i in range(ndim))
  if math.prod(max(d, 1) for d in shape) >= 2 ** 63:  # numpy sizes are int64
    raise UserError(f"IDX file {path!r} has a broken header: shape {shape} has more than 2**63 elements")
  size = math.prod(shape)
  most = _MAX_INFLATION * file_size if gzipped else file_size - (4 + 4 * ndim)
  if size > most:
    raise UserError(f"IDX file {path!r} is truncated or its header is wrong: shape {shape} needs {size} bytes, "
                    f"more than a {'gzip ' if gzipped else ''}file of {file_size} bytes can hold")
  data = _read_up_to(f, size)
  if len(data) != size or f.read(1):
    raise UserError(f"IDX file {path!r} is truncated or padded: its header says shape {shape}")
  return np.frombuffer(data, np.uint8).reshape(shape)


def read_idx(path: str, magic: int) -> np.ndarray:
  """Reads an IDX file (gzipped or plain) of unsigned bytes; raises UserError if malformed.

  The header is read first, then only the data it promises: a gzip file that inflates to more
  is never decompressed whole.
  """
  gzipped = path.endswith(".gz")
  try:
    with (gzip.open if gzipped else open)(path, "rb") as f:
      return _read_promised(f, path, magic, os.path.getsize(path), gzipped)
  except (OSError, EOFError, zlib.error) as e:
    raise UserError(f"cannot read IDX file {path!r}: {e}") from None


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
