"""Feature extractors: images in [-1, 1] -> features, logits and a style Gram sum, per batch.

"digits": the LeNet digit classifier shipped in `aigc_jax/weights/` (penultimate
128-d features; Gram matrices of its last conv layer). "inception": the FID
Inception-v3 (pool3 2048-d; Gram matrices of Mixed_6e), from a converted local file,
with pytorch-fid's or clean-fid's resize to 299 px. Each extractor carries a
fingerprint of its name, resize rule and weights, which keys cached reference statistics.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
from typing import Any, Callable

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax import images as images_lib, parallel
from aigc_jax.errors import UserError
from aigc_jax.evaluation import inception
from aigc_jax.models.lenet import LeNet

EXTRACTORS = ("digits", "inception")
DIGITS_WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "weights", "lenet_mnist.npz")
INCEPTION_WEIGHTS = os.path.expanduser("~/.cache/aigc_jax/inception_fid.npz")


@dataclasses.dataclass(frozen=True)
class Extractor:
  """`apply(images, valid)` -> {"features" [B,D], "logits" [B,K], "gram_sum" [C,C]}.

  `valid` [B] marks real rows of a padded batch; only they enter the Gram sum.
  `channels`: what image files are converted to for it (1: "L", 3: "RGB").
  `fingerprint`: name, resize rule and a hash of the weights.
  `resize`: the Inception's rule to 299 px (`inception.RESIZE_MODES`); None for the digits.
  """
  name: str
  apply: Callable[[jax.Array, jax.Array], dict[str, jax.Array]]
  batch_size: int
  channels: int
  feature_dim: int
  fingerprint: str
  resize: str | None = None


def weights_digest(flat: dict[str, Any]) -> str:
  """SHA-256 over flat variables' names, dtypes, shapes and bytes (file-format independent)."""
  h = hashlib.sha256()
  for name in sorted(flat):
    value = np.ascontiguousarray(flat[name])
    h.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
    h.update(value.tobytes())
  return h.hexdigest()


def _gram_sum(maps: jax.Array, valid: jax.Array) -> jax.Array:
  """Sum over valid images of each image's channel Gram matrix F^T F / (H W)."""
  b, h, w, c = maps.shape
  flat = maps.reshape(b, h * w, c) * valid[:, None, None]
  return jnp.einsum("bpc,bpd->cd", flat, flat, precision=jax.lax.Precision.HIGHEST) / (h * w)


def save_lenet_params(path: str, params: Any) -> None:
  """Writes LeNet params as a flat .npz ("conv1/kernel", ...), atomically."""
  flat = {name: np.asarray(leaf) for name, leaf in traverse_util.flatten_dict(params, sep="/").items()}
  buf = io.BytesIO()
  np.savez(buf, **flat)
  images_lib.write_bytes_atomic(path, buf.getvalue())


def load_lenet_params(path: str = DIGITS_WEIGHTS) -> dict:
  """Reads LeNet params written by `save_lenet_params`."""
  if not os.path.isfile(path):
    raise UserError(f"digit classifier weights {path!r} not found; train them with "
                    "configs/classifier_mnist.py (see aigc_jax/weights/lenet_mnist.md)")
  with np.load(path) as data:
    return traverse_util.unflatten_dict({k: data[k] for k in data.files}, sep="/")


def digits_extractor(params: Any | None = None, batch_size: int = 1000) -> Extractor:
  """The LeNet extractor (shipped weights unless `params` are given); any digit size works."""
  params = load_lenet_params() if params is None else params
  model = LeNet(num_classes=params["fc2"]["kernel"].shape[-1])
  digest = weights_digest(traverse_util.flatten_dict(params, sep="/"))

  @jax.jit
  def apply(images, valid):
    out = model.apply({"params": params}, images)
    return {"features": out["features"], "logits": out["logits"],
            "gram_sum": _gram_sum(out["conv"], valid)}

  return Extractor("digits", apply, batch_size, channels=1,
                   feature_dim=int(params["fc1"]["kernel"].shape[-1]), fingerprint=f"digits-{digest}")


def inception_extractor(path: str = INCEPTION_WEIGHTS, batch_size: int = 50, resize: str = "pytorch_fid",
                        resize_to: int = inception.FID_SIZE) -> Extractor:
  """The FID Inception extractor from converted weights at `path`, resizing by rule `resize`."""
  if resize not in inception.RESIZE_MODES:
    raise UserError(f"--resize={resize!r}: choose one of {', '.join(inception.RESIZE_MODES)}")
  variables = inception.load_variables(path)
  digest = weights_digest(traverse_util.flatten_dict(variables, sep="/"))
  model = inception.InceptionV3FID(resize_to, resize)

  @functools.partial(jax.jit, compiler_options=parallel.compiler_options(jax.default_backend()))
  def apply(images, valid):
    out = model.apply(variables, images)
    return {"features": out["pool"], "logits": out["logits"],
            "gram_sum": _gram_sum(out["mixed_6e"], valid)}

  return Extractor("inception", apply, batch_size, channels=3, feature_dim=inception.NUM_FEATURES,
                   fingerprint=f"inception-{resize}-{resize_to}px-{digest}", resize=resize)


def get_extractor(name: str, *, inception_weights: str = INCEPTION_WEIGHTS,
                  resize: str = "pytorch_fid") -> Extractor:
  """The extractor called `name` ("digits" or "inception"); UserError for anything else.

  `resize` picks the Inception's rule to 299 px; the digits features always resize bilinearly
  to 28 px, so for them only the default is accepted.
  """
  if name == "digits":
    if resize != "pytorch_fid":
      raise UserError(f"--resize={resize!r} applies to the inception features; the digits features "
                      "resize bilinearly to 28 px")
    return digits_extractor()
  if name == "inception":
    return inception_extractor(os.path.expanduser(inception_weights), resize=resize)
  raise UserError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")
