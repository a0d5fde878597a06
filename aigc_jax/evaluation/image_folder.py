"""Folders of image files read the way pytorch-fid and clean-fid read them, for scoring.

Files with an image extension (any case) anywhere under the folder, sorted by their path
inside it; each decoded by PIL and converted with `.convert("RGB")` as those tools do (grey
repeated to three channels, alpha dropped, palettes expanded), or with `.convert("L")` for
an extractor of one-channel images (the digits features).
"""

from __future__ import annotations

import hashlib
import os
from typing import Iterator, Sequence

import numpy as np

from aigc_jax import images as images_lib
from aigc_jax.errors import UserError

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")


def list_images(folder: str) -> list[str]:
  """Paths of the image files under `folder`, recursively, sorted by their path inside it."""
  if not os.path.isdir(folder):
    raise UserError(f"image folder {folder!r} does not exist")
  found = []
  for root, _, files in os.walk(folder):
    found.extend(os.path.relpath(os.path.join(root, name), folder) for name in files
                 if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)
  if not found:
    raise UserError(f"no image files ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) in {folder!r}")
  return [os.path.join(folder, name) for name in sorted(found)]


def read_image(path: str, channels: int) -> np.ndarray:
  """One image file as uint8 [H,W,channels], converted by PIL to "RGB" (3) or "L" (1)."""
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(path) as im:
      arr = np.asarray(im.convert("RGB" if channels == 3 else "L"))
  except Image.DecompressionBombError as e:
    raise UserError(f"cannot read image {path!r}: {e}") from None
  except (OSError, UnidentifiedImageError, ValueError) as e:
    raise UserError(f"cannot read image {path!r}: {e.__class__.__name__}: {e}") from None
  return arr if arr.ndim == 3 else arr[..., None]


def image_batches(paths: Sequence[str], channels: int, batch_size: int = 250) -> Iterator[np.ndarray]:
  """The images at `paths` as float32 [B,H,W,channels] batches in [-1, 1]; all must share one size."""
  shape = None
  for start in range(0, len(paths), batch_size):
    batch = []
    for path in paths[start:start + batch_size]:
      image = read_image(path, channels)
      if shape is None:
        shape, first = image.shape, path
      elif image.shape != shape:
        raise UserError(f"images differ in size: {path!r} is {image.shape[1]}x{image.shape[0]}, "
                        f"{first!r} is {shape[1]}x{shape[0]}; score images of one size")
      batch.append(image)
    yield images_lib.to_float(np.stack(batch))


def files_digest(paths: Sequence[str], folder: str) -> str:
  """SHA-256 over the files' paths inside `folder` and their bytes: any changed file changes it."""
  h = hashlib.sha256()
  for path in paths:
    h.update(f"{os.path.relpath(path, folder)}\0{os.path.getsize(path)}\0".encode())
    with open(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
  return h.hexdigest()
