"""From images to metrics: generated and folder summaries, the metric table, repeats over seeds.

Generated images are quantised to uint8 (`summary.as_saved`) before their features are
taken, as the field's tools score the saved PNG files. `compute_metrics` scores one
generated summary against a reference (`references`); `score_generator` repeats that over
sample seeds and reports each metric's mean and standard deviation; `evaluate_folder`
scores a folder of images, like `python -m pytorch_fid DIR1 DIR2`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np

from aigc_jax import config as config_lib
from aigc_jax.errors import UserError
from aigc_jax.evaluation import features as features_lib
from aigc_jax.evaluation import image_folder, metrics, references
from aigc_jax.evaluation.references import parse_reference, reference_summary  # noqa: F401
from aigc_jax.evaluation.summary import MAX_KEPT, SetSummary, as_saved, summarize  # noqa: F401


def compute_metrics(fake: SetSummary, real: SetSummary, labels=None, *, kid_subsets: int = 100,
                    kid_subset_size: int = 1000) -> dict[str, float]:
  """All metrics of generated `fake` against `real`; class consistency when `labels` are given.

  Against a reference known only by its moments (a statistics file) the metrics that need
  reference samples are left out: FID, IS and class consistency remain.
  The KID subset size is capped at the number of generated samples kept.
  """
  if fake.count < 2 or (real.count is not None and real.count < 2):
    raise UserError("evaluation needs at least 2 generated and 2 reference images")
  if real.stats.mean.shape != fake.stats.mean.shape:
    raise UserError(f"the reference has {real.stats.mean.shape[0]}-d features, the generated images "
                    f"{fake.stats.mean.shape[0]}-d")
  real = real.with_sqrt_cov()
  result = {"fid": metrics.frechet_distance(real.stats.mean, real.stats.cov, fake.stats.mean,
                                            fake.stats.cov, sqrt_sigma1=real.sqrt_cov)}
  if real.has_samples:
    subset = min(kid_subset_size, fake.features.shape[0])
    if real.features.shape[0] < subset:
      raise UserError(f"KID needs {subset} reference images (one per generated sample, up to "
                      f"{kid_subset_size}); the reference set has {real.features.shape[0]}")
    result.update(metrics.kernel_inception_distance(real.features, fake.features, kid_subsets, subset))
    result.update(metrics.precision_recall_density_coverage(real.features, fake.features))
    result.update(metrics.diversity(real.features, fake.features))
  result.update(metrics.inception_score(fake.logits, splits=min(10, fake.count)))
  if real.has_samples:
    result["style_gram_distance"] = metrics.gram_distance(fake.gram_sum / fake.count,
                                                          real.gram_sum / real.count)
  if labels is not None:
    result["class_consistency"] = metrics.class_consistency(fake.logits, labels)
  return result


def sample_size_warnings(fake: SetSummary, real: SetSummary) -> list[str]:
  """One line for each set whose covariance is rank-deficient (no more images than feature
  dimensions), and one for a reference that is only a statistics file."""
  dim = fake.stats.mean.shape[0]
  lines = [f"{s.count} {name} images for {dim}-d features: the covariance is rank-deficient (rank at most "
           f"{s.count - 1}) and FID at this count is strongly biased upward; compare FIDs only at equal counts"
           for name, s in (("generated", fake), ("reference", real)) if s.count is not None and s.count <= dim]
  if not real.has_samples:
    lines.append("the reference is a statistics file (mu, sigma): only FID and the generated-only "
                 "metrics are computed")
  return lines


def generated_summary(extractor: features_lib.Extractor, generate_fn: Callable, key: jax.Array,
                      num: int, *, batch_size: int = 500, num_classes: int = 0,
                      progress: Callable[[int], None] | None = None) -> tuple[SetSummary, np.ndarray | None]:
  """Summary of `num` generated images; conditional models get labels 0, 1, ... cyclically.

  `generate_fn(key, n)` (or `generate_fn(key, n, labels)` when `num_classes` > 0)
  returns [n,H,W,C] images in [-1,1]; batch i uses `fold_in(key, i)`. The images are
  quantised to uint8 as a saved PNG would hold them before their features are taken.
  """
  labels = np.arange(num) % num_classes if num_classes else None

  def batches():
    for i, start in enumerate(range(0, num, batch_size)):
      n = min(batch_size, num - start)
      batch_key = jax.random.fold_in(key, i)
      if labels is None:
        yield as_saved(generate_fn(batch_key, n))
      else:
        yield as_saved(generate_fn(batch_key, n, labels[start:start + n]))

  return summarize(extractor, batches(), progress=progress), labels


def summarize_folder(extractor: features_lib.Extractor, folder: str, num: int | None = None, *,
                     progress: Callable[[int], None] | None = None) -> SetSummary:
  """Summary of the first `num` (default: all) images of a folder of generated images."""
  paths = references.folder_paths(folder, num)
  return summarize(extractor, image_folder.image_batches(paths, extractor.channels), progress=progress)


def score(fakes: Sequence[tuple[SetSummary, np.ndarray | None]], real: SetSummary,
          seeds: Sequence[int] | None = None) -> dict:
  """Metrics of each (generated summary, labels) against `real`: their mean, and with several
  their sample standard deviation (ddof 1) and each seed's values; plus `sample_size_warnings`."""
  runs = [compute_metrics(fake, real, labels) for fake, labels in fakes]
  result = {"metrics": {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}}
  if len(runs) > 1:
    result["metrics_std"] = {k: float(np.std([r[k] for r in runs], ddof=1)) for k in runs[0]}
    result["per_seed"] = [{"seed": s, "metrics": r} for s, r in zip(seeds or range(len(runs)), runs)]
  if seeds is not None:
    result["seeds"] = list(seeds)
  result["warnings"] = sample_size_warnings(fakes[0][0], real)
  return result


def score_generator(extractor: features_lib.Extractor, generate_fn: Callable, real: SetSummary, *,
                    num_samples: int, seeds: Sequence[int], batch_size: int = 500, num_classes: int = 0,
                    progress: Callable[[int], None] | None = None) -> dict:
  """`score` of `num_samples` generated images for each sample seed in `seeds`."""
  fakes = [generated_summary(extractor, generate_fn, jax.random.key(s), num_samples, batch_size=batch_size,
                             num_classes=num_classes, progress=progress) for s in seeds]
  return score(fakes, real, seeds)


def evaluate_folder(fake_dir: str, reference: str, *, extractor: features_lib.Extractor,
                    num: int | None = None, reference_size: int | None = None,
                    data_config: ml_collections.ConfigDict | None = None, manual_dir: str | None = None,
                    cache_dir: str | None = None, save_stats: str | None = None,
                    progress: Callable[[int], None] | None = None) -> dict:
  """Scores the images of `fake_dir` against `reference` (a folder, an .npz or DATASET:SPLIT).

  A dataset reference is read with `data_config` (default: the base config's data settings)
  at the generated images' size and the extractor's channels.
  """
  if not reference:
    raise UserError("scoring a folder needs --reference=DIR, STATS.npz or DATASET:SPLIT")
  paths = references.folder_paths(fake_dir, num)
  data_config = ml_collections.ConfigDict((data_config or config_lib.base_config().data).to_dict())
  data_config.image_size = image_folder.read_image(paths[0], extractor.channels).shape[0]
  data_config.channels = extractor.channels
  ref = references.parse(reference, data_config, manual_dir)
  real = references.load_reference(extractor, ref, num=reference_size, cache_dir=cache_dir,
                                   save_stats=save_stats)
  fake = summarize(extractor, image_folder.image_batches(paths, extractor.channels), progress=progress)
  result = {"fake_dir": fake_dir, "features": extractor.name, "num_samples": fake.count,
            "reference": ref.label}
  return {**result, **reference_fields(extractor, real), **score([(fake, None)], real)}


def reference_fields(extractor: features_lib.Extractor, real: SetSummary) -> dict:
  """The result fields that say how the reference was read: the resize rule, its image count."""
  fields = {"resize": extractor.resize} if extractor.resize else {}
  return {**fields, **({"reference_size": real.count} if real.count is not None else {})}


def evaluate_generator(config: ml_collections.ConfigDict, generate_fn: Callable, *, num_samples: int,
                       extractor: str | features_lib.Extractor = "digits", cache_dir: str | None = None,
                       reference: str | None = None, reference_size: int | None = None,
                       key: jax.Array | None = None,
                       progress: Callable[[int], None] | None = None) -> dict[str, float]:
  """Generates `num_samples` images with `generate_fn` and scores them against the reference set.

  `reference` is a folder, an .npz or "DATASET:SPLIT" (default: config.data.dataset and
  eval_split), all of it unless `reference_size` says (a synthetic stream: `num_samples`);
  its summary is cached in `cache_dir`. `key` defaults to `jax.random.key(config.seed)`,
  so repeated evaluations of a run see the same latent noise.
  """
  if isinstance(extractor, str):
    extractor = features_lib.get_extractor(extractor)
  ref = references.parse(reference, config.data)
  if reference_size is None and ref.kind == "dataset" and ref.data_config.dataset == "synthetic":
    reference_size = num_samples
  key = jax.random.key(config.seed) if key is None else key
  fake, labels = generated_summary(extractor, generate_fn, key, num_samples,
                                   num_classes=config.model.num_classes, progress=progress)
  real = references.load_reference(extractor, ref, num=reference_size, cache_dir=cache_dir)
  return compute_metrics(fake, real, labels)


def format_table(result: dict) -> str:
  """The metrics (with their standard deviation over seeds, if any) as an aligned text table."""
  std = result.get("metrics_std", {})
  rows = [(name, f"{value:.6g}" + (f" ± {std[name]:.3g}" if name in std else ""))
          for name, value in result["metrics"].items()]
  width = max(len(name) for name, _ in rows)
  samples = f"{result['num_samples']} samples"
  if len(result.get("seeds", ())) > 1:
    samples += f" x {len(result['seeds'])} seeds"
  resize = f" ({result['resize']} resize)" if result.get("resize") else ""
  size = f" ({result['reference_size']} images)" if result.get("reference_size") else ""
  sampling = " ".join(f"{name}={value}" for name, value in result.get("sampling", {}).items())
  header = [result.get("model"), f"step {result['step']}" if "step" in result else None,
            result.get("fake_dir"), samples, sampling, f"{result['features']} features{resize}",
            f"reference {result['reference']}{size}"]
  return "\n".join([", ".join(h for h in header if h)] + [f"  {name:<{width}}  {value}" for name, value in rows])
