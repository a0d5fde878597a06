"""Image folders read as pytorch-fid and clean-fid read them: which files, in which order, which pixels."""

import os

import numpy as np
import pytest
from PIL import Image

from aigc_jax import images
from aigc_jax.errors import UserError
from aigc_jax.evaluation import image_folder


def _save(path, array, mode=None, **kwargs):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array, mode).save(path, **kwargs)
  return path


def test_lists_image_files_recursively_in_sorted_order(tmp_path):
  pixel = np.zeros((2, 2, 3), np.uint8)
  for name in ("b.png", "a.JPG", "sub/c.webp", "sub/deeper/d.bmp", "0.PnG"):
    _save(str(tmp_path / name), pixel)
  (tmp_path / "notes.txt").write_text("not an image")
  (tmp_path / "archive.npz").write_bytes(b"")
  found = [os.path.relpath(p, tmp_path) for p in image_folder.list_images(str(tmp_path))]
  assert found == ["0.PnG", "a.JPG", "b.png", "sub/c.webp", "sub/deeper/d.bmp"]


def test_greyscale_rgba_and_palette_pngs_become_rgb_as_the_other_tools_convert_them(tmp_path):
  """pytorch-fid and clean-fid read `Image.open(path).convert("RGB")`: grey repeated, alpha dropped."""
  rng = np.random.default_rng(0)
  grey = rng.integers(0, 256, (6, 5), dtype=np.uint8)
  rgba = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
  rgba[0, 0, 3] = 0  # a fully transparent pixel keeps its colour: nothing is composited
  palette = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).convert("P")
  palette_path = str(tmp_path / "p.png")
  palette.save(palette_path)
  lookup = np.asarray(palette.getpalette(), np.uint8).reshape(-1, 3)[np.asarray(palette)]

  np.testing.assert_array_equal(image_folder.read_image(_save(str(tmp_path / "g.png"), grey), 3),
                                np.repeat(grey[..., None], 3, axis=-1))
  np.testing.assert_array_equal(image_folder.read_image(_save(str(tmp_path / "a.png"), rgba), 3), rgba[..., :3])
  np.testing.assert_array_equal(image_folder.read_image(palette_path, 3), lookup)


def test_one_channel_reads_pil_luma(tmp_path):
  """For the digits features files are read as "L": grey as it is, colour by PIL's ITU-R 601-2 luma."""
  rng = np.random.default_rng(1)
  grey = rng.integers(0, 256, (4, 7), dtype=np.uint8)
  rgb = rng.integers(0, 256, (4, 7, 3), dtype=np.uint8).astype(np.int64)
  np.testing.assert_array_equal(image_folder.read_image(_save(str(tmp_path / "g.png"), grey), 1), grey[..., None])
  got = image_folder.read_image(_save(str(tmp_path / "c.png"), rgb.astype(np.uint8)), 1)
  luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16  # PIL's fixed point
  np.testing.assert_array_equal(got[..., 0], luma)


def test_batches_are_float_images_of_one_size(tmp_path):
  rng = np.random.default_rng(2)
  arrays = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
  paths = [_save(str(tmp_path / f"{i}.png"), a) for i, a in enumerate(arrays)]
  batches = list(image_folder.image_batches(paths, 3, batch_size=2))
  assert [b.shape[0] for b in batches] == [2, 2, 1]
  np.testing.assert_array_equal(np.concatenate(batches), images.to_float(arrays))
  paths.append(_save(str(tmp_path / "big.png"), np.zeros((8, 4, 3), np.uint8)))
  with pytest.raises(UserError, match=r"images differ in size: .*big.png' is 4x8, .*0.png' is 4x4"):
    list(image_folder.image_batches(paths, 3))


def test_bad_folders_and_files_are_one_line(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    image_folder.list_images(str(tmp_path / "nope"))
  with pytest.raises(UserError, match="no image files"):
    image_folder.list_images(str(tmp_path))
  broken = tmp_path / "broken.png"
  broken.write_bytes(b"\x89PNG not really")
  with pytest.raises(UserError, match="cannot read image .*broken.png"):
    image_folder.read_image(str(broken), 3)


def test_digest_changes_with_any_file(tmp_path):
  arrays = np.random.default_rng(3).integers(0, 256, (3, 4, 4), dtype=np.uint8)
  paths = [_save(str(tmp_path / f"{i}.png"), a) for i, a in enumerate(arrays)]
  before = image_folder.files_digest(paths, str(tmp_path))
  assert image_folder.files_digest(paths, str(tmp_path)) == before
  changed = arrays[1].copy()
  changed[2, 2] ^= 1
  _save(paths[1], changed)
  assert image_folder.files_digest(paths, str(tmp_path)) != before
  os.rename(paths[1], str(tmp_path / "9.png"))  # the same bytes under another name
  _save(paths[1], arrays[1])
  assert image_folder.files_digest(paths, str(tmp_path)) == before
  assert image_folder.files_digest([paths[0], paths[2], str(tmp_path / "9.png")], str(tmp_path)) != before
