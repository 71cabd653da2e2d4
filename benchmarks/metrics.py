"""Quality metrics of generated MNIST digits, all measured against the held-out real digits of the shared split.

* accuracy: the evaluation classifier (HOG features + MLP, `tron_pipelines.evaluation.HogMlpClassifier`) agrees with
  the requested digit. It shares nothing with the CNN f that Langevin follows, so images that only fool f do not score.
  Averages hide weak conditions, so the accuracy of the worst digit (and, for text, of the worst prompt) is reported
  beside the mean.
* within-class diversity: mean pairwise L2 distance between images (pixels in [0, 1]) of the same requested class,
  as a ratio to the same figure for real held-out digits of that class, averaged over classes (1.0 = as varied as
  real digits). The mean over pairs is unbiased, so it does not depend on the number of samples. Wrong digits
  inflate it, so it is also given over the correctly classified images only.
* Fréchet distance: between Gaussians fitted to evaluation-classifier features (last hidden layer) of the generated
  images and of all held-out digits (`tron_pipelines.evaluation.frechet_distance`). It is biased upwards for small samples, so every
  table also shows the distance of the same number of real training digits (`MnistEvaluator.real_baseline`). Its
  sampling noise is given as a bootstrap standard deviation over the generated images (``frechet_distance_std``), so
  that two arms within noise of each other are read as equal.

Features, Fréchet distance, its bootstrap and accuracy are `tron_pipelines.evaluation`'s, the code `tron evaluate`
runs: the command scores a folder of digits exactly as this module scores the same images.
* attribute obedience (text prompts): the stroke weight / slant category measured on the pixels
  (`data.attribute_categories`, the measures used to caption the CLIP training data) equals the requested one.
"""

from pathlib import Path

import numpy as np
from workloads import REPO_ROOT, import_mnist_data

from tron_pipelines.evaluation import (
    FeatureStatistics,
    HogMlpClassifier,
    classification_accuracy,
    frechet_distance_with_std,
    to_grey01,
)


# Committed (2.9 MB) so that a fresh clone scores samples exactly as the published tables did;
# `examples/mnist/train_eval_classifier.py` rebuilds it.
DEFAULT_EVAL_CLASSIFIER = REPO_ROOT / "benchmarks" / "assets" / "mnist-eval-classifier"


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
        self.classifier = HogMlpClassifier.from_pretrained(eval_classifier_dir)
        self.eval_classifier_dir = str(eval_classifier_dir)
        split = self.data.load_split()
        self.split = split
        self.real_features = self.classifier.features(split.held_out_images)
        self.real_statistics = FeatureStatistics.from_features(self.real_features)
        self.real_diversity = within_class_diversity(split.held_out_images.astype(np.float64), split.held_out_labels)
        self.real_accuracy = classification_accuracy(
            self.classifier.logits_from_features(self.real_features), split.held_out_labels
        )

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
        logits = self.classifier.logits_from_features(features)
        correct = logits.argmax(axis=1) == labels
        by_class = {int(k): float(correct[labels == k].mean()) for k in np.unique(labels)}
        worst = min(by_class, key=by_class.get)
        distance, distance_std = frechet_distance_with_std(features, self.real_statistics)
        return {
            "accuracy": classification_accuracy(logits, labels),
            "accuracy_by_class": by_class,
            "worst_class": worst,
            "worst_class_accuracy": by_class[worst],
            "diversity_ratio": self.diversity_ratio(images, labels),
            "diversity_ratio_correct": self.diversity_ratio(images[correct], labels[correct]),
            "frechet_distance": distance,
            "frechet_distance_std": distance_std,
            "num_images": len(images),
        }, correct

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
            result[f"{attribute}_obeyed"] = (
                float((measured[attribute][asked] == requested[asked]).mean()) if asked.any() else float("nan")
            )
            result[f"{attribute}_requests"] = int(asked.sum())
        return result

    def attribute_shares(self, images, labels) -> list[dict]:
        """Per digit of ``labels`` (0-9): its share of all images and, among its images, the share of each stroke
        weight and slant category (`data.attribute_categories`), keys ``"thin"``, ``"bold"``, ``"left"``,
        ``"upright"``, ``"right"``. Tells how often a generator makes what a prompt can ask for."""
        images, labels = to_grey01(images), np.asarray(labels)
        categories = self.data.attribute_categories(images, labels)
        rows = []
        for digit in range(self.data.NUM_CLASSES):
            mine = labels == digit
            row = {"digit": digit, "share": float(mine.mean())}
            for attribute, names in (("stroke_weight", self.data.STROKE_WEIGHTS), ("slant", self.data.SLANTS)):
                for code, name in enumerate(names):
                    row[name] = float((categories[attribute][mine] == code).mean()) if mine.any() else float("nan")
            rows.append(row)
        return rows

    def real_baseline(self, labels) -> dict:
        """`score` of real training digits with the same class counts as ``labels``: the floor of the Fréchet
        distance at this sample size, and real accuracy/diversity for reference."""
        labels = np.asarray(labels)
        rng = np.random.default_rng(0)
        chosen = []
        for k in np.unique(labels):
            candidates = np.flatnonzero(self.split.train_labels == k)
            wanted = int((labels == k).sum())
            if wanted > len(candidates):
                raise ValueError(
                    f"labels asks for {wanted} real digits of class {k}, but the training split has only "
                    f"{len(candidates)}: pass class counts the split can supply (e.g. balanced ones)."
                )
            chosen.append(rng.choice(candidates, size=wanted, replace=False))
        order = np.concatenate(chosen)
        return self.score(self.split.train_images[order], self.split.train_labels[order])


__all__ = ["MnistEvaluator", "mean_pairwise_distance", "within_class_diversity", "DEFAULT_EVAL_CLASSIFIER"]
