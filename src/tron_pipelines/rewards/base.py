"""What every reward model shares: the differentiable image preprocessing of ReNO and the prompt tokenizer that
travels with the weights.

A reward model maps images in ``[-1, 1]`` ``(B, C, H, W)`` and prompt encodings (from `RewardModel.encode_prompt`,
computed once per call) to one reward per image ``(B,)``, differentiable w.r.t. the images. Prompts are encoded apart
from the images because a sampler scores the same prompts at every step.
"""

import os

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin
from transformers import AutoTokenizer

from ..encoders import output_tensor


TOKENIZER_FOLDER = "tokenizer"


def clip_image_transform(
    images: torch.Tensor, size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """ReNO's ``clip_img_transform(size)`` applied to G's output, keeping gradients: ``(B, 3, H, W)`` in ``[-1, 1]``
    -> ``(B, 3, size, size)`` normalised.

    ``[-1, 1] -> [0, 1]`` clamped (ReNO's decoders clamp), resize of the shorter side to ``size`` with the longer side
    ``int(size * long / short)`` (bicubic with antialiasing, torchvision's tensor ``Resize`` since 0.17), centre crop
    at ``int(round((side - size) / 2))`` (torchvision's ``CenterCrop``), then ``(x - mean) / std``.
    """
    images = ((images + 1.0) / 2.0).clamp(0.0, 1.0)
    height, width = images.shape[-2:]
    short, long = min(height, width), max(height, width)
    resized_long = int(size * long / short)
    resized = (size, resized_long) if height <= width else (resized_long, size)
    if resized != (height, width):
        images = F.interpolate(images, size=resized, mode="bicubic", align_corners=False, antialias=True)
    top = int(round((resized[0] - size) / 2.0))
    left = int(round((resized[1] - size) / 2.0))
    images = images[..., top : top + size, left : left + size]
    mean_tensor = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    std_tensor = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean_tensor) / std_tensor


class RewardModel(ModelMixin, ConfigMixin):
    """Base of reward models: ``forward(images, prompt_embeds) -> (B,)`` rewards, higher is better.

    Subclasses set ``default_weight`` (ReNO's weighting of the reward in its sum, the weight a pipeline gives it
    unless told otherwise) and ``needs_prompt``, and implement `encode_prompt` and `forward`.

    The tokenizer (``self.tokenizer``, a transformers tokenizer or ``None`` for rewards without text) is saved in a
    ``tokenizer/`` folder beside the weights and loaded back by `from_pretrained`.
    """

    default_weight: float = 1.0
    needs_prompt: bool = True

    def __init__(self):
        super().__init__()
        self.tokenizer = None

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor | None:
        """Prompt encodings ``(B, ...)`` that `forward` takes, on the model's device; ``None`` without text."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, prompt_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Rewards ``(B,)``, float32, of images ``(B, C, H, W)`` in ``[-1, 1]`` for their prompts' encodings."""
        raise NotImplementedError

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str] | None = None) -> torch.Tensor:
        """Rewards ``(B,)`` of images in ``[-1, 1]`` for ``prompts`` (one per image), without gradients."""
        return self(images, self.encode_prompt(prompts) if self.needs_prompt else None)

    def tokenize(self, prompts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        """Token ids (and attention mask) ``(B, L)`` on the model's device, padded and truncated to ``max_length``."""
        if self.tokenizer is None:
            raise ValueError(
                f"{type(self).__name__} has no tokenizer: set `.tokenizer` (or load a folder saved with one)."
            )
        if not isinstance(prompts, list) or not all(isinstance(prompt, str) for prompt in prompts):
            raise TypeError(f"`prompts` must be a list of strings, got {prompts!r}.")
        max_length = min(max_length, self.tokenizer.model_max_length)
        inputs = self.tokenizer(
            prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        )
        return {key: inputs[key].to(self.device) for key in ("input_ids", "attention_mask") if key in inputs}

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """`ModelMixin.save_pretrained`, plus the tokenizer in ``tokenizer/``."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(os.path.join(save_directory, TOKENIZER_FOLDER))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """`ModelMixin.from_pretrained` (a folder or a Hub repo, ``subfolder=`` as usual), plus the tokenizer saved
        beside the weights."""
        model = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        subfolder = "/".join(part for part in (kwargs.get("subfolder"), TOKENIZER_FOLDER) if part)
        local = os.path.join(str(pretrained_model_name_or_path), subfolder)
        if os.path.isdir(local):
            model.tokenizer = AutoTokenizer.from_pretrained(local)
        elif not os.path.isdir(str(pretrained_model_name_or_path)) and cls.needs_prompt:
            hub_kwargs = {
                key: kwargs[key] for key in ("cache_dir", "revision", "token", "local_files_only") if key in kwargs
            }
            model.tokenizer = AutoTokenizer.from_pretrained(
                str(pretrained_model_name_or_path), subfolder=subfolder, **hub_kwargs
            )
        return model


def at_least_float32(values: torch.Tensor) -> torch.Tensor:
    """Rewards and embeddings leave a model in float32 (float64 models keep float64, for finite differences)."""
    return values if values.dtype == torch.float64 else values.float()


def image_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected image embeddings ``(B, E)``, float32, of a CLIP-interface model (transformers `CLIPModel`, this
    package's `OpenCLIPEncoder`)."""
    return at_least_float32(output_tensor(model.get_image_features(pixel_values=pixel_values.to(model.dtype))))


def text_features(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Projected text embeddings ``(B, E)``, float32, of a CLIP-interface model for tokenized prompts."""
    return at_least_float32(output_tensor(model.get_text_features(**inputs)))


__all__ = ["RewardModel", "clip_image_transform", "image_features", "text_features"]
