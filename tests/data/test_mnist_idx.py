"""The mnist_idx builder and the IDX reader under it: parsing, gz and plain files, present splits, clear errors."""

import gzip
import io
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from aigc_jax import mnist_format
from aigc_jax.data import mnist_idx
from aigc_jax.errors import UserError
from tests.data.conftest import indexed_images, write_idx, write_mnist_folder


def _prepare(folder, data_dir):
  builder = tfds.builder("mnist_idx", config=mnist_idx.folder_config(folder), data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=folder))
  return builder


@pytest.mark.parametrize("gz", [True, False])
def test_prepares_present_splits_in_order(tmp_path, gz):
  folder = str(tmp_path / "idx")
  images, labels = indexed_images(5), np.array([7, 0, 9, 2, 2])
  write_mnist_folder(folder, {"train": (images, labels)}, gz=gz)
  builder = _prepare(folder, str(tmp_path / "tfds"))
  assert set(builder.info.splits) == {"train"}  # no t10k files: no test split
  data = tfds.as_numpy(builder.as_dataset(split="train", batch_size=-1, shuffle_files=False))
  np.testing.assert_array_equal(data["image"][..., 0], images)
  np.testing.assert_array_equal(data["label"], labels)


def test_plain_tfds_route_with_manual_dir(tmp_path, mnist_folder):
  folder, splits = mnist_folder
  ds = tfds.load("mnist_idx", split="test", batch_size=-1, data_dir=str(tmp_path),
                 download_and_prepare_kwargs={
                     "download_config": tfds.download.DownloadConfig(manual_dir=folder)})
  np.testing.assert_array_equal(tfds.as_numpy(ds)["label"], splits["test"][1])


def test_different_folders_get_different_configs(tmp_path, mnist_folder):
  other = str(tmp_path / "other")
  write_mnist_folder(other, {"train": (indexed_images(3), np.zeros(3))}, gz=False)
  assert mnist_idx.folder_config(other).name != mnist_idx.folder_config(mnist_folder[0]).name
  # The same folder with other images of the same size (MNIST swapped for Fashion-MNIST, say).
  before = mnist_idx.folder_config(other).name
  write_mnist_folder(other, {"train": (255 - indexed_images(3), np.zeros(3))}, gz=False)
  assert mnist_idx.folder_config(other).name != before


def test_missing_folder_names_expected_files(tmp_path):
  with pytest.raises(UserError, match="nope.*train-images-idx3-ubyte"):
    mnist_format.find_splits(str(tmp_path / "nope"))
  with pytest.raises(UserError, match="no IDX files.*t10k-labels-idx1-ubyte"):
    mnist_format.find_splits(str(tmp_path))


def test_images_without_labels(tmp_path):
  write_idx(str(tmp_path / "t10k-images-idx3-ubyte"), indexed_images(2))
  with pytest.raises(UserError, match="t10k-labels-idx1-ubyte"):
    mnist_format.find_splits(str(tmp_path))


def test_bad_magic_number(tmp_path):
  write_idx(str(tmp_path / "train-images-idx3-ubyte"), indexed_images(2))
  write_idx(str(tmp_path / "train-labels-idx1-ubyte"), np.zeros(2, np.uint8), magic=0x0803)
  with pytest.raises(UserError, match="train-labels-idx1-ubyte.*magic number"):
    _prepare(str(tmp_path), str(tmp_path / "tfds"))
  assert not os.path.exists(tmp_path / "tfds" / "mnist_idx" / mnist_idx.folder_config(
      str(tmp_path)).name / "1.0.0" / "dataset_info.json")


def test_corrupt_gzip_stream_is_a_user_error(tmp_path):
  plain, path = str(tmp_path / "x-images-idx3-ubyte"), str(tmp_path / "x-images-idx3-ubyte.gz")
  write_idx(plain, indexed_images(2))
  with open(plain, "rb") as f:
    packed = bytearray(gzip.compress(f.read()))  # No file name in the header: deflate starts at 10.
  packed[10] = 0xFF  # An invalid deflate block type.
  with open(path, "wb") as f:
    f.write(packed)
  with pytest.raises(UserError, match="x-images-idx3-ubyte.gz"):
    mnist_format.read_idx(path, 0x0803)


def test_truncated_and_mismatched_files(tmp_path):
  path = str(tmp_path / "x-images-idx3-ubyte")
  write_idx(path, indexed_images(2))
  with open(path, "r+b") as f:
    f.truncate(100)
  with pytest.raises(UserError, match="truncated"):
    mnist_format.read_idx(path, 0x0803)
  write_idx(path, indexed_images(3))
  labels = str(tmp_path / "x-labels-idx1-ubyte")
  write_idx(labels, np.zeros(2, np.uint8))
  with pytest.raises(UserError, match="3 images but"):
    mnist_format.read_split(path, labels)


class _CountingFile(io.FileIO):
  """A file that counts the bytes read from it."""

  bytes_read = 0

  def read(self, size=-1):
    data = super().read(size)
    _CountingFile.bytes_read += len(data)
    return data


def test_a_gzip_bomb_is_read_only_as_far_as_its_header_promises(tmp_path, monkeypatch):
  path = str(tmp_path / "t10k-images-idx3-ubyte.gz")
  promised = indexed_images(10)
  header = (0x0803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in promised.shape)
  zeros = gzip.compress(bytes(1 << 20))  # 1 MiB of zeros in about 1 KiB; gzip members concatenate
  with open(path, "wb") as f:
    f.write(gzip.compress(header + promised.tobytes()) + zeros * 1024)  # inflates to 1 GiB more
  size = os.path.getsize(path)
  assert size > 1_000_000
  opened = []

  def counting_gzip_open(name, mode="rb"):
    opened.append(gzip.GzipFile(fileobj=_CountingFile(name), mode=mode))
    return opened[-1]

  monkeypatch.setattr(gzip, "open", counting_gzip_open)
  _CountingFile.bytes_read = 0
  with pytest.raises(UserError, match="truncated or padded: its header says shape"):
    mnist_format.read_idx(path, 0x0803)
  assert len(opened) == 1 and _CountingFile.bytes_read < 64 * 1024  # a few buffers of 1 MB on disk, not all
  # The same file without the bomb: the header's 10 images, read through the same path.
  with open(path, "wb") as f:
    f.write(gzip.compress(header + promised.tobytes()))
  np.testing.assert_array_equal(mnist_format.read_idx(path, 0x0803), promised)


@pytest.mark.parametrize("shape, gz, message", [
    ((2 ** 32 - 1,) * 3, False, r"shape \(4294967295, 4294967295, 4294967295\) has more than 2\*\*63 elements"),
    ((0, 2 ** 32 - 1, 2 ** 32 - 1), True, "more than 2\\*\\*63 elements"),
    ((10 ** 6, 28, 28), False, "needs 784000000 bytes, more than a file of 3152 bytes can hold"),
    ((10 ** 6, 28, 28), True, "needs 784000000 bytes, more than a gzip file of"),
])
def test_a_header_promising_more_than_the_file_can_hold_is_one_line_before_any_data_is_read(
    tmp_path, shape, gz, message):
  path = str(tmp_path / ("x-images-idx3-ubyte" + (".gz" if gz else "")))
  header = (0x0803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in shape)
  with (gzip.open if gz else open)(path, "wb") as f:
    f.write(header + indexed_images(4).tobytes())
  with pytest.raises(UserError, match=message):
    mnist_format.read_idx(path, 0x0803)
