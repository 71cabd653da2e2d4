"""Folding frozen BatchNorm layers into the layer before them (`TronPipeline.fuse_batch_norm`).

G and f are frozen while TR0N samples, so a BatchNorm that follows a linear or convolution layer is a fixed
per-channel affine map, and the pair computes exactly what one layer with rescaled weights and a shifted bias
computes (up to float rounding). Folding saves the BatchNorm's pass over the activations in the forward and the
backward pass of every Langevin step. Conditional BatchNorms (BigGAN's, whose scale depends on the class embedding)
and normalisations of other kinds (CLIP's LayerNorm) are not affine maps fixed in advance and are left alone.
As in torch's own fusers, a ``Linear`` followed by a ``BatchNorm1d`` is folded as the usual ``(batch, features)``
pair, where the BatchNorm normalises the Linear's output features.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED_CONVOLUTIONS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass
class BatchNormFold:
    """One folded pair: ``container[index]`` was ``layer`` and ``container[index + 1]`` was ``batch_norm``; while
    folded they are ``folded`` and an ``nn.Identity``."""

    container: nn.Sequential
    index: int
    layer: nn.Module
    batch_norm: _BatchNorm
    folded: nn.Module

    def undo(self) -> None:
        """Put the original pair back, on the device and in the dtype the folded layer has now (the model may have
        moved while folded)."""
        weight = self.folded.weight
        self.container[self.index] = self.layer.to(device=weight.device, dtype=weight.dtype)
        self.container[self.index + 1] = self.batch_norm.to(device=weight.device, dtype=weight.dtype)

    def redo(self) -> None:
        """Fold again after `undo`, reusing the folded layer (the weights must not have changed in between)."""
        self.container[self.index] = self.folded
        self.container[self.index + 1] = nn.Identity()


def _folded_layer(layer: nn.Module, batch_norm: _BatchNorm) -> nn.Module | None:
    if isinstance(layer, nn.Linear):
        return fuse_linear_bn_eval(layer, batch_norm)
    if isinstance(layer, CONVOLUTIONS):
        return fuse_conv_bn_eval(layer, batch_norm)
    # A grouped transposed convolution keeps its output channels in the second weight dimension per group, which
    # torch's folding formula does not handle.
    if isinstance(layer, TRANSPOSED_CONVOLUTIONS) and layer.groups == 1:
        return fuse_conv_bn_eval(layer, batch_norm, transpose=True)
    return None


@torch.no_grad()
def fold_batch_norms(model: nn.Module) -> list[BatchNormFold]:
    """Fold every BatchNorm of ``model`` that directly follows a linear or (transposed) convolution layer inside an
    ``nn.Sequential``: the layer becomes one with folded weights and the BatchNorm an ``nn.Identity``, in place.

    Args:
        model: A model in eval mode (its BatchNorms normalise with their running statistics).

    Returns:
        The folds made, each able to `BatchNormFold.undo` itself; empty when nothing could be folded.

    Raises:
        ValueError: ``model`` is in training mode, or a BatchNorm to fold keeps no running statistics.
    """
    if model.training:
        raise ValueError(
            f"{type(model).__name__} is in training mode: its BatchNorms use batch statistics, which cannot be folded. "
            "Call `.eval()` first (pipelines load their models in eval mode)."
        )
    folds = []
    for container in [module for module in model.modules() if isinstance(module, nn.Sequential)]:
        for index in range(len(container) - 1):
            layer, batch_norm = container[index], container[index + 1]
            if not isinstance(batch_norm, _BatchNorm):
                continue
            if batch_norm.running_mean is None:
                raise ValueError(
                    f"{type(model).__name__} has a {type(batch_norm).__name__} without running statistics "
                    "(track_running_stats=False): it normalises every batch by itself and cannot be folded."
                )
            folded = _folded_layer(layer, batch_norm)
            if folded is None:
                continue
            fold = BatchNormFold(container, index, layer, batch_norm, folded)
            fold.redo()
            folds.append(fold)
    return folds


__all__ = ["BatchNormFold", "fold_batch_norms"]
