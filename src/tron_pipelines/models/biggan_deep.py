"""BigGAN-deep (Brock et al., 2019) as distributed by `pytorch-pretrained-biggan`, as a TR0N generator.

`BigGANDeepGenerator` reproduces `pytorch_pretrained_biggan.BigGAN` (the 128, 256 and 512 px DeepMind checkpoints in
eval mode) with spectral norm folded into plain weights by the converter
(`tron_pipelines.conversion.biggan.convert_pytorch_pretrained_biggan`). Its batch norms have no single set of running
statistics: the checkpoints store one set per truncation value on a grid over ``[0, 1]``, and the generator
normalises with the set belonging to the truncation it is run at.

The TR0N latents are the noise ``z`` (a standard normal truncated to ``[-latent_threshold, latent_threshold]``) and
the continuous class embedding ``y = one_hot(class) @ class_embedding.weight``.
"""

import math
from itertools import pairwise

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin  # noqa: F401  (diffusers' loader looks the base class up in this module)
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .biggan import BOTTOM_WIDTH, BigGANSelfAttention, ClassEmbeddingPriorMixin
from .generator import LATENT_PRIORS, LatentSpec, TronGenerator


def select_truncation_statistics(table: torch.Tensor, truncation: float) -> torch.Tensor:
    """Batch-norm statistics for ``truncation`` from a table ``(num_truncations, C)`` -> ``(C,)``.

    Row ``i`` holds the statistics measured at truncation ``i / (num_truncations - 1)``. This follows
    `pytorch_pretrained_biggan` exactly, including its float arithmetic, so outputs match it: on a grid point the row
    is used as is; between grid points ``i`` and ``i + 1`` at fractional position ``f`` it returns
    ``f * row_i + (1 - f) * row_{i+1}``, which weights the *farther* grid point more; on the few grid points whose
    division is inexact in floating point (0.14, 0.28, 0.56, 0.58, 0.94 for 51 rows) that makes it return a
    neighbouring row. Prefer other multiples of the grid step (0.02 for the released checkpoints: 0.4, 0.5, 1.0, ...).
    """
    step = 1.0 / (table.shape[0] - 1)
    fraction, index = math.modf(truncation / step)
    index = int(index)
    if fraction == 0.0:
        return table[index]
    return table[index] * fraction + table[index + 1] * (1 - fraction)


class BigGANDeepConditionalBatchNorm(nn.Module):
    """Batch norm with truncation-dependent statistics and a per-sample affine transform predicted from the condition:
    ``(x - mean_t) / sqrt(var_t + eps) * (1 + scale(c)) + shift(c)``.

    Args:
        num_channels: Channels ``C`` of the feature map.
        condition_dim: Size of the condition vector ``c`` (``[z, y]``).
        num_truncations: Rows of the statistics tables (truncation grid points over ``[0, 1]``).
        eps: Added to the variance.

    Shapes: ``x (B, C, H, W)``, ``condition (B, condition_dim)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, num_channels: int, condition_dim: int, num_truncations: int, eps: float):
        super().__init__()
        self.eps = eps
        self.scale = nn.Linear(condition_dim, num_channels, bias=False)
        self.shift = nn.Linear(condition_dim, num_channels, bias=False)
        self.register_buffer("truncation_means", torch.zeros(num_truncations, num_channels))
        self.register_buffer("truncation_vars", torch.ones(num_truncations, num_channels))

    def forward(self, hidden_states: torch.Tensor, condition: torch.Tensor, truncation: float) -> torch.Tensor:
        mean = select_truncation_statistics(self.truncation_means, truncation)[None, :, None, None]
        var = select_truncation_statistics(self.truncation_vars, truncation)[None, :, None, None]
        scale = 1 + self.scale(condition)[:, :, None, None]
        shift = self.shift(condition)[:, :, None, None]
        return (hidden_states - mean) / torch.sqrt(var + self.eps) * scale + shift


class BigGANDeepBatchNorm(nn.Module):
    """Batch norm with truncation-dependent statistics and a learned per-channel affine transform (the output norm).

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, num_channels: int, num_truncations: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("truncation_means", torch.zeros(num_truncations, num_channels))
        self.register_buffer("truncation_vars", torch.ones(num_truncations, num_channels))

    def forward(self, hidden_states: torch.Tensor, truncation: float) -> torch.Tensor:
        mean = select_truncation_statistics(self.truncation_means, truncation)
        var = select_truncation_statistics(self.truncation_vars, truncation)
        return F.batch_norm(hidden_states, mean, var, self.weight, self.bias, training=False, eps=self.eps)


class BigGANDeepBlock(nn.Module):
    """BigGAN-deep's bottleneck residual block.

    Main path: four ``conditional norm -> ReLU -> conv`` stages: ``conv1`` 1x1 (``in -> in / 4``), [2x nearest
    upsample], ``conv2`` 3x3, ``conv3`` 3x3, ``conv4`` 1x1 (``in / 4 -> out``). Shortcut: the first ``out`` channels
    of the input (``out <= in``), [2x nearest upsample].

    Shapes: ``x (B, in_channels, H, W)``, ``condition (B, condition_dim)`` -> ``(B, out_channels, H', W')`` with
    ``H' = 2H`` when ``upsample`` else ``H``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        condition_dim: int,
        upsample: bool,
        num_truncations: int,
        eps: float,
    ):
        super().__init__()
        self.out_channels = out_channels
        self.upsample = upsample
        bottleneck_channels = in_channels // 4
        self.norm1 = BigGANDeepConditionalBatchNorm(in_channels, condition_dim, num_truncations, eps)
        self.conv1 = nn.Conv2d(in_channels, bottleneck_channels, kernel_size=1)
        self.norm2 = BigGANDeepConditionalBatchNorm(bottleneck_channels, condition_dim, num_truncations, eps)
        self.conv2 = nn.Conv2d(bottleneck_channels, bottleneck_channels, kernel_size=3, padding=1)
        self.norm3 = BigGANDeepConditionalBatchNorm(bottleneck_channels, condition_dim, num_truncations, eps)
        self.conv3 = nn.Conv2d(bottleneck_channels, bottleneck_channels, kernel_size=3, padding=1)
        self.norm4 = BigGANDeepConditionalBatchNorm(bottleneck_channels, condition_dim, num_truncations, eps)
        self.conv4 = nn.Conv2d(bottleneck_channels, out_channels, kernel_size=1)

    def forward(self, hidden_states: torch.Tensor, condition: torch.Tensor, truncation: float) -> torch.Tensor:
        residual = hidden_states[:, : self.out_channels]
        hidden_states = self.conv1(F.relu(self.norm1(hidden_states, condition, truncation)))
        hidden_states = F.relu(self.norm2(hidden_states, condition, truncation))
        if self.upsample:
            hidden_states = F.interpolate(hidden_states, scale_factor=2, mode="nearest")
            residual = F.interpolate(residual, scale_factor=2, mode="nearest")
        hidden_states = self.conv2(hidden_states)
        hidden_states = self.conv3(F.relu(self.norm3(hidden_states, condition, truncation)))
        hidden_states = self.conv4(F.relu(self.norm4(hidden_states, condition, truncation)))
        return hidden_states + residual


class BigGANDeepGenerator(ClassEmbeddingPriorMixin, TronGenerator, ConfigMixin):
    """BigGAN-deep generator (DeepMind's checkpoints as shipped by `pytorch-pretrained-biggan`), inference only.

    Every block is conditioned on the same vector ``[z, y]`` (``z`` first). The class embedding ``y`` is
    ``class_vector @ class_embedding.weight`` (a row of the table for a one-hot ``class_vector``). Defaults are the
    128 px checkpoint; `tron_pipelines.conversion.biggan.convert_pytorch_pretrained_biggan` builds the config of the
    256 and 512 px ones from their ``config.json``.

    Truncation: `pytorch_pretrained_biggan` samples ``z = truncation * truncnorm(-2, 2)`` and normalises with the
    batch-norm statistics of that truncation. `forward` and `synthesize` take the scaled noise and the truncation
    like the original. `generate` (the TR0N interface) keeps the latent a plain truncated standard normal and applies
    ``default_truncation`` itself, so the translator's and Langevin's bound on ``z`` does not depend on it. The
    default 1.0 keeps the full diversity of the prior, like TR0N's BigGAN setting (z ~ N(0, I) clipped at 2, no
    truncation); lower values (0.4-0.7) trade diversity for fidelity.

    Args:
        latent_dim: Size of ``z``.
        class_embed_dim: Size of the class embedding ``y``.
        num_classes: Rows of the class embedding table.
        channel_width: Base channel count.
        channel_multipliers: Block ``i`` maps ``channel_width * channel_multipliers[i]`` channels to
            ``channel_width * channel_multipliers[i + 1]`` (never more channels than it gets).
        upsample_blocks: One flag per block: whether it doubles the resolution (starting from 4x4).
        attention_block_index: Self-attention is applied to the input of this block.
        num_truncations: Grid points of the truncation-dependent batch-norm statistics over ``[0, 1]``.
        eps: Batch-norm epsilon.
        default_truncation: Truncation used by `generate`, and by `forward`/`synthesize` when none is given, in
            ``(0, 1]``.
        latent_prior / latent_threshold: Prior of ``z`` for TR0N (see `LatentSpec`).
    """

    @register_to_config
    def __init__(
        self,
        latent_dim: int = 128,
        class_embed_dim: int = 128,
        num_classes: int = 1000,
        channel_width: int = 128,
        channel_multipliers: tuple[int, ...] = (16, 16, 16, 16, 8, 8, 4, 4, 2, 2, 1),
        upsample_blocks: tuple[bool, ...] = (False, True, False, True, False, True, False, True, False, True),
        attention_block_index: int = 8,
        num_truncations: int = 51,
        eps: float = 1e-4,
        default_truncation: float = 1.0,
        latent_prior: str = "truncated_normal",
        latent_threshold: float | None = 2.0,
    ):
        super().__init__()
        if latent_prior not in LATENT_PRIORS:
            raise ValueError(f"`latent_prior` must be one of {LATENT_PRIORS}, got {latent_prior!r}.")
        num_blocks = len(channel_multipliers) - 1
        if num_blocks < 1 or len(upsample_blocks) != num_blocks:
            raise ValueError(f"`upsample_blocks` needs one flag per block ({num_blocks}), got {len(upsample_blocks)}.")
        if not 0 <= attention_block_index < num_blocks:
            raise ValueError(f"`attention_block_index` must be in [0, {num_blocks}), got {attention_block_index}.")
        if any(out_mult > in_mult for in_mult, out_mult in pairwise(channel_multipliers)):
            raise ValueError(f"Blocks can only keep or reduce channels, got {tuple(channel_multipliers)}.")
        self._check_truncation(default_truncation)
        channels = [channel_width * multiplier for multiplier in channel_multipliers]
        condition_dim = latent_dim + class_embed_dim

        self.class_embedding = nn.Embedding(num_classes, class_embed_dim)
        self.input_projection = nn.Linear(condition_dim, channels[0] * BOTTOM_WIDTH**2)
        self.blocks = nn.ModuleList(
            BigGANDeepBlock(channels[index], channels[index + 1], condition_dim, upsample, num_truncations, eps)
            for index, upsample in enumerate(upsample_blocks)
        )
        self.attention = BigGANSelfAttention(channels[attention_block_index])
        self.output_norm = BigGANDeepBatchNorm(channels[-1], num_truncations, eps)
        self.to_rgb = nn.Conv2d(channels[-1], 3, kernel_size=3, padding=1)

    @staticmethod
    def _check_truncation(truncation: float) -> None:
        if not 0.0 < truncation <= 1.0:
            raise ValueError(f"`truncation` must be in (0, 1], got {truncation}.")

    @property
    def latent_specs(self) -> list[LatentSpec]:
        """``z`` (truncated standard normal) then ``y`` (class embedding; its prior is the embedding table, see
        `sample_latents`)."""
        return [
            LatentSpec("z", self.config.latent_dim, self.config.latent_prior, self.config.latent_threshold),
            LatentSpec("y", self.config.class_embed_dim),
        ]

    @property
    def resolution(self) -> int:
        return BOTTOM_WIDTH * 2 ** sum(bool(flag) for flag in self.config.upsample_blocks)

    def embed_classes(self, class_vector: torch.Tensor) -> torch.Tensor:
        """``(B, num_classes)`` one-hot (or soft) class vectors -> ``(B, class_embed_dim)`` class embeddings ``y``."""
        return class_vector @ self.class_embedding.weight

    def forward(
        self, noise: torch.Tensor, class_vector: torch.Tensor, truncation: float | None = None
    ) -> torch.Tensor:
        """Same call as `pytorch_pretrained_biggan.BigGAN`: ``model(noise, class_vector, truncation)``.

        Args:
            noise: ``(B, latent_dim)``, typically ``truncation * truncnorm(-2, 2)``.
            class_vector: ``(B, num_classes)`` one-hot (or soft) class vectors.
            truncation: In ``(0, 1]``; selects the batch-norm statistics. Defaults to ``default_truncation``.

        Returns:
            ``(B, 3, resolution, resolution)`` images in ``[-1, 1]``.
        """
        return self.synthesize(noise, self.embed_classes(class_vector), truncation)

    def synthesize(
        self, noise: torch.Tensor, class_embeddings: torch.Tensor, truncation: float | None = None
    ) -> torch.Tensor:
        """Like `forward`, with the class embedding ``y`` ``(B, class_embed_dim)`` given directly."""
        truncation = self.config.default_truncation if truncation is None else truncation
        self._check_truncation(truncation)
        if noise.ndim != 2 or noise.shape[1] != self.config.latent_dim:
            raise ValueError(f"`noise` must be (batch, {self.config.latent_dim}), got {tuple(noise.shape)}.")
        if class_embeddings.shape != (noise.shape[0], self.config.class_embed_dim):
            raise ValueError(
                f"`class_embeddings` must be ({noise.shape[0]}, {self.config.class_embed_dim}), "
                f"got {tuple(class_embeddings.shape)}."
            )
        condition = torch.cat([noise, class_embeddings], dim=1)
        hidden_states = self.input_projection(condition).view(noise.shape[0], -1, BOTTOM_WIDTH, BOTTOM_WIDTH)
        for index, block in enumerate(self.blocks):
            if index == self.config.attention_block_index:
                hidden_states = self.attention(hidden_states)
            hidden_states = block(hidden_states, condition, truncation)
        hidden_states = F.relu(self.output_norm(hidden_states, truncation))
        return torch.tanh(self.to_rgb(hidden_states))

    def generate(self, latents: torch.Tensor) -> torch.Tensor:
        """Packed ``[z, y]`` latents ``(B, latent_dim + class_embed_dim)`` -> images ``(B, 3, H, W)`` in [-1, 1].

        Runs ``synthesize(default_truncation * z, y, default_truncation)`` (see the class docstring).
        """
        parts = self.split_latents(latents)
        truncation = self.config.default_truncation
        return self.synthesize(truncation * parts["z"], parts["y"], truncation)


__all__ = [
    "BigGANDeepGenerator",
    "BigGANDeepBlock",
    "BigGANDeepBatchNorm",
    "BigGANDeepConditionalBatchNorm",
    "select_truncation_statistics",
]
