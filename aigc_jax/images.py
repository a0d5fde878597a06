"""Image range conversions, grids and atomic image files.

Inside the library images are float32 NHWC in [-1, 1]; uint8 (0..255) appears
only at file and TFDS boundaries, through `to_float` and `to_uint8`.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
from typing import Sequence

import numpy as np

from aigc_jax.errors import UserError


def to_float(images_uint8) -> np.ndarray:
  """Maps uint8 pixels 0..255 to float32 in [-1, 1]."""
  return np.asarray(images_uint8, np.float32) / 127.5 - 1.0


def to_uint8(images) -> np.ndarray:
  """Maps float images in [-1, 1] to uint8 0..255, rounding and clipping."""
  x = (np.asarray(images, np.float32) + 1.0) * 127.5
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def make_grid(images, ncols: int | None = None, padding: int = 2) -> np.ndarray:
  """Tiles [N,H,W,C] float images in [-1, 1] into one uint8 [H',W',C] grid image."""
  images = to_uint8(images)
  n, h, w, c = images.shape
  ncols = ncols or int(np.ceil(np.sqrt(n)))
  nrows = int(np.ceil(n / ncols))
  grid = np.full((nrows * (h + padding) + padding, ncols * (w + padding) + padding, c), 255, np.uint8)
  for i in range(n):
    r, col = divmod(i, ncols)
    y, x = padding + r * (h + padding), padding + col * (w + padding)
    grid[y:y + h, x:x + w] = images[i]
  return grid


def check_writable(path: str) -> None:
  """Raises UserError unless `path` can be created (its folder exists and is writable)."""
  if not os.path.basename(path):
    raise UserError(f"output path {path!r} names no file; give a file name")
  folder = os.path.dirname(os.path.abspath(path)) or "."
  if os.path.isdir(path):
    raise UserError(f"output path {path!r} is a directory; give a file name")
  if not os.path.isdir(folder):
    raise UserError(f"cannot write {path!r}: folder {folder!r} does not exist")
  if not os.access(folder, os.W_OK):
    raise UserError(f"cannot write {path!r}: folder {folder!r} is not writable")


def _file_mode(path: str) -> int:
  """The mode `path` has now, or a new file's mode under the process umask."""
  try:
    return stat.S_IMODE(os.stat(path).st_mode)
  except FileNotFoundError:
    umask = os.umask(0)  # Reading the umask means setting it: put it straight back.
    os.umask(umask)
    return 0o666 & ~umask


def write_bytes_atomic(path: str, data: bytes) -> None:
  """Writes `data` to `path` through a temporary file, so a failure never leaves half a file."""
  check_writable(path)
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600 files; keep what open() would give.
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def encode_png(image_uint8: np.ndarray) -> bytes:
  """Encodes an [H,W,C] uint8 array (C in 1, 3, 4) as PNG bytes."""
  from PIL import Image
  arr = image_uint8[..., 0] if image_uint8.shape[-1] == 1 else image_uint8
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, format="PNG")
  return buf.getvalue()


def save_png(path: str, image_uint8: np.ndarray) -> None:
  """Writes an [H,W,C] uint8 array as a PNG file, atomically."""
  write_bytes_atomic(path, encode_png(image_uint8))


def save_gif(path: str, frames_uint8: Sequence[np.ndarray], duration_ms: int = 80) -> None:
  """Writes [H,W,C] uint8 frames as a looping animated GIF, atomically."""
  from PIL import Image
  pil = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in frames_uint8]
  buf = io.BytesIO()
  pil[0].save(buf, format="GIF", save_all=True, append_images=pil[1:], duration=duration_ms, loop=0)
  write_bytes_atomic(path, buf.getvalue())


def load_image(path: str) -> np.ndarray:
  """Reads an image file as float32 [H,W,C] in [-1, 1]; raises UserError if unreadable."""
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(path) as im:
      im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
      arr = np.asarray(im)
  except (OSError, UnidentifiedImageError) as e:
    raise UserError(f"cannot read image {path!r}: {e.__class__.__name__}") from None
  if arr.ndim == 2:
    arr = arr[..., None]
  return to_float(arr)


def upscale_for_display(grid_uint8: np.ndarray, min_size: int = 256) -> np.ndarray:
  """Nearest-neighbour upscales a small grid so tiny images (8-28 px) are visible in a viewer."""
  factor = max(1, -(-min_size // max(grid_uint8.shape[:2])))  # ceil: at least min_size
  return np.repeat(np.repeat(grid_uint8, factor, axis=0), factor, axis=1)
