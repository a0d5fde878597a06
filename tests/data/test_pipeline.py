"""The tf.data pipeline: values, determinism, exact resume, per-process slices, sharding, TFDS mocks."""

import cv2
import jax
import numpy as np
import pytest
import requests
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.datasets import load_digits

from aigc_jax import parallel
from aigc_jax.config import base_config
from aigc_jax.data import pipeline
from aigc_jax.errors import UserError


def _config(data_dir, **data):
  config = base_config()
  config.data.data_dir = data_dir
  config.data.update(data)
  return config


def _mnist(data_dir, folder, **data):
  return _config(data_dir, dataset="mnist_idx", manual_dir=folder, image_size=28, **data)


def _ids(images):
  """Recovers the index each indexed test image carries in pixel (0, 0)."""
  return np.rint((images[:, 0, 0, 0] + 1.0) * 127.5).astype(int)


def _take(data_config, steps, **kwargs):
  it = pipeline.local_batches(data_config, **kwargs)
  return [next(it) for _ in range(steps)]


def test_digits_batches_shape_range_dtype(data_dir):
  (batch,) = _take(_config(data_dir).data, 1, batch_size=32, seed=0)
  assert batch["image"].shape == (32, 16, 16, 1) and batch["image"].dtype == np.float32
  assert batch["label"].shape == (32,) and batch["label"].dtype == np.int32
  assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
  assert batch["image"].min() == -1.0 and batch["image"].max() > 0.9
  assert set(batch["label"]) <= set(range(10))


def test_epochs_are_permutations_and_resume_is_exact(data_dir, mnist_folder):
  data_config = _mnist(data_dir, mnist_folder[0]).data
  batches = _take(data_config, 5, batch_size=4, seed=3)
  ids = np.concatenate([_ids(b["image"]) for b in batches])
  # 20 draws from 10 images: two epochs, each a permutation, reshuffled between them.
  assert sorted(ids[:10]) == list(range(10)) and sorted(ids[10:]) == list(range(10))
  assert list(ids[:10]) != list(ids[10:]) and list(ids[:10]) != list(range(10))
  labels = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(labels, mnist_folder[1]["train"][1][ids])
  again = _take(data_config, 5, batch_size=4, seed=3)
  resumed = _take(data_config, 2, batch_size=4, seed=3, start_step=3)
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  for a, b in zip(batches[3:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  other_seed = _take(data_config, 3, batch_size=4, seed=4)
  assert list(np.concatenate([_ids(b["image"]) for b in other_seed])) != list(ids[:12])


def test_process_slices_are_disjoint_and_cover_the_split(data_dir, mnist_folder):
  data_config = _mnist(data_dir, mnist_folder[0]).data
  per_process = [np.concatenate([_ids(b["image"]) for b in _take(
      data_config, 5, batch_size=1, seed=0, process_index=p, process_count=2)]) for p in range(2)]
  assert all(len(set(ids)) == 5 for ids in per_process)
  assert set(per_process[0]).isdisjoint(per_process[1])
  assert set(per_process[0]) | set(per_process[1]) == set(range(10))


def test_random_flip_mirrors_some_images_and_resumes(data_dir, mnist_folder):
  plain = _take(_mnist(data_dir, mnist_folder[0]).data, 3, batch_size=8, seed=1)
  flip_config = _mnist(data_dir, mnist_folder[0], random_flip=True).data
  flipped = _take(flip_config, 3, batch_size=8, seed=1)
  mirrored = []
  for p, f in zip(plain, flipped):
    for x, y in zip(p["image"], f["image"]):
      assert np.array_equal(x, y) or np.array_equal(x[:, ::-1], y)
      mirrored.append(not np.array_equal(x, y))
  assert 0 < sum(mirrored) < len(mirrored)
  np.testing.assert_array_equal(_take(flip_config, 1, batch_size=8, seed=1, start_step=2)[0]["image"],
                                flipped[2]["image"])


def test_train_iterator_is_sharded_over_8_devices_and_resumes(data_dir):
  config = _config(data_dir)
  config.train.batch_size = 16
  mesh = parallel.create_mesh()
  assert mesh.size == 8
  it = pipeline.create_train_iterator(config, mesh)
  batches = [next(it) for _ in range(3)]
  it.close()
  batch = batches[0]
  assert isinstance(batch["image"], jax.Array) and batch["image"].shape == (16, 16, 16, 1)
  assert batch["image"].sharding.is_equivalent_to(parallel.batch_sharded(mesh), 4)
  assert {s.data.shape for s in batch["image"].addressable_shards} == {(2, 16, 16, 1)}
  assert batch["label"].dtype == np.int32
  (local,) = _take(config.data, 1, batch_size=16, seed=config.seed)
  np.testing.assert_array_equal(np.asarray(batch["image"]), local["image"])
  with pipeline.create_train_iterator(config, mesh, start_step=2) as it:
    resumed = next(it)
  np.testing.assert_array_equal(np.asarray(resumed["image"]), np.asarray(batches[2]["image"]))
  np.testing.assert_array_equal(np.asarray(resumed["label"]), np.asarray(batches[2]["label"]))


def test_load_examples_first_digits_resized_like_opencv(data_dir):
  images, labels = pipeline.load_examples(_config(data_dir).data, "train", 5)
  ref = load_digits()
  np.testing.assert_array_equal(labels, ref.target[:5])
  # Upsampling 8 -> 16: half-pixel bilinear, as OpenCV's INTER_LINEAR computes it.
  src = (np.round(ref.images[:5] / 16.0 * 255.0) / 127.5 - 1.0).astype(np.float32)
  expected = np.stack([cv2.resize(x, (16, 16), interpolation=cv2.INTER_LINEAR) for x in src])
  np.testing.assert_allclose(images[..., 0], expected, atol=1e-5)
  assert pipeline.dataset_size(_config(data_dir).data, "train") == 1797


def test_preprocess_crops_shrinks_and_greys_like_pil():
  rgb = np.random.default_rng(0).integers(0, 256, (2, 40, 30, 3), dtype=np.uint8)
  out = pipeline.preprocess(tf.constant(rgb), 16, 1).numpy()

  def reference(image):
    grey = image[5:35].astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 127.5 - 1.0
    return np.asarray(Image.fromarray(grey.astype(np.float32), mode="F").resize((16, 16), Image.BILINEAR))

  np.testing.assert_allclose(out[..., 0], np.stack([reference(x) for x in rgb]), atol=1e-5)
  white = pipeline.preprocess(tf.fill((1, 8, 8, 3), tf.constant(255, tf.uint8)), 8, 1).numpy()
  np.testing.assert_array_equal(white, np.ones((1, 8, 8, 1), np.float32))


def test_grey_to_rgb_and_test_split(data_dir, mnist_folder):
  data_config = _mnist(data_dir, mnist_folder[0], channels=3).data
  images = pipeline.load_images(data_config, "test", 4)
  assert images.shape == (4, 28, 28, 3)
  np.testing.assert_array_equal(images[..., 0], images[..., 2])
  np.testing.assert_array_equal(_ids(images), [100, 101, 102, 103])
  assert pipeline.dataset_size(data_config, "test") == 4


def test_a_dataset_that_cannot_be_downloaded_is_a_user_error(tmp_path, monkeypatch):
  def offline(builder, *args, **kwargs):
    raise requests.exceptions.ConnectionError("Failed to resolve 'storage.googleapis.com'")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
  with pytest.raises(UserError, match="dataset 'mnist' is not prepared in .* could not be downloaded "
                                      r"\(ConnectionError\); without a network, use data.dataset='digits'"):
    pipeline.dataset_size(_config(str(tmp_path), dataset="mnist").data, "train")


def test_user_errors(data_dir, mnist_folder, tmp_path):
  data_config = _mnist(data_dir, mnist_folder[0]).data
  with pytest.raises(UserError, match="split 'validation'.*train, test|split 'validation'.*test, train"):
    pipeline.dataset_size(data_config, "validation")
  with pytest.raises(UserError, match="cannot take 5 images.*holds 4"):
    pipeline.load_images(data_config, "test", 5)
  with pytest.raises(UserError, match="manual_dir"):
    pipeline.dataset_size(_config(str(tmp_path), dataset="mnist_idx").data, "train")


def _write_cifar10_metadata(data_dir, num_examples):
  """Writes the metadata of a prepared cifar10 (no records), which mock_data serves random images for."""
  builder = tfds.builder("cifar10", data_dir=data_dir)
  template = lambda split: tfds.core.ShardedFileTemplate(
      data_dir=builder.data_dir, dataset_name="cifar10", split=split, filetype_suffix="tfrecord")
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[num_examples], num_bytes=0,
                          filename_template=template(split)) for split in ("train", "test")]))
  tf.io.gfile.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)


@pytest.mark.parametrize("max_in_memory_bytes", [pipeline._MAX_IN_MEMORY_BYTES, 0])
def test_tfds_dataset_through_mock_data(tmp_path, max_in_memory_bytes):
  data_dir = str(tmp_path)
  _write_cifar10_metadata(data_dir, 6)
  data_config = _config(data_dir, dataset="cifar10", channels=1).data
  with tfds.testing.mock_data(num_examples=6, data_dir=data_dir,
                              policy=tfds.testing.MockPolicy.USE_FILES):
    take = lambda steps, start: _take(data_config, steps, batch_size=4, seed=0, start_step=start,
                                      max_in_memory_bytes=max_in_memory_bytes)
    batches, resumed = take(4, 0), take(2, 2)
    reference = pipeline.load_images(data_config, "train", 6)
    assert pipeline.dataset_size(data_config, "test") == 6
  assert batches[0]["image"].shape == (4, 16, 16, 1) and batches[0]["image"].dtype == np.float32
  assert np.abs(batches[0]["image"]).max() <= 1.0
  for a, b in zip(batches[2:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  # 16 draws from 6 images: the first epoch is the 6 images of the split, each once, shuffled.
  first_epoch = np.concatenate([b["image"] for b in batches])[:6]
  key = lambda images: sorted(row.tobytes() for row in images.reshape(len(images), -1))
  assert key(first_epoch) == key(reference)
  assert not np.array_equal(first_epoch, reference)


def test_load_examples_from_a_sliced_split(data_dir):
  config = _config(data_dir).data
  images, labels = pipeline.load_examples(config, "train[90%:]", 4)
  assert pipeline.dataset_size(config, "train[90%:]") == 180
  np.testing.assert_array_equal(labels, load_digits().target[1617:1621])
  full, _ = pipeline.load_examples(config, "train", 1621)
  np.testing.assert_array_equal(images, full[1617:])


def test_on_device_batches_equal_the_host_pipeline_and_resume(data_dir, monkeypatch):
  """data.on_device: the split lives on the devices; batches, flips and resume match the host path."""
  monkeypatch.setattr(pipeline, "_INDEX_CHUNK", 3)  # 4 batches cross a chunk boundary
  config = _config(data_dir, random_flip=True)
  config.train.batch_size = 16
  mesh = parallel.create_mesh()
  with pipeline.create_train_iterator(config, mesh) as it:
    host = [next(it) for _ in range(4)]
  config.data.on_device = True
  with pipeline.create_train_iterator(config, mesh) as it:
    assert isinstance(it, pipeline.DeviceBatches)
    device = [next(it) for _ in range(4)]
  with pipeline.create_train_iterator(config, mesh, start_step=2) as it:
    resumed = [next(it) for _ in range(2)]
  assert device[0]["image"].sharding.is_equivalent_to(parallel.batch_sharded(mesh), 4)
  for a, b in zip(host, device):
    for key in ("image", "label"):
      np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
  for a, b in zip(device[2:], resumed):
    np.testing.assert_array_equal(np.asarray(a["image"]), np.asarray(b["image"]))


def test_on_device_user_errors(data_dir, monkeypatch):
  config = _config(data_dir, on_device=True)
  config.train.batch_size = 8
  mesh = parallel.create_mesh()
  with pytest.raises(UserError, match="split 'train' of 'digits' is too big to decode into memory"):
    pipeline.device_batches(config, mesh, 0, max_bytes=1 << 10)
  # 1,797 digits as 16x16 float32 take 1.8 MiB: decodable, but over a 1 MiB limit.
  with pytest.raises(UserError, match="needs 1.8 MiB on each device, over the 1.0 MiB limit"):
    pipeline.device_batches(config, mesh, 0, max_bytes=1 << 20)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  with pytest.raises(UserError, match="single-process runs; this run has 2 processes"):
    pipeline.create_train_iterator(config, mesh)


class _FakeBuilder:
  name, data_dir, data_path = "fake", "/data", "/data/fake/1.0.0"


@pytest.mark.parametrize("process, process_0_fails", [(0, False), (1, False), (0, True), (1, True)])
def test_with_several_processes_process_0_prepares_first_and_the_others_wait(monkeypatch, process,
                                                                            process_0_fails):
  events = []
  monkeypatch.setattr(pipeline, "_AWAITED", set())
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: process)
  from jax.experimental import multihost_utils

  def broadcast(ok):  # process 0's value reaches everyone
    events.append(("broadcast", int(ok)))
    return np.int32(not process_0_fails)

  monkeypatch.setattr(multihost_utils, "broadcast_one_to_all", broadcast)

  def make():
    events.append("make")
    return _FakeBuilder()

  def prepare(builder):
    events.append("prepare")
    if process_0_fails and process == 0:
      raise UserError("the download failed")

  if process_0_fails:
    message = "the download failed" if process == 0 else "process 0 could not prepare dataset 'fake'"
    with pytest.raises(UserError, match=message):
      pipeline.prepare_once(make, prepare)
    assert events == (["make", "prepare", ("broadcast", 0)] if process == 0 else ["make", ("broadcast", 1)])
    return
  assert isinstance(pipeline.prepare_once(make, prepare), _FakeBuilder)
  # Process 1 never prepares before process 0 is done; both then open what it wrote.
  first = ["make", "prepare", ("broadcast", 1)] if process == 0 else ["make", ("broadcast", 1)]
  assert events == first + ["make", "prepare"]
  events.clear()
  pipeline.prepare_once(make, prepare)  # the same dataset again: no second wait
  assert events == ["make", "prepare"]
