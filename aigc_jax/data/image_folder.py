"""`image_folder`: your own images (a folder or a .zip) as a TFDS dataset, prepared once.

The builder decodes every PNG, JPEG, WebP and BMP file (`aigc_jax.image_files`) with
`images.read_image` (EXIF orientation, palette, alpha, 16-bit, CMYK), converts it to
`data.channels`, crops and resizes it to `data.image_size` (`images.fit_square`) and stores it
losslessly, in sorted path order, as one "train" split: from then on it is served like any other
TFDS dataset (per-process slices, shuffling, exact resume, `data.on_device`). With
`data.labels='folders'` each image's label is its first-level subfolder, numbered in sorted
order. The builder config is named after a key of the files (paths, sizes, mtimes or zip CRCs)
and of the settings that shape the stored images, so a changed folder is prepared anew and an
unchanged one never again.

A file that cannot be read stops the preparation with one line naming it, unless
`data.skip_bad_images`: then it is left out and recorded in the dataset's metadata, and
`skip_report` says how many were and names the first few.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
import warnings

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from aigc_jax import image_files, images
from aigc_jax.errors import UserError

# Files decoded per round of the thread pool (PIL releases the GIL while it decodes): enough to
# keep every core busy, few enough that a round of 256 px images stays small in memory.
_CHUNK = 256
_NAMED = 3  # unreadable files named in the skip report


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
  """What `ImageFolder` prepares: which files, and how each becomes a stored image."""

  folder: str = ""
  image_size: int = 0
  channels: int = 0
  crop: str = "center"
  background: tuple[int, int, int] = (255, 255, 255)
  max_pixels: int = images.MAX_PIXELS
  skip_bad_images: bool = False
  class_names: tuple[str, ...] = ()


def folder_config(data_config: ml_collections.ConfigDict) -> FolderConfig:
  """The builder config of `data_config.folder` as the data settings would store it."""
  folder = data_config.folder
  files = image_files.list_images(folder)
  if not files:
    raise UserError(f"config.data.folder={folder!r} holds no PNG, JPEG, WebP or BMP images")
  names = image_files.class_names(folder, files) if data_config.labels == "folders" else ()
  settings = dict(image_size=data_config.image_size, channels=data_config.channels,
                  crop=data_config.crop, background=images.parse_color(data_config.background),
                  max_pixels=data_config.max_pixels, class_names=names)
  # Not skip_bad_images: a folder without unreadable files gives the same dataset either way, and
  # one prepared with files left out is refused by `check_left_out` unless they may be.
  key = image_files.content_key(files, str(ImageFolder.VERSION), sorted(settings.items()))
  real = os.path.realpath(folder)
  stem = re.sub(r"[^a-z0-9]+", "_", os.path.basename(real).lower()).strip("_") or "folder"
  return FolderConfig(name=f"{stem}_{data_config.image_size}px_{key[:12]}",
                      description=f"images from {real}", folder=real,
                      skip_bad_images=data_config.skip_bad_images, **settings)


def _unreadable(folder: str, error: images.UnreadableImage) -> UserError:
  return UserError(f"config.data.folder={folder!r}: {error}; fix or remove it, or set "
                   "data.skip_bad_images=True to leave unreadable files out")


def _decode(config: FolderConfig, open_file, path: str) -> np.ndarray | images.UnreadableImage:
  """The stored image of one file, or the reason it cannot be read (returned, not raised)."""
  try:
    image = images.read_image(open_file(path), name=path, channels=config.channels,
                              background=config.background, max_pixels=config.max_pixels,
                              formats=image_files.FORMATS, target_size=config.image_size)
    return images.fit_square(image, config.image_size, config.crop)
  except images.UnreadableImage as e:
    return e
  except Exception as e:  # noqa: BLE001  a zip member that does not inflate (BadZipFile, zlib.error)
    return images.UnreadableImage(path, f"{type(e).__name__}: {e}")


class ImageFolder(tfds.core.GeneratorBasedBuilder):
  """A folder or .zip of PNG, JPEG, WebP and BMP images: one "train" split, labelled by subfolder."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _create_builder_config(self, builder_config, version):
    # Each folder brings its own config, never one of BUILDER_CONFIGS, which TFDS would warn
    # about ("Using custom data configuration") every time the dataset is opened.
    del version
    return builder_config

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    features = {"image": tfds.features.Image(shape=(config.image_size, config.image_size,
                                                    config.channels))}
    if config.class_names:
      features["label"] = tfds.features.ClassLabel(names=list(config.class_names))
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features),
        # Sorted path order, so "the first N images" means the first N files.
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # The files are the user's own, already on disk.
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    config = self.builder_config
    files = image_files.list_images(config.folder)
    labels = {name: i for i, name in enumerate(config.class_names)}
    skipped, count = [], 0
    with (image_files.opener(config.folder) as open_file,
          concurrent.futures.ThreadPoolExecutor() as pool,
          warnings.catch_warnings()):
      # data.max_pixels is the limit; PIL's own warning below its hard limit would be a second line.
      from PIL import Image
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      for start in range(0, len(files), _CHUNK):
        chunk = [f.path for f in files[start:start + _CHUNK]]
        for path, result in zip(chunk, pool.map(lambda p: _decode(config, open_file, p), chunk)):
          if isinstance(result, images.UnreadableImage):
            if not config.skip_bad_images:
              raise _unreadable(config.folder, result)
            skipped.append([path, result.reason])
            continue
          example = {"image": result}
          if labels:
            example["label"] = labels[image_files.label_of(path)]
          yield count, example
          count += 1
    if not count:
      raise UserError(f"config.data.folder={config.folder!r}: none of its {len(files)} images can be "
                      f"read ({skipped[0][0]!r}: {skipped[0][1]})")
    self.info.metadata.update(num_files=len(files), skipped=skipped)


def check_left_out(builder: tfds.core.DatasetBuilder, skip_bad_images: bool) -> str | None:
  """One line on the files the preparation left out (None if none); UserError if none may be.

  Says how many and names the first few.
  """
  skipped = builder.info.metadata.get("skipped") or []
  folder = builder.builder_config.folder
  if not skipped:
    return None
  if not skip_bad_images:  # prepared by an earlier run that set data.skip_bad_images=True
    raise _unreadable(folder, images.UnreadableImage(*skipped[0]))
  named = "; ".join(f"{path} ({reason})" for path, reason in skipped[:_NAMED])
  more = f"; and {len(skipped) - _NAMED} more" if len(skipped) > _NAMED else ""
  return (f"data.skip_bad_images: left out {len(skipped)} of the {builder.info.metadata['num_files']} "
          f"images in {folder!r}, which cannot be read: {named}{more}")
