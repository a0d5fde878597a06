"""What the metrics need of one image set, and how image batches become it.

A `SetSummary` holds float64 running feature statistics (any number of samples), the
style Gram sum, the logits, and the first `max_kept` feature rows for the sample-based
metrics (KID, PR/DC, diversity). One read from a statistics file holds only a mean and a
covariance. Cached summaries carry their covariance root, so a later FID against them
skips the expensive matrix square root.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Callable, Iterable

import jax
import numpy as np

from aigc_jax import images as images_lib
from aigc_jax.errors import UserError
from aigc_jax.evaluation import features as features_lib
from aigc_jax.evaluation import metrics

MAX_KEPT = 10_000  # feature rows kept for KID, PR/DC and diversity (10k x 2048 float32 = 80 MB)


def as_saved(images) -> np.ndarray:
  """Float images in [-1, 1] as a saved PNG holds them: rounded to uint8 (`images.to_uint8`) and back."""
  return images_lib.to_float(images_lib.to_uint8(images))


@dataclasses.dataclass
class SetSummary:
  """Everything the metrics need of one image set.

  From a statistics file only `stats` is known (a `FeatureMoments`): no Gram sum, feature rows
  or logits, so only FID can be taken against it.
  """
  stats: metrics.FeatureStats | metrics.FeatureMoments
  gram_sum: np.ndarray | None
  features: np.ndarray | None
  logits: np.ndarray | None
  sqrt_cov: np.ndarray | None = None

  @classmethod
  def from_moments(cls, mean: np.ndarray, cov: np.ndarray) -> "SetSummary":
    """A summary of which only the feature mean and covariance are known."""
    return cls(metrics.FeatureMoments(mean, cov), None, None, None)

  @property
  def count(self) -> int | None:
    """Number of images summarised (None when a statistics file does not say)."""
    return self.stats.count

  @property
  def has_samples(self) -> bool:
    """Whether feature rows (and Gram sum, logits) are known, not only the moments."""
    return self.features is not None

  def with_sqrt_cov(self) -> "SetSummary":
    """This summary with its covariance square root computed (for cached references)."""
    if self.sqrt_cov is None:
      self.sqrt_cov = metrics.sqrtm_psd(self.stats.cov)
    return self

  def to_bytes(self) -> bytes:
    """The summary of images (and its covariance root, if computed) as .npz bytes."""
    arrays = {"count": np.asarray(self.stats.count), "shift": self.stats.shift, "sum": self.stats.sum,
              "outer": self.stats.outer, "gram_sum": self.gram_sum, "features": self.features}
    arrays.update({k: v for k, v in (("logits", self.logits), ("sqrt_cov", self.sqrt_cov)) if v is not None})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()

  @classmethod
  def from_bytes(cls, data: bytes) -> "SetSummary":
    """Reads a summary written by `to_bytes`."""
    with np.load(io.BytesIO(data)) as d:
      stats = metrics.FeatureStats(int(d["count"]), d["shift"], d["sum"], d["outer"])
      optional = {k: d[k] if k in d.files else None for k in ("logits", "sqrt_cov")}
      return cls(stats, d["gram_sum"], d["features"], **optional)


def summarize(extractor: features_lib.Extractor, batches: Iterable, *, max_kept: int = MAX_KEPT,
              keep_logits: bool = True, progress: Callable[[int], None] | None = None) -> SetSummary:
  """Extracts features of image batches ([B,H,W,C] in [-1,1]) into a `SetSummary`.

  Batches are re-cut to the extractor's batch size and the last chunk is padded,
  so the extractor compiles once whatever sizes come in. `progress(n)` is called
  with the number of images done after each chunk. Reference sets pass
  `keep_logits=False`: only generated images' logits enter a metric.
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
      if keep_logits:
        logits.append(out["logits"][:n])
      if num_kept < max_kept:
        kept.append(feats[:max_kept - num_kept])
        num_kept += kept[-1].shape[0]
      if progress is not None:
        progress(n)
  if stats is None:
    raise UserError("no images to evaluate")
  return SetSummary(stats, gram_sum, np.concatenate(kept), np.concatenate(logits) if keep_logits else None)
