"""Image range conversions, grids, atomic image files, and reading images as users have them.

Inside the library images are float32 NHWC in [-1, 1]; uint8 (0..255) appears
only at file and TFDS boundaries, through `to_float` and `to_uint8`.

`read_image` is the one decoder for files that come from users (`sample --mode=rule --input`,
`data.dataset=image_folder`): EXIF orientation applied, palette, grey + alpha and RGBA
composited on a background, 16-bit grey scaled to 8 bits (not clipped), CMYK converted, a
pixel-count limit checked before anything is decoded, and every failure one `UnreadableImage`
line. `fit_square` crops and resizes the result to a model's square size.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
import warnings
from typing import BinaryIO, Sequence

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


# The most pixels an image may declare before it is refused unread: a few bytes of PNG can declare
# 200 Mpx and inflate to gigabytes. 8192 x 8192 admits the photos of current cameras and phones.
MAX_PIXELS = 8192 * 8192
# Modes of one grey channel (16-bit ones are "I;16*"; "I" is 32-bit integer, read in the 16-bit range).
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


class UnreadableImage(UserError):
  """An image file that cannot be decoded, or that is refused (too many pixels)."""

  def __init__(self, name: str, reason: str):
    super().__init__(f"cannot read image {name!r}: {reason}")
    self.name, self.reason = name, reason


def pil_pixel_limit() -> int:
  """The pixel count past which PIL itself refuses to open an image (twice its MAX_IMAGE_PIXELS)."""
  from PIL import Image
  return 2 * Image.MAX_IMAGE_PIXELS


def parse_color(color: str) -> tuple[int, int, int]:
  """An RGB triple from a PIL colour string ("white", "#808080", "rgb(0,0,0)"); ValueError if none."""
  from PIL import ImageColor
  return ImageColor.getrgb(color)[:3]


def _sixteen_bit_to_8(image) -> np.ndarray:
  """uint8 [H,W] from a 16-bit (or 32-bit integer) grey image: 0..65535 scaled onto 0..255."""
  values = np.clip(np.asarray(image, np.float64), 0, 65535)
  return np.rint(values * (255 / 65535)).astype(np.uint8)


def _to_8_bit(image, background: tuple[int, int, int]):
  """The PIL image in "L" (grey sources) or "RGB", transparency composited on `background`."""
  from PIL import Image
  if image.mode == "P" and "transparency" in image.info:
    image = image.convert("RGBA")  # palette transparency: a colour index or a per-index alpha table
  if image.mode in _ALPHA_MODES:
    grey = image.mode in _GREY_MODES and len(set(background)) == 1
    base = Image.new("RGBA", image.size, (*background, 255))
    image = Image.alpha_composite(base, image.convert("RGBA")).convert("RGB")
    return image.convert("L") if grey else image
  if image.mode.startswith("I"):
    return Image.fromarray(_sixteen_bit_to_8(image))
  if image.mode == "F":
    raise ValueError("32-bit float pixels (mode F) have no agreed range")
  if image.mode in ("1", "L"):
    return image.convert("L")
  return image.convert("RGB")  # RGB, palette, CMYK (as 255 (1 - C)(1 - K), ...), YCbCr


def read_image(source: str | BinaryIO, *, name: str | None = None, channels: int | None = None,
               background: tuple[int, int, int] = (255, 255, 255), max_pixels: int = MAX_PIXELS,
               formats: Sequence[str] | None = None, target_size: int | None = None) -> np.ndarray:
  """Decodes an image file into uint8 [H, W, C], upright, C = `channels` (None: 1 if grey, else 3).

  `formats` restricts the PIL formats tried (None: any). `target_size` is the side the caller will
  shrink the image to: a JPEG may then be decoded at a DCT scale (1/2 .. 1/8) keeping at least
  four times that, several times faster and close to decoding it whole (PIL's thumbnail keeps
  twice, which shifts a centre crop by up to half a decoded pixel). Raises `UnreadableImage`
  naming `name` (default: the path) and why. PIL warns (DecompressionBombWarning) about images
  over its MAX_IMAGE_PIXELS before this function refuses them; callers silence that warning
  (`load_image` does).
  """
  from PIL import Image, ImageOps, UnidentifiedImageError
  name = name if name is not None else str(source)
  try:
    with Image.open(source, formats=formats) as image:
      width, height = image.size
      if width * height > max_pixels:
        raise UnreadableImage(name, f"{width}x{height} is {width * height:,} pixels, over the limit of "
                                    f"{max_pixels:,} (a decompression bomb?)")
      if target_size:
        image.draft(image.mode, (4 * target_size, 4 * target_size))
      image.load()
      image = _to_8_bit(ImageOps.exif_transpose(image), background)
  except UnreadableImage:
    raise
  except Image.DecompressionBombError:
    raise UnreadableImage(name, f"over PIL's limit of {pil_pixel_limit():,} pixels "
                                "(a decompression bomb)") from None
  except UnidentifiedImageError:
    kinds = ", ".join(formats) if formats else "PIL's"
    raise UnreadableImage(name, f"not an image in any of {kinds} formats") from None
  except Exception as e:  # noqa: BLE001  corrupt data: OSError, SyntaxError, ValueError, struct.error ...
    first_line = (str(e).strip().splitlines() or [""])[0]
    reason = f"{type(e).__name__}: {first_line}" if first_line else type(e).__name__
    raise UnreadableImage(name, reason) from None
  if channels == 1 and image.mode == "RGB":
    image = image.convert("L")  # ITU-R 601-2 luma, as data.pipeline's greyscale
  array = np.asarray(image)
  if array.ndim == 2:
    array = array[..., None]
  if channels == 3 and array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
  return array


def fit_square(image_uint8: np.ndarray, size: int, crop: str) -> np.ndarray:
  """Resizes uint8 [H,W,C] to [size,size,C]: the centre square (crop="center") or all of it ("none").

  Lanczos resampling, as StyleGAN's dataset tool; PIL widens the filter by the scale when
  shrinking, so shrinking is antialiased.
  """
  from PIL import Image
  h, w, c = image_uint8.shape
  if crop == "center":
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image_uint8 = image_uint8[top:top + side, left:left + side]
  if image_uint8.shape[:2] == (size, size):
    return image_uint8
  pil = Image.fromarray(image_uint8[..., 0] if c == 1 else image_uint8)
  out = np.asarray(pil.resize((size, size), Image.Resampling.LANCZOS))
  return out[..., None] if c == 1 else out


def load_image(path: str) -> np.ndarray:
  """Reads an image file as float32 [H,W,C] in [-1, 1] (C: 1 if grey, else 3); UserError if unreadable."""
  from PIL import Image
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS is the limit here
    return to_float(read_image(path))


def upscale_for_display(grid_uint8: np.ndarray, min_size: int = 256) -> np.ndarray:
  """Nearest-neighbour upscales a small grid so tiny images (8-28 px) are visible in a viewer."""
  factor = max(1, -(-min_size // max(grid_uint8.shape[:2])))  # ceil: at least min_size
  return np.repeat(np.repeat(grid_uint8, factor, axis=0), factor, axis=1)
