"""Quality metrics of generated MNIST digits, all measured against the held-out real digits of the shared split.

* accuracy: the evaluation classifier (HOG features + MLP, `examples/mnist/data.py`) agrees with the requested digit.
  It shares nothing with the CNN f that Langevin follows, so images that only fool f do not score. Averages hide weak
  conditions, so the accuracy of the worst digit (and, for text, of the worst prompt) is reported beside the mean.
* within-class diversity: mean pairwise L2 distance between images (pixels in [0, 1]) of the same requested class,
  as a ratio to the same figure for real held-out digits of that class, averaged over classes (1.0 = as varied as
  real digits). The mean over pairs is unbiased, so it does not depend on the number of samples. Wrong digits
  inflate it, so it is also given over the correctly classified images only.
* Fréchet distance: between Gaussians fitted to evaluation-classifier features (last hidden layer) of the generated
  images and of all held-out digits (`data.frechet_distance`). It is biased upwards for small samples, so every
  table also shows the distance of the same number of real training digits (`MnistEvaluator.real_baseline`). Its
  sampling noise is given as a bootstrap standard deviation over the generated images (``frechet_distance_std``), so
  that two arms within noise of each other are read as equal.
* attribute obedience (text prompts): the stroke weight / slant category measured on the pixels
  (`data.attribute_categories`, the measures used to caption the CLIP training data) equals the requested one.
"""

from pathlib import Path

import numpy as np
from workloads import REPO_ROOT, import_mnist_data

FRECHET_BOOTSTRAP_RESAMPLES = 20

# Committed (2.9 MB) so that a fresh clone scores samples exactly as the published tables did;
# `examples/mnist/train_eval_classifier.py` rebuilds it.
DEFAULT_EVAL_CLASSIFIER = REPO_ROOT / "benchmarks" / "assets" / "mnist-eval-classifier"


def to_grey01(images) -> np.ndarray:
    """Generator output as grey images ``(B, H, W)`` float64 in [0, 1]: accepts numpy ``(B, H, W, C)`` in [0, 1]
    (the pipeline's ``output_type="np"``) or anything `data.as_image_batch` takes."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.mean(axis=-1)
    return import_mnist_data().as_image_batch(images)


def mean_pairwise_distance(images: np.ndarray) -> float:
    """Mean L2 distance over all pairs ``i < j`` of images ``(n, H, W)``; NaN for fewer than two images."""
    flat = images.reshape(len(images), -1)
    if len(flat) < 2:
        return float("nan")
    squared_norms = (flat**2).sum(axis=1)
    squared = np.clip(squared_norms[:, None] + squared_norms[None, :] - 2 * flat @ flat.T, 0, None)
    upper = np.triu_indices(len(flat), k=1)
    return float(np.sqrt(squared[upper]).mean())


def within_class_diversity(images: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """``{class: mean pairwise distance}`` for every class with at least two images."""
    labels = np.asarray(labels)
    return {int(k): mean_pairwise_distance(images[labels == k]) for k in np.unique(labels) if (labels == k).sum() >= 2}


class MnistEvaluator:
    """Scores batches of generated digits against the held-out real digits.

    Args:
        eval_classifier_dir: Folder of the evaluation classifier (``train_eval_classifier.py``'s output).
    """

    def __init__(self, eval_classifier_dir: str | Path = DEFAULT_EVAL_CLASSIFIER):
        self.data = import_mnist_data()
        self.classifier = self.data.EvalClassifier.from_pretrained(eval_classifier_dir)
        self.eval_classifier_dir = str(eval_classifier_dir)
        split = self.data.load_split()
        self.split = split
        self.real_features = self.classifier.features(split.held_out_images)
        self.real_diversity = within_class_diversity(split.held_out_images.astype(np.float64), split.held_out_labels)
        real_predictions = self.classifier.logits_from_features(self.real_features).argmax(axis=1)
        self.real_accuracy = float((real_predictions == split.held_out_labels).mean())

    def diversity_ratio(self, images: np.ndarray, labels: np.ndarray) -> float:
        """Within-class diversity over that of real held-out digits, averaged over the classes present."""
        ratios = [value / self.real_diversity[k] for k, value in within_class_diversity(images, labels).items()]
        return float(np.mean(ratios)) if ratios else float("nan")

    def score(self, images, labels) -> dict:
        """Accuracy, diversity ratio and Fréchet distance of images whose requested digits are ``labels``.

        ``diversity_ratio_correct`` counts only the images the evaluation classifier reads as the requested digit:
        wrong or unreadable digits inflate the plain ratio (it can exceed 1), this one measures variety within the
        class itself.
        """
        return self._score(to_grey01(images), np.asarray(labels))[0]

    def _score(self, images: np.ndarray, labels: np.ndarray) -> tuple[dict, np.ndarray]:
        """`score` of grey images, and which of them the evaluation classifier reads as their label ``(B,)``."""
        features = self.classifier.features(images)
        correct = self.classifier.logits_from_features(features).argmax(axis=1) == labels
        by_class = {int(k): float(correct[labels == k].mean()) for k in np.unique(labels)}
        worst = min(by_class, key=by_class.get)
        return {
            "accuracy": float(correct.mean()),
            "accuracy_by_class": by_class,
            "worst_class": worst,
            "worst_class_accuracy": by_class[worst],
            "diversity_ratio": self.diversity_ratio(images, labels),
            "diversity_ratio_correct": self.diversity_ratio(images[correct], labels[correct]),
            "frechet_distance": self.data.frechet_distance(features, self.real_features),
            "frechet_distance_std": self.frechet_bootstrap_std(features),
            "num_images": len(images),
        }, correct

    def frechet_bootstrap_std(self, features: np.ndarray) -> float:
        """Standard deviation of the Fréchet distance over resamples (with replacement) of the generated images."""
        rng = np.random.default_rng(0)
        distances = [
            self.data.frechet_distance(features[rng.integers(0, len(features), len(features))], self.real_features)
            for _ in range(FRECHET_BOOTSTRAP_RESAMPLES)
        ]
        return float(np.std(distances))

    def score_prompts(self, images, requests: list[dict]) -> dict:
        """`score` by requested digit, plus how often the requested stroke weight and slant are obeyed (among the
        prompts that ask for one)."""
        images = to_grey01(images)
        labels = np.array([request["label"] for request in requests])
        result, correct = self._score(images, labels)
        prompts = np.array([request["prompt"] for request in requests])
        by_prompt = {str(p): float(correct[prompts == p].mean()) for p in dict.fromkeys(prompts)}
        worst = min(by_prompt, key=by_prompt.get)
        result.update(accuracy_by_prompt=by_prompt, worst_prompt=worst, worst_prompt_accuracy=by_prompt[worst])
        measured = self.data.attribute_categories(images, labels)
        for attribute in ("stroke_weight", "slant"):
            requested = np.array([request[attribute] for request in requests])
            asked = requested != self.data.UNSPECIFIED
            result[f"{attribute}_obeyed"] = float((measured[attribute][asked] == requested[asked]).mean()) if asked.any() else float("nan")
            result[f"{attribute}_requests"] = int(asked.sum())
        return result

    def real_baseline(self, labels) -> dict:
        """`score` of real training digits with the same class counts as ``labels``: the floor of the Fréchet
        distance at this sample size, and real accuracy/diversity for reference."""
        labels = np.asarray(labels)
        rng = np.random.default_rng(0)
        chosen = []
        for k in np.unique(labels):
            candidates = np.flatnonzero(self.split.train_labels == k)
            chosen.append(rng.choice(candidates, size=(labels == k).sum(), replace=False))
        order = np.concatenate(chosen)
        return self.score(self.split.train_images[order], self.split.train_labels[order])


__all__ = ["MnistEvaluator", "mean_pairwise_distance", "within_class_diversity", "to_grey01", "DEFAULT_EVAL_CLASSIFIER"]
