"""StyleGAN3 (Karras et al., 2021, "Alias-Free Generative Adversarial Networks") as a TR0N generator.

Plain PyTorch, CPU and GPU, written from the paper and the layout of NVIDIA's network pickles (StyleGAN3-T and -R);
`tron_pipelines.conversion.stylegan` converts those pickles.

The synthesis network treats feature maps as samples of continuous signals and keeps every operation band-limited:

- **Fourier-feature input.** ``sin(2 pi (f . x + phi))`` for a fixed set of frequencies ``f`` inside a disc of radius
  ``first_cutoff``, on a grid ``margin_size`` samples wider than the first layer's band needs; ``affine(w)`` sets a
  rotation and translation of the grid per sample, and a learned ``C x C`` matrix mixes the features.
- **Layers.** Each is a modulated convolution (StyleGAN2's, with the input scaled by ``1 / sqrt(magnitude_ema)``, the
  running mean square of its input during training), then a *filtered* leaky ReLU: upsample (zero insertion and a
  Kaiser-windowed sinc low-pass), bias-shifted leaky ReLU times ``sqrt(2)`` clamped to ``±conv_clamp``, low-pass and
  downsample to the output rate. Cutoff, stopband and sampling rate grow geometrically from the first layer to the
  last ``num_critical`` layers, which are critically sampled at the image resolution. StyleGAN3-R uses 1x1
  convolutions and radially symmetric (jinc-based) downsampling filters.
- **Output.** A modulated 1x1 toRGB layer (no demodulation, clamped), times ``output_scale``.

Filters are buffers: a converted model carries the source's own, a model built from a config designs them
(`kaiser_lowpass_filter`, `radial_lowpass_filter`). Only the mapping network ``z -> w`` is shared with StyleGAN2.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin  # noqa: F401  (diffusers' loader looks the base class up in this module)
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .stylegan2 import (
    LEAKY_RELU_GAIN,
    LEAKY_RELU_SLOPE,
    EqualizedLinear,
    StyleGANGenerator,
    StyleGANMappingNetwork,
    modulated_conv2d,
    upfirdn2d,
)


def kaiser_beta(attenuation: float) -> float:
    """Kaiser window ``beta`` for a stopband attenuation in dB (Kaiser's empirical formula)."""
    if attenuation > 50:
        return 0.1102 * (attenuation - 8.7)
    if attenuation > 21:
        return 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    return 0.0


def kaiser_attenuation(numtaps: int, width: float) -> float:
    """Stopband attenuation (dB) a Kaiser-windowed filter of ``numtaps`` reaches for a transition ``width``
    (a fraction of the Nyquist rate)."""
    return 2.285 * (numtaps - 1) * math.pi * width + 7.95


def kaiser_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float) -> torch.Tensor:
    """1-D Kaiser-windowed sinc low-pass filter with unit DC gain, float32 ``(numtaps,)``.

    The same filter as ``scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs)``.

    Args:
        numtaps: Filter length.
        cutoff: Cutoff frequency, in the units of ``fs``.
        width: Width of the transition band (sets the Kaiser ``beta``), in the units of ``fs``.
        fs: Sampling rate.
    """
    nyquist = fs / 2
    beta = kaiser_beta(kaiser_attenuation(numtaps, width / nyquist))
    offsets = np.arange(numtaps) - (numtaps - 1) / 2
    relative_cutoff = cutoff / nyquist
    taps = relative_cutoff * np.sinc(relative_cutoff * offsets) * np.kaiser(numtaps, beta)
    return torch.as_tensor(taps / taps.sum(), dtype=torch.float32)


def radial_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float) -> torch.Tensor:
    """2-D radially symmetric low-pass filter ``(numtaps, numtaps)``, float32, unit DC gain: the jinc
    ``J1(2 pi cutoff r) / (pi r)`` (the ideal disc low-pass) times a separable Kaiser window (StyleGAN3-R)."""
    coordinates = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    radius = np.hypot(*np.meshgrid(coordinates, coordinates))
    bessel = torch.special.bessel_j1(torch.from_numpy(2 * math.pi * cutoff * radius)).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        # jinc's value at r = 0 is its limit, `cutoff`.
        jinc = np.where(radius > 0, bessel / (math.pi * radius), cutoff)
    window = np.kaiser(numtaps, kaiser_beta(kaiser_attenuation(numtaps, width / (fs / 2))))
    taps = jinc * np.outer(window, window)
    return torch.as_tensor(taps / taps.sum(), dtype=torch.float32)


@dataclass(frozen=True)
class StyleGAN3LayerDesign:
    """Signal-processing parameters of one StyleGAN3 synthesis layer (rates and cutoffs in cycles per image side of
    the final output, sizes in samples)."""

    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    is_to_rgb: bool
    is_critically_sampled: bool
    kernel_size: int
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    radial_down_filter: bool
    padding: tuple[int, int, int, int]

    @property
    def intermediate_sampling_rate(self) -> int:
        """Rate of the leaky ReLU: ``in_sampling_rate * up_factor``."""
        return self.in_sampling_rate * self.up_factor

    def up_filter(self) -> torch.Tensor | None:
        if self.up_taps == 1:
            return None
        return kaiser_lowpass_filter(
            self.up_taps, self.in_cutoff, self.in_half_width * 2, self.intermediate_sampling_rate
        )

    def down_filter(self) -> torch.Tensor | None:
        if self.down_taps == 1:
            return None
        design = radial_lowpass_filter if self.radial_down_filter else kaiser_lowpass_filter
        return design(self.down_taps, self.out_cutoff, self.out_half_width * 2, self.intermediate_sampling_rate)


@dataclass(frozen=True)
class StyleGAN3InputDesign:
    """Fourier-feature input: ``channels`` features on a ``size x size`` grid sampled at ``sampling_rate``, with
    frequencies of at most ``bandwidth``."""

    channels: int
    size: int
    sampling_rate: float
    bandwidth: float


# What one synthesis layer's band-limited input and output signals are (`StyleGAN3LayerDesign`'s first fields, and the
# attribute names of NVIDIA's `SynthesisLayer`): channels, sizes and sampling rates, cutoffs, transition half-widths.
LAYER_BAND_FIELDS = (
    "in_channels",
    "out_channels",
    "in_size",
    "out_size",
    "in_sampling_rate",
    "out_sampling_rate",
    "in_cutoff",
    "out_cutoff",
    "in_half_width",
    "out_half_width",
    "is_critically_sampled",
)


def stylegan3_layer_bands(
    img_resolution: int,
    img_channels: int,
    channel_base: int,
    channel_max: int,
    num_layers: int,
    num_critical: int,
    first_cutoff: float,
    first_stopband: float,
    last_stopband_rel: float,
    margin_size: int,
    first_sampling_rate: int | None = None,
    first_channels: int | None = None,
) -> list[dict]:
    """The bands of ``num_layers + 1`` layers (the last is toRGB), one dict of `LAYER_BAND_FIELDS` per layer.

    Cutoffs ``f_c`` and minimum stopbands ``f_t`` grow geometrically from ``first_cutoff`` / ``first_stopband`` to
    ``img_resolution / 2`` / ``img_resolution / 2 * last_stopband_rel`` and stay there for the last ``num_critical``
    layers; each sampling rate is the smallest power of two >= ``2 f_t`` (at most ``img_resolution``); the
    transition half-width is ``max(f_t, rate / 2) - f_c``; feature maps are ``rate + 2 margin_size`` samples wide
    except the last two (``img_resolution``); channels are ``min(channel_base / 2 / f_c, channel_max)``. Layer ``i``
    maps the signal of entry ``i - 1`` (entry 0 for the first layer, whose input is the Fourier features) to that of
    entry ``i``.

    ``first_sampling_rate`` / ``first_channels`` replace those of entry 0: StyleGAN-XL's super-resolution stages
    continue from the rate and channels of the layer they are stacked on.
    """
    if num_layers <= num_critical:
        raise ValueError(f"`num_layers` ({num_layers}) must exceed `num_critical` ({num_critical}).")
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    progress = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** progress
    stopbands = first_stopband * (last_stopband / first_stopband) ** progress
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    if first_sampling_rate is not None:
        sampling_rates[0] = first_sampling_rate
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    if first_channels is not None:
        channels[0] = first_channels
    channels[-1] = img_channels
    bands = []
    for index in range(num_layers + 1):
        previous = max(index - 1, 0)
        bands.append(
            {
                "in_channels": int(channels[previous]),
                "out_channels": int(channels[index]),
                "in_size": int(sizes[previous]),
                "out_size": int(sizes[index]),
                "in_sampling_rate": int(sampling_rates[previous]),
                "out_sampling_rate": int(sampling_rates[index]),
                "in_cutoff": float(cutoffs[previous]),
                "out_cutoff": float(cutoffs[index]),
                "in_half_width": float(half_widths[previous]),
                "out_half_width": float(half_widths[index]),
                "is_critically_sampled": bool(index >= num_layers - num_critical),
            }
        )
    return bands


def stylegan3_layer_design(
    band: dict,
    is_to_rgb: bool,
    conv_kernel: int,
    filter_size: int,
    lrelu_upsampling: int,
    use_radial_filters: bool,
) -> StyleGAN3LayerDesign:
    """The resampling of one layer from its ``band`` (a dict of `LAYER_BAND_FIELDS`): the leaky ReLU runs at
    ``max(in_rate, out_rate) * lrelu_upsampling`` (toRGB: no resampling, a 1x1 convolution), filters have
    ``filter_size`` taps per resampling factor, and the padding makes the output exactly ``out_size`` samples."""
    missing = [name for name in LAYER_BAND_FIELDS if name not in band]
    if missing:
        raise ValueError(f"A layer band needs {list(LAYER_BAND_FIELDS)}; missing {missing}.")
    in_rate, out_rate = int(band["in_sampling_rate"]), int(band["out_sampling_rate"])
    intermediate_rate = max(in_rate, out_rate) * (1 if is_to_rgb else lrelu_upsampling)
    if intermediate_rate % in_rate or intermediate_rate % out_rate:
        raise ValueError(f"Sampling rates {in_rate} -> {out_rate} do not divide the leaky ReLU's {intermediate_rate}.")
    up_factor, down_factor = intermediate_rate // in_rate, intermediate_rate // out_rate
    kernel_size = 1 if is_to_rgb else conv_kernel
    up_taps = filter_size * up_factor if up_factor > 1 and not is_to_rgb else 1
    down_taps = filter_size * down_factor if down_factor > 1 and not is_to_rgb else 1
    in_size, out_size = int(band["in_size"]), int(band["out_size"])
    # Pad so that the filtered, resampled output has exactly `out_size` samples, placed symmetrically (the output
    # sample centres line up with the input's under the half-sample-offset convention of the paper).
    pad_total = (out_size - 1) * down_factor + 1 - (in_size + kernel_size - 1) * up_factor + up_taps + down_taps - 2
    pad_low = (pad_total + up_factor) // 2
    pad_high = pad_total - pad_low
    return StyleGAN3LayerDesign(
        in_channels=int(band["in_channels"]),
        out_channels=int(band["out_channels"]),
        in_size=in_size,
        out_size=out_size,
        in_sampling_rate=in_rate,
        out_sampling_rate=out_rate,
        in_cutoff=float(band["in_cutoff"]),
        out_cutoff=float(band["out_cutoff"]),
        in_half_width=float(band["in_half_width"]),
        out_half_width=float(band["out_half_width"]),
        is_to_rgb=is_to_rgb,
        is_critically_sampled=bool(band["is_critically_sampled"]),
        kernel_size=kernel_size,
        up_factor=up_factor,
        down_factor=down_factor,
        up_taps=up_taps,
        down_taps=down_taps,
        radial_down_filter=use_radial_filters and not band["is_critically_sampled"],
        padding=(pad_low, pad_high, pad_low, pad_high),
    )


def stylegan3_input_design(first_layer: StyleGAN3LayerDesign) -> StyleGAN3InputDesign:
    """The Fourier-feature input that feeds ``first_layer``: its input channels, size, rate and cutoff."""
    return StyleGAN3InputDesign(
        channels=first_layer.in_channels,
        size=first_layer.in_size,
        sampling_rate=float(first_layer.in_sampling_rate),
        bandwidth=first_layer.in_cutoff,
    )


def stylegan3_design(
    img_resolution: int,
    img_channels: int,
    channel_base: int,
    channel_max: int,
    num_layers: int,
    num_critical: int,
    first_cutoff: float,
    first_stopband: float,
    last_stopband_rel: float,
    margin_size: int,
    conv_kernel: int,
    filter_size: int,
    lrelu_upsampling: int,
    use_radial_filters: bool,
) -> tuple[StyleGAN3InputDesign, list[StyleGAN3LayerDesign]]:
    """The input and the ``num_layers + 1`` layers (the last is toRGB) of a StyleGAN3 synthesis network: the bands of
    `stylegan3_layer_bands`, each resampled as `stylegan3_layer_design` says."""
    bands = stylegan3_layer_bands(
        img_resolution,
        img_channels,
        channel_base,
        channel_max,
        num_layers,
        num_critical,
        first_cutoff,
        first_stopband,
        last_stopband_rel,
        margin_size,
    )
    layers = [
        stylegan3_layer_design(
            band, index == num_layers, conv_kernel, filter_size, lrelu_upsampling, use_radial_filters
        )
        for index, band in enumerate(bands)
    ]
    return stylegan3_input_design(layers[0]), layers


class StyleGAN3FourierInput(nn.Module):
    """Fourier features of a per-sample rotated and translated grid: ``w (B, w_dim)`` -> ``(B, C, size, size)``.

    ``affine(w) = (c, s, t_x, t_y)``; ``(c, s)`` is normalised to a rotation, ``(t_x, t_y)`` is a translation, both
    applied (inverted, to the coordinates) before the user ``transform`` (identity unless set). Frequencies beyond
    the band after the transform are faded out.
    """

    def __init__(self, w_dim: int, design: StyleGAN3InputDesign):
        super().__init__()
        self.size = design.size
        self.sampling_rate = design.sampling_rate
        self.bandwidth = design.bandwidth
        # Directions uniform, radii decaying from the band edge towards 0: a random set inside the disc.
        frequencies = torch.randn(design.channels, 2)
        radii = frequencies.square().sum(dim=1, keepdim=True).sqrt()
        frequencies = frequencies / (radii * radii.square().exp().pow(0.25)) * design.bandwidth
        self.weight = nn.Parameter(torch.randn(design.channels, design.channels))
        self.affine = EqualizedLinear(w_dim, 4, weight_init=0.0, bias_init=(1.0, 0.0, 0.0, 0.0))
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("frequencies", frequencies)
        self.register_buffer("phases", torch.rand(design.channels) - 0.5)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        batch = w.shape[0]
        params = self.affine(w)
        params = params / params[:, :2].norm(dim=1, keepdim=True)
        rotation = torch.eye(3, device=w.device, dtype=w.dtype).repeat(batch, 1, 1)
        rotation[:, 0, 0] = params[:, 0]
        rotation[:, 0, 1] = -params[:, 1]
        rotation[:, 1, 0] = params[:, 1]
        rotation[:, 1, 1] = params[:, 0]
        translation = torch.eye(3, device=w.device, dtype=w.dtype).repeat(batch, 1, 1)
        translation[:, 0, 2] = -params[:, 2]
        translation[:, 1, 2] = -params[:, 3]
        transforms = rotation @ translation @ self.transform.unsqueeze(0)

        frequencies = self.frequencies.unsqueeze(0)
        phases = self.phases.unsqueeze(0) + (frequencies @ transforms[:, :2, 2:]).squeeze(2)
        frequencies = frequencies @ transforms[:, :2, :2]
        amplitudes = (
            1 - (frequencies.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)
        ).clamp(0, 1)

        # Sample centres in output-image units: (i + 0.5 - size / 2) / sampling_rate along each axis.
        theta = torch.eye(2, 3, device=w.device, dtype=w.dtype)
        theta[0, 0] = 0.5 * self.size / self.sampling_rate
        theta[1, 1] = 0.5 * self.size / self.sampling_rate
        grid = F.affine_grid(theta.unsqueeze(0), [1, 1, self.size, self.size], align_corners=False)

        x = (grid.unsqueeze(3) @ frequencies.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)
        x = x + phases.unsqueeze(1).unsqueeze(2)
        x = torch.sin(x * (2 * math.pi)) * amplitudes.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight / math.sqrt(self.weight.shape[0])).t()
        return x.permute(0, 3, 1, 2)


class StyleGAN3SynthesisLayer(nn.Module):
    """Modulated convolution and filtered leaky ReLU (or, for toRGB, a modulated 1x1 conv, bias and clamp).

    Shapes: ``x (B, in_channels, in_size, in_size)``, ``w (B, w_dim)`` -> ``(B, out_channels, out_size, out_size)``.
    """

    def __init__(self, w_dim: int, design: StyleGAN3LayerDesign, conv_clamp: float | None):
        super().__init__()
        self.affine = EqualizedLinear(w_dim, design.in_channels, bias_init=1.0)
        kernel = design.kernel_size
        self.weight = nn.Parameter(torch.randn(design.out_channels, design.in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(design.out_channels))
        self.register_buffer("magnitude_ema", torch.ones(()))
        self.register_buffer("up_filter", design.up_filter())
        self.register_buffer("down_filter", design.down_filter())
        self.is_to_rgb = design.is_to_rgb
        self.up_factor = design.up_factor
        self.down_factor = design.down_factor
        self.padding = design.padding
        self.conv_clamp = conv_clamp
        self.style_gain = 1 / math.sqrt(design.in_channels * kernel**2) if design.is_to_rgb else 1.0

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        if self.is_to_rgb:
            styles = styles * self.style_gain
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            demodulate=not self.is_to_rgb,
            padding=self.weight.shape[-1] - 1,
            input_gain=self.magnitude_ema.rsqrt(),
            prenormalize=not self.is_to_rgb,
        )
        x = x + self.bias.view(1, -1, 1, 1)
        if not self.is_to_rgb:
            x = upfirdn2d(x, self.up_filter, up=self.up_factor, padding=self.padding, gain=self.up_factor**2)
            x = F.leaky_relu(x, LEAKY_RELU_SLOPE) * LEAKY_RELU_GAIN
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        if not self.is_to_rgb:
            x = upfirdn2d(x, self.down_filter, down=self.down_factor)
        return x


class StyleGAN3Synthesis:
    """`synthesize` of a generator made of a `StyleGAN3FourierInput` ``fourier_input`` and `StyleGAN3SynthesisLayer`s
    ``layers`` built from ``layer_designs`` (StyleGAN3, StyleGAN-XL), with config entries ``w_dim`` and
    ``output_scale``.

    ``enable_gradient_checkpointing()`` (diffusers' convention) recomputes each layer in the backward pass instead of
    storing its activations: a layer's upsampled, filtered intermediates are many times its input, so the memory of a
    Langevin step falls to about the layers' inputs plus one layer's intermediates, for about one more forward pass.
    """

    _supports_gradient_checkpointing = True
    gradient_checkpointing = False

    @property
    def resolution(self) -> int:
        return self.layer_designs[-1].out_size

    @property
    def num_ws(self) -> int:
        return len(self.layers) + 1

    def synthesize(self, ws: torch.Tensor) -> torch.Tensor:
        """Synthesis network: ``ws (B, num_ws, w_dim)`` -> images ``(B, img_channels, resolution, resolution)``,
        unclamped (`generate` clamps). ``ws[:, 0]`` drives the Fourier input, ``ws[:, i + 1]`` layer ``i``."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.config.w_dim):
            raise ValueError(
                f"`ws` must have shape (batch, {self.num_ws}, {self.config.w_dim}), got {tuple(ws.shape)}."
            )
        checkpointed = self.gradient_checkpointing and torch.is_grad_enabled()
        x = self.fourier_input(ws[:, 0])
        for index, layer in enumerate(self.layers):
            if checkpointed:
                x = self._gradient_checkpointing_func(layer, x, ws[:, index + 1])
            else:
                x = layer(x, ws[:, index + 1])
        return x * self.config.output_scale if self.config.output_scale != 1 else x


class StyleGAN3Generator(StyleGAN3Synthesis, StyleGANGenerator, ConfigMixin):
    """StyleGAN3 generator (configs T and R), inference only, as a TR0N generator.

    Defaults are StyleGAN3-T at 1024 px (``stylegan3-t-ffhq-1024x1024.pkl``); StyleGAN3-R is ``conv_kernel=1,
    use_radial_filters=True, channel_base=65536, channel_max=1024``. Weights come from
    `tron_pipelines.conversion.stylegan`. See `StyleGANGenerator` for the TR0N latent and its prior; StyleGAN3 has no
    noise inputs.

    Args:
        z_dim / w_dim: Sizes of ``z`` and ``w``.
        img_resolution / img_channels: Output images ``(img_channels, img_resolution, img_resolution)``.
        mapping_layers / mapping_lr_multiplier: Mapping network depth and learning-rate multiplier.
        channel_base / channel_max: Channels ``min(channel_base / 2 / cutoff, channel_max)`` per layer.
        num_layers: Synthesis layers excluding the input and toRGB (``num_ws = num_layers + 2``).
        num_critical: Critically sampled layers at the end.
        first_cutoff / first_stopband / last_stopband_rel: Band of the first layer, stopband of the last (relative to
            its cutoff ``img_resolution / 2``).
        margin_size: Extra samples around the image in the non-final layers.
        output_scale: Factor on the toRGB output.
        conv_kernel: Convolution size (3 for T, 1 for R).
        filter_size: Low-pass length per resampling factor (taps = ``filter_size * factor``).
        lrelu_upsampling: Oversampling of the leaky ReLU.
        use_radial_filters: Radially symmetric downsampling filters in the non-critical layers (R).
        conv_clamp: Clamp after each nonlinearity and of the toRGB output, ``None`` for none.
        truncation_psi / latent_space: TR0N settings (see `StyleGANGenerator`).
    """

    @register_to_config
    def __init__(
        self,
        z_dim: int = 512,
        w_dim: int = 512,
        img_resolution: int = 1024,
        img_channels: int = 3,
        mapping_layers: int = 2,
        mapping_lr_multiplier: float = 0.01,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_layers: int = 14,
        num_critical: int = 2,
        first_cutoff: float = 2.0,
        first_stopband: float = 2**2.1,
        last_stopband_rel: float = 2**0.3,
        margin_size: int = 10,
        output_scale: float = 0.25,
        conv_kernel: int = 3,
        filter_size: int = 6,
        lrelu_upsampling: int = 2,
        use_radial_filters: bool = False,
        conv_clamp: float | None = 256,
        truncation_psi: float = 1.0,
        latent_space: str = "w",
    ):
        super().__init__()
        self._check_tron_settings(latent_space, truncation_psi)
        input_design, layer_designs = stylegan3_design(
            img_resolution,
            img_channels,
            channel_base,
            channel_max,
            num_layers,
            num_critical,
            first_cutoff,
            first_stopband,
            last_stopband_rel,
            margin_size,
            conv_kernel,
            filter_size,
            lrelu_upsampling,
            use_radial_filters,
        )
        self.layer_designs = layer_designs
        self.mapping = StyleGANMappingNetwork(z_dim, w_dim, mapping_layers, mapping_lr_multiplier)
        self.fourier_input = StyleGAN3FourierInput(w_dim, input_design)
        self.layers = nn.ModuleList(StyleGAN3SynthesisLayer(w_dim, design, conv_clamp) for design in layer_designs)


__all__ = [
    "LAYER_BAND_FIELDS",
    "StyleGAN3FourierInput",
    "StyleGAN3Generator",
    "StyleGAN3InputDesign",
    "StyleGAN3LayerDesign",
    "StyleGAN3Synthesis",
    "StyleGAN3SynthesisLayer",
    "kaiser_attenuation",
    "kaiser_beta",
    "kaiser_lowpass_filter",
    "radial_lowpass_filter",
    "stylegan3_design",
    "stylegan3_input_design",
    "stylegan3_layer_bands",
    "stylegan3_layer_design",
]
