"""Reference sets to score against: a dataset split, a folder of images, or a statistics file.

`--reference` names one of them: "DATASET:SPLIT" (the whole split unless a number is stated),
a folder (all its images, read as pytorch-fid and clean-fid read them), or an `.npz` of `mu`
and `sigma` (pytorch-fid's, EDM's, clean-fid's; against it only FID is defined). Summaries
of images are cached under a name that hashes the reference's contents (the prepared records
of a split, the bytes of a folder's files), the extractor's fingerprint (name, resize rule,
weights) and the number of images. With several processes, process 0 alone computes and
writes the cache and the others read it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Callable

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from aigc_jax import checkpoints
from aigc_jax import config as config_lib
from aigc_jax.errors import UserError
from aigc_jax.evaluation import features as features_lib
from aigc_jax.evaluation import image_folder, stats_file
from aigc_jax.evaluation.summary import SetSummary, as_saved, summarize

_NAME_BYTES = 512  # room for a cache file name broadcast from process 0


@dataclasses.dataclass(frozen=True)
class Reference:
  """A parsed `--reference`: `kind` is "dataset" (with `data_config`), "folder" or "stats" (with `path`)."""
  kind: str
  label: str
  path: str | None = None
  data_config: ml_collections.ConfigDict | None = None


def parse_reference(reference: str | None, data_config: ml_collections.ConfigDict
                    ) -> ml_collections.ConfigDict:
  """Data config for "DATASET:SPLIT" (default: the run's dataset and eval split), with `split` set."""
  config = ml_collections.ConfigDict(data_config.to_dict())
  if reference:
    dataset, sep, split = reference.partition(":")
    if not sep or not dataset or not split:
      raise UserError(f"--reference={reference!r} is not a folder, an .npz statistics file or "
                      "DATASET:SPLIT (e.g. digits:train)")
    if dataset not in config_lib.DATASETS:
      raise UserError(f"--reference={reference!r} names an unknown dataset; choose one of "
                      f"{', '.join(config_lib.DATASETS)}")
    config.dataset = dataset
  else:
    split = data_config.eval_split
  config.split = split
  return config


def parse(reference: str | None, data_config: ml_collections.ConfigDict,
          manual_dir: str | None = None) -> Reference:
  """What `--reference` names: an .npz statistics file, a folder, or DATASET:SPLIT of `data_config`.

  `manual_dir` replaces a dataset reference's IDX folder (data.dataset "mnist_idx").
  """
  if reference and reference.endswith(".npz"):
    return Reference("stats", reference, path=reference)
  if reference and os.path.isdir(reference):
    return Reference("folder", reference, path=reference)
  config = parse_reference(reference, data_config)
  if manual_dir is not None:
    config.manual_dir = os.path.abspath(manual_dir)
  return Reference("dataset", f"{config.dataset}:{config.split}", data_config=config)


def cache_name(extractor: features_lib.Extractor, label: str, num: int | None, content_digest: str) -> str:
  """The reference cache's file name for these contents, extractor and sample count."""
  key = hashlib.sha256(f"{content_digest}|{extractor.fingerprint}|{num}".encode()).hexdigest()[:16]
  name = f"{extractor.name}_{label}_{'all' if num is None else num}_{key}"
  return "reference_" + re.sub(r"[^A-Za-z0-9_.-]+", "-", name) + ".npz"


def _broadcast_name(name: str) -> str:
  """Process 0's `name` on every process ("" where process 0 had none)."""
  raw = name.encode()
  if len(raw) > _NAME_BYTES:
    raise UserError(f"reference cache name {name!r} is longer than {_NAME_BYTES} bytes")
  buf = np.zeros(_NAME_BYTES, np.uint8)
  buf[:len(raw)] = np.frombuffer(raw, np.uint8)
  got = np.asarray(multihost_utils.broadcast_one_to_all(buf))
  return bytes(got).rstrip(b"\0").decode()


def _read_or_compute(path: str, compute: Callable[[], SetSummary]) -> SetSummary:
  cached = checkpoints.read_file(path)
  if cached is not None:
    return SetSummary.from_bytes(cached)
  summary = compute()
  checkpoints.write_file(path, summary.to_bytes())
  return summary


def shared_summary(cache_dir: str | None, describe: Callable[[], str],
                   compute: Callable[[], SetSummary]) -> SetSummary:
  """The summary cached in `cache_dir` as `describe()`, computed by `compute()` and written if absent.

  With several processes, process 0 alone names, computes and writes it; the others wait for
  the name from process 0 (broadcast once the file is written) and read the file, so the
  cache folder must be shared (as the workdir already is for checkpoints). Without a cache
  folder every process computes its own.
  """
  if cache_dir is None:
    return compute()
  if jax.process_count() == 1:
    return _read_or_compute(checkpoints.join(cache_dir, describe()), compute)
  summary, failure, name = None, None, ""
  if jax.process_index() == 0:
    try:
      name = describe()
      summary = _read_or_compute(checkpoints.join(cache_dir, name), compute)
    except UserError as e:
      failure, name = e, ""
  name = _broadcast_name(name)
  if failure is not None:
    raise failure
  if not name:
    raise UserError("process 0 could not compute the reference statistics (its error is in its output)")
  if summary is not None:
    return summary
  path = checkpoints.join(cache_dir, name)
  cached = checkpoints.read_file(path)
  if cached is None:
    raise UserError(f"process {jax.process_index()} cannot read {path!r}, written by process 0: "
                    "the workdir must be shared by all processes")
  return SetSummary.from_bytes(cached)


def reference_summary(extractor: features_lib.Extractor, data_config: ml_collections.ConfigDict,
                      num: int | None = None, cache_dir: str | None = None) -> SetSummary:
  """Summary of the first `num` images of `data_config.split` (default: all), cached in `cache_dir`.

  Images are quantised to uint8 first, as a dataset written to PNG files would hold them.
  A synthetic stream has no split: its `num` must be given.
  """
  split = data_config.split

  def describe() -> str:
    from aigc_jax import data  # TensorFlow loads only when a reference set is really needed.
    if data_config.dataset == "synthetic":  # the images are a function of these settings
      digest = json.dumps([data_config.get(k) for k in ("synthetic_source", "synthetic_spec",
                                                        "image_size", "channels")])
    else:
      digest = data.split_digest(data_config, split)
    return cache_name(extractor, f"{data_config.dataset}_{split}_{data_config.image_size}px", num, digest)

  def compute() -> SetSummary:
    from aigc_jax import data
    batches = (as_saved(b) for b in data.reference_batches(data_config, split, num))
    return summarize(extractor, batches, keep_logits=False).with_sqrt_cov()

  return shared_summary(cache_dir, describe, compute)


def folder_paths(folder: str, num: int | None = None) -> list[str]:
  """The first `num` (default: all) image files of `folder`, in sorted order."""
  paths = image_folder.list_images(folder)
  if num is not None and not 0 < num <= len(paths):
    raise UserError(f"cannot take {num} images from {folder!r}: it holds {len(paths)}")
  return paths if num is None else paths[:num]


def folder_summary(extractor: features_lib.Extractor, folder: str, num: int | None = None,
                   cache_dir: str | None = None) -> SetSummary:
  """Summary of the first `num` (default: all) images of a reference folder, cached in `cache_dir`."""
  paths = folder_paths(folder, num)

  def describe() -> str:
    label = "folder_" + os.path.basename(os.path.normpath(folder))
    return cache_name(extractor, label, num, image_folder.files_digest(paths, folder))

  def compute() -> SetSummary:
    batches = image_folder.image_batches(paths, extractor.channels)
    return summarize(extractor, batches, keep_logits=False).with_sqrt_cov()

  return shared_summary(cache_dir, describe, compute)


def load_reference(extractor: features_lib.Extractor, reference: Reference, *, num: int | None = None,
                   cache_dir: str | None = None, save_stats: str | None = None) -> SetSummary:
  """The summary of `reference` (`num` images of it; default: all); its statistics to `save_stats`.

  `save_stats` gets pytorch-fid's .npz (mu, sigma); its path is checked before any work.
  """
  if save_stats is not None:
    stats_file.check_new(save_stats)
  if reference.kind == "stats":
    if num is not None:
      raise UserError(f"a statistics file has no images to take {num} of: {reference.path!r}")
    mu, sigma = stats_file.read_stats(reference.path, extractor.feature_dim)
    real = SetSummary.from_moments(mu, sigma)
  elif reference.kind == "folder":
    real = folder_summary(extractor, reference.path, num, cache_dir)
  else:
    real = reference_summary(extractor, reference.data_config, num, cache_dir)
  if save_stats is not None and jax.process_index() == 0:
    stats_file.write_stats(save_stats, real.stats.mean, real.stats.cov)
  return real


def save_reference_stats(extractor: features_lib.Extractor, reference: str | None, path: str, *,
                         num: int | None = None) -> SetSummary:
  """Writes the statistics of a folder reference (or an .npz, converted) to `path` in pytorch-fid's format."""
  ref = parse(reference, config_lib.base_config().data) if reference else None
  if ref is None or ref.kind == "dataset":
    raise UserError("--save_stats without --workdir reads --reference=DIR (or an .npz); a DATASET:SPLIT "
                    "reference takes its image size from a run: add --workdir=RUN")
  return load_reference(extractor, ref, num=num, save_stats=path)
