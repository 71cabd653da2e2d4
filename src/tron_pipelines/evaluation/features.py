"""Feature extractors of `tron evaluate`: Inception-v3 (FID), CLIP (FD_CLIP and CLIP score) and classifiers (a
classifier's last hidden layer for a Fréchet distance, its logits for accuracy).

Each extractor has ``prepare(image)``, the per-image part (decoding done, resizing, colour conversion), which
`tron evaluate` runs in worker threads, and ``features(prepared)`` for a batch: float64 ``(B, D)``. ``identity`` names
the extractor and a fingerprint of its weights; reference statistics keep it, so statistics of other features are
never compared.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..encoders import EncoderAdapter
from ..pretrained import resolve_pretrained_path
from ..utils.fingerprints import module_fingerprint
from ..utils.messages import first_line
from .hog_classifier import HogMlpClassifier, to_grey01


INCEPTION_SIZE = 299
# torch-fidelity's name for its port of the TF Inception graph that FID was defined with (2015-12-05 weights).
INCEPTION_NAME = "inception-v3-compat"
INCEPTION_FEATURES = "2048"


class ExtractorUnavailableError(RuntimeError):
    """A feature extractor cannot be built here: its library is not installed or its weights cannot be fetched."""


def centre_square(image: Image.Image, size: int) -> Image.Image:
    """RGB, the centred square of side ``min(width, height)``, resized to ``size`` with PIL's antialiased bicubic."""
    image = image.convert("RGB")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))


class InceptionFeatures:
    """Pool features ``(B, 2048)`` of Inception-v3 as FID defines them, through torch-fidelity (the extractor behind
    torchmetrics' ``FrechetInceptionDistance``), whose weights it downloads once into torch's hub cache.

    Images are converted to RGB, centre-cropped to a square and resized to 299 x 299 with PIL's bicubic filter (real
    photos come in many sizes; a batch needs one), then given to the network as 8-bit pixels.
    """

    name = "inception"

    def __init__(self, device: torch.device):
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except Exception as error:  # ImportError, or e.g. a torchvision built for another torch
            raise ExtractorUnavailableError(
                "--features inception needs torch-fidelity (pip install 'tron-pipelines[evaluate]', with a torchvision "
                f"built for your torch), which could not be imported ({first_line(error)})."
            ) from None
        try:
            self.model = FeatureExtractorInceptionV3(INCEPTION_NAME, [INCEPTION_FEATURES]).to(device).eval()
        except OSError as error:  # urllib's URLError is an OSError
            raise ExtractorUnavailableError(
                f"--features inception: torch-fidelity could not download the Inception-v3 weights ({first_line(error)}). It fetches them "
                f"once into {Path(torch.hub.get_dir()) / 'checkpoints'}: run once where the network is reachable (or "
                "copy the file there), or use --features clip or --features classifier."
            ) from None
        self.device = device
        self.identity = (
            f"{INCEPTION_NAME}:{INCEPTION_FEATURES} (torch-fidelity), centre square, bicubic {INCEPTION_SIZE}"
        )

    def prepare(self, image: Image.Image) -> np.ndarray:
        return np.asarray(centre_square(image, INCEPTION_SIZE), dtype=np.uint8)

    @torch.no_grad()
    def features(self, prepared: list[np.ndarray]) -> np.ndarray:
        pixels = torch.from_numpy(np.stack(prepared)).permute(0, 3, 1, 2).to(self.device)
        return self.model(pixels)[0].double().cpu().numpy()


class ClipFeatures:
    """CLIP image embeddings (for FD_CLIP) and text embeddings (for the CLIP score), raw projected features.

    Args:
        name_or_path: A TR0N pipeline (folder, embedded name or Hub id) whose encoder is a CLIP, or a transformers CLIP
            folder or Hub id (e.g. ``openai/clip-vit-base-patch32``, the method's f).
        device: Where CLIP runs.
    """

    name = "clip"

    def __init__(self, name_or_path: str, device: torch.device):
        path = resolve_pretrained_path(name_or_path)
        try:
            if (Path(path) / "model_index.json").is_file():
                # diffusers and transformers are imported only by the extractors that use them (the HOG
                # classifier of the MNIST benchmarks needs neither).
                from ..pipelines import TronPipeline

                adapter = TronPipeline.from_pretrained(path).encoder_adapter
            else:
                from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

                adapter = EncoderAdapter(
                    CLIPModel.from_pretrained(path).eval(),
                    AutoTokenizer.from_pretrained(path),
                    CLIPImageProcessor.from_pretrained(path),
                )
        except (OSError, ValueError) as error:
            raise ExtractorUnavailableError(
                f"--clip {name_or_path!r} could not be loaded ({first_line(error)})."
            ) from None
        if adapter.kind != "clip" or adapter.tokenizer is None:
            raise ValueError(
                f"--clip {name_or_path!r} is not a CLIP with a tokenizer (its encoder is a {adapter.kind})."
            )
        adapter.encoder.to(device)
        self.adapter, self.device = adapter, device
        self.identity = f"clip:{module_fingerprint(adapter.encoder)}"

    def prepare(self, image: Image.Image) -> Image.Image:
        image.load()
        return image.convert("RGB" if self.adapter.channels == 3 else "L")

    @torch.no_grad()
    def features(self, prepared: list[Image.Image]) -> np.ndarray:
        return self.adapter.encode_images(prepared, self.device).double().cpu().numpy()

    @torch.no_grad()
    def text_features(self, prompts: list[str], batch_size: int = 256) -> np.ndarray:
        """Raw CLIP text embeddings ``(N, E)`` of ``prompts``, encoded ``batch_size`` at a time."""
        return np.concatenate(
            [
                self.adapter.encode_prompts(prompts[start : start + batch_size], self.device).double().cpu().numpy()
                for start in range(0, len(prompts), batch_size)
            ]
        )


class ClassifierFeatures:
    """A classifier's last hidden layer (for a Fréchet distance) and its logits (for accuracy).

    Args:
        folder: A HOG + MLP evaluation classifier (`HogMlpClassifier`, as ``examples/mnist/train_eval_classifier.py``
            writes it; the committed ``benchmarks/assets/mnist-eval-classifier``), or a `ConvClassifier` saved with
            ``save_pretrained``.
        device: Where a `ConvClassifier` runs.
    """

    name = "classifier"

    def __init__(self, folder: str, device: torch.device):
        folder_path = Path(folder)
        config = _read_json(folder_path / "config.json")
        digest = hashlib.sha256()
        if HogMlpClassifier.is_saved_in(folder_path):
            self.hog = HogMlpClassifier.from_pretrained(folder_path)
            self.model = None
            for array in [self.hog.feature_mean, self.hog.feature_std, *self.hog.weights, *self.hog.biases]:
                digest.update(np.ascontiguousarray(array))
            self.num_classes = self.hog.num_classes
        elif config.get("_class_name") == "ConvClassifier":
            from ..models.classifier import ConvClassifier  # imports diffusers: only for this kind of classifier

            self.hog = None
            self.model = ConvClassifier.from_pretrained(folder_path).to(device).eval()
            self.adapter = EncoderAdapter(self.model)
            digest.update(module_fingerprint(self.model).encode())
            self.num_classes = self.model.config.num_classes
        else:
            raise ValueError(
                f"--classifier {folder}: not a classifier folder; expected a HOG + MLP evaluation classifier (config.json "
                "with cell_size / num_bins and model.safetensors, as examples/mnist/train_eval_classifier.py writes) or a "
                "ConvClassifier saved with save_pretrained."
            )
        self.device = device
        self.identity = f"classifier:{digest.hexdigest()[:16]}"

    def prepare(self, image: Image.Image) -> np.ndarray:
        """Pixels in [0, 1], float64: grey ``(H, W)`` for the HOG classifier (colour averaged, as `to_grey01` does for
        the benchmarks), ``(C, H, W)`` in the ConvClassifier's channels."""
        if self.hog is not None:
            pixels = np.asarray(image if image.mode == "L" else image.convert("RGB"), dtype=np.float64) / 255.0
            return to_grey01(pixels[None])[0]
        mode = "L" if self.adapter.channels == 1 else "RGB"
        pixels = np.asarray(image.convert(mode), dtype=np.float64) / 255.0
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)

    @torch.no_grad()
    def features(self, prepared: list[np.ndarray]) -> np.ndarray:
        if self.hog is not None:
            return self.hog.features(np.stack(prepared))
        pixel_values = self.adapter.preprocess_generated(
            torch.from_numpy(np.stack(prepared)).float().to(self.device) * 2 - 1
        )
        # ConvClassifier.forward is head(dropout(pooled features)); dropout is off in eval mode.
        return self.model.features(pixel_values).mean(dim=(2, 3)).double().cpu().numpy()

    @torch.no_grad()
    def logits_from_features(self, features: np.ndarray) -> np.ndarray:
        if self.hog is not None:
            return self.hog.logits_from_features(features)
        pooled = torch.from_numpy(features).to(self.device, self.model.head.weight.dtype)
        return self.model.head(pooled).double().cpu().numpy()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def load_feature_extractor(kind: str, device: torch.device, clip: str | None = None, classifier: str | None = None):
    """The extractor for ``--features kind``: ``"inception"``, ``"clip"`` (needs ``clip``) or ``"classifier"``
    (needs ``classifier``)."""
    if kind == "inception":
        return InceptionFeatures(device)
    if kind == "clip":
        if clip is None:
            raise ValueError("--features clip needs --clip (a CLIP pipeline, folder or Hub id).")
        return ClipFeatures(clip, device)
    if kind == "classifier":
        if classifier is None:
            raise ValueError("--features classifier needs --classifier (a classifier folder).")
        return ClassifierFeatures(classifier, device)
    raise ValueError(f"--features must be inception, clip or classifier, got {kind!r}.")


__all__ = [
    "ClassifierFeatures",
    "ClipFeatures",
    "ExtractorUnavailableError",
    "InceptionFeatures",
    "centre_square",
    "load_feature_extractor",
]
