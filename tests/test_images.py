"""Atomic file writes keep modes; `read_image` decodes files as users have them; `fit_square` resizes."""

import os
import stat
import struct
import warnings
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from aigc_jax import images
from aigc_jax.errors import UserError


def _mode(path):
  return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_honour_the_umask_and_keep_an_existing_mode(tmp_path):
  old = os.umask(0o027)
  try:
    new = tmp_path / "new.png"
    images.write_bytes_atomic(str(new), b"a")
    assert _mode(new) == 0o640 and new.read_bytes() == b"a"
    kept = tmp_path / "kept.png"
    kept.write_bytes(b"old")
    os.chmod(kept, 0o604)
    images.write_bytes_atomic(str(kept), b"b")
    assert _mode(kept) == 0o604 and kept.read_bytes() == b"b"
  finally:
    os.umask(old)
  assert sorted(os.listdir(tmp_path)) == ["kept.png", "new.png"]  # no temporary files left


# --- read_image: files as users have them, against references computed here with numpy ---

def _save(path, image, **kwargs):
  image.save(path, **kwargs)
  return str(path)


def _png_header(width, height):
  """A PNG that declares width x height RGB pixels and holds none: a decompression bomb's shape."""
  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)


def test_rgb_and_grey_keep_their_pixels_and_convert_channels(tmp_path):
  path = _save(tmp_path / "rgb.png", Image.fromarray(RGB))
  np.testing.assert_array_equal(images.read_image(path), RGB)
  luma = RGB.astype(np.float64) @ [0.299, 0.587, 0.114]
  grey = images.read_image(path, channels=1)
  assert grey.shape == (6, 5, 1)
  np.testing.assert_allclose(grey[..., 0], luma, atol=0.51)
  levels = RGB[..., 0]
  path = _save(tmp_path / "grey.bmp", Image.fromarray(levels))
  np.testing.assert_array_equal(images.read_image(path), levels[..., None])
  np.testing.assert_array_equal(images.read_image(path, channels=3), np.repeat(levels[..., None], 3, -1))


def test_rgba_is_composited_on_the_background(tmp_path):
  alpha = np.array([0, 64, 128, 255, 200], np.uint8)[None, :].repeat(6, 0)
  path = _save(tmp_path / "rgba.png", Image.fromarray(np.dstack([RGB, alpha]), "RGBA"))
  for background in [(255, 255, 255), (10, 200, 30)]:
    a = alpha[..., None] / 255.0
    expected = RGB * a + np.asarray(background, np.float64) * (1 - a)
    got = images.read_image(path, background=background)
    assert got.shape == (6, 5, 3)
    np.testing.assert_allclose(got, expected, atol=1.0)


def test_palette_transparency_shows_the_background(tmp_path):
  palette = RNG.integers(0, 256, (4, 3), dtype=np.uint8)
  index = RNG.integers(0, 4, (6, 5), dtype=np.uint8)
  image = Image.fromarray(index, "P")
  image.putpalette(palette.reshape(-1).tolist())
  path = _save(tmp_path / "palette.png", image, transparency=2)
  expected = np.where((index == 2)[..., None], np.uint8(0), palette[index])
  np.testing.assert_array_equal(images.read_image(path, background=(0, 0, 0)), expected)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
  values = np.linspace(0, 65535, 30).round().astype(np.uint16).reshape(6, 5)
  path = _save(tmp_path / "sixteen.png", Image.fromarray(values))
  assert Image.open(path).mode == "I;16"
  got = images.read_image(path)
  np.testing.assert_array_equal(got[..., 0], np.rint(values / 65535.0 * 255.0).astype(np.uint8))
  assert got.min() == 0 and got.max() == 255 and len(np.unique(got)) == 30
  assert images.load_image(path).mean() == pytest.approx(0.0, abs=0.05)  # not all white (1.0)


def test_cmyk_is_converted_as_255_times_one_minus_c_times_one_minus_k(tmp_path):
  cmyk = RNG.integers(0, 256, (6, 5, 4), dtype=np.uint8)
  path = _save(tmp_path / "cmyk.tif", Image.fromarray(cmyk, "CMYK"))
  c, k = cmyk[..., :3].astype(np.float64), cmyk[..., 3:].astype(np.float64)
  np.testing.assert_allclose(images.read_image(path), (255 - c) * (255 - k) / 255, atol=1.0)


def test_exif_orientation_is_applied(tmp_path):
  # Four flat 8x8 quadrants of 16x24 (JPEG blocks), so the lossy codec keeps them nearly exact.
  upright = np.zeros((16, 24, 3), np.uint8)
  for (r, c), colour in zip([(0, 0), (0, 1), (1, 0), (1, 1)], [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)]):
    upright[8 * r:8 * r + 8, 12 * c:12 * c + 12] = colour
  # Orientation 6: the stored pixels must turn 90 degrees clockwise to stand upright.
  stored = np.rot90(upright, k=1)
  exif = Image.Exif()
  exif[0x0112] = 6
  path = _save(tmp_path / "turned.jpg", Image.fromarray(np.ascontiguousarray(stored)), exif=exif, quality=95,
               subsampling=0)
  got = images.read_image(path)
  assert got.shape == upright.shape
  assert np.abs(got.astype(int) - upright).mean() < 4


def test_unreadable_files_are_one_line_naming_them(tmp_path):
  good = tmp_path / "good.png"
  Image.fromarray(RGB).save(good)
  truncated = tmp_path / "truncated.png"
  truncated.write_bytes(good.read_bytes()[:60])
  (tmp_path / "text.jpg").write_bytes(b"not an image at all")
  for name, reason in [("truncated.png", "truncated|OSError|SyntaxError"), ("text.jpg", "not an image")]:
    with pytest.raises(images.UnreadableImage, match=f"cannot read image '.*{name}': ({reason})") as e:
      images.read_image(str(tmp_path / name))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("width, height", [(20_000, 10_000), (12_000, 8_000)])
def test_decompression_bombs_are_refused_in_one_line_before_decoding(tmp_path, width, height):
  # 200 Mpx is past PIL's own hard limit; 96 Mpx only past PIL's warning and this project's limit.
  path = tmp_path / "bomb.png"
  path.write_bytes(_png_header(width, height))
  assert path.stat().st_size < 100
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no second line either: PIL's DecompressionBombWarning is silenced
    with pytest.raises(UserError, match="cannot read image .*bomb.png.*pixels") as e:
      images.load_image(str(path))
  assert "\n" not in str(e.value)


def test_the_pixel_limit_is_the_callers(tmp_path):
  path = _save(tmp_path / "small.png", Image.fromarray(RGB))  # 5 x 6 = 30 pixels
  assert images.read_image(path, max_pixels=30).shape == (6, 5, 3)
  with pytest.raises(UserError, match=r"5x6 is 30 pixels, over the limit of 29"):
    images.read_image(path, max_pixels=29)


def test_fit_square_crops_the_centre_and_resizes_like_tf_lanczos3_with_antialiasing():
  y, x = np.mgrid[0:45, 0:60]
  photo = np.stack([127 + 100 * np.sin(x / 5.0), 127 + 100 * np.cos(y / 4.0), (x + 2 * y) * 1.5], -1).astype(np.uint8)
  for crop, source in [("center", photo[:, 7:52]), ("none", photo)]:
    expected = tf.image.resize(source[None].astype(np.float64), (16, 16), method="lanczos3", antialias=True)[0]
    got = images.fit_square(photo, 16, crop)
    np.testing.assert_allclose(got, np.clip(np.rint(expected.numpy()), 0, 255), atol=1.0)
  # Shrinking a one-pixel checkerboard 8x antialiases it to mid-grey instead of aliasing it.
  checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)[..., None]
  shrunk = images.fit_square(checker, 8, "none")
  assert shrunk.shape == (8, 8, 1) and np.abs(shrunk.astype(int) - 127.5).max() <= 1
  np.testing.assert_array_equal(images.fit_square(photo[:16, :16], 16, "center"), photo[:16, :16])


def test_a_large_jpeg_decoded_for_a_small_size_is_close_to_decoding_it_whole(tmp_path):
  y, x = np.mgrid[0:768, 0:1024]
  photo = np.stack([127 + 100 * np.sin(x / 37.0), 127 + 100 * np.cos(y / 23.0), ((x // 50 + y // 50) % 2) * 200],
                   -1).astype(np.uint8)
  path = _save(tmp_path / "large.jpg", Image.fromarray(photo), quality=90)
  whole = images.fit_square(images.read_image(path), 64, "center")
  drafted = images.fit_square(images.read_image(path, target_size=64), 64, "center")
  assert np.abs(whole.astype(int) - drafted).mean() < 1
