"""One view of every auxiliary model f the pipeline accepts, and the differentiable path from G's output to f's input.

Two kinds of encoder are supported, recognised by what they can do:

* ``"clip"``: anything with ``get_text_features`` and ``get_image_features`` (transformers `CLIPModel`, the OpenCLIP
  wrapper of this package). Conditions are the raw (unnormalised) projected embeddings, as in the method.
* ``"classifier"``: anything whose forward returns class ``logits`` (this package's `ConvClassifier`, transformers
  ``*ForImageClassification``). Conditions are class-probability vectors: one-hot for a class label, softmax(f(x)) for
  an image (which is also what the translator is trained on).
"""

import warnings

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from .utils.constants import CLIP_MEAN, CLIP_STD


# Words of a truncated prompt's dropped tail quoted in the warning.
TRUNCATION_WORDS_SHOWN = 6


def output_tensor(output) -> torch.Tensor:
    """The projected embedding ``(B, E)`` of a ``get_image_features`` / ``get_text_features`` call: transformers 5
    returns an output object holding it in ``pooler_output``, transformers 4 and OpenCLIP the tensor itself."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _processor_size(image_processor) -> int | None:
    for attribute in ("crop_size", "size"):
        size = getattr(image_processor, attribute, None)
        # A dict, or the `SizeDict` that transformers 5 processors keep (not a dict subclass).
        if hasattr(size, "get"):
            size = size.get("height") or size.get("shortest_edge")
        if isinstance(size, int):
            return size
    return None


class EncoderAdapter:
    """Uniform interface over a pipeline's ``encoder`` (+ optional ``tokenizer`` and ``image_processor``).

    Attributes:
        kind: ``"clip"`` or ``"classifier"``.
        condition_dim: Size of a condition vector (embedding size, or number of classes).
        image_size / channels / image_mean / image_std: What f expects as input.
    """

    def __init__(self, encoder, tokenizer=None, image_processor=None):
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        config = encoder.config
        if hasattr(encoder, "get_text_features") and hasattr(encoder, "get_image_features"):
            self.kind = "clip"
            vision = getattr(config, "vision_config", config)
            self.condition_dim = getattr(config, "projection_dim", None) or config.embed_dim
            default_size, default_channels = getattr(vision, "image_size", 224), getattr(vision, "num_channels", 3)
            default_mean = getattr(config, "image_mean", None) or CLIP_MEAN
            default_std = getattr(config, "image_std", None) or CLIP_STD
        else:
            self.kind = "classifier"
            self.condition_dim = getattr(config, "num_classes", None) or config.num_labels
            default_size = getattr(config, "image_size", 224)
            default_channels = getattr(config, "in_channels", None) or getattr(config, "num_channels", 3)
            default_mean = getattr(config, "image_mean", None) or (0.5,) * default_channels
            default_std = getattr(config, "image_std", None) or (0.5,) * default_channels
        self.image_size = (_processor_size(image_processor) if image_processor is not None else None) or default_size
        self.channels = default_channels
        mean = getattr(image_processor, "image_mean", None) if image_processor is not None else None
        std = getattr(image_processor, "image_std", None) if image_processor is not None else None
        self.image_mean = tuple(mean if mean is not None else default_mean)[: self.channels]
        self.image_std = tuple(std if std is not None else default_std)[: self.channels]

    @property
    def feature_energy(self) -> str:
        """The `energies.FEATURE_ENERGIES` entry that scores this encoder's features: ``"cosine"`` for CLIP
        embeddings, ``"cross_entropy"`` for classifier logits."""
        return "cosine" if self.kind == "clip" else "cross_entropy"

    @property
    def num_classes(self) -> int | None:
        return self.condition_dim if self.kind == "classifier" else None

    @property
    def class_names(self) -> list[str] | None:
        """Names of a classifier's classes from its config (``labels`` or ``id2label``), or ``None`` (CLIP has no
        classes, though transformers' configs carry a default ``id2label``)."""
        if self.kind != "classifier":
            return None
        config = self.encoder.config
        labels = getattr(config, "labels", None)
        if labels is None and getattr(config, "id2label", None):
            labels = [config.id2label[i] for i in range(self.condition_dim)]
        return labels

    def max_text_length(self) -> int:
        limit = self.tokenizer.model_max_length
        positions = getattr(getattr(self.encoder.config, "text_config", None), "max_position_embeddings", None)
        return min(limit, positions) if positions else limit

    # Differentiable path for generated images.
    def preprocess_generated(self, images: torch.Tensor) -> torch.Tensor:
        """Map G's output ``(B, C, H, W)`` in ``[-1, 1]`` to f's normalised input, keeping gradients.

        ``[-1, 1] -> [0, 1]``, bilinear resize to ``image_size`` (no crop, no antialias, as the method does), channel
        replication for grey generators feeding an RGB encoder, then ``(x - mean) / std``.
        """
        if images.shape[1] != self.channels:
            if images.shape[1] == 1:
                images = images.expand(-1, self.channels, -1, -1)
            else:
                raise ValueError(
                    f"The generator makes {images.shape[1]}-channel images; the encoder takes {self.channels}."
                )
        images = (images + 1.0) / 2.0
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(
                images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        mean = torch.tensor(self.image_mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.image_std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        return (images - mean) / std

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """f's output for normalised inputs: image embeddings (clip) or logits (classifier), ``(N, condition_dim)``."""
        pixel_values = pixel_values.to(self.encoder.dtype)
        if self.kind == "clip":
            return output_tensor(self.encoder.get_image_features(pixel_values=pixel_values))
        output = self.encoder(pixel_values=pixel_values)
        return output.logits if hasattr(output, "logits") else output[0]

    def conditions_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Condition vectors the translator consumes, from `features`: embeddings as they are, or class probabilities."""
        features = features.float()
        return features if self.kind == "clip" else features.softmax(dim=-1)

    def encode_generated(self, images: torch.Tensor) -> torch.Tensor:
        """Conditions ``c = f(G(z))`` for generated images in ``[-1, 1]`` (how training pairs are labelled)."""
        return self.conditions_from_features(self.features(self.preprocess_generated(images)))

    # Conditions given by the user.
    def encode_prompts(self, prompts: list[str], device: torch.device) -> torch.Tensor:
        """Raw CLIP text embeddings ``(B, condition_dim)``, float32. Prompts over the token limit are truncated with
        a warning."""
        max_length = self.max_text_length()
        inputs = self.tokenizer(
            prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        )
        for index, ids in enumerate(self.tokenizer(prompts).input_ids):
            # Everything past the limit, minus the end-of-text token that truncation keeps.
            dropped = ids[max_length - 1 : -1]
            if dropped:
                words = self.tokenizer.decode(dropped).split()
                shown = " ".join(words[:TRUNCATION_WORDS_SHOWN]) + (
                    " ..." if len(words) > TRUNCATION_WORDS_SHOWN else ""
                )
                warnings.warn(
                    f"Prompt {index} is longer than the {max_length} tokens the text encoder reads: {len(dropped)} tokens "
                    f"({len(words)} words) were dropped, starting with {shown!r}.",
                    stacklevel=3,
                )
        kwargs = {"input_ids": inputs.input_ids.to(device)}
        if "attention_mask" in inputs:
            kwargs["attention_mask"] = inputs.attention_mask.to(device)
        return output_tensor(self.encoder.get_text_features(**kwargs)).float()

    def encode_images(self, images, device: torch.device) -> torch.Tensor:
        """Conditions for real images: a PIL image, a list of them, or arrays/tensors in ``[0, 1]`` (B, C, H, W) or
        (B, H, W, C). Uses the pipeline's ``image_processor`` when there is one (bicubic resize and centre crop for
        CLIP), otherwise the same resize and normalisation as generated images."""
        if isinstance(images, (PIL.Image.Image, np.ndarray, torch.Tensor)):
            images = [images] if isinstance(images, PIL.Image.Image) or images.ndim == 3 else images
        if self.image_processor is not None:
            # Arrays and tensors are documented as [0, 1]; only 8-bit PIL images still need the processor's 1/255.
            already_scaled = not all(isinstance(image, PIL.Image.Image) for image in images)
            pixel_values = self.image_processor(
                images=list(images), return_tensors="pt", do_rescale=not already_scaled
            ).pixel_values
        else:
            pixel_values = self.preprocess_generated(_to_tensor01(images) * 2.0 - 1.0)
        return self.conditions_from_features(self.features(pixel_values.to(device)))

    def encode_class_labels(self, class_labels: list[int], device: torch.device) -> torch.Tensor:
        """One-hot class conditions ``(B, num_classes)``."""
        labels = torch.as_tensor(class_labels, device=device, dtype=torch.long)
        return F.one_hot(labels, self.condition_dim).float()


def _to_tensor01(images) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        tensor = images.float()
    else:
        arrays = [
            np.asarray(image, dtype=np.float32) / (255.0 if isinstance(image, PIL.Image.Image) else 1.0)
            for image in images
        ]
        tensor = torch.from_numpy(np.stack([a[..., None] if a.ndim == 2 else a for a in arrays]))
    if tensor.shape[1] not in (1, 3) and tensor.shape[-1] in (1, 3):
        tensor = tensor.permute(0, 3, 1, 2)
    return tensor


__all__ = ["EncoderAdapter", "CLIP_MEAN", "CLIP_STD"]
