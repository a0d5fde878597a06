"""The digits builder holds scikit-learn's digits, unshuffled, scaled to 0..255."""

import numpy as np
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from aigc_jax.data import digits  # noqa: F401  (registers the builder)


def test_digits_builder_matches_sklearn(data_dir):
  builder = tfds.builder("digits", data_dir=data_dir)
  builder.download_and_prepare()
  assert builder.info.splits["train"].num_examples == 1797
  assert builder.info.features["label"].num_classes == 10
  data = tfds.as_numpy(builder.as_dataset(split="train", batch_size=-1, shuffle_files=False))
  ref = load_digits()
  assert data["image"].dtype == np.uint8 and data["image"].shape == (1797, 8, 8, 1)
  np.testing.assert_array_equal(data["label"], ref.target)
  # 0..16 ink onto 0..255, computed independently in float64.
  np.testing.assert_array_equal(data["image"][..., 0], np.round(ref.images / 16.0 * 255.0))
  assert data["image"].max() == 255 and data["image"].min() == 0
