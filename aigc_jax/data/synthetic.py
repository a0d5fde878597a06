"""Synthetic training data made by the rule-based generators of `aigc_jax.transforms`.

`data.synthetic_source` picks the seed images: "digits" (random transforms of
scikit-learn's 1,797 8x8 digits, labelled by digit) or "noise" (procedural
textures from the key alone, labelled by texture kind). `data.synthetic_spec`
is the transform spec applied on top (empty: a default per source). Batch s
is a pure function of (seed, s, process_index), so a run resumed at step s
sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import functools
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aigc_jax import transforms
from aigc_jax.errors import UserError

SOURCES = ("digits", "noise")
DEFAULT_SPECS = {
    "digits": "rotate(-15,15)|scale(0.85,1.1)|translate(0.08)|elastic(alpha=0.6,sigma=2)",
    "noise": "hflip(p=0.5)|vflip(p=0.5)",
}


@functools.lru_cache(maxsize=4)
def digit_images(size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's digits as float32 [1797,size,size,channels] in [-1, 1] and int32 labels."""
  from sklearn.datasets import load_digits
  digits = load_digits()
  images = digits.images.astype(np.float32) / 8.0 - 1.0  # 0..16 -> [-1, 1]
  images = jax.image.resize(jnp.asarray(images)[..., None], (len(images), size, size, 1), "linear")
  images = np.clip(np.asarray(images), -1.0, 1.0)
  return np.repeat(images, channels, axis=-1), digits.target.astype(np.int32)


@functools.lru_cache(maxsize=8)  # One compile per configuration, however often iterators restart.
def _batch_fn(source: str, spec: str, size: int, channels: int, batch_size: int):
  """The jitted map from a batch key to one batch (image, label) of the configured source."""
  if source not in SOURCES:
    raise UserError(f"config.data.synthetic_source={source!r} is not valid: choose one of {', '.join(SOURCES)}")
  op = transforms.parse_spec(spec or DEFAULT_SPECS[source])
  if source == "noise":
    def make(key):
      k_src, k_op = jax.random.split(key)
      images, labels = transforms.random_textures(k_src, batch_size, size, size, channels)
      return op(k_op, images), labels
    return jax.jit(make)

  images, labels = (jnp.asarray(a) for a in digit_images(size, channels))

  def make_digits(key):
    k_src, k_op = jax.random.split(key)
    idx = jax.random.randint(k_src, (batch_size,), 0, images.shape[0])
    return op(k_op, images[idx]), labels[idx]

  return jax.jit(make_digits)


def synthetic_batches(data_config: ml_collections.ConfigDict, *, batch_size: int, seed: int, start_step: int,
                      process_index: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Yields {"image": float32 [B,H,W,C] in [-1,1], "label": int32 [B]} from step `start_step` on, forever."""
  make = _batch_fn(data_config.synthetic_source, data_config.synthetic_spec, data_config.image_size,
                   data_config.channels, batch_size)
  base = jax.random.fold_in(jax.random.key(seed), process_index)

  def generate():
    step = start_step
    while True:
      images, labels = make(jax.random.fold_in(base, step))
      yield {"image": np.clip(np.asarray(images, np.float32), -1.0, 1.0), "label": np.asarray(labels, np.int32)}
      step += 1

  return generate()
