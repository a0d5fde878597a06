"""Input data: the offline TFDS builders (`digits`, `mnist_idx`, `image_folder`) and the tf.data pipeline.

Importing this package registers the builders with TFDS. `create_train_iterator` gives
sharded global training batches with exact resume; `load_images` / `load_examples` give the
first images of a split for evaluation; `dataset_size` counts a split.
"""

from aigc_jax.data.pipeline import (create_train_iterator, dataset_size, load_examples,
                                    load_images, local_batches)

__all__ = ["create_train_iterator", "dataset_size", "load_examples", "load_images",
           "local_batches"]
