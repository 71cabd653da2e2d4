"""Folding frozen BatchNorm layers into the layer before them (`TronPipeline.fuse_batch_norm`).

G and f are frozen while TR0N samples, so a BatchNorm that follows a linear or convolution layer is a fixed
per-channel affine map, and the pair computes exactly what one layer with rescaled weights and a shifted bias
computes (up to float rounding). Folding saves the BatchNorm's pass over the activations in the forward and the
backward pass of every Langevin step. Conditional BatchNorms (BigGAN's, whose scale depends on the class embedding)
and normalisations of other kinds (CLIP's LayerNorm) are not affine maps fixed in advance and are left alone.
As in torch's own fusers, a ``Linear`` followed by a ``BatchNorm1d`` is folded as the usual ``(batch, features)``
pair, where the BatchNorm normalises the Linear's output features.

The folds made on a model are kept on the model itself (`folds_of`), so whoever holds the model can undo them.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval


CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED_CONVOLUTIONS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# Attribute of a model holding its folds, in the order they were made.
FOLDS_ATTRIBUTE = "_tron_batch_norm_folds"


@dataclass
class BatchNormFold:
    """One folded pair: ``container[index]`` was ``layer`` and ``container[index + 1]`` was ``batch_norm``; while
    folded they are ``folded`` and an ``nn.Identity``. ``folded_dtype`` is the folded layer's dtype when made."""

    container: nn.Sequential
    index: int
    layer: nn.Module
    batch_norm: _BatchNorm
    folded: nn.Module
    folded_dtype: torch.dtype

    def undo(self) -> None:
        """Put the original pair back on the device the folded layer is on now, and in its dtype if the model was
        cast while folded (otherwise each keeps its own dtype, e.g. a float32 BatchNorm after a float16 layer)."""
        weight = self.folded.weight
        cast = {"dtype": weight.dtype} if weight.dtype != self.folded_dtype else {}
        self.container[self.index] = self.layer.to(device=weight.device, **cast)
        self.container[self.index + 1] = self.batch_norm.to(device=weight.device, **cast)

    def redo(self) -> None:
        """Fold again after `undo`, reusing the folded layer (the weights must not have changed in between)."""
        self.container[self.index] = self.folded
        self.container[self.index + 1] = nn.Identity()


def _can_fold(layer: nn.Module) -> bool:
    # A grouped transposed convolution keeps its output channels in the second weight dimension per group, which
    # torch's folding formula does not handle.
    return isinstance(layer, (nn.Linear, *CONVOLUTIONS)) or (
        isinstance(layer, TRANSPOSED_CONVOLUTIONS) and layer.groups == 1
    )


def _folded_layer(layer: nn.Module, batch_norm: _BatchNorm) -> nn.Module:
    if isinstance(layer, nn.Linear):
        return fuse_linear_bn_eval(layer, batch_norm)
    return fuse_conv_bn_eval(layer, batch_norm, transpose=isinstance(layer, TRANSPOSED_CONVOLUTIONS))


def foldable_pairs(model: nn.Module) -> list[tuple[nn.Sequential, int]]:
    """``(container, index)`` of every BatchNorm of ``model`` that directly follows a linear or (transposed)
    convolution layer inside an ``nn.Sequential``, checked to be foldable; nothing is changed.

    Raises:
        ValueError: ``model`` or one of those BatchNorms is in training mode (it normalises by batch statistics),
            or one of them keeps no running statistics.
    """
    name = type(model).__name__
    if model.training:
        raise ValueError(
            f"{name} is in training mode: its BatchNorms use batch statistics, which cannot be folded. Call `.eval()` first."
        )
    pairs = []
    for container in [module for module in model.modules() if isinstance(module, nn.Sequential)]:
        for index in range(len(container) - 1):
            layer, batch_norm = container[index], container[index + 1]
            if not isinstance(batch_norm, _BatchNorm) or not _can_fold(layer):
                continue
            if batch_norm.training or batch_norm.running_mean is None:
                raise ValueError(
                    f"{name} has a {type(batch_norm).__name__} in training mode or without running statistics "
                    "(track_running_stats=False): it normalises every batch by itself and cannot be folded."
                )
            pairs.append((container, index))
    return pairs


def folds_of(model: nn.Module) -> list[BatchNormFold]:
    """The folds in effect on ``model``, in the order they were made (empty when none)."""
    return getattr(model, FOLDS_ATTRIBUTE, [])


@torch.no_grad()
def fold_batch_norms(*models: nn.Module) -> int:
    """Fold every foldable BatchNorm (see `foldable_pairs`) of each of ``models`` in place: the layer before it
    becomes one with folded weights and the BatchNorm an ``nn.Identity``. All models are checked before any is
    changed, so an error leaves every model as it was.

    Returns:
        The number of BatchNorms folded (0 when there are none, or they are folded already).
    """
    pairs = [(model, foldable_pairs(model)) for model in models]
    for model, model_pairs in pairs:
        folds = []
        for container, index in model_pairs:
            layer, batch_norm = container[index], container[index + 1]
            folded = _folded_layer(layer, batch_norm)
            fold = BatchNormFold(container, index, layer, batch_norm, folded, folded.weight.dtype)
            fold.redo()
            folds.append(fold)
        if folds:
            setattr(model, FOLDS_ATTRIBUTE, folds_of(model) + folds)
    return sum(len(model_pairs) for _, model_pairs in pairs)


def unfold_batch_norms(*models: nn.Module) -> None:
    """Undo every fold of each of ``models`` (a no-op for a model with none)."""
    for model in models:
        for fold in reversed(folds_of(model)):
            fold.undo()
        if hasattr(model, FOLDS_ATTRIBUTE):
            delattr(model, FOLDS_ATTRIBUTE)


def refold_batch_norms(model: nn.Module, folds: list[BatchNormFold]) -> None:
    """Make ``folds`` (taken with `folds_of` before `unfold_batch_norms`) again on ``model``, as they were."""
    for fold in folds:
        fold.redo()
    if folds:
        setattr(model, FOLDS_ATTRIBUTE, list(folds))


__all__ = [
    "BatchNormFold",
    "fold_batch_norms",
    "foldable_pairs",
    "folds_of",
    "refold_batch_norms",
    "unfold_batch_norms",
]
