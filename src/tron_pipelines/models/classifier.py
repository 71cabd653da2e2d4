"""A small CNN image classifier usable as TR0N's auxiliary model f for class conditioning."""

from dataclasses import dataclass

import torch
import torch.nn as nn
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils import BaseOutput


@dataclass
class ClassifierOutput(BaseOutput):
    """``logits``: ``(B, num_classes)`` unnormalised class scores."""

    logits: torch.Tensor


class ConvClassifier(ModelMixin, ConfigMixin):
    """``(Conv3x3, BatchNorm, ReLU, MaxPool) x n -> global average pool -> dropout -> Linear``.

    The model expects ``pixel_values`` already normalised: images in ``[0, 1]`` of side ``image_size``, then
    ``(x - image_mean) / image_std`` per channel. The pipeline does that (differentiably) from generator output.

    Args:
        num_classes: Number of classes (the condition dimension of a class-conditional TR0N pipeline).
        in_channels: Image channels.
        image_size: Side of the square input.
        image_mean / image_std: Per-channel normalisation of inputs in ``[0, 1]``.
        channels: Width of each convolutional stage.
        dropout: Dropout before the classification layer (training only).
        labels: Optional class names, index-aligned with the logits.
    """

    @register_to_config
    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        image_mean: tuple[float, ...] = (0.5,),
        image_std: tuple[float, ...] = (0.5,),
        channels: tuple[int, ...] = (32, 64, 128),
        dropout: float = 0.2,
        labels: list[str] | None = None,
    ):
        super().__init__()
        if len(image_mean) != in_channels or len(image_std) != in_channels:
            raise ValueError(f"`image_mean` and `image_std` need {in_channels} values (one per input channel).")
        if labels is not None and len(labels) != num_classes:
            raise ValueError(f"`labels` has {len(labels)} names for {num_classes} classes.")
        layers, previous = [], in_channels
        for width in channels:
            layers += [
                nn.Conv2d(previous, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            previous = width
        self.features = nn.Sequential(*layers)
        self.head_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(previous, num_classes)

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True) -> ClassifierOutput | tuple:
        logits = self.head(self.head_dropout(self.features(pixel_values).mean(dim=(2, 3))))
        if not return_dict:
            return (logits,)
        return ClassifierOutput(logits=logits)


__all__ = ["ConvClassifier", "ClassifierOutput"]
