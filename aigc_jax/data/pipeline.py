"""TFDS -> tf.data -> sharded global batches, with exact resume; reference images for evaluation.

The training stream is a pure function of (seed, step, process): each process holds its own
slice of the split (`tfds.split_for_jax_process`) and draws element `k = step * b + j` of its
stream from epoch `k // n`, position `index_shuffle(k % n, seed=(seed, epoch))` of its n
elements. Resuming at step s therefore jumps straight to element s * b, in O(1).

That needs random access, so splits whose decoded images fit in `_MAX_IN_MEMORY_BYTES`
(digits, MNIST-format, CIFAR-10) are decoded once into memory. Bigger ones (CelebA) stream
from TFDS: each epoch is a shuffle buffer seeded by (seed, epoch), and resuming skips the
start of one epoch without decoding images, so a resume costs reading at most one epoch of
records.

A dataset is prepared (downloaded, or built from local files) on its first use. With several
processes, process 0 prepares it and the others wait, then read what it wrote.
"""

from __future__ import annotations

import hashlib
import os
import queue
import sys
import threading
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from aigc_jax import parallel
from aigc_jax.data import digits as _digits  # noqa: F401  (registers the builder with TFDS)
from aigc_jax.data import image_folder, mnist_idx
from aigc_jax.errors import UserError

_MAX_IN_MEMORY_BYTES = 2 << 30
_DEVICE_PREFETCH = 2
# Salts keep the flip draws independent of the shuffle draws made from the same seed.
_FLIP_SALT = 0x5EED_F11B
_LUMA = (0.299, 0.587, 0.114)


def _download(builder: tfds.core.DatasetBuilder) -> None:
  try:
    builder.download_and_prepare()
  except OSError as e:  # requests' connection errors are OSErrors
    raise UserError(f"dataset {builder.name!r} is not prepared in {builder.data_dir!r} and could not be "
                    f"downloaded ({type(e).__name__}); without a network, use data.dataset='digits', "
                    "'mnist_idx' with data.manual_dir=FOLDER of MNIST-format IDX files, or "
                    "'image_folder' with data.folder=FOLDER of images") from e


# Datasets (by data path) this process has already waited for process 0 to prepare, and image
# folders whose left-out files it has reported: each happens once per process, not per opening.
_AWAITED: set[str] = set()
_REPORTED: set[str] = set()


def prepare_once(make: Callable[[], tfds.core.DatasetBuilder],
                  prepare: Callable[[tfds.core.DatasetBuilder], None]) -> tfds.core.DatasetBuilder:
  """`make()`'s builder after `prepare(builder)`; with several processes, process 0 prepares first.

  The others wait for it (once per dataset and process) and then open what it wrote, so that a
  shared data_dir is written by one process only; on a data_dir of each host's own, `prepare`
  then writes that host's copy. A failure on process 0 is its error line there and one line
  saying so on the others.
  """
  builder = make()
  path = os.fspath(builder.data_path)
  if jax.process_count() > 1 and path not in _AWAITED:
    from jax.experimental import multihost_utils
    _AWAITED.add(path)
    failure = None
    if jax.process_index() == 0:
      try:
        prepare(builder)
      except Exception as e:  # noqa: BLE001  re-raised below, once every process knows
        failure = e
    prepared = bool(multihost_utils.broadcast_one_to_all(np.int32(failure is None)))
    if failure is not None:
      raise failure
    if not prepared:
      raise UserError(f"process 0 could not prepare dataset {builder.name!r} in {builder.data_dir!r} "
                      "(its error line says why)")
    builder = make()  # made before process 0 wrote the dataset, it would not see its splits
  prepare(builder)
  return builder


def dataset_builder(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Returns the prepared TFDS builder of `data_config.dataset`, preparing it on first use."""
  name, data_dir = data_config.dataset, data_config.data_dir
  if name == "image_folder":
    return _image_folder_builder(data_config)
  if name != "mnist_idx":
    return prepare_once(lambda: tfds.builder(name, data_dir=data_dir), _download)
  folder = data_config.manual_dir
  if folder is None:
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      raise UserError("config.data.manual_dir must name a folder of MNIST-format IDX files "
                      "(data.dataset='mnist_idx')")
    return builder
  config = mnist_idx.folder_config(folder)
  download_config = tfds.download.DownloadConfig(manual_dir=folder)
  return prepare_once(lambda: tfds.builder(name, config=config, data_dir=data_dir),
                       lambda b: b.download_and_prepare(download_config=download_config))


def _image_folder_builder(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The prepared `image_folder` builder of data.folder; reports the files it left out."""
  if data_config.folder is None:
    raise UserError("config.data.folder must name a folder or .zip of images "
                    "(data.dataset='image_folder')")
  config = image_folder.folder_config(data_config)
  recorded = tuple(data_config.class_names)
  if recorded and recorded != config.class_names:
    raise UserError(f"config.data.folder={data_config.folder!r} now has the classes "
                    f"{', '.join(config.class_names)}; the run was trained with {', '.join(recorded)}")
  builder = prepare_once(lambda: tfds.builder("image_folder", config=config, data_dir=data_config.data_dir),
                          lambda b: b.download_and_prepare())
  path = os.fspath(builder.data_path)
  report = image_folder.check_left_out(builder, data_config.skip_bad_images)
  if report and path not in _REPORTED and jax.process_index() == 0:
    print(f"warning: {report}", file=sys.stderr)
  _REPORTED.add(path)
  return builder


def _num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError, AssertionError):
    raise UserError(f"split {split!r} is not in dataset {builder.name!r}; it has "
                    f"{', '.join(builder.info.splits)}") from None


def preprocess(images: tf.Tensor, image_size: int, channels: int) -> tf.Tensor:
  """Maps uint8 [B,h,w,c] to float32 [B,S,S,C] in [-1,1]: centre-crop to square, resize, convert."""
  x = tf.cast(images, tf.float32) / 127.5 - 1.0
  h, w = x.shape[1], x.shape[2]
  if h != w:
    side = min(h, w)
    x = x[:, (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
  if x.shape[1] != image_size:
    # Antialiasing only changes shrinking (CelebA 178 -> 64), where it keeps thin strokes;
    # growing is the same without it and much cheaper (benchmarks/RESULTS.md, "Input pipeline").
    x = tf.image.resize(x, (image_size, image_size), method="bilinear",
                        antialias=image_size < x.shape[1])
  if x.shape[-1] == 3 and channels == 1:
    # BT.601 luma; unlike tf.image.rgb_to_grayscale's weights these sum to 1, so white stays 1.
    x = tf.reduce_sum(x * _LUMA, axis=-1, keepdims=True)
  elif x.shape[-1] == 1 and channels == 3:
    x = tf.tile(x, (1, 1, 1, 3))
  return tf.clip_by_value(x, -1.0, 1.0)


def _labels(examples: dict) -> tf.Tensor:
  """int32 labels of a batch of examples; zeros for unlabelled sets (CelebA)."""
  if "label" in examples:
    return tf.cast(examples["label"], tf.int32)
  return tf.zeros(tf.shape(examples["image"])[:1], tf.int32)


def _load_split(builder: tfds.core.DatasetBuilder, split) -> tuple[np.ndarray, np.ndarray]:
  """Decodes a whole split into uint8 images and int32 labels."""
  data = builder.as_dataset(split=split, batch_size=-1, shuffle_files=False)
  return tfds.as_numpy(data["image"]), tfds.as_numpy(_labels(data))


def fits_in_memory(builder: tfds.core.DatasetBuilder, split: str, max_bytes: int) -> bool:
  """Whether `split` of `builder` decodes to at most `max_bytes` of uint8 pixels (fixed-shape images only)."""
  shape = builder.info.features["image"].shape
  if any(d is None for d in shape):
    return False
  return _num_examples(builder, split) * int(np.prod(shape)) <= max_bytes


def _flip_coins(batch_size, step: tf.Tensor, seed: int, process: int, process_count: int) -> tf.Tensor:
  """bool [batch_size]: which images of this process's batch `step` are mirrored."""
  coin = tf.random.stateless_uniform([batch_size], seed=tf.stack(
      [tf.constant(seed ^ _FLIP_SALT, tf.int64), tf.cast(step, tf.int64) * process_count + process]))
  return coin < 0.5


def _flip(images: tf.Tensor, step: tf.Tensor, seed: int, process: int, process_count: int):
  coins = _flip_coins(tf.shape(images)[0], step, seed, process, process_count)
  return tf.where(coins[:, None, None, None], tf.reverse(images, [2]), images)


def _shuffled_indices(k: tf.Tensor, n: int, seed: int) -> tf.Tensor:
  """Maps stream positions k (int64 [b]) to element indices: epoch k // n is a permutation of n."""
  epoch, pos = k // n, k % n

  def one_epoch(e, indices):
    # index_shuffle takes one seed for a whole vector, so a batch straddling epochs loops here.
    shuffled = tf.random.experimental.index_shuffle(
        pos, seed=tf.stack([tf.constant(seed, tf.int64), e]), max_index=tf.constant(n - 1, tf.int64))
    return e + 1, tf.where(epoch == e, shuffled, indices)

  _, indices = tf.while_loop(lambda e, _: e <= epoch[-1], one_epoch, (epoch[0], tf.zeros_like(pos)))
  return indices


def _in_memory_dataset(images: np.ndarray, labels: np.ndarray, data_config, *, batch_size: int,
                       seed: int, start_step: int, process_index: int, process_count: int):
  n = len(images)
  images_t, labels_t = tf.constant(images), tf.constant(labels, tf.int32)

  def batch(step):
    index = _shuffled_indices(step * batch_size + tf.range(batch_size, dtype=tf.int64), n, seed)
    x = preprocess(tf.gather(images_t, index), data_config.image_size, data_config.channels)
    if data_config.random_flip:
      x = _flip(x, step, seed, process_index, process_count)
    return {"image": x, "label": tf.gather(labels_t, index)}

  return tf.data.Dataset.counter(start_step).map(batch, num_parallel_calls=tf.data.AUTOTUNE)


def _streaming_dataset(builder, split: str, data_config, *, batch_size: int, seed: int,
                       start_step: int, process_index: int, process_count: int):
  n = _num_examples(builder, split)
  start = start_step * batch_size
  records = builder.as_dataset(split=split, shuffle_files=False,
                               decoders={"image": tfds.decode.SkipDecoding()})

  def epoch(e):
    return records.shuffle(data_config.shuffle_buffer, seed=seed * 1_000_003 + e,
                           reshuffle_each_iteration=False)

  ds = tf.data.Dataset.counter(start // n).flat_map(epoch).skip(start % n)
  image_feature = builder.info.features["image"]

  def decode(k, example):
    image = image_feature.decode_example(example["image"])[None]
    label = tf.cast(example["label"], tf.int32) if "label" in example else tf.constant(0)
    return k, {"image": preprocess(image, data_config.image_size, data_config.channels)[0],
               "label": label}

  ds = tf.data.Dataset.zip(tf.data.Dataset.counter(start), ds).map(
      decode, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size, drop_remainder=True)

  def flip(k, batch):
    if data_config.random_flip:
      batch["image"] = _flip(batch["image"], k[0] // batch_size, seed, process_index, process_count)
    return batch

  return ds.map(flip, num_parallel_calls=tf.data.AUTOTUNE)


def local_batches(data_config: ml_collections.ConfigDict, *, batch_size: int, seed: int,
                  start_step: int = 0, process_index: int = 0, process_count: int = 1,
                  max_in_memory_bytes: int = _MAX_IN_MEMORY_BYTES) -> Iterator[dict[str, np.ndarray]]:
  """This process's batches of `batch_size` as numpy dicts, from `start_step` on, forever."""
  if data_config.dataset == "synthetic":
    from aigc_jax.data.synthetic import synthetic_batches
    return synthetic_batches(data_config, batch_size=batch_size, seed=seed, start_step=start_step,
                             process_index=process_index)
  builder = dataset_builder(data_config)
  split = tfds.split_for_jax_process(data_config.split, process_index=process_index,
                                     process_count=process_count)
  _num_examples(builder, data_config.split)
  kwargs = dict(batch_size=batch_size, seed=seed, start_step=start_step,
                process_index=process_index, process_count=process_count)
  if fits_in_memory(builder, split, max_in_memory_bytes):
    images, labels = _load_split(builder, split)
    ds = _in_memory_dataset(images, labels, data_config, **kwargs)
  else:
    ds = _streaming_dataset(builder, split, data_config, **kwargs)
  return iter(tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE)))


class MeshPrefetcher:
  """Iterator of global batches, moved onto the mesh in a background thread `size` ahead.

  Call `close()` (or use it as a context manager) when done: it stops and joins the thread, so
  that no thread is still inside TensorFlow when the interpreter exits (which aborts it).
  """

  def __init__(self, batches: Iterator[dict[str, np.ndarray]], mesh: jax.sharding.Mesh, size: int):
    self._ready: queue.Queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._produce, args=(batches, mesh), daemon=True,
                                    name="aigc_jax-input")
    self._thread.start()

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._ready.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def _produce(self, batches, mesh) -> None:
    try:
      for batch in batches:
        if not self._put(parallel.host_to_global(batch, mesh)):
          return
    except BaseException as e:  # Handed to the consumer, which re-raises it in its thread.
      self._put(e)

  def __iter__(self) -> "MeshPrefetcher":
    return self

  def __next__(self) -> dict[str, jax.Array]:
    item = self._ready.get()
    if isinstance(item, BaseException):
      raise item
    return item

  def close(self) -> None:
    self._stop.set()
    self._thread.join()

  def __enter__(self) -> "MeshPrefetcher":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# Steps whose batch indices and flip coins one TensorFlow call computes for DeviceBatches: an eager
# call per step costs more than the gather it feeds (benchmarks/RESULTS.md, "Input pipeline").
_INDEX_CHUNK = 128


def _take(images: jax.Array, labels: jax.Array, index: jax.Array, flip: jax.Array,
          i: jax.Array) -> dict[str, jax.Array]:
  """Batch i of a chunk: rows index[i] of the split, mirrored where flip[i]."""
  index, flip = index[i], flip[i]
  x = images[index]
  return {"image": jnp.where(flip[:, None, None, None], x[:, :, ::-1], x), "label": labels[index]}


class DeviceBatches:
  """Global training batches gathered on the devices from a whole preprocessed split kept there.

  `data.on_device`: the same batches as the host pipeline's in-memory path (same shuffle,
  same flips, from the same (seed, step)), but only batch indices and flip coins cross from
  the host, `_INDEX_CHUNK` steps at a time; the images never do. Single-process runs only.
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray, data_config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh, *, batch_size: int, seed: int, start_step: int):
    replicated = parallel.replicated(mesh)
    self._images = jax.device_put(images, replicated)
    self._labels = jax.device_put(labels, replicated)
    self._chunk_sharding = parallel.batch_sharded(mesh, batch_axis=1)  # [steps, batch]: batch split
    self._take = jax.jit(_take, out_shardings=parallel.batch_sharded(mesh))
    n, flip = len(images), data_config.random_flip

    @tf.function(input_signature=[tf.TensorSpec([], tf.int64)])
    def chunk(first):
      positions = tf.range(first * batch_size, (first + _INDEX_CHUNK) * batch_size, dtype=tf.int64)
      index = tf.reshape(_shuffled_indices(positions, n, seed), [_INDEX_CHUNK, batch_size])
      if not flip:
        return index, tf.zeros([_INDEX_CHUNK, batch_size], tf.bool)
      coins = tf.map_fn(lambda step: _flip_coins(batch_size, step, seed, 0, 1),
                        tf.range(first, first + _INDEX_CHUNK), fn_output_signature=tf.bool)
      return index, coins

    self._chunk_fn = chunk
    self._step, self._chunk_start, self._chunk = start_step, None, None

  def __iter__(self) -> "DeviceBatches":
    return self

  def __next__(self) -> dict[str, jax.Array]:
    if self._chunk is None or self._step >= self._chunk_start + _INDEX_CHUNK:
      self._chunk_start = self._step
      index, coins = self._chunk_fn(tf.constant(self._step, tf.int64))
      self._chunk = jax.device_put((index.numpy(), coins.numpy()), self._chunk_sharding)
    i = self._step - self._chunk_start
    self._step += 1
    return self._take(self._images, self._labels, *self._chunk, i)

  def close(self) -> None:
    """Nothing to stop (no thread); here so it can stand in for a MeshPrefetcher."""

  def __enter__(self) -> "DeviceBatches":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def device_batches(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, start_step: int,
                    max_bytes: int = _MAX_IN_MEMORY_BYTES) -> DeviceBatches:
  """The whole split preprocessed once and put on the devices (`data.on_device`); UserError if it does not fit."""
  data_config = config.data
  if jax.process_count() > 1:
    raise UserError(f"data.on_device=True supports single-process runs; this run has "
                    f"{jax.process_count()} processes: use data.on_device=False")
  builder = dataset_builder(data_config)
  n = _num_examples(builder, data_config.split)
  where = f"data.on_device=True: split {data_config.split!r} of {builder.name!r}"
  if not fits_in_memory(builder, data_config.split, max_bytes):
    raise UserError(f"{where} is too big to decode into memory; use data.on_device=False")
  size = n * data_config.image_size ** 2 * data_config.channels * 4
  if size > max_bytes:
    raise UserError(f"{where} needs {size / 2**20:,.1f} MiB on each device, over the "
                    f"{max_bytes / 2**20:,.1f} MiB limit; use data.on_device=False")
  raw, labels = _load_split(builder, data_config.split)
  # Preprocessed in chunks: one tf.image.resize over a whole split would hold it all in float32 twice.
  images = np.concatenate([
      preprocess(tf.constant(raw[i:i + 4096]), data_config.image_size, data_config.channels).numpy()
      for i in range(0, n, 4096)])
  return DeviceBatches(images, labels, data_config, mesh, batch_size=config.train.batch_size,
                       seed=config.seed, start_step=start_step)


def create_train_iterator(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *,
                          start_step: int = 0) -> MeshPrefetcher | DeviceBatches:
  """Global training batches split over every device of the mesh, from `start_step` on."""
  if config.data.on_device:
    return device_batches(config, mesh, start_step)
  process_count = jax.process_count()
  if config.train.batch_size % process_count:
    raise UserError(f"config.train.batch_size={config.train.batch_size} is not valid: it must be "
                    f"divisible by the process count ({process_count})")
  batches = local_batches(config.data, batch_size=config.train.batch_size // process_count,
                          seed=config.seed, start_step=start_step,
                          process_index=jax.process_index(), process_count=process_count)
  return MeshPrefetcher(batches, mesh, _DEVICE_PREFETCH)


def load_examples(data_config: ml_collections.ConfigDict, split: str,
                  num: int) -> tuple[np.ndarray, np.ndarray]:
  """The first `num` images (float32 [num,H,W,C] in [-1,1]) and int32 labels of a split, unshuffled."""
  if data_config.dataset == "synthetic":
    from aigc_jax.data.synthetic import synthetic_batches
    batch = next(iter(synthetic_batches(data_config, batch_size=num, seed=0, start_step=0,
                                        process_index=0)))
    return np.asarray(batch["image"], np.float32), np.asarray(batch["label"], np.int32)
  builder = dataset_builder(data_config)
  available = _num_examples(builder, split)
  if not 0 < num <= available:
    raise UserError(f"cannot take {num} images from split {split!r} of {builder.name!r}: "
                    f"it holds {available}")
  # take() rather than a "split[:num]" string, which can't be applied to an already sliced split.
  data = builder.as_dataset(split=split, shuffle_files=False).take(num).batch(num).get_single_element()
  images = preprocess(data["image"], data_config.image_size, data_config.channels)
  return images.numpy(), _labels(data).numpy()


def load_images(data_config: ml_collections.ConfigDict, split: str, num: int) -> np.ndarray:
  """The first `num` images of a split, float32 [num,H,W,C] in [-1,1], unshuffled."""
  return load_examples(data_config, split, num)[0]


def reference_batches(data_config: ml_collections.ConfigDict, split: str, num: int | None = None,
                      batch_size: int = 1000) -> Iterator[np.ndarray]:
  """The first `num` images of a split (default: all of it), unshuffled, as float32 batches in [-1,1].

  Streamed, so a whole split is never held in memory at once.
  """
  if data_config.dataset == "synthetic":
    if num is None:
      raise UserError("data.dataset='synthetic' is an endless stream; state the number of reference images")
    yield load_images(data_config, split, num)
    return
  builder = dataset_builder(data_config)
  available = _num_examples(builder, split)
  num = available if num is None else num
  if not 0 < num <= available:
    raise UserError(f"cannot take {num} images from split {split!r} of {builder.name!r}: "
                    f"it holds {available}")
  size, channels = data_config.image_size, data_config.channels
  images = (builder.as_dataset(split=split, shuffle_files=False).take(num).batch(batch_size)
            .map(lambda examples: preprocess(examples["image"], size, channels)))
  yield from images.as_numpy_iterator()


def split_digest(data_config: ml_collections.ConfigDict, split: str) -> str:
  """SHA-256 of the prepared records a split is read from and of how its images are preprocessed.

  A changed source (another IDX folder's files, a re-prepared dataset) changes the records.
  """
  if data_config.dataset == "synthetic":
    raise UserError("data.dataset='synthetic' has no prepared files")
  builder = dataset_builder(data_config)
  _num_examples(builder, split)  # one line for an unknown split
  h = hashlib.sha256(f"{builder.info.full_name}|{split}|{data_config.image_size}|{data_config.channels}".encode())
  for instruction in builder.info.splits[split].file_instructions:
    h.update(f"|{instruction.filename.rsplit('/', 1)[-1]}:{instruction.skip}:{instruction.take}|".encode())
    with tf.io.gfile.GFile(instruction.filename, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
  return h.hexdigest()


def dataset_size(data_config: ml_collections.ConfigDict, split: str) -> int:
  """Number of examples in `split` of the configured dataset."""
  if data_config.dataset == "synthetic":
    raise UserError("data.dataset='synthetic' is an endless stream; it has no split size")
  return _num_examples(dataset_builder(data_config), split)
