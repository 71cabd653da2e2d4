"""NVAE's decoder (Vahdat & Kautz, 2020, "NVAE: A Deep Hierarchical Variational Autoencoder") as a TR0N generator.

Plain PyTorch, CPU and GPU, written from the paper and the checkpoint layout of NVlabs/NVAE's ``train.py``; the
converter `tron_pipelines.conversion.nvae` reads those checkpoints and ``tests/fixtures/nvae`` proves the outputs equal
to the upstream code run through the official TR0N's decoder wrapper.

NVAE's generative model is a hierarchy of latent groups. The decoder starts from a learned feature map
``prior_features`` at the lowest resolution and walks the decoder tower: per latent group, a *prior head* maps the
current features ``s`` to ``(mu, log_sigma)`` of that group's prior, a latent ``z_g`` is chosen, and a *combiner*
(a weight-normalised 1x1 convolution over ``cat([s, z_g])``) folds it into the features; residual cells run between the
groups and an upsampling cell ends every scale but the last. Post-processing cells then upsample to the image
resolution and a 3x3 convolution gives the parameters of a discretised mixture of logistics per pixel.

What TR0N treats as G (its ``NVAE_Dec_Wrapper``), and what `NVAEGenerator.generate` computes:

- the latent is the *top* group only, ``z_0`` of shape ``(num_latent_per_group, side, side)``, flattened row-major;
  its prior is ``N(0, (1.01 * temperature)^2)`` (NVAE's top prior at the sampling temperature);
- groups ``1 .. prior_mean_groups`` (7 in TR0N, hard-coded there) take their prior mean ``5 * tanh(mu / 5)``;
- later groups are sampled from their priors at the temperature: ``mu + sigma * eps`` with
  ``sigma = (exp(5 * tanh(log_sigma / 5)) + 0.01) * temperature``;
- BatchNorm uses the checkpoint's running statistics (eval mode);
- the image is the mean of the discretised logistic mixture (softmax-weighted component means with the mixture's
  autoregressive colour coefficients, each channel clamped to ``[-1, 1]``), which is already in ``[-1, 1]``.

The sampled groups' noise ``eps`` (see `NVAEGenerator` for the two modes): ``noise_seed=None`` draws it afresh on every
call, as the method does, so G is stochastic given ``z_0``; a ``noise_seed`` fixes it, so G is a deterministic map.

Weight normalisation is part of the forward pass (``exp(log_weight_norm) * W / (||W|| + 1e-5)`` per output channel,
recomputed from the stored tensors); NVAE's spectral normalisation is only a training loss and has no forward effect.
"""

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin  # noqa: F401  (diffusers' loader looks the base class up in this module)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .generator import LatentSpec, TronGenerator


# NVAE doubles (halves) the channels at every down- (up-) sampling cell.
CHANNEL_MULTIPLIER = 2
# The residual branch of every cell is scaled by this before it is added to the skip branch.
CELL_RESIDUAL_SCALE = 0.1
# Weight normalisation divides by the per-output-channel norm plus this.
WEIGHT_NORM_EPS = 1e-5
BATCH_NORM_EPS = 1e-5
# NVAE's soft clamp of prior parameters, ``bound * tanh(x / bound)``, and the floor added to every prior sigma.
SOFT_CLAMP_BOUND = 5.0
SIGMA_FLOOR = 1e-2
# NVAE's top-group prior is N(0, (exp(0) + SIGMA_FLOOR)^2) before the temperature.
TOP_PRIOR_STD = 1.0 + SIGMA_FLOOR
# The discretised logistic mixture has 10 parameter maps per component: a logit and, per colour, a mean, a log-scale
# and an autoregressive coefficient.
MIXTURE_MAPS_PER_COMPONENT = 10
# The decoder cell operations this port implements: NVAE's inverted residual ("mconv") cells, e.g. "mconv_e6k5g0" =
# expansion 6, kernel 5, groups 0 (depthwise). Every decoder-side cell of NVAE's `res_mbconv` architecture (all the
# released checkpoints) is one.
INVERTED_RESIDUAL_OP = re.compile(r"mconv_e(?P<expansion>\d+)k(?P<kernel>\d+)g(?P<groups>\d+)")


def soft_clamp(x: torch.Tensor) -> torch.Tensor:
    """NVAE's differentiable clamp of prior parameters to ``(-5, 5)``: ``5 * tanh(x / 5)``."""
    return SOFT_CLAMP_BOUND * torch.tanh(x / SOFT_CLAMP_BOUND)


def parse_inverted_residual_op(op: str) -> tuple[int, int, int]:
    """``"mconv_e{expansion}k{kernel}g{groups}"`` -> ``(expansion, kernel, groups)``; ``ValueError`` for other ops."""
    match = INVERTED_RESIDUAL_OP.fullmatch(op)
    if match is None or int(match["kernel"]) % 2 == 0:
        raise ValueError(
            f"Unsupported NVAE cell operation {op!r}: this port implements the decoder's inverted residual cells "
            "'mconv_e{expansion}k{odd kernel}g{groups}' (e.g. 'mconv_e6k5g0', as in NVAE's 'res_mbconv' architecture)."
        )
    return int(match["expansion"]), int(match["kernel"]), int(match["groups"])


def discretized_logistic_mixture_mean(logits: torch.Tensor, num_mixtures: int) -> torch.Tensor:
    """Mean image of NVAE's discretised logistic mixture, as the official TR0N renders NVAE (``DiscMixLogistic.mean``).

    Args:
        logits: ``(B, 10 * num_mixtures, H, W)``: mixture logits ``[:M]``, then per colour channel ``M`` means,
            ``M`` log-scales (unused by the mean) and ``M`` autoregressive coefficients (through ``tanh``).

    Returns:
        ``(B, 3, H, W)`` in ``[-1, 1]``: the softmax-weighted means ``m`` and coefficients ``c``, chained as
        ``x0 = clamp(m0)``, ``x1 = clamp(m1 + c0 x0)``, ``x2 = clamp(m2 + c1 x0 + c2 x1)``.
    """
    batch, _, height, width = logits.shape
    weights = torch.softmax(logits[:, :num_mixtures], dim=1).unsqueeze(1)
    parameters = logits[:, num_mixtures:].reshape(batch, 3, 3 * num_mixtures, height, width)
    means = (parameters[:, :, :num_mixtures] * weights).sum(dim=2)
    coefficients = (torch.tanh(parameters[:, :, 2 * num_mixtures :]) * weights).sum(dim=2)
    red = means[:, 0].clamp(-1, 1)
    green = (means[:, 1] + coefficients[:, 0] * red).clamp(-1, 1)
    blue = (means[:, 2] + coefficients[:, 1] * red + coefficients[:, 2] * green).clamp(-1, 1)
    return torch.stack([red, green, blue], dim=1)


class NVAEWeightNormConv2d(nn.Module):
    """Convolution with NVAE's weight normalisation: ``W' = exp(log_weight_norm) * W / (||W||_o + 1e-5)``, where
    ``||W||_o`` is the norm of output channel ``o``'s weights. ``log_weight_norm`` has shape ``(out_channels,)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.log_weight_norm = nn.Parameter(torch.zeros(out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.padding = padding

    def normalized_weight(self) -> torch.Tensor:
        # NVAE's order of operations (gain times weight, then divided by the norm), so that float rounding matches.
        norm = self.weight.square().sum(dim=(1, 2, 3)).sqrt().view(-1, 1, 1, 1)
        return self.log_weight_norm.exp().view(-1, 1, 1, 1) * self.weight / (norm + WEIGHT_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.normalized_weight(), self.bias, padding=self.padding)


class NVAESqueezeExcitation(nn.Module):
    """Channel gating ``x * sigmoid(W2 relu(W1 mean_hw(x)))`` with ``max(channels // 16, 4)`` hidden units."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(channels // 16, 4)
        self.gate = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean(dim=(2, 3)))[:, :, None, None]


def conv_batch_norm_swish(in_channels: int, out_channels: int, kernel_size: int, groups: int = 1) -> nn.Sequential:
    """A bias-free convolution (no weight norm), BatchNorm and Swish, kept as one `nn.Sequential` so that
    `TronPipeline.fuse_batch_norm` can fold the BatchNorm into the convolution. Swish is `nn.SiLU`: NVAE writes
    ``x * sigmoid(x)``, which rounds differently (~1e-6 on the images) but takes two passes over the largest
    activations and keeps two of them for the backward pass instead of one."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels, eps=BATCH_NORM_EPS),
        nn.SiLU(),
    )


class NVAEInvertedResidual(nn.Module):
    """NVAE's "mconv" operation: [nearest 2x upsampling,] BatchNorm, 1x1 expansion, kxk grouped convolution (each with
    BatchNorm and Swish), 1x1 projection, BatchNorm. ``(B, in, H, W)`` -> ``(B, out, H or 2H, W or 2W)``."""

    def __init__(self, in_channels: int, out_channels: int, op: str, upsample: bool):
        super().__init__()
        expansion, kernel_size, groups = parse_inverted_residual_op(op)
        hidden = in_channels * expansion
        layers = [nn.Upsample(scale_factor=2, mode="nearest")] if upsample else []
        layers += [
            nn.BatchNorm2d(in_channels, eps=BATCH_NORM_EPS),
            conv_batch_norm_swish(in_channels, hidden, 1),
            conv_batch_norm_swish(hidden, hidden, kernel_size, groups=groups or hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels, eps=BATCH_NORM_EPS),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class NVAEBilinearUpsample(nn.Module):
    """2x bilinear upsampling with ``align_corners=True`` (the skip branch of NVAE's upsampling cells)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class NVAECell(nn.Module):
    """A residual cell: ``skip(s) + 0.1 * SE(ops(s))``.

    A normal cell keeps the shape (identity skip); an upsampling cell doubles the side and halves the channels (skip:
    bilinear 2x, then a weight-normalised 1x1 convolution; the first op upsamples with nearest neighbours).
    """

    def __init__(self, channels: int, ops: Sequence[str], upsample: bool, use_se: bool):
        super().__init__()
        out_channels = channels // CHANNEL_MULTIPLIER if upsample else channels
        self.skip = (
            nn.Sequential(NVAEBilinearUpsample(), NVAEWeightNormConv2d(channels, out_channels, 1, bias=False))
            if upsample
            else nn.Identity()
        )
        self.ops = nn.ModuleList(
            NVAEInvertedResidual(channels if index == 0 else out_channels, out_channels, op, upsample and index == 0)
            for index, op in enumerate(ops)
        )
        self.squeeze_excitation = NVAESqueezeExcitation(out_channels) if use_se else nn.Identity()

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        residual = s
        for op in self.ops:
            residual = op(residual)
        return self.skip(s) + CELL_RESIDUAL_SCALE * self.squeeze_excitation(residual)


class NVAECombinerCell(nn.Module):
    """Folds a latent group into the decoder features: a weight-normalised 1x1 convolution of ``cat([s, z], dim=1)``."""

    def __init__(self, channels: int, latent_channels: int):
        super().__init__()
        self.conv = NVAEWeightNormConv2d(channels + latent_channels, channels, 1)

    def forward(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([s, z], dim=1))


def elu_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """ELU then a weight-normalised convolution (NVAE's prior heads and image head)."""
    return nn.Sequential(
        nn.ELU(), NVAEWeightNormConv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    )


@dataclass
class NVAEDecoderOutput(BaseOutput):
    """What one decoder pass produced.

    Attributes:
        images: ``(B, 3, H, W)`` in ``[-1, 1]``, the mixture's mean image.
        logits: ``(B, 10 * num_mixtures, H, W)``, the discretised logistic mixture's parameters.
        group_latents: One ``(B, num_latent_per_group, side_g, side_g)`` tensor per decoder group, the latent the
            combiner of group ``g`` received (group 0 is the reshaped input ``z``).
        prior_parameters: One ``(B, 2 * num_latent_per_group, side_g, side_g)`` tensor per group ``g >= 1``: the raw
            ``cat([mu, log_sigma])`` of its prior head, before the soft clamp.
    """

    images: torch.Tensor
    logits: torch.Tensor
    group_latents: list[torch.Tensor]
    prior_parameters: list[torch.Tensor]


class NVAEGenerator(TronGenerator, ConfigMixin):
    """NVAE's decoder, inference only, as TR0N uses it (see the module docstring): latent = the top group.

    Defaults are NVAE's FFHQ 256 px model (the README's FFHQ command line) at TR0N's sampling temperature 0.6. Weights
    come from `tron_pipelines.conversion.nvae` (NVAE ``checkpoint.pt`` files). Configuration names follow NVAE's
    ``train.py`` arguments, so a checkpoint's ``args`` map onto them.

    The sampled groups' noise has two modes:

    - ``noise_seed=None`` (the method's): `generate` draws a fresh standard-normal ``eps`` for every sampled group on
      every call, from torch's global random state. G is then stochastic given ``z``: each Langevin step sees a new
      draw of the fine-scale groups, so Langevin descends the energy averaged over that noise (a stochastic energy,
      like the random augmentations), and the image returned at the end is one more draw. Reproducible with
      ``torch.manual_seed``, not with the pipeline's per-sample generators.
    - ``noise_seed=<int>``: ``eps`` is drawn once from that seed (one ``(1, C, side, side)`` tensor per sampled
      group, shared by every sample) and reused on every call. G is a fixed deterministic map of ``z`` (a fixed
      pushforward, like StyleGAN's constant noise): Langevin minimises the energy of exactly the image it returns,
      and the pipeline's per-sample generators make every image reproducible on its own.

    Explicit ``noise`` given to `generate` / `decode` overrides both.

    Args:
        resolution: Side of NVAE's training images (``utils.get_input_size(args.dataset)``: 256 for FFHQ).
        num_channels_dec: ``--num_channels_dec``, channels of the decoder at full resolution.
        num_preprocess_blocks: ``--num_preprocess_blocks`` (each halves the side before the latent scales).
        num_latent_scales: ``--num_latent_scales``.
        groups_per_scale: Latent groups per scale in NVAE's order (``model.groups_per_scale``, highest resolution
            first); the decoder visits the scales in reverse. FFHQ: ``(16, 8, 4, 4, 4)``.
        num_latent_per_group: ``--num_latent_per_group``, channels of each latent group.
        num_cell_per_cond_dec: ``--num_cell_per_cond_dec``, residual cells before every combiner but the first.
        num_postprocess_blocks / num_postprocess_cells: ``--num_postprocess_blocks`` / ``--num_postprocess_cells``;
            each block is an upsampling cell then ``num_postprocess_cells - 1`` normal cells.
        decoder_cell_ops / decoder_up_cell_ops / postprocess_cell_ops / postprocess_up_cell_ops: the operations of
            NVAE's ``normal_dec``, ``up_dec``, ``normal_post`` and ``up_post`` cells (its ``arch_instance``).
        use_se: ``--use_se``, squeeze-and-excitation in every cell.
        num_mixtures: ``--num_mixture_dec``, components of the discretised logistic mixture (> 1).
        temperature: Sampling temperature: scale of the top prior (``1.01 * temperature``) and of the sampled groups'
            sigmas. TR0N's NVAE runs use 0.6.
        prior_mean_groups: Groups after the top that take their prior mean; later groups are sampled. TR0N: 7; 0 gives
            NVAE's own sampling (every group drawn from its prior).
        noise_seed: ``None`` for fresh noise on every call, or the seed of the fixed noise (see above).
    """

    @register_to_config
    def __init__(
        self,
        resolution: int = 256,
        num_channels_dec: int = 30,
        num_preprocess_blocks: int = 1,
        num_latent_scales: int = 5,
        groups_per_scale: tuple[int, ...] = (16, 8, 4, 4, 4),
        num_latent_per_group: int = 20,
        num_cell_per_cond_dec: int = 2,
        num_postprocess_blocks: int = 1,
        num_postprocess_cells: int = 2,
        decoder_cell_ops: tuple[str, ...] = ("mconv_e6k5g0",),
        decoder_up_cell_ops: tuple[str, ...] = ("mconv_e6k5g0",),
        postprocess_cell_ops: tuple[str, ...] = ("mconv_e3k5g0",),
        postprocess_up_cell_ops: tuple[str, ...] = ("mconv_e3k5g0",),
        use_se: bool = True,
        num_mixtures: int = 10,
        temperature: float = 0.6,
        prior_mean_groups: int = 7,
        noise_seed: int | None = None,
    ):
        super().__init__()
        if num_latent_scales < 1 or len(groups_per_scale) != num_latent_scales or min(groups_per_scale) < 1:
            raise ValueError(
                f"`groups_per_scale` needs one positive entry per latent scale ({num_latent_scales}), got "
                f"{tuple(groups_per_scale)}."
            )
        if num_latent_scales == 1 and groups_per_scale[0] == 1:
            raise ValueError("A single latent group (NVAE's 'vanilla VAE' decoder) is not supported.")
        if num_mixtures < 2:
            raise ValueError(f"`num_mixtures` must be >= 2 (a discretised logistic mixture), got {num_mixtures}.")
        if temperature <= 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        if prior_mean_groups < 0:
            raise ValueError(f"`prior_mean_groups` must be >= 0, got {prior_mean_groups}.")
        downsampling = CHANNEL_MULTIPLIER ** (num_preprocess_blocks + num_latent_scales - 1)
        if resolution % downsampling:
            raise ValueError(
                f"`resolution` {resolution} must be divisible by 2**(num_preprocess_blocks + num_latent_scales - 1) "
                f"= {downsampling}."
            )
        if num_postprocess_blocks > 0 and num_postprocess_cells < 1:
            raise ValueError(f"`num_postprocess_cells` must be >= 1, got {num_postprocess_cells}.")
        for ops in (decoder_cell_ops, decoder_up_cell_ops, postprocess_cell_ops, postprocess_up_cell_ops):
            if not ops:
                raise ValueError("Every cell needs at least one operation.")
            for op in ops:
                parse_inverted_residual_op(op)

        channels = num_channels_dec * downsampling
        top_side = resolution // downsampling
        self.prior_features = nn.Parameter(torch.rand(channels, top_side, top_side))
        cells, prior_heads = [], []
        for scale, num_groups in enumerate(reversed(groups_per_scale)):
            for group in range(num_groups):
                if scale > 0 or group > 0:
                    cells += [
                        NVAECell(channels, decoder_cell_ops, False, use_se) for _ in range(num_cell_per_cond_dec)
                    ]
                    prior_heads.append(elu_conv(channels, 2 * num_latent_per_group, 1))
                cells.append(NVAECombinerCell(channels, num_latent_per_group))
            if scale < num_latent_scales - 1:
                cells.append(NVAECell(channels, decoder_up_cell_ops, True, use_se))
                channels //= CHANNEL_MULTIPLIER
        self.decoder_cells = nn.ModuleList(cells)
        self.prior_heads = nn.ModuleList(prior_heads)
        post = []
        for _ in range(num_postprocess_blocks):
            post.append(NVAECell(channels, postprocess_up_cell_ops, True, use_se))
            channels //= CHANNEL_MULTIPLIER
            post += [NVAECell(channels, postprocess_cell_ops, False, use_se) for _ in range(num_postprocess_cells - 1)]
        self.postprocess_cells = nn.ModuleList(post)
        self.image_head = elu_conv(channels, MIXTURE_MAPS_PER_COMPONENT * num_mixtures, 3)
        self._fixed_noise_cache: dict[tuple, list[torch.Tensor]] = {}

    # ---------------------------------------------------------------------------------------------------------------
    # Shapes
    @property
    def top_latent_shape(self) -> tuple[int, int, int]:
        """``(num_latent_per_group, side, side)`` of the top group ``z`` (NVAE's ``z0_size``)."""
        side = self.prior_features.shape[-1]
        return (self.config.num_latent_per_group, side, side)

    @property
    def group_sides(self) -> list[int]:
        """Side of every decoder group's latent, in decoder order (top first)."""
        top_side = self.prior_features.shape[-1]
        return [
            top_side * 2**scale
            for scale, num_groups in enumerate(reversed(self.config.groups_per_scale))
            for _ in range(num_groups)
        ]

    @property
    def num_groups(self) -> int:
        return sum(self.config.groups_per_scale)

    @property
    def sampled_groups(self) -> list[int]:
        """Indices of the groups drawn from their priors (those after the top and the prior-mean groups)."""
        return list(range(1 + self.config.prior_mean_groups, self.num_groups))

    @property
    def noise_shapes(self) -> list[tuple[int, int, int]]:
        """``(num_latent_per_group, side, side)`` of each sampled group's noise, in decoder order."""
        sides = self.group_sides
        return [(self.config.num_latent_per_group, sides[g], sides[g]) for g in self.sampled_groups]

    @property
    def resolution(self) -> int:
        return self.group_sides[-1] * CHANNEL_MULTIPLIER**self.config.num_postprocess_blocks

    @property
    def top_prior_std(self) -> float:
        """Standard deviation of the top group's prior at the configured temperature: ``1.01 * temperature``."""
        return TOP_PRIOR_STD * self.config.temperature

    @property
    def latent_specs(self) -> list[LatentSpec]:
        return [LatentSpec("z", math.prod(self.top_latent_shape), f"normal(std={self.top_prior_std:g})")]

    # ---------------------------------------------------------------------------------------------------------------
    # Noise
    def sample_noise(
        self,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> list[torch.Tensor]:
        """Fresh standard-normal noise for the sampled groups: one ``(batch_size, C, side, side)`` tensor each, in
        decoder order. With a list of generators, sample ``i`` draws all of its noise with ``generator[i]``."""
        device = torch.device(device) if device is not None else self.device
        dtype = dtype or self.dtype
        if isinstance(generator, list):
            if len(generator) != batch_size:
                raise ValueError(f"Got {len(generator)} generators for a batch of {batch_size}; pass one per sample.")
            per_sample = [self.sample_noise(1, one, device, dtype) for one in generator]
            return [torch.cat(parts) for parts in zip(*per_sample)] if per_sample[0] else []
        return [
            randn_tensor((batch_size, *shape), generator=generator, device=device, dtype=dtype)
            for shape in self.noise_shapes
        ]

    def fixed_noise(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """The noise of ``noise_seed`` (``None`` when it is not set): one ``(1, C, side, side)`` tensor per sampled
        group, drawn on the CPU (the same values on every device) and cached per device and dtype."""
        seed = self.config.noise_seed
        if seed is None:
            return None
        device = torch.device(device) if device is not None else self.device
        dtype = dtype or self.dtype
        key = (seed, str(device), dtype)
        if key not in self._fixed_noise_cache:
            noise = self.sample_noise(1, torch.Generator().manual_seed(seed), "cpu", torch.float32)
            self._fixed_noise_cache[key] = [eps.to(device=device, dtype=dtype) for eps in noise]
        return self._fixed_noise_cache[key]

    def _check_noise(self, noise: Sequence[torch.Tensor], batch_size: int) -> None:
        shapes = self.noise_shapes
        if len(noise) != len(shapes):
            raise ValueError(
                f"`noise` must hold one tensor per sampled group ({len(shapes)}: groups {self.sampled_groups}), got "
                f"{len(noise)}."
            )
        batch = f"{batch_size} or 1" if batch_size != 1 else "1"
        for index, (eps, shape) in enumerate(zip(noise, shapes)):
            if eps.ndim != 4 or tuple(eps.shape[1:]) != shape or eps.shape[0] not in (1, batch_size):
                raise ValueError(
                    f"`noise[{index}]` (group {self.sampled_groups[index]}) must have shape ({batch}, "
                    f"{', '.join(map(str, shape))}), got {tuple(eps.shape)}."
                )

    # ---------------------------------------------------------------------------------------------------------------
    # Forward
    def decode(self, latents: torch.Tensor, noise: Sequence[torch.Tensor] | None = None) -> NVAEDecoderOutput:
        """One decoder pass from packed latents ``(B, latent_dim)`` (the flat top group).

        Args:
            noise: Standard-normal ``eps`` of the sampled groups (see `noise_shapes`; batch 1 broadcasts), or ``None``
                for the config's mode: the fixed noise of ``noise_seed``, else fresh draws from torch's global state.
        """
        z = self.split_latents(latents)["z"].reshape(latents.shape[0], *self.top_latent_shape)
        batch = z.shape[0]
        if noise is None:
            noise = self.fixed_noise(z.device, z.dtype) or self.sample_noise(batch, None, z.device, z.dtype)
        self._check_noise(noise, batch)
        temperature = self.config.temperature
        s = self.prior_features.unsqueeze(0).expand(batch, -1, -1, -1)
        group_latents, prior_parameters = [], []
        group = 0
        for cell in self.decoder_cells:
            if not isinstance(cell, NVAECombinerCell):
                s = cell(s)
                continue
            if group > 0:
                parameters = self.prior_heads[group - 1](s)
                prior_parameters.append(parameters)
                mu, log_sigma = parameters.chunk(2, dim=1)
                z = soft_clamp(mu)
                if group > self.config.prior_mean_groups:
                    sigma = (soft_clamp(log_sigma).exp() + SIGMA_FLOOR) * temperature
                    z = z + sigma * noise[group - self.config.prior_mean_groups - 1]
            group_latents.append(z)
            s = cell(s, z)
            group += 1
        for cell in self.postprocess_cells:
            s = cell(s)
        logits = self.image_head(s)
        images = discretized_logistic_mixture_mean(logits, self.config.num_mixtures)
        return NVAEDecoderOutput(images, logits, group_latents, prior_parameters)

    def generate(self, latents: torch.Tensor, noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Packed latents ``(B, latent_dim)`` -> images ``(B, 3, resolution, resolution)`` in ``[-1, 1]`` (see
        `decode` for ``noise``)."""
        return self.decode(latents, noise).images

    def forward(self, latents: torch.Tensor, noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        return self.generate(latents, noise)

    # ---------------------------------------------------------------------------------------------------------------
    # Prior
    def sample_latents(
        self,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Top-group latents ``(batch_size, latent_dim)`` from ``N(0, (1.01 * temperature)^2)``, TR0N's prior
        (``eps * 1.01 * temperature``; a list of generators draws sample ``i`` with ``generator[i]``)."""
        eps = randn_tensor((batch_size, self.latent_dim), generator=generator, device=device, dtype=torch.float32)
        return (eps * self.top_prior_std).to(dtype)

    @torch.no_grad()
    def sample(
        self, batch_size: int, generator: torch.Generator | list[torch.Generator] | None = None
    ) -> torch.Tensor:
        """Unconditional images ``(batch_size, 3, H, W)`` in ``[-1, 1]``. Each generator draws its sample's ``z`` and
        then (without ``noise_seed``) its noise, so a generator list makes every image reproducible on its own."""
        latents = self.sample_latents(batch_size, generator=generator, device=self.device, dtype=self.dtype)
        noise = self.fixed_noise() or self.sample_noise(batch_size, generator)
        return self.generate(latents, noise)


__all__ = [
    "NVAECell",
    "NVAECombinerCell",
    "NVAEDecoderOutput",
    "NVAEGenerator",
    "NVAEInvertedResidual",
    "NVAESqueezeExcitation",
    "NVAEWeightNormConv2d",
    "discretized_logistic_mixture_mean",
    "parse_inverted_residual_op",
    "soft_clamp",
]
