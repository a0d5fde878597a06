"""LeNet-style digit classifier whose penultimate features drive the digits evaluation."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 28  # the classifier always sees 28 x 28 grayscale digits


def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out, in] bilinear interpolation weights with half-pixel centres (align_corners=False).

  Follows PyTorch's rule: source = (dst + 0.5) * in / out - 0.5, clamped at 0,
  with no anti-aliasing when shrinking.
  """
  scale = in_size / out_size
  src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  weights = np.zeros((out_size, in_size))
  np.add.at(weights, (np.arange(out_size), lo), 1.0 - frac)
  np.add.at(weights, (np.arange(out_size), hi), frac)
  return weights.astype(np.float32)


def resize_bilinear(images: jax.Array, height: int, width: int) -> jax.Array:
  """Resizes NHWC images like torch's F.interpolate(mode="bilinear", align_corners=False)."""
  if images.shape[1:3] == (height, width):
    return images
  wh = jnp.asarray(resize_matrix(images.shape[1], height))
  ww = jnp.asarray(resize_matrix(images.shape[2], width))
  hp = jax.lax.Precision.HIGHEST
  return jnp.einsum("yh,xw,bhwc->byxc", wh, ww, images, precision=hp)


class LeNet(nn.Module):
  """Two 5x5 conv + max-pool stages, a 128-unit hidden layer, and class logits.

  Inputs of any size and channel count are resized to 28 x 28 and averaged to
  gray, so 8 px and 16 px digits datasets share the MNIST-trained weights.
  """
  num_classes: int = 10
  hidden: int = 128
  dropout: float = 0.5

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Returns {"conv": last conv map (style), "features": penultimate layer, "logits"}."""
    x = resize_bilinear(images.astype(jnp.float32), INPUT_SIZE, INPUT_SIZE)
    x = jnp.mean(x, axis=-1, keepdims=True)
    x = nn.max_pool(nn.relu(nn.Conv(32, (5, 5), padding="VALID", name="conv1")(x)), (2, 2), (2, 2))
    conv = nn.relu(nn.Conv(64, (5, 5), padding="VALID", name="conv2")(x))
    x = nn.max_pool(conv, (2, 2), (2, 2)).reshape((images.shape[0], -1))
    features = nn.relu(nn.Dense(self.hidden, name="fc1")(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(features)
    logits = nn.Dense(self.num_classes, name="fc2")(x)
    return {"conv": conv, "features": features, "logits": logits}
