"""Synthetic batches: shapes, range, labels, determinism and exact resume."""

import itertools

import numpy as np
import pytest
from sklearn.datasets import load_digits

from aigc_jax.config import base_config
from aigc_jax.data.synthetic import digit_images, synthetic_batches
from aigc_jax.errors import UserError


def _config(source, size=16, channels=1, spec=""):
  c = base_config().data
  c.dataset, c.synthetic_source, c.image_size, c.channels, c.synthetic_spec = "synthetic", source, size, channels, spec
  return c


def _take(config, n, **kw):
  return list(itertools.islice(synthetic_batches(config, batch_size=6, **kw), n))


def test_digit_images_are_sklearn_digits_rescaled():
  images, labels = digit_images(8, 1)
  ref = load_digits()
  np.testing.assert_allclose(images[..., 0], ref.images / 8.0 - 1.0, atol=1e-6)
  np.testing.assert_array_equal(labels, ref.target)
  big, _ = digit_images(16, 3)
  assert big.shape == (1797, 16, 16, 3) and np.all(big[..., 0] == big[..., 2])
  np.testing.assert_allclose(big[:, ::2, ::2].mean(), images.mean(), atol=0.05)


@pytest.mark.parametrize("source, channels", [("digits", 1), ("noise", 3)])
def test_batches_shapes_range_and_resume(source, channels):
  config = _config(source, channels=channels)
  run = _take(config, 3, seed=5, start_step=0)
  for b in run:
    assert b["image"].shape == (6, 16, 16, channels) and b["image"].dtype == np.float32
    assert b["label"].shape == (6,) and b["label"].dtype == np.int32
    assert b["image"].min() >= -1.0 and b["image"].max() <= 1.0 and b["image"].std() > 0.1
  assert not np.allclose(run[0]["image"], run[1]["image"])
  resumed = _take(config, 2, seed=5, start_step=1)
  for a, b in zip(run[1:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  other = _take(config, 1, seed=5, start_step=0, process_index=1)[0]
  assert not np.allclose(other["image"], run[0]["image"])
  assert not np.allclose(_take(config, 1, seed=6, start_step=0)[0]["image"], run[0]["image"])


def test_identity_spec_gives_the_source_digits():
  config = _config("digits", size=8, spec="translate(0)")
  batch = _take(config, 1, seed=0, start_step=0)[0]
  images, labels = digit_images(8, 1)
  for img, label in zip(batch["image"], batch["label"]):
    matches = np.flatnonzero(np.all(np.abs(images - img) < 1e-5, axis=(1, 2, 3)))
    assert len(matches) and labels[matches[0]] == label


def test_bad_source_or_spec_is_a_user_error():
  with pytest.raises(UserError, match="synthetic_source"):
    _take(_config("photos"), 1, seed=0, start_step=0)
  with pytest.raises(UserError, match="valid ops"):
    _take(_config("digits", spec="twirl(3)"), 1, seed=0, start_step=0)
