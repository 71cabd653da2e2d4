"""StyleGAN2 (Karras et al., 2020, "Analyzing and Improving the Image Quality of StyleGAN") as a TR0N generator.

Plain PyTorch (no custom CUDA ops, nothing compiled), CPU and GPU, written from the paper and the checkpoint layouts
of NVIDIA's network pickles and rosinality's ``stylegan2-pytorch``; the converters in
`tron_pipelines.conversion.stylegan` load both, and the fixtures in ``tests/fixtures`` prove the outputs equal.

The generator is a mapping network ``z -> w`` (8 equalized-learning-rate layers after normalising z's second moment)
and a synthesis network driven by ``num_ws`` copies of ``w``: a learned 4x4 constant, then one block per resolution
(2x upsampling modulated 3x3 conv, modulated 3x3 conv, each followed by per-pixel noise, bias and a scaled leaky
ReLU), and a "skip" output: every block's modulated 1x1 toRGB output is added to the 2x FIR-upsampled image of the
blocks before it. Modulated convolutions scale the weight per sample and input channel by the style ``affine(w)``
and divide each output channel by its norm (demodulation).

The two source implementations differ only in settings of this one architecture: NVIDIA clamps every layer's output
to ``±conv_clamp`` (256), rosinality does not (``conv_clamp=None``); both use the blur kernel [1, 3, 3, 1], the same
noise scaling (one strength per layer times a stored noise image) and the same padding of the 2x upsampling.

For TR0N, the latent is ``w`` (one vector broadcast to every synthesis input) or, as an option, the full ``w+``
(``num_ws`` vectors); its prior is the push-forward of N(0, I) through the mapping network (see `StyleGANGenerator`).
`StyleGANMappingNetwork`, `EqualizedLinear`, `upfirdn2d` and `modulated_conv2d` are shared with
`tron_pipelines.models.stylegan3`.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin  # noqa: F401  (diffusers' loader looks the base class up in this module)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils.torch_utils import randn_tensor

from .generator import LatentSpec, TronGenerator


# What TR0N optimises: one `w` broadcast to every synthesis input, or every input's own `w` (flattened).
LATENT_SPACES = ("w", "w+")
# Noise inputs of StyleGAN2's synthesis layers: the stored noise images (the method's choice), or none at all.
NOISE_MODES = ("const", "none")

LEAKY_RELU_SLOPE = 0.2
# Leaky ReLU halves the second moment of a zero-mean input (roughly); sqrt(2) restores it.
LEAKY_RELU_GAIN = math.sqrt(2)
# Added to the squared norm before the reciprocal square root in normalisation and demodulation.
NORM_EPS = 1e-8


def stylegan2_block_channels(resolution: int, channel_base: int = 32768, channel_max: int = 512) -> tuple[int, ...]:
    """NVIDIA's channel rule ``min(channel_base // side, channel_max)`` for the blocks of sides 4, 8, ..., resolution.

    The defaults give the released 1024 px FFHQ/MetFaces networks: (512, 512, 512, 512, 512, 256, 128, 64, 32).
    """
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"`resolution` must be a power of two >= 4, got {resolution}.")
    sides = [2**exponent for exponent in range(2, int(math.log2(resolution)) + 1)]
    return tuple(min(channel_base // side, channel_max) for side in sides)


def normalize_second_moment(x: torch.Tensor) -> torch.Tensor:
    """Scale each row of ``(B, D)`` to unit mean square: StyleGAN's normalisation of ``z`` (PixelNorm)."""
    return x * (x.square().mean(dim=1, keepdim=True) + NORM_EPS).rsqrt()


def fir_filter_2d(taps: Sequence[float]) -> torch.Tensor:
    """Separable 2-D FIR filter ``outer(k, k) / sum`` of 1-D ``taps``, normalised to unit DC gain, float32."""
    kernel = torch.as_tensor(taps, dtype=torch.float32)
    if kernel.ndim != 1 or kernel.numel() < 1:
        raise ValueError(f"FIR taps must be a non-empty 1-D sequence, got {taps!r}.")
    kernel = torch.outer(kernel, kernel)
    return kernel / kernel.sum()


def _upfirdn_depthwise(
    x: torch.Tensor,
    kernel: torch.Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: Sequence[int],
) -> torch.Tensor:
    """`upfirdn2d` of every map of ``x (1, N, H, W)`` with one ``kernel (Kh, Kw)`` (true-convolution taps), ``up`` /
    ``down`` per axis ``(y, x)``.

    The maps are the channels of one depthwise convolution (one group each), which CPU and GPU libraries run far
    faster than a batch of single-channel convolutions. Zero insertion followed by a convolution is a transposed
    convolution with stride ``up``, which skips the inserted zeros; its full output ``c`` (``(L - 1) up + K`` samples)
    relates to the padded, filtered signal by ``y[n] = c[n + K - 1 - pad_before]``, hence the padding below.
    """
    maps = x.shape[1]
    kernel_h, kernel_w = kernel.shape
    weight = kernel.to(x.dtype)[None, None].expand(maps, 1, kernel_h, kernel_w)
    left, right, top, bottom = padding
    if up == (1, 1):
        x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, weight.flip(2, 3), stride=down, groups=maps)
    x = F.conv_transpose2d(x, weight, stride=up, groups=maps)
    up_y, up_x = up
    x = F.pad(x, [left - kernel_w + 1, right - kernel_w + up_x, top - kernel_h + 1, bottom - kernel_h + up_y])
    return x[:, :, :: down[0], :: down[1]]


def upfirdn2d(
    x: torch.Tensor,
    fir: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: Sequence[int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample, FIR-filter, downsample: the resampling primitive of StyleGAN2 and StyleGAN3.

    1. upsample by inserting ``up - 1`` zeros after every sample along both axes;
    2. pad with zeros by ``padding = (left, right, top, bottom)`` (negative values crop);
    3. convolve (a true convolution: the filter is flipped) with ``fir * gain`` — a 1-D filter is applied separably
       along the width then the height, each pass with ``sqrt(gain)``; ``None`` is the 1-tap identity filter;
    4. keep every ``down``-th sample along both axes.

    Args:
        x: ``(B, C, H, W)``.
        fir: 1-D ``(K,)``, 2-D ``(Kh, Kw)`` or ``None``.

    Returns:
        ``(B, C, H', W')`` with ``H' = (H * up + top + bottom - Kh + 1) // down`` (rounded up), likewise ``W'``.
    """
    batch, channels, height, width = x.shape
    x = x.reshape(1, batch * channels, height, width)
    left, right, top, bottom = padding
    if fir is None:
        x = _upfirdn_depthwise(x, x.new_full((1, 1), gain), (up, up), (down, down), padding)
    elif fir.ndim == 1:
        taps = fir * gain**0.5
        x = _upfirdn_depthwise(x, taps.view(1, -1), (1, up), (1, down), (left, right, 0, 0))
        x = _upfirdn_depthwise(x, taps.view(-1, 1), (up, 1), (down, 1), (0, 0, top, bottom))
    else:
        x = _upfirdn_depthwise(x, fir * gain, (up, up), (down, down), padding)
    return x.reshape(batch, channels, x.shape[2], x.shape[3])


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool,
    padding: int = 0,
    up: int = 1,
    input_gain: torch.Tensor | None = None,
    prenormalize: bool = False,
) -> torch.Tensor:
    """Per-sample modulated (and demodulated) convolution as one grouped convolution.

    ``w'[b, o, i] = weight[o, i] * styles[b, i]``; with ``demodulate``, each ``w'[b, o]`` is divided by
    ``sqrt(sum(w'[b, o]^2) + 1e-8)``; ``input_gain`` (a scalar) then scales every weight (StyleGAN3's input
    normalisation). ``prenormalize`` first scales each output channel of ``weight`` and each sample's ``styles`` to
    unit mean square (StyleGAN3; it keeps half-precision values in range and changes nothing else, since
    demodulation removes those scales up to the epsilon).

    Args:
        x: ``(B, I, H, W)``.
        weight: ``(O, I, k, k)``.
        styles: ``(B, I)``.
        padding: Zero padding of the stride-1 convolution (ignored when ``up > 1``).
        up: ``> 1`` runs a transposed convolution with this stride instead (no padding); the caller filters after.

    Returns:
        ``(B, O, H + 2 * padding - k + 1, ...)``, or ``(B, O, (H - 1) * up + k, ...)`` when ``up > 1``.
    """
    batch, in_channels, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    if prenormalize:
        weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
    weights = weight.unsqueeze(0) * styles.reshape(batch, 1, in_channels, 1, 1)
    if demodulate:
        weights = weights * (weights.square().sum(dim=[2, 3, 4], keepdim=True) + NORM_EPS).rsqrt()
    if input_gain is not None:
        weights = weights * input_gain
    x = x.reshape(1, batch * in_channels, height, width)
    if up > 1:
        weights = weights.transpose(1, 2).reshape(batch * in_channels, out_channels, kernel_h, kernel_w)
        x = F.conv_transpose2d(x, weights.to(x.dtype), stride=up, groups=batch)
    else:
        weights = weights.reshape(batch * out_channels, in_channels, kernel_h, kernel_w)
        x = F.conv2d(x, weights.to(x.dtype), padding=padding, groups=batch)
    return x.reshape(batch, out_channels, x.shape[2], x.shape[3])


def scaled_leaky_relu(x: torch.Tensor, clamp: float | None) -> torch.Tensor:
    """``leaky_relu(x, 0.2) * sqrt(2)``, then clamped to ``[-clamp, clamp]`` unless ``clamp`` is None."""
    x = F.leaky_relu(x, LEAKY_RELU_SLOPE) * LEAKY_RELU_GAIN
    return x.clamp(-clamp, clamp) if clamp is not None else x


class EqualizedLinear(nn.Module):
    """Fully connected layer with StyleGAN's equalized learning rate.

    The stored weight is scaled at run time by ``lr_multiplier / sqrt(in_features)`` and the stored bias by
    ``lr_multiplier``, so ``y = x (weight * lr / sqrt(in))^T + bias * lr``, optionally followed by
    `scaled_leaky_relu` (no clamp).

    Args:
        in_features / out_features: Sizes of ``x (B, in)`` and ``y (B, out)``.
        lr_multiplier: 0.01 in the mapping network, 1 elsewhere.
        bias_init: Initial effective bias (a number or one value per output), e.g. 1 for style affines.
        weight_init: Scale of the initial effective weight (0 for StyleGAN3's input transform).
        activation: Apply the scaled leaky ReLU.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        lr_multiplier: float = 1.0,
        bias_init: float | Sequence[float] = 0.0,
        weight_init: float = 1.0,
        activation: bool = False,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * (weight_init / lr_multiplier))
        bias = torch.as_tensor(bias_init, dtype=torch.float32).expand(out_features) / lr_multiplier
        self.bias = nn.Parameter(bias.clone())
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.lr_multiplier = lr_multiplier
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.weight_gain
        bias = self.bias * self.lr_multiplier if self.lr_multiplier != 1 else self.bias
        if not self.activation:
            return F.linear(x, weight, bias)
        return scaled_leaky_relu(x.matmul(weight.t()) + bias, clamp=None)


class StyleGANMappingNetwork(nn.Module):
    """StyleGAN's mapping network ``z (B, z_dim) -> w (B, w_dim)`` with the running mean ``w_avg`` of ``w``.

    ``z`` is normalised to unit mean square, then passes ``num_layers`` `EqualizedLinear` layers with the scaled
    leaky ReLU. ``w_avg`` (a buffer, estimated during training) is the centre of the truncation trick.
    """

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_multiplier: float = 0.01):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"The mapping network needs at least one layer, got `num_layers={num_layers}`.")
        self.layers = nn.ModuleList(
            EqualizedLinear(z_dim if index == 0 else w_dim, w_dim, lr_multiplier, activation=True)
            for index in range(num_layers)
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = normalize_second_moment(z)
        for layer in self.layers:
            x = layer(x)
        return x

    def truncate(self, w: torch.Tensor, psi: float) -> torch.Tensor:
        """The truncation trick: ``w_avg + psi * (w - w_avg)`` (``w`` unchanged for ``psi == 1``); any shape ending
        in ``w_dim``."""
        return w if psi == 1 else self.w_avg.lerp(w, psi)


class StyleGANGenerator(TronGenerator):
    """The TR0N side shared by `StyleGAN2Generator` and `StyleGAN3Generator`.

    Subclasses provide ``mapping`` (a `StyleGANMappingNetwork`), `num_ws` and `synthesize`, and config entries
    ``z_dim``, ``w_dim``, ``truncation_psi`` and ``latent_space``.

    TR0N's latent is ``w`` (``latent_space="w"``: one ``(w_dim,)`` vector broadcast to all ``num_ws`` synthesis
    inputs, as the method uses StyleGAN2) or ``w+`` (``latent_space="w+"``: ``num_ws`` vectors, flattened to
    ``num_ws * w_dim``). Its prior is not a standard normal: it is the push-forward of ``z ~ N(0, I)`` through the
    mapping network, truncated towards ``w_avg`` by ``truncation_psi`` (1 = no truncation, the method's setting);
    `sample_latents` draws from it and the latent is never clamped.
    """

    @staticmethod
    def _check_tron_settings(
        latent_space: str, truncation_psi: float, latent_spaces: tuple[str, ...] = LATENT_SPACES
    ) -> None:
        if latent_space not in latent_spaces:
            raise ValueError(f"`latent_space` must be one of {latent_spaces}, got {latent_space!r}.")
        if not 0 <= truncation_psi <= 1:
            raise ValueError(f"`truncation_psi` must be in [0, 1], got {truncation_psi}.")

    @property
    def num_ws(self) -> int:
        """Number of ``w`` inputs of the synthesis network."""
        raise NotImplementedError

    def synthesize(self, ws: torch.Tensor, **kwargs) -> torch.Tensor:
        """``ws (B, num_ws, w_dim)`` -> images ``(B, C, H, W)``, unclamped (the source networks' output)."""
        raise NotImplementedError

    @property
    def latent_specs(self) -> list[LatentSpec]:
        config = self.config
        prior = f"stylegan_mapping(psi={config.truncation_psi})"
        if config.latent_space == "w+":
            return [LatentSpec("w_plus", self.num_ws * config.w_dim, prior)]
        return [LatentSpec("w", config.w_dim, prior)]

    def map_latents(self, z: torch.Tensor, truncation_psi: float | None = None) -> torch.Tensor:
        """Mapping network, truncation and broadcast: ``z (B, z_dim)`` -> ``ws (B, num_ws, w_dim)``.

        Args:
            truncation_psi: ``None`` uses the config's ``truncation_psi``.
        """
        if z.ndim != 2 or z.shape[1] != self.config.z_dim:
            raise ValueError(f"`z` must have shape (batch, {self.config.z_dim}), got {tuple(z.shape)}.")
        psi = self.config.truncation_psi if truncation_psi is None else truncation_psi
        w = self.mapping.truncate(self.mapping(z), psi)
        return w.unsqueeze(1).expand(-1, self.num_ws, -1)

    def forward(self, z: torch.Tensor, truncation_psi: float | None = None, **synthesis_kwargs) -> torch.Tensor:
        """``G(z)``: `map_latents` then `synthesize`; images ``(B, C, H, W)``, unclamped."""
        return self.synthesize(self.map_latents(z, truncation_psi), **synthesis_kwargs)

    def latents_to_ws(self, latents: torch.Tensor) -> torch.Tensor:
        """Packed TR0N latents ``(B, latent_dim)`` -> ``ws (B, num_ws, w_dim)`` (broadcast ``w``, or reshaped ``w+``)."""
        main = self.split_latents(latents)[self.main_latent.name]
        if self.config.latent_space == "w+":
            return main.reshape(main.shape[0], self.num_ws, self.config.w_dim)
        return main.unsqueeze(1).expand(-1, self.num_ws, -1)

    def generate(self, latents: torch.Tensor) -> torch.Tensor:
        """Packed ``w`` (or ``w+``) latents -> images ``(B, C, H, W)`` clamped to ``[-1, 1]``, as TR0N renders
        StyleGAN (pixels outside the range get no gradient)."""
        return self.synthesize(self.latents_to_ws(latents)).clamp(-1, 1)

    @torch.no_grad()
    def sample_latents(
        self,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draw ``(batch_size, latent_dim)`` latents from the prior: ``z ~ N(0, I)`` (diffusers' `randn_tensor`, so a
        list of generators draws sample ``i`` with ``generator[i]``), mapped to ``w`` and truncated by the config's
        ``truncation_psi``; for ``w+`` the same ``w`` is repeated ``num_ws`` times."""
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for a batch of {batch_size}; pass one per sample.")
        device = torch.device(device) if device is not None else self.device
        z = randn_tensor((batch_size, self.config.z_dim), generator=generator, device=device, dtype=torch.float32)
        ws = self.map_latents(z.to(device=self.device, dtype=self.dtype))
        latents = ws.flatten(1) if self.config.latent_space == "w+" else ws[:, 0]
        return latents.to(device=device, dtype=dtype)


class StyleGAN2SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally 2x upsampling), noise, bias, scaled leaky ReLU, clamp.

    Upsampling is a stride-2 transposed convolution followed by the FIR filter (padding 1 on each side for the 4-tap
    filter), so the output has exactly twice the input's side.

    Shapes: ``x (B, in_channels, R/2 or R, ...)``, ``w (B, w_dim)`` -> ``(B, out_channels, R, R)`` with
    ``R = resolution``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        upsample: bool,
        conv_clamp: float | None,
    ):
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.upsample = upsample
        self.conv_clamp = conv_clamp

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, resample_filter: torch.Tensor, noise_mode: str
    ) -> torch.Tensor:
        styles = self.affine(w)
        if self.upsample:
            x = modulated_conv2d(x, self.weight, styles, demodulate=True, up=2)
            # The transposed 3x3 convolution yields R + 1 samples from R/2; this padding makes the filter output
            # exactly R samples, centred.
            taps = resample_filter.shape[-1]
            pad_before = (taps + 1) // 2 - 1
            pad_after = (taps - 2) // 2
            x = upfirdn2d(x, resample_filter, padding=(pad_before, pad_after, pad_before, pad_after), gain=4)
        else:
            x = modulated_conv2d(x, self.weight, styles, demodulate=True, padding=1)
        if noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        return scaled_leaky_relu(x + self.bias.view(1, -1, 1, 1), self.conv_clamp)


class StyleGAN2ToRGB(nn.Module):
    """Modulated 1x1 convolution without demodulation, plus bias, clamped: features -> ``img_channels`` channels.

    The style is scaled by ``1 / sqrt(in_channels)`` (the equalized-learning-rate gain of the 1x1 weight).
    """

    def __init__(self, in_channels: int, img_channels: int, w_dim: int, conv_clamp: float | None):
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False) + self.bias.view(1, -1, 1, 1)
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


class StyleGAN2Block(nn.Module):
    """One resolution of the synthesis network: [upsampling conv], conv, toRGB.

    The first block (4x4) has no upsampling conv: its input is the generator's learned constant.
    """

    def __init__(
        self,
        in_channels: int | None,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        conv_clamp: float | None,
    ):
        super().__init__()
        self.upsample_conv = (
            StyleGAN2SynthesisLayer(in_channels, out_channels, w_dim, resolution, True, conv_clamp)
            if in_channels is not None
            else None
        )
        self.conv = StyleGAN2SynthesisLayer(out_channels, out_channels, w_dim, resolution, False, conv_clamp)
        self.to_rgb = StyleGAN2ToRGB(out_channels, img_channels, w_dim, conv_clamp)

    @property
    def num_convs(self) -> int:
        return 1 if self.upsample_conv is None else 2


class StyleGAN2Generator(StyleGANGenerator, ConfigMixin):
    """StyleGAN2 generator (config "F", skip generator), inference only, as a TR0N generator.

    Defaults are NVIDIA's FFHQ 1024 px network (``stylegan2-ffhq-1024x1024.pkl``). Weights come from
    `tron_pipelines.conversion.stylegan` (NVIDIA network pickles, rosinality checkpoints).

    Args:
        z_dim: Size of ``z``.
        w_dim: Size of ``w``.
        block_channels: Feature channels of the blocks at sides 4, 8, ..., resolution (one entry per block; the
            resolution is ``4 * 2 ** (len(block_channels) - 1)``). `stylegan2_block_channels` gives NVIDIA's rule.
        img_channels: Image channels.
        mapping_layers: Layers of the mapping network.
        mapping_lr_multiplier: Learning-rate multiplier of the mapping layers (it scales their stored weights).
        resample_filter: 1-D taps of the FIR filter of every 2x upsampling (normalised, used as an outer product).
        conv_clamp: Clamp of every layer's output (NVIDIA: 256), ``None`` for no clamp (rosinality).
        noise_mode: ``"const"`` (the stored noise images, TR0N's setting) or ``"none"``.
        truncation_psi: Truncation of the prior and of `forward`/`map_latents` by default (1 = none).
        latent_space: ``"w"`` or ``"w+"`` (see `StyleGANGenerator`).
    """

    @register_to_config
    def __init__(
        self,
        z_dim: int = 512,
        w_dim: int = 512,
        block_channels: tuple[int, ...] = (512, 512, 512, 512, 512, 256, 128, 64, 32),
        img_channels: int = 3,
        mapping_layers: int = 8,
        mapping_lr_multiplier: float = 0.01,
        resample_filter: tuple[float, ...] = (1, 3, 3, 1),
        conv_clamp: float | None = 256,
        noise_mode: str = "const",
        truncation_psi: float = 1.0,
        latent_space: str = "w",
    ):
        super().__init__()
        self._check_tron_settings(latent_space, truncation_psi)
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"`noise_mode` must be one of {NOISE_MODES}, got {noise_mode!r}.")
        if len(block_channels) < 1 or any(channels < 1 for channels in block_channels):
            raise ValueError(f"`block_channels` needs one positive entry per resolution from 4, got {block_channels}.")
        if len(resample_filter) < 2:
            raise ValueError(f"`resample_filter` needs at least 2 taps, got {resample_filter}.")
        self.mapping = StyleGANMappingNetwork(z_dim, w_dim, mapping_layers, mapping_lr_multiplier)
        self.constant_input = nn.Parameter(torch.randn(block_channels[0], 4, 4))
        self.blocks = nn.ModuleList(
            StyleGAN2Block(
                block_channels[index - 1] if index > 0 else None,
                channels,
                w_dim,
                4 * 2**index,
                img_channels,
                conv_clamp,
            )
            for index, channels in enumerate(block_channels)
        )
        self.register_buffer("upsample_filter", fir_filter_2d(resample_filter))

    @property
    def resolution(self) -> int:
        return 4 * 2 ** (len(self.blocks) - 1)

    @property
    def num_ws(self) -> int:
        # Each conv reads its own w; each toRGB reads the w of the next block's first conv (the last one a w of its own).
        return sum(block.num_convs for block in self.blocks) + 1

    def synthesize(self, ws: torch.Tensor, noise_mode: str | None = None) -> torch.Tensor:
        """Synthesis network: ``ws (B, num_ws, w_dim)`` -> images ``(B, img_channels, resolution, resolution)``.

        Args:
            noise_mode: ``"const"`` or ``"none"``; ``None`` uses the config's.

        Returns:
            The unclamped output (values may leave [-1, 1]; `generate` clamps).
        """
        noise_mode = self.config.noise_mode if noise_mode is None else noise_mode
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"`noise_mode` must be one of {NOISE_MODES}, got {noise_mode!r}.")
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.config.w_dim):
            raise ValueError(
                f"`ws` must have shape (batch, {self.num_ws}, {self.config.w_dim}), got {tuple(ws.shape)}."
            )
        x = self.constant_input.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        image = None
        index = 0
        taps = self.upsample_filter.shape[-1]
        skip_padding = ((taps + 1) // 2, (taps - 2) // 2) * 2
        for block in self.blocks:
            if block.upsample_conv is not None:
                x = block.upsample_conv(x, ws[:, index], self.upsample_filter, noise_mode)
                index += 1
            x = block.conv(x, ws[:, index], self.upsample_filter, noise_mode)
            index += 1
            rgb = block.to_rgb(x, ws[:, index])
            if image is None:
                image = rgb
            else:
                image = upfirdn2d(image, self.upsample_filter, up=2, padding=skip_padding, gain=4) + rgb
        return image


__all__ = [
    "LATENT_SPACES",
    "NOISE_MODES",
    "EqualizedLinear",
    "StyleGAN2Block",
    "StyleGAN2Generator",
    "StyleGAN2SynthesisLayer",
    "StyleGAN2ToRGB",
    "StyleGANGenerator",
    "StyleGANMappingNetwork",
    "fir_filter_2d",
    "modulated_conv2d",
    "normalize_second_moment",
    "scaled_leaky_relu",
    "stylegan2_block_channels",
    "upfirdn2d",
]
