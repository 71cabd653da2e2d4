"""Scoring generated images: Fréchet distance, accuracy and CLIP score (`tron evaluate`, and the benchmarks).

The metrics and the HOG evaluation classifier are plain numpy and import here; the feature extractors (Inception-v3,
CLIP, classifiers) need torch and live in `tron_pipelines.evaluation.features`.
"""

from .hog_classifier import HogMlpClassifier, as_image_batch, hog_features, to_grey01
from .metrics import (
    FRECHET_BOOTSTRAP_RESAMPLES,
    FeatureStatistics,
    classification_accuracy,
    clip_score,
    frechet_distance,
    frechet_distance_with_std,
    frechet_sample_size_warning,
)


__all__ = [
    "FRECHET_BOOTSTRAP_RESAMPLES",
    "FeatureStatistics",
    "HogMlpClassifier",
    "as_image_batch",
    "classification_accuracy",
    "clip_score",
    "frechet_distance",
    "frechet_distance_with_std",
    "frechet_sample_size_warning",
    "hog_features",
    "to_grey01",
]
