"""Sample-quality metrics on features: Fréchet distance (with a bootstrap standard deviation), classification
accuracy and CLIP score. Plain numpy; the feature extractors are in `tron_pipelines.evaluation.features`.

The Fréchet distance is FID's formula on any features: Inception-v3 pool features give FID, CLIP image embeddings
FD_CLIP, a classifier's last hidden layer the MNIST benchmark's distance. It is biased upwards for small samples, so
compare numbers only at equal sample sizes.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils.files import replace_atomically
from ..utils.messages import first_line


# Resamples of the generated features behind `frechet_distance_with_std`.
FRECHET_BOOTSTRAP_RESAMPLES = 20
STATISTICS_FORMAT = "tron-feature-statistics"


@dataclass
class FeatureStatistics:
    """Mean and covariance of a feature set: all the Fréchet distance needs of the reference side.

    Attributes:
        mean: ``(D,)`` float64.
        covariance: ``(D, D)`` float64 (``np.cov`` with ``rowvar=False``: divided by N - 1).
        num_samples: N, the number of images the statistics were computed from.
        extractor: Identity of the feature extractor (kind and weights fingerprint); statistics from different
            extractors are never compared.
    """

    mean: np.ndarray
    covariance: np.ndarray
    num_samples: int
    extractor: str = ""

    @classmethod
    def from_features(cls, features, extractor: str = "") -> "FeatureStatistics":
        """Statistics of features ``(N, D)``, N >= 2, computed in float64."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(
                f"A Fréchet distance needs at least 2 feature vectors (N, D); got shape {features.shape}."
            )
        return cls(features.mean(axis=0), np.cov(features, rowvar=False), len(features), extractor)

    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` (plain arrays, no pickle) under a temporary name, then rename it to ``path``."""

        def write(temporary: Path) -> None:
            with open(temporary, "wb") as file:  # a file object: np.savez would append ".npz" to a name
                np.savez(
                    file,
                    format=np.array(STATISTICS_FORMAT),
                    mean=self.mean,
                    covariance=self.covariance,
                    num_samples=np.array(self.num_samples),
                    extractor=np.array(self.extractor),
                )

        replace_atomically(Path(path), write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureStatistics":
        """Read what `save` wrote; ``ValueError`` naming the file when it is not such statistics."""
        try:
            with np.load(path, allow_pickle=False) as arrays:
                content = {name: arrays[name] for name in arrays.files}
        except (OSError, ValueError, EOFError) as error:  # not an npz, or one holding pickled objects
            raise ValueError(f"{path} could not be read as reference statistics ({first_line(error)})") from None
        if (
            str(content.get("format", "")) != STATISTICS_FORMAT
            or not {"mean", "covariance", "num_samples", "extractor"} <= content.keys()
        ):
            raise ValueError(f"{path} is not a reference-statistics file written by `tron evaluate --save_reference`.")
        return cls(content["mean"], content["covariance"], int(content["num_samples"]), str(content["extractor"]))


def _statistics(features_or_statistics) -> FeatureStatistics:
    if isinstance(features_or_statistics, FeatureStatistics):
        return features_or_statistics
    return FeatureStatistics.from_features(features_or_statistics)


def frechet_distance(a, b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets: each a `FeatureStatistics` or features ``(N, D)``.

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr sqrt(S_a S_b)``, in float64.
    """
    a, b = _statistics(a), _statistics(b)
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"Features of different sizes cannot be compared: {a.mean.shape[0]} vs {b.mean.shape[0]}.")
    # tr sqrt(A B) = tr sqrt(A^1/2 B A^1/2), a symmetric PSD form that stays exact when dead ReLU units make the
    # covariances singular (where scipy's sqrtm of the product warns and loses accuracy).
    eigenvalues, eigenvectors = np.linalg.eigh(a.covariance)
    root_a = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ b.covariance @ root_a), 0, None)).sum()
    return float(((a.mean - b.mean) ** 2).sum() + np.trace(a.covariance) + np.trace(b.covariance) - 2 * trace_root)


def frechet_sample_size_warning(num_images: int, num_reference: int, feature_dim: int) -> str | None:
    """What is wrong with a Fréchet distance of ``num_images`` against ``num_reference`` images in ``feature_dim``-dim
    features, or ``None``: with fewer images than dimensions a covariance has rank N - 1 < D, so the distance mostly
    measures how many images there are (it falls as images are added) rather than how they differ."""
    fewest = min(num_images, num_reference)
    if fewest >= feature_dim:
        return None
    sides = [f"{count} {name}" for name, count in (("images", num_images), ("reference images", num_reference))]
    return (
        f"a Fréchet distance of {' against '.join(sides)} in {feature_dim}-dim features: with fewer images than "
        f"dimensions a covariance has rank {fewest - 1} of {feature_dim} at most, so the distance mostly reflects the "
        f"number of images and means little on its own. Use at least {feature_dim} images on each side (FID is "
        "usually reported on 10,000 to 50,000), and compare distances only at equal image counts."
    )


def frechet_distance_with_std(
    features, reference, num_resamples: int = FRECHET_BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Fréchet distance of generated ``features`` ``(N, D)`` to ``reference`` (statistics or features), and its
    bootstrap standard deviation over ``num_resamples`` resamples (with replacement) of the generated features: the
    sampling noise of the distance at this N, so that two results within it are read as equal.
    """
    features = np.asarray(features)
    reference = _statistics(reference)
    rng = np.random.default_rng(seed)
    distances = [
        frechet_distance(features[rng.integers(0, len(features), len(features))], reference)
        for _ in range(num_resamples)
    ]
    return frechet_distance(features, reference), float(np.std(distances))


def classification_accuracy(logits, labels) -> float:
    """Fraction of rows of ``logits`` ``(N, num_classes)`` whose argmax is the requested ``labels`` ``(N,)``."""
    return float((np.asarray(logits).argmax(axis=1) == np.asarray(labels)).mean())


def clip_score(image_embeds, text_embeds) -> float:
    """CLIP score as commonly reported: 100 x the mean cosine similarity of each image's CLIP embedding ``(N, E)`` and
    the embedding of its own prompt ``(N, E)``. (torchmetrics' ``CLIPScore`` also clamps each cosine at 0, which
    changes nothing unless an image is anti-aligned with its prompt.)"""
    image_embeds, text_embeds = np.asarray(image_embeds, dtype=np.float64), np.asarray(text_embeds, dtype=np.float64)
    image_embeds = image_embeds / np.linalg.norm(image_embeds, axis=1, keepdims=True)
    text_embeds = text_embeds / np.linalg.norm(text_embeds, axis=1, keepdims=True)
    return float(100.0 * (image_embeds * text_embeds).sum(axis=1).mean())


__all__ = [
    "FRECHET_BOOTSTRAP_RESAMPLES",
    "FeatureStatistics",
    "classification_accuracy",
    "clip_score",
    "frechet_distance",
    "frechet_distance_with_std",
    "frechet_sample_size_warning",
]
