"""`digits`: the 1,797 real 8x8 handwritten digits that scikit-learn ships, as a TFDS builder.

Nothing is downloaded: the images come from `sklearn.datasets.load_digits`, so a fresh
machine can train on real images offline.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

# scikit-learn stores ink as 0..16; this maps it onto the full uint8 range.
_SKLEARN_MAX = 16


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
  """Returns scikit-learn's digits as uint8 images [1797,8,8,1] (0..255) and int64 labels."""
  from sklearn.datasets import load_digits
  data = load_digits()
  images = np.rint(data.images * (255.0 / _SKLEARN_MAX)).astype(np.uint8)[..., None]
  return images, data.target.astype(np.int64)


class Digits(tfds.core.GeneratorBasedBuilder):
  """The UCI/scikit-learn 8x8 handwritten digits (one "train" split of 1,797 images)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        # Keep the source order, so "the first N images of a split" means what users expect.
        disable_shuffling=True,
        homepage="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Offline: the data ships with scikit-learn.
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    images, labels = digits_uint8()
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": int(label)}
