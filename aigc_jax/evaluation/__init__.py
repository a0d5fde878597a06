"""Evaluation: realism, diversity and style metrics over features of offline extractors.

`metrics` works on feature arrays; `features` maps images in [-1, 1] to features
("digits": the shipped LeNet, "inception": FID Inception-v3 from a converted file);
`pipeline` streams image sets into summaries and computes the metric table.
"""

from aigc_jax.evaluation.metrics import (FeatureStats, class_consistency, density_coverage, diversity,
                                         frechet_distance, gram_distance, inception_score,
                                         kernel_inception_distance, mean_pairwise_distance,
                                         precision_recall, precision_recall_density_coverage)
from aigc_jax.evaluation.pipeline import SetSummary, compute_metrics, evaluate_generator, summarize

__all__ = ["FeatureStats", "SetSummary", "class_consistency", "compute_metrics", "density_coverage",
           "diversity", "evaluate_generator", "frechet_distance", "gram_distance", "inception_score",
           "kernel_inception_distance", "mean_pairwise_distance", "precision_recall",
           "precision_recall_density_coverage", "summarize"]
