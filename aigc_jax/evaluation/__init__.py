"""Evaluation: realism, diversity and style metrics over features of offline extractors.

`metrics` works on feature arrays; `features` maps images in [-1, 1] to features
("digits": the shipped LeNet, "inception": FID Inception-v3 from a converted file, with
pytorch-fid's or clean-fid's resize); `summary` streams image sets into summaries;
`references` gives the set to score against (a dataset split, a folder via `image_folder`,
a statistics file via `stats_file`), cached by content; `pipeline` computes the metric
table, over several sample seeds if asked.
"""

from aigc_jax.evaluation.metrics import (FeatureMoments, FeatureStats, class_consistency, density_coverage,
                                         diversity, frechet_distance, gram_distance, inception_score,
                                         kernel_inception_distance, mean_pairwise_distance,
                                         precision_recall, precision_recall_density_coverage)
from aigc_jax.evaluation.pipeline import (compute_metrics, evaluate_folder, evaluate_generator,
                                          score_generator)
from aigc_jax.evaluation.summary import SetSummary, summarize

__all__ = ["FeatureMoments", "FeatureStats", "SetSummary", "class_consistency", "compute_metrics",
           "density_coverage", "diversity", "evaluate_folder", "evaluate_generator", "frechet_distance",
           "gram_distance", "inception_score", "kernel_inception_distance", "mean_pairwise_distance",
           "precision_recall", "precision_recall_density_coverage", "score_generator", "summarize"]
