"""From images to metrics: streaming feature summaries, cached reference sets, the metric table.

A `SetSummary` holds what the metrics need of one image set: float64 running
feature statistics (any number of samples), the style Gram sum, the logits, and
the first `max_kept` feature rows for the sample-based metrics (KID, PR/DC,
diversity). Reference summaries are cached as .npz with their covariance root,
so a later FID against them skips the expensive matrix square root.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
from typing import Callable, Iterable

import jax
import ml_collections
import numpy as np

from aigc_jax import checkpoints
from aigc_jax import config as config_lib
from aigc_jax.errors import UserError
from aigc_jax.evaluation import features as features_lib
from aigc_jax.evaluation import metrics

MAX_KEPT = 10_000  # feature rows kept for KID, PR/DC and diversity (10k x 2048 float32 = 80 MB)


@dataclasses.dataclass
class SetSummary:
  """Everything the metrics need of one image set."""
  stats: metrics.FeatureStats
  gram_sum: np.ndarray
  features: np.ndarray
  logits: np.ndarray
  sqrt_cov: np.ndarray | None = None

  @property
  def count(self) -> int:
    """Number of images summarised."""
    return self.stats.count

  def with_sqrt_cov(self) -> "SetSummary":
    """This summary with its covariance square root computed (for cached references)."""
    if self.sqrt_cov is None:
      self.sqrt_cov = metrics.sqrtm_psd(self.stats.cov)
    return self

  def to_bytes(self) -> bytes:
    """The summary (and the covariance root, if computed) as .npz bytes."""
    arrays = {"count": np.asarray(self.stats.count), "shift": self.stats.shift, "sum": self.stats.sum,
              "outer": self.stats.outer, "gram_sum": self.gram_sum, "features": self.features,
              "logits": self.logits}
    if self.sqrt_cov is not None:
      arrays["sqrt_cov"] = self.sqrt_cov
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()

  @classmethod
  def from_bytes(cls, data: bytes) -> "SetSummary":
    """Reads a summary written by `to_bytes`."""
    with np.load(io.BytesIO(data)) as d:
      stats = metrics.FeatureStats(int(d["count"]), d["shift"], d["sum"], d["outer"])
      return cls(stats, d["gram_sum"], d["features"], d["logits"],
                 d["sqrt_cov"] if "sqrt_cov" in d.files else None)


def summarize(extractor: features_lib.Extractor, batches: Iterable, *, max_kept: int = MAX_KEPT,
              progress: Callable[[int], None] | None = None) -> SetSummary:
  """Extracts features of image batches ([B,H,W,C] in [-1,1]) into a `SetSummary`.

  Batches are re-cut to the extractor's batch size and the last chunk is padded,
  so the extractor compiles once whatever sizes come in. `progress(n)` is called
  with the number of images done after each chunk.
  """
  stats, gram_sum, kept, logits = None, None, [], []
  num_kept = 0
  size = extractor.batch_size
  for batch in batches:
    batch = np.asarray(batch, np.float32)
    for start in range(0, batch.shape[0], size):
      chunk = batch[start:start + size]
      n = chunk.shape[0]
      valid = np.zeros(size, np.float32)
      valid[:n] = 1.0
      if n < size:
        chunk = np.concatenate([chunk, np.zeros((size - n,) + chunk.shape[1:], np.float32)])
      out = jax.device_get(extractor.apply(chunk, valid))
      feats = out["features"][:n]
      if stats is None:
        stats = metrics.FeatureStats.empty(feats.shape[1])
        gram_sum = np.zeros(out["gram_sum"].shape)
      stats.update(feats)
      gram_sum += out["gram_sum"]
      logits.append(out["logits"][:n])
      if num_kept < max_kept:
        kept.append(feats[:max_kept - num_kept])
        num_kept += kept[-1].shape[0]
      if progress is not None:
        progress(n)
  if stats is None:
    raise UserError("no images to evaluate")
  return SetSummary(stats, gram_sum, np.concatenate(kept), np.concatenate(logits))


def compute_metrics(fake: SetSummary, real: SetSummary, labels=None, *, kid_subsets: int = 100,
                    kid_subset_size: int = 1000) -> dict[str, float]:
  """All metrics of generated `fake` against `real`; class consistency when `labels` are given.

  The KID subset size is capped at the number of generated samples kept.
  """
  if real.count < 2 or fake.count < 2:
    raise UserError("evaluation needs at least 2 generated and 2 reference images")
  real = real.with_sqrt_cov()
  result = {"fid": metrics.frechet_distance(real.stats.mean, real.stats.cov, fake.stats.mean,
                                            fake.stats.cov, sqrt_sigma1=real.sqrt_cov)}
  subset = min(kid_subset_size, fake.features.shape[0])
  if real.features.shape[0] < subset:
    raise UserError(f"KID needs {subset} reference images (one per generated sample, up to "
                    f"{kid_subset_size}); the reference set has {real.features.shape[0]}")
  result.update(metrics.kernel_inception_distance(real.features, fake.features, kid_subsets, subset))
  result.update(metrics.precision_recall_density_coverage(real.features, fake.features))
  result.update(metrics.diversity(real.features, fake.features))
  result.update(metrics.inception_score(fake.logits, splits=min(10, fake.count)))
  result["style_gram_distance"] = metrics.gram_distance(fake.gram_sum / fake.count,
                                                        real.gram_sum / real.count)
  if labels is not None:
    result["class_consistency"] = metrics.class_consistency(fake.logits, labels)
  return result


def parse_reference(reference: str | None, data_config: ml_collections.ConfigDict
                    ) -> ml_collections.ConfigDict:
  """Data config for "DATASET:SPLIT" (default: the run's dataset and eval split), with `split` set."""
  config = ml_collections.ConfigDict(data_config.to_dict())
  if reference:
    dataset, sep, split = reference.partition(":")
    if not sep or not dataset or not split:
      raise UserError(f"--reference={reference!r} must look like DATASET:SPLIT (e.g. digits:train)")
    if dataset not in config_lib.DATASETS:
      raise UserError(f"--reference={reference!r} names an unknown dataset; choose one of "
                      f"{', '.join(config_lib.DATASETS)}")
    config.dataset = dataset
  else:
    split = data_config.eval_split
  config.split = split
  return config


def _cache_name(extractor: str, data_config: ml_collections.ConfigDict, num: int) -> str:
  # The hash covers what else picks the images (which IDX or image folder, which synthetic spec), so two
  # reference sets that share a dataset name never share a cache file.
  source = json.dumps([data_config.get(k) for k in ("manual_dir", "channels", "synthetic_source",
                                                    "synthetic_spec", "folder", "crop", "background")])
  digest = hashlib.sha256(source.encode()).hexdigest()[:8]
  name = f"{extractor}_{data_config.dataset}_{data_config.split}_{data_config.image_size}px_{num}_{digest}"
  return "reference_" + re.sub(r"[^A-Za-z0-9_.-]+", "-", name) + ".npz"


def reference_summary(extractor: features_lib.Extractor, data_config: ml_collections.ConfigDict,
                      num: int, cache_dir: str | None = None) -> SetSummary:
  """Summary of the first `num` images of `data_config.split`, cached in `cache_dir` if given."""
  path = cache_dir and checkpoints.join(cache_dir, _cache_name(extractor.name, data_config, num))
  cached = checkpoints.read_file(path) if path else None
  if cached is not None:
    return SetSummary.from_bytes(cached)
  from aigc_jax import data  # TensorFlow loads only when a reference set is really needed.
  reference = data.load_images(data_config, data_config.split, num)
  summary = summarize(extractor, [reference]).with_sqrt_cov()
  if path:
    checkpoints.write_file(path, summary.to_bytes())
  return summary


def generated_summary(extractor: features_lib.Extractor, generate_fn: Callable, key: jax.Array,
                      num: int, *, batch_size: int = 500, num_classes: int = 0,
                      progress: Callable[[int], None] | None = None) -> tuple[SetSummary, np.ndarray | None]:
  """Summary of `num` generated images; conditional models get labels 0, 1, ... cyclically.

  `generate_fn(key, n)` (or `generate_fn(key, n, labels)` when `num_classes` > 0)
  returns [n,H,W,C] images in [-1,1]; batch i uses `fold_in(key, i)`.
  """
  labels = np.arange(num) % num_classes if num_classes else None

  def batches():
    for i, start in enumerate(range(0, num, batch_size)):
      n = min(batch_size, num - start)
      batch_key = jax.random.fold_in(key, i)
      if labels is None:
        yield generate_fn(batch_key, n)
      else:
        yield generate_fn(batch_key, n, labels[start:start + n])

  return summarize(extractor, batches(), progress=progress), labels


def evaluate_generator(config: ml_collections.ConfigDict, generate_fn: Callable, *, num_samples: int,
                       extractor: str | features_lib.Extractor = "digits", cache_dir: str | None = None,
                       reference: str | None = None, key: jax.Array | None = None,
                       progress: Callable[[int], None] | None = None) -> dict[str, float]:
  """Generates `num_samples` images with `generate_fn` and scores them against the reference set.

  `reference` is "DATASET:SPLIT" (default: config.data.dataset and eval_split);
  its summary is cached in `cache_dir`. `key` defaults to `jax.random.key(config.seed)`,
  so repeated evaluations of a run see the same latent noise.
  """
  if isinstance(extractor, str):
    extractor = features_lib.get_extractor(extractor)
  data_config = parse_reference(reference, config.data)
  key = jax.random.key(config.seed) if key is None else key
  fake, labels = generated_summary(extractor, generate_fn, key, num_samples,
                                   num_classes=config.model.num_classes, progress=progress)
  real = reference_summary(extractor, data_config, num_samples, cache_dir)
  return compute_metrics(fake, real, labels)
