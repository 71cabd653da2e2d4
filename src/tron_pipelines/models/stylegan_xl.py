"""StyleGAN-XL (Sauer et al., 2022, "StyleGAN-XL: Scaling StyleGAN to Large Diverse Datasets") as a TR0N generator.

Plain PyTorch, CPU and GPU, written from the paper and the layout of the official network pickles (``imagenet256.pkl``,
``imagenet512.pkl``, ...); `tron_pipelines.conversion.stylegan` converts them. What differs from StyleGAN3-T:

- **Class-conditional mapping.** ``z`` (64 values) and the class are mapped together: the class index selects a row
  of a fixed embedding table (``Embedding(1000, 320)`` for ImageNet, taken from a pretrained EfficientNet-lite0), a
  fully connected layer with the scaled leaky ReLU projects it to ``z_dim``, both halves are normalised to unit mean
  square and concatenated, then 2 mapping layers give ``w``. Upstream passes the class as a one-hot (or any)
  ``c`` and uses only ``c.argmax(1)``.
- **Per-class truncation.** ``w_avg`` holds one centre per class, ``(num_classes, w_dim)``, and the truncation trick
  pulls ``w`` towards its own class's centre.
- **Progressive growing.** The synthesis network is a StyleGAN3-T stem at 16 px followed by super-resolution stages:
  each stage drops the critically sampled layers (and toRGB) of the network it extends and appends ``head_layers + 1``
  layers whose band schedule continues from the last kept layer's cutoff and sampling rate up to the new resolution.
  Every layer is a StyleGAN3 layer, but the bands no longer follow one geometric schedule, so the config lists each
  layer's band explicitly (``synthesis_layers``; `stylegan_xl_synthesis_layers` replays the growing from the
  published hyperparameters). No noise inputs; the output is scaled by 0.25.

For TR0N the latent is one ``w`` broadcast to all ``num_ws`` synthesis inputs (the method's choice: its translator
predicts ``w`` and images are clamped to [-1, 1]), drawn for the synthetic pairs as ``w = mapping(z, y)`` with ``z ~
N(0, I)`` and a class ``y`` uniform over the classes. ``w+`` and ``z`` with a continuous class embedding are options.
"""

from collections.abc import Sequence

import torch
import torch.nn as nn
from diffusers import ModelMixin  # noqa: F401  (diffusers' loader looks the base class up in this module)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils.torch_utils import randn_tensor

from .biggan import sample_class_labels
from .generator import LatentSpec
from .stylegan2 import (
    LATENT_SPACES,
    EqualizedLinear,
    StyleGANGenerator,
    StyleGANMappingNetwork,
    normalize_second_moment,
)
from .stylegan3 import (
    LAYER_BAND_FIELDS,
    StyleGAN3FourierInput,
    StyleGAN3Synthesis,
    StyleGAN3SynthesisLayer,
    stylegan3_input_design,
    stylegan3_layer_bands,
    stylegan3_layer_design,
)


# What TR0N optimises: StyleGAN's `w` or `w+`, or `z` with a continuous class embedding `y` (an auxiliary latent).
STYLEGAN_XL_LATENT_SPACES = (*LATENT_SPACES, "z")
# Upstream's super-resolution stages grow their cutoffs to the image band within `head_layers - 2` layers whatever
# the stem's `num_critical` (a fixed default argument of `compute_superres_filterparams`).
SUPERRES_SCHEDULE_NUM_CRITICAL = 2
# The published ImageNet models (train.py with `--cfg stylegan3-t`, the README's progressive-growing commands, the
# paper's "16^2 using 11 layers ... cut off 2 layers and add 7 new ones"): a 16 px stem with 10 layers, then one
# stage of 7 head layers per doubling; channels doubled against StyleGAN3 (65536 / 1024). ImageNet-512 has 37 ws.
IMAGENET_STEM_RESOLUTION = 16
IMAGENET_STEM_LAYERS = 10
IMAGENET_HEAD_LAYERS = 7
IMAGENET_CHANNEL_BASE = 65536
IMAGENET_CHANNEL_MAX = 1024


def imagenet_superres_stages(img_resolution: int) -> tuple[tuple[int, int], ...]:
    """``(head_layers, up_factor)`` of the ImageNet models' stages from the 16 px stem to ``img_resolution``."""
    stages = []
    resolution = IMAGENET_STEM_RESOLUTION
    while resolution < img_resolution:
        stages.append((IMAGENET_HEAD_LAYERS, 2))
        resolution *= 2
    if resolution != img_resolution:
        raise ValueError(f"`img_resolution` must be 16 times a power of two, got {img_resolution}.")
    return tuple(stages)


def stylegan_xl_synthesis_layers(
    stem_resolution: int = IMAGENET_STEM_RESOLUTION,
    stem_num_layers: int = IMAGENET_STEM_LAYERS,
    superres_stages: Sequence[tuple[int, int]] = imagenet_superres_stages(256),
    img_channels: int = 3,
    channel_base: int = IMAGENET_CHANNEL_BASE,
    channel_max: int = IMAGENET_CHANNEL_MAX,
    num_critical: int = 2,
    first_cutoff: float = 2.0,
    first_stopband: float = 2**2.1,
    last_stopband_rel: float = 2**0.3,
    margin_size: int = 10,
) -> list[dict]:
    """The bands of every synthesis layer of a StyleGAN-XL grown from a stem through super-resolution stages.

    The stem is a StyleGAN3 synthesis network (`stylegan3_layer_bands`) of ``stem_num_layers`` layers plus toRGB at
    ``stem_resolution``. Each stage ``(head_layers, up_factor)`` removes the critically sampled layers (toRGB
    included) of the network so far and appends ``head_layers + 1`` layers at ``up_factor`` times the resolution,
    whose schedule starts at the last kept layer: its output cutoff, cutoff plus half-width as the first stopband,
    its sampling rate and channels. Defaults: ImageNet-256 (31 layers, 32 ws).

    Returns:
        One dict of `LAYER_BAND_FIELDS` per layer, in the order the network runs them (its pickled ``layer_names``).
    """
    bands = stylegan3_layer_bands(
        stem_resolution,
        img_channels,
        channel_base,
        channel_max,
        stem_num_layers,
        num_critical,
        first_cutoff,
        first_stopband,
        last_stopband_rel,
        margin_size,
    )
    resolution = stem_resolution
    for head_layers, up_factor in superres_stages:
        kept = [band for band in bands if not band["is_critically_sampled"]]
        last = kept[-1]
        resolution *= up_factor
        head = stylegan3_layer_bands(
            resolution,
            img_channels,
            channel_base,
            channel_max,
            head_layers,
            SUPERRES_SCHEDULE_NUM_CRITICAL,
            last["out_cutoff"],
            last["out_cutoff"] + last["out_half_width"],
            last_stopband_rel,
            margin_size,
            first_sampling_rate=last["out_sampling_rate"],
            first_channels=last["out_channels"],
        )
        for index, band in enumerate(head):
            band["is_critically_sampled"] = index >= head_layers - num_critical
        bands = kept + head
    return bands


def class_labels_from(class_labels: torch.Tensor, batch_size: int, num_classes: int) -> torch.Tensor:
    """Class indices ``(B,)`` int64 from indices ``(B,)`` or from upstream's ``c`` ``(B, num_classes)`` (one-hot, or any
    scores: upstream uses only ``c.argmax(1)``)."""
    if class_labels.ndim == 2 and class_labels.shape[1] == num_classes:
        class_labels = class_labels.argmax(dim=1)
    elif class_labels.ndim != 1 or class_labels.is_floating_point():
        raise ValueError(
            f"`class_labels` must be class indices (batch,) or one-hot (batch, {num_classes}), got a "
            f"{class_labels.dtype} tensor of shape {tuple(class_labels.shape)}."
        )
    if class_labels.shape[0] != batch_size:
        raise ValueError(f"Got {class_labels.shape[0]} class labels for a batch of {batch_size}.")
    if len(class_labels) and (class_labels.min() < 0 or class_labels.max() >= num_classes):
        raise ValueError(f"Class labels must be in [0, {num_classes}), got {class_labels.tolist()}.")
    return class_labels.long()


class StyleGANXLMappingNetwork(StyleGANMappingNetwork):
    """StyleGAN-XL's class-conditional mapping ``(z (B, z_dim), class embedding (B, class_embed_dim)) -> w (B, w_dim)``.

    ``embed`` is the class embedding table; ``embed_proj`` (scaled leaky ReLU, learning-rate multiplier 1) projects a
    row to ``z_dim``; ``z`` and the projection are each normalised to unit mean square and concatenated before the
    mapping layers. ``w_avg`` ``(num_classes, w_dim)`` holds one truncation centre per class.
    """

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_classes: int,
        class_embed_dim: int,
        num_layers: int,
        lr_multiplier: float = 0.01,
    ):
        super().__init__(2 * z_dim, w_dim, num_layers, lr_multiplier)
        self.embed = nn.Embedding(num_classes, class_embed_dim)
        self.embed_proj = EqualizedLinear(class_embed_dim, z_dim, activation=True)
        self.w_avg = torch.zeros(num_classes, w_dim)

    def forward(self, z: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
        """``w`` from ``z`` and class embeddings (rows of ``embed.weight`` for a class; any vector otherwise)."""
        x = torch.cat([normalize_second_moment(z), normalize_second_moment(self.embed_proj(class_embeddings))], dim=1)
        for layer in self.layers:
            x = layer(x)
        return x

    def truncate(self, w: torch.Tensor, psi: float, class_labels: torch.Tensor) -> torch.Tensor:
        """Per-class truncation: ``w_avg[y] + psi * (w - w_avg[y])`` for ``w (B, w_dim)`` and indices ``y (B,)``."""
        return w if psi == 1 else self.w_avg[class_labels].lerp(w, psi)

    def nearest_classes(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        """Index of the embedding row nearest to each of ``class_embeddings (B, class_embed_dim)``."""
        with torch.no_grad():
            return torch.cdist(class_embeddings.to(self.embed.weight.dtype), self.embed.weight).argmin(dim=1)


class StyleGANXLGenerator(StyleGAN3Synthesis, StyleGANGenerator, ConfigMixin):
    """StyleGAN-XL generator (class-conditional, StyleGAN3-T layers), inference only, as a TR0N generator.

    Defaults are the ImageNet-256 network (``imagenet256.pkl``: z 64, w 512, 1000 classes, 31 layers, 32 ws); the
    ImageNet-512 one is ``synthesis_layers=stylegan_xl_synthesis_layers(superres_stages=imagenet_superres_stages(512))``.
    Weights come from `tron_pipelines.conversion.stylegan`.

    TR0N latents (``latent_space``):

    - ``"w"`` (the method): one ``(w_dim,)`` vector broadcast to the ``num_ws`` synthesis inputs. Prior
      (`sample_latents`): ``z ~ N(0, I)``, a class uniform over ``num_classes``, ``w = mapping(z, class)`` truncated
      towards that class's ``w_avg`` by ``truncation_psi`` (1 = none, TR0N's pairs).
    - ``"w+"``: all ``num_ws x w_dim`` values, flattened (the prior repeats one ``w``).
    - ``"z"``: ``z`` (``z_dim``, N(0, I)) plus an auxiliary latent ``y`` (``class_embed_dim``), a continuous class
      embedding, drawn as the table row of a uniform class; ``generate`` maps ``(z, y)`` and truncates towards the
      ``w_avg`` of the class whose row is nearest to ``y``.

    Args:
        z_dim / w_dim: Sizes of ``z`` and ``w``.
        num_classes / class_embed_dim: Rows and width of the class embedding table (``c_dim`` upstream).
        img_channels: Output channels.
        mapping_layers / mapping_lr_multiplier: Mapping network depth and learning-rate multiplier.
        synthesis_layers: One dict of `LAYER_BAND_FIELDS` per synthesis layer (the last is toRGB), as
            `stylegan_xl_synthesis_layers` returns; ``None`` for ImageNet-256's.
        output_scale: Factor on the toRGB output.
        conv_kernel / filter_size / lrelu_upsampling / use_radial_filters / conv_clamp: As in `StyleGAN3Generator`,
            the same for every layer.
        truncation_psi / latent_space: TR0N settings (above).
    """

    @register_to_config
    def __init__(
        self,
        z_dim: int = 64,
        w_dim: int = 512,
        num_classes: int = 1000,
        class_embed_dim: int = 320,
        img_channels: int = 3,
        mapping_layers: int = 2,
        mapping_lr_multiplier: float = 0.01,
        synthesis_layers: list[dict] | None = None,
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
        self._check_tron_settings(latent_space, truncation_psi, STYLEGAN_XL_LATENT_SPACES)
        if num_classes < 1:
            raise ValueError(
                f"`num_classes` must be >= 1 (StyleGAN-XL ports are class-conditional), got {num_classes}."
            )
        if synthesis_layers is None:
            synthesis_layers = stylegan_xl_synthesis_layers(img_channels=img_channels)
            self.register_to_config(synthesis_layers=synthesis_layers)
        self._check_synthesis_layers(synthesis_layers, img_channels)
        self.layer_designs = [
            stylegan3_layer_design(
                band,
                index == len(synthesis_layers) - 1,
                conv_kernel,
                filter_size,
                lrelu_upsampling,
                use_radial_filters,
            )
            for index, band in enumerate(synthesis_layers)
        ]
        self.mapping = StyleGANXLMappingNetwork(
            z_dim, w_dim, num_classes, class_embed_dim, mapping_layers, mapping_lr_multiplier
        )
        self.fourier_input = StyleGAN3FourierInput(w_dim, stylegan3_input_design(self.layer_designs[0]))
        self.layers = nn.ModuleList(
            StyleGAN3SynthesisLayer(w_dim, design, conv_clamp) for design in self.layer_designs
        )

    @staticmethod
    def _check_synthesis_layers(synthesis_layers: list[dict], img_channels: int) -> None:
        if not synthesis_layers:
            raise ValueError("`synthesis_layers` must list at least one layer (the toRGB layer).")
        for index, band in enumerate(synthesis_layers):
            missing = [name for name in LAYER_BAND_FIELDS if name not in band]
            if missing:
                raise ValueError(f"`synthesis_layers[{index}]` lacks {missing}.")
        for index, (previous, band) in enumerate(zip(synthesis_layers, synthesis_layers[1:]), start=1):
            broken = [
                name for name in ("channels", "size", "sampling_rate") if band[f"in_{name}"] != previous[f"out_{name}"]
            ]
            if broken:
                raise ValueError(
                    f"`synthesis_layers[{index}]` does not take layer {index - 1}'s output: {broken} differ."
                )
        if synthesis_layers[-1]["out_channels"] != img_channels:
            raise ValueError(
                f"The last synthesis layer (toRGB) has {synthesis_layers[-1]['out_channels']} output channels, "
                f"`img_channels` is {img_channels}."
            )

    @property
    def latent_specs(self) -> list[LatentSpec]:
        config = self.config
        if config.latent_space == "z":
            return [LatentSpec("z", config.z_dim), LatentSpec("y", config.class_embed_dim, "class_embedding")]
        prior = f"stylegan_xl_mapping(psi={config.truncation_psi})"
        if config.latent_space == "w+":
            return [LatentSpec("w_plus", self.num_ws * config.w_dim, prior)]
        return [LatentSpec("w", config.w_dim, prior)]

    def map_latents(
        self, z: torch.Tensor, class_labels: torch.Tensor, truncation_psi: float | None = None
    ) -> torch.Tensor:
        """Mapping network, per-class truncation and broadcast, like upstream's ``G.mapping(z, c, truncation_psi)``.

        Args:
            z: ``(B, z_dim)``.
            class_labels: Class indices ``(B,)`` or upstream's ``c`` ``(B, num_classes)`` (its argmax is the class).
            truncation_psi: ``None`` uses the config's.

        Returns:
            ``ws (B, num_ws, w_dim)``.
        """
        if z.ndim != 2 or z.shape[1] != self.config.z_dim:
            raise ValueError(f"`z` must have shape (batch, {self.config.z_dim}), got {tuple(z.shape)}.")
        labels = class_labels_from(class_labels, z.shape[0], self.config.num_classes).to(z.device)
        psi = self.config.truncation_psi if truncation_psi is None else truncation_psi
        w = self.mapping.truncate(self.mapping(z, self.mapping.embed(labels)), psi, labels)
        return w.unsqueeze(1).expand(-1, self.num_ws, -1)

    def forward(
        self, z: torch.Tensor, class_labels: torch.Tensor, truncation_psi: float | None = None
    ) -> torch.Tensor:
        """``G(z, c)``: `map_latents` then `synthesize`; images ``(B, C, H, W)``, unclamped."""
        return self.synthesize(self.map_latents(z, class_labels, truncation_psi))

    def latents_to_ws(self, latents: torch.Tensor) -> torch.Tensor:
        """Packed TR0N latents ``(B, total_latent_dim)`` -> ``ws (B, num_ws, w_dim)``: broadcast ``w``, reshaped
        ``w+``, or ``[z, y]`` mapped (and truncated towards the nearest class's centre)."""
        if self.config.latent_space != "z":
            return super().latents_to_ws(latents)
        parts = self.split_latents(latents)
        w = self.mapping(parts["z"], parts["y"])
        if self.config.truncation_psi != 1:
            w = self.mapping.truncate(w, self.config.truncation_psi, self.mapping.nearest_classes(parts["y"]))
        return w.unsqueeze(1).expand(-1, self.num_ws, -1)

    @torch.no_grad()
    def sample_latents(
        self,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draw ``(batch_size, total_latent_dim)`` latents from the prior (see the class docstring): per generator,
        ``z ~ N(0, I)`` (diffusers' `randn_tensor`) and then the class, so with a list of generators sample ``i``
        depends on ``generator[i]`` only."""
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for a batch of {batch_size}; pass one per sample.")
        device = torch.device(device) if device is not None else self.device
        z = randn_tensor((batch_size, self.config.z_dim), generator=generator, device=device, dtype=torch.float32)
        labels = sample_class_labels(self.config.num_classes, batch_size, generator).to(self.device)
        if self.config.latent_space == "z":
            rows = self.mapping.embed.weight[labels].to(device=device, dtype=torch.float32)
            return torch.cat([z, rows], dim=1).to(dtype)
        ws = self.map_latents(z.to(device=self.device, dtype=self.dtype), labels)
        latents = ws.flatten(1) if self.config.latent_space == "w+" else ws[:, 0]
        return latents.to(device=device, dtype=dtype)


__all__ = [
    "IMAGENET_CHANNEL_BASE",
    "IMAGENET_CHANNEL_MAX",
    "IMAGENET_HEAD_LAYERS",
    "IMAGENET_STEM_LAYERS",
    "IMAGENET_STEM_RESOLUTION",
    "STYLEGAN_XL_LATENT_SPACES",
    "StyleGANXLGenerator",
    "StyleGANXLMappingNetwork",
    "class_labels_from",
    "imagenet_superres_stages",
    "stylegan_xl_synthesis_layers",
]
