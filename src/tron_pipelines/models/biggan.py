"""BigGAN (Brock et al., 2019) in the BigGAN-PyTorch layout used by the official TR0N, as a TR0N generator.

The official TR0N drives DeepMind's TF-Hub BigGAN 256/512 (converted to BigGAN-PyTorch's module layout) with two
latents: the noise ``z`` and a *continuous* 128-d class embedding ``y`` that is normally a row of the generator's
``shared`` embedding table. `BigGANGenerator` reproduces that network's inference-time forward pass: hierarchical
``z`` (split into one chunk for the input layer and one per residual block), class-conditional batch norm with frozen
statistics, one self-attention block, and spectral norm folded into plain weights by the converter
(`tron_pipelines.conversion.biggan.convert_biggan_pytorch`).

`BigGANSelfAttention` and `ClassEmbeddingPriorMixin` are shared with `tron_pipelines.models.biggan_deep`.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin  # noqa: F401  (diffusers' loader looks the base class up in this module)
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .generator import LATENT_PRIORS, LatentSpec, TronGenerator, sample_normal_prior


# Architectures of the TF-Hub BigGAN checkpoints used by TR0N (`get_G` in the official code). The channel widths of
# the residual blocks are ``channel_width * channel_multipliers[i] -> channel_width * channel_multipliers[i + 1]``.
BIGGAN_ARCHITECTURES = {
    256: {"latent_dim": 140, "channel_multipliers": (16, 16, 8, 8, 4, 2, 1), "attention_resolution": 128},
    512: {"latent_dim": 128, "channel_multipliers": (16, 16, 8, 8, 4, 2, 1, 1), "attention_resolution": 64},
}

# Side of the feature map produced by the input projection, in both BigGAN and BigGAN-deep.
BOTTOM_WIDTH = 4


def sample_class_labels(
    num_classes: int, batch_size: int, generator: torch.Generator | list[torch.Generator] | None = None
) -> torch.Tensor:
    """Draw ``batch_size`` class indices uniformly from ``range(num_classes)``, int64 on the CPU.

    With a list of generators, sample ``i`` draws its class with ``generator[i]``, so item ``i`` of a batch equals a
    single draw with that generator (diffusers' per-sample convention). Indices are drawn on the generator's device.
    """
    if isinstance(generator, list):
        if len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for a batch of {batch_size}; pass one per sample.")
        return torch.cat([torch.randint(num_classes, (1,), generator=g, device=g.device).cpu() for g in generator])
    index_device = generator.device if generator is not None else "cpu"
    return torch.randint(num_classes, (batch_size,), generator=generator, device=index_device).cpu()


def sample_class_embeddings(
    embedding_table: torch.Tensor,
    batch_size: int,
    generator: torch.Generator | list[torch.Generator] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw ``batch_size`` rows of ``embedding_table`` ``(num_classes, dim)``, classes uniformly at random
    (`sample_class_labels`).

    Returns:
        ``(batch_size, dim)`` tensor on ``device`` (default: the table's device) in ``dtype``, detached.
    """
    indices = sample_class_labels(embedding_table.shape[0], batch_size, generator)
    rows = embedding_table.detach()[indices.to(embedding_table.device)]
    return rows.to(device=device if device is not None else embedding_table.device, dtype=dtype)


class ClassEmbeddingPriorMixin:
    """`sample_latents` for generators whose auxiliary latent ``y`` is a class embedding (table ``class_embedding``)."""

    def sample_latents(
        self,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Packed ``[z, y]`` ``(batch_size, latent_dim + class_embed_dim)``: ``z`` from its prior, ``y`` a row of the
        class embedding table of a uniformly drawn class (TR0N's synthetic pairs). Per generator, ``z`` is drawn
        before the class."""
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for a batch of {batch_size}; pass one per sample.")
        z_spec = self.main_latent
        noise = sample_normal_prior((batch_size, z_spec.dim), z_spec.prior, z_spec.threshold, generator, device, dtype)
        class_embeddings = sample_class_embeddings(
            self.class_embedding.weight, batch_size, generator, noise.device, dtype
        )
        return torch.cat([noise, class_embeddings], dim=1)


class BigGANSelfAttention(nn.Module):
    """SAGAN self-attention as used by BigGAN and BigGAN-deep: ``x + residual_scale * attention(x)``.

    Queries come from every position; keys and values from a 2x2 max-pooled map, so the attention matrix is
    ``(H*W, H*W/4)``. There is no ``1/sqrt(d)`` logit scaling in these models.

    Args:
        channels: Channels ``C`` of the input; must be divisible by 8 (queries/keys use ``C/8``, values ``C/2``).

    Shapes: ``(B, C, H, W) -> (B, C, H, W)`` with even ``H`` and ``W``.
    """

    def __init__(self, channels: int):
        super().__init__()
        if channels % 8 != 0:
            raise ValueError(f"Self-attention needs a channel count divisible by 8, got {channels}.")
        self.to_query = nn.Conv2d(channels, channels // 8, kernel_size=1, bias=False)
        self.to_key = nn.Conv2d(channels, channels // 8, kernel_size=1, bias=False)
        self.to_value = nn.Conv2d(channels, channels // 2, kernel_size=1, bias=False)
        self.to_out = nn.Conv2d(channels // 2, channels, kernel_size=1, bias=False)
        # SAGAN's gamma. Trained from 0 so that the block starts as the identity.
        self.residual_scale = nn.Parameter(torch.zeros(()))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = hidden_states.shape
        query = self.to_query(hidden_states).flatten(2).transpose(1, 2)
        key = F.max_pool2d(self.to_key(hidden_states), 2).flatten(2).transpose(1, 2)
        value = F.max_pool2d(self.to_value(hidden_states), 2).flatten(2).transpose(1, 2)
        attended = F.scaled_dot_product_attention(query, key, value, scale=1.0)
        attended = attended.transpose(1, 2).reshape(batch, -1, height, width)
        return hidden_states + self.residual_scale * self.to_out(attended)


class BigGANFrozenBatchNorm(nn.Module):
    """Batch norm with stored statistics and a learned per-channel affine transform, ``(B, C, H, W)`` in and out.

    Always normalises with the stored statistics (the generator is inference-only), in training mode too.
    """

    def __init__(self, num_channels: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("running_mean", torch.zeros(num_channels))
        self.register_buffer("running_var", torch.ones(num_channels))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            hidden_states, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )


class BigGANConditionalBatchNorm(nn.Module):
    """Class-conditional batch norm: ``normalize(x) * (1 + scale(c)) + shift(c)`` with stored statistics.

    Args:
        num_channels: Channels ``C`` of the feature map.
        condition_dim: Size of the condition vector ``c``.
        eps: Added to the variance.

    Shapes: ``x (B, C, H, W)``, ``condition (B, condition_dim)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, num_channels: int, condition_dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.scale = nn.Linear(condition_dim, num_channels, bias=False)
        self.shift = nn.Linear(condition_dim, num_channels, bias=False)
        self.register_buffer("running_mean", torch.zeros(num_channels))
        self.register_buffer("running_var", torch.ones(num_channels))

    def forward(self, hidden_states: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        normalized = F.batch_norm(hidden_states, self.running_mean, self.running_var, training=False, eps=self.eps)
        scale = 1 + self.scale(condition)[:, :, None, None]
        shift = self.shift(condition)[:, :, None, None]
        return normalized * scale + shift


class BigGANResBlock(nn.Module):
    """BigGAN's upsampling residual block.

    Main path: ``norm1 -> ReLU -> 2x nearest upsample -> conv1 (3x3) -> norm2 -> ReLU -> conv2 (3x3)``; shortcut:
    ``2x nearest upsample -> 1x1 conv``. Both norms are conditioned on the block's condition vector.

    Shapes: ``x (B, in_channels, H, W)``, ``condition (B, condition_dim)`` -> ``(B, out_channels, 2H, 2W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, condition_dim: int, eps: float):
        super().__init__()
        self.norm1 = BigGANConditionalBatchNorm(in_channels, condition_dim, eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = BigGANConditionalBatchNorm(out_channels, condition_dim, eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, hidden_states: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        residual = F.interpolate(hidden_states, scale_factor=2, mode="nearest")
        hidden_states = F.relu(self.norm1(hidden_states, condition))
        hidden_states = self.conv1(F.interpolate(hidden_states, scale_factor=2, mode="nearest"))
        hidden_states = self.conv2(F.relu(self.norm2(hidden_states, condition)))
        return hidden_states + self.shortcut(residual)


class BigGANGenerator(ClassEmbeddingPriorMixin, TronGenerator, ConfigMixin):
    """BigGAN generator of the official TR0N (TF-Hub BigGAN in BigGAN-PyTorch's layout), inference only.

    ``z`` is split into ``num_blocks + 1`` equal chunks: the first feeds the input projection, chunk ``i + 1``
    conditions residual block ``i`` together with the class embedding (``condition = [y, z_chunk]``, ``y`` first).
    The class embedding is passed in already embedded, as TR0N treats it as a free continuous latent;
    ``class_embedding`` holds the table (``shared`` in BigGAN-PyTorch) that `sample_latents` draws ``y`` from.

    Defaults are the 256 px checkpoint; `BIGGAN_ARCHITECTURES` lists the 256 and 512 px settings. Weights come from
    `tron_pipelines.conversion.biggan.convert_biggan_pytorch` (spectral norm already folded into the weights).

    Args:
        latent_dim: Size of ``z``; must be divisible by ``len(channel_multipliers)`` (the number of chunks).
        class_embed_dim: Size of the class embedding ``y``.
        num_classes: Rows of the class embedding table.
        channel_width: Base channel count (BigGAN's ``G_ch``).
        channel_multipliers: Block ``i`` maps ``channel_width * channel_multipliers[i]`` channels to
            ``channel_width * channel_multipliers[i + 1]`` and doubles the resolution, starting from 4x4.
        attention_resolution: Self-attention follows the block whose output has this side.
        eps: Batch-norm epsilon (1e-5 in TR0N's `get_G`).
        latent_prior / latent_threshold: Prior of ``z`` (see `LatentSpec`); TR0N clips N(0, I) to [-2, 2].
    """

    @register_to_config
    def __init__(
        self,
        latent_dim: int = 140,
        class_embed_dim: int = 128,
        num_classes: int = 1000,
        channel_width: int = 96,
        channel_multipliers: tuple[int, ...] = (16, 16, 8, 8, 4, 2, 1),
        attention_resolution: int = 128,
        eps: float = 1e-5,
        latent_prior: str = "normal",
        latent_threshold: float | None = 2.0,
    ):
        super().__init__()
        if latent_prior not in LATENT_PRIORS:
            raise ValueError(f"`latent_prior` must be one of {LATENT_PRIORS}, got {latent_prior!r}.")
        num_blocks = len(channel_multipliers) - 1
        if num_blocks < 1:
            raise ValueError("`channel_multipliers` needs at least two entries (one residual block).")
        if latent_dim % (num_blocks + 1) != 0:
            raise ValueError(
                f"`latent_dim` ({latent_dim}) must split into {num_blocks + 1} equal chunks (one for the input "
                f"layer, one per block)."
            )
        block_resolutions = [BOTTOM_WIDTH * 2 ** (index + 1) for index in range(num_blocks)]
        if attention_resolution not in block_resolutions:
            raise ValueError(
                f"`attention_resolution` must be one of the block output sides {block_resolutions}, "
                f"got {attention_resolution}."
            )
        chunk_dim = latent_dim // (num_blocks + 1)
        channels = [channel_width * multiplier for multiplier in channel_multipliers]

        self.class_embedding = nn.Embedding(num_classes, class_embed_dim)
        self.input_projection = nn.Linear(chunk_dim, channels[0] * BOTTOM_WIDTH**2)
        self.blocks = nn.ModuleList(
            BigGANResBlock(channels[index], channels[index + 1], class_embed_dim + chunk_dim, eps)
            for index in range(num_blocks)
        )
        self.attention_block_index = block_resolutions.index(attention_resolution)
        self.attention = BigGANSelfAttention(channels[self.attention_block_index + 1])
        self.output_norm = BigGANFrozenBatchNorm(channels[-1], eps)
        self.to_rgb = nn.Conv2d(channels[-1], 3, kernel_size=3, padding=1)

    @property
    def latent_specs(self) -> list[LatentSpec]:
        """``z`` (hierarchical noise) then ``y`` (class embedding; its prior is the embedding table, see
        `sample_latents`)."""
        return [
            LatentSpec("z", self.config.latent_dim, self.config.latent_prior, self.config.latent_threshold),
            LatentSpec("y", self.config.class_embed_dim),
        ]

    @property
    def resolution(self) -> int:
        return BOTTOM_WIDTH * 2 ** len(self.blocks)

    def forward(self, noise: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
        """Render images.

        Args:
            noise: ``(B, latent_dim)`` noise ``z``, split into ``len(blocks) + 1`` equal chunks.
            class_embeddings: ``(B, class_embed_dim)`` continuous class embedding ``y`` (e.g. rows of
                ``class_embedding.weight``), used as is.

        Returns:
            ``(B, 3, resolution, resolution)`` images in ``[-1, 1]``.
        """
        if noise.ndim != 2 or noise.shape[1] != self.config.latent_dim:
            raise ValueError(f"`noise` must be (batch, {self.config.latent_dim}), got {tuple(noise.shape)}.")
        if class_embeddings.shape != (noise.shape[0], self.config.class_embed_dim):
            raise ValueError(
                f"`class_embeddings` must be ({noise.shape[0]}, {self.config.class_embed_dim}), "
                f"got {tuple(class_embeddings.shape)}."
            )
        first_chunk, *block_chunks = noise.chunk(len(self.blocks) + 1, dim=1)
        hidden_states = self.input_projection(first_chunk).view(noise.shape[0], -1, BOTTOM_WIDTH, BOTTOM_WIDTH)
        for index, (block, chunk) in enumerate(zip(self.blocks, block_chunks, strict=True)):
            hidden_states = block(hidden_states, torch.cat([class_embeddings, chunk], dim=1))
            if index == self.attention_block_index:
                hidden_states = self.attention(hidden_states)
        hidden_states = F.relu(self.output_norm(hidden_states))
        return torch.tanh(self.to_rgb(hidden_states))

    def generate(self, latents: torch.Tensor) -> torch.Tensor:
        """Packed ``[z, y]`` latents ``(B, latent_dim + class_embed_dim)`` -> images ``(B, 3, H, W)`` in [-1, 1]."""
        parts = self.split_latents(latents)
        return self(parts["z"], parts["y"])


__all__ = [
    "BIGGAN_ARCHITECTURES",
    "BigGANGenerator",
    "BigGANResBlock",
    "BigGANConditionalBatchNorm",
    "BigGANFrozenBatchNorm",
    "BigGANSelfAttention",
    "ClassEmbeddingPriorMixin",
    "sample_class_embeddings",
    "sample_class_labels",
]
