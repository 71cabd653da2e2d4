"""Conversion of StyleGAN2 / StyleGAN3 checkpoints to `StyleGAN2Generator` / `StyleGAN3Generator`.

Two source formats:

- NVIDIA network pickles (``.pkl`` of StyleGAN2-ADA-PyTorch and StyleGAN3, e.g. ``stylegan2-ffhq-1024x1024.pkl``,
  ``stylegan3-t-ffhqu-256x256.pkl``): read as data by `tron_pipelines.conversion.network_pickle` (no code from the
  file runs); the generator ``G_ema`` is converted. Its architecture settings come from the attributes and
  constructor arguments stored with every module, SG2 and SG3 are told apart by the module classes the network is
  made of (a ``SynthesisNetwork`` of ``SynthesisBlock``s, or of a ``SynthesisInput`` and ``SynthesisLayer``s).
- rosinality ``stylegan2-pytorch`` checkpoints (``.pt`` with ``g_ema`` and ``latent_avg``), read with
  ``torch.load(..., weights_only=True)``; the channel table is read from the weight shapes.

Every checkpoint key is mapped explicitly; missing, mis-shaped or unknown keys are all listed in one
`CheckpointMismatchError`. Settings the ports do not implement (class-conditional networks, other synthesis
architectures, ...) raise a ``ValueError`` that names them.
"""

import math
import os
import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..models.stylegan2 import StyleGAN2Generator, fir_filter_2d
from ..models.stylegan3 import StyleGAN3Generator
from .checkpoints import CheckpointMismatchError, TargetTensor, convert_state_dict, load_torch_checkpoint
from .network_pickle import PersistentObject, load_network_pickle


# rosinality's `Generator` defaults; its checkpoints do not store them.
ROSINALITY_LR_MLP = 0.01
ROSINALITY_BLUR_KERNEL = (1, 3, 3, 1)
# Draws of z that estimate `latent_avg` when a checkpoint lacks it (rosinality's `mean_latent(4096)`).
ROSINALITY_MEAN_LATENT_SAMPLES = 4096
# NVIDIA's default FIR filter of StyleGAN2 upsampling.
NVLABS_RESAMPLE_FILTER = (1, 3, 3, 1)


class _Layout:
    """Accumulates `TargetTensor`s for a model whose target shapes are known."""

    def __init__(self, model: torch.nn.Module):
        self.targets = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
        self.entries: list[TargetTensor] = []

    def copy(
        self,
        target: str,
        source: str,
        source_shape: tuple[int, ...] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """``target`` = ``transform(source)``; the source has the target's shape unless ``source_shape`` says
        otherwise, in which case ``transform`` defaults to a reshape."""
        shape = self.targets[target]
        if transform is None and source_shape is not None:
            transform = lambda tensor: tensor.reshape(shape)  # noqa: E731
        entry = TargetTensor(target, {source: source_shape or shape})
        self.entries.append(entry if transform is None else TargetTensor(target, entry.sources, transform))

    def identical_copies(
        self, target: str, sources: Sequence[str], expected: torch.Tensor, scale: float = 1.0
    ) -> None:
        """``target`` = ``expected``, after checking that every ``source * scale`` equals it (copies of a fixed
        filter that the model derives from its config)."""

        def build(*copies: torch.Tensor) -> torch.Tensor:
            wrong = [
                key for key, copy in zip(sources, copies) if not torch.allclose(copy * scale, expected, atol=1e-6)
            ]
            if wrong:
                raise CheckpointMismatchError(
                    f"{len(wrong)} filter buffers differ from the filter the configuration implies "
                    f"({expected.tolist()}): {wrong}."
                )
            return expected.clone()

        self.entries.append(TargetTensor(target, {key: tuple(expected.shape) for key in sources}, build))


def _raise_unsupported(problems: list[str], description: str) -> None:
    if problems:
        raise ValueError(f"Unsupported {description}:\n" + "\n".join(f"  {problem}" for problem in problems))


# --------------------------------------------------------------------------------------------------------------------
# NVIDIA network pickles


def _mapping_config(network: PersistentObject) -> dict:
    mapping = network.children["mapping"]
    layers = [mapping.children.get(f"fc{index}") for index in range(int(mapping.attribute("num_layers") or 0))]
    if not layers or any(layer is None for layer in layers):
        raise CheckpointMismatchError("The mapping network's fc layers do not match its `num_layers`.")
    problems = []
    if network.attribute("c_dim"):
        problems.append(
            f"c_dim={network.attribute('c_dim')}: class-conditional networks (TR0N uses unconditional ones)"
        )
    if any(layer.attribute("activation") != "lrelu" for layer in layers):
        problems.append("a mapping activation other than 'lrelu'")
    _raise_unsupported(problems, "mapping network settings")
    return {
        "z_dim": int(network.attribute("z_dim")),
        "w_dim": int(network.attribute("w_dim")),
        "mapping_layers": len(layers),
        "mapping_lr_multiplier": float(layers[0].attribute("bias_gain")),
    }


def _mapping_layout(layout: _Layout, num_layers: int) -> None:
    for index in range(num_layers):
        for name in ("weight", "bias"):
            layout.copy(f"mapping.layers.{index}.{name}", f"mapping.fc{index}.{name}")
    layout.copy("mapping.w_avg", "mapping.w_avg")


def _stylegan2_config_from_network(network: PersistentObject) -> dict:
    synthesis = network.children["synthesis"]
    resolutions = synthesis.attribute("block_resolutions") or []
    blocks = [synthesis.children.get(f"b{resolution}") for resolution in resolutions]
    if not blocks or any(block is None for block in blocks):
        raise CheckpointMismatchError(
            f"The synthesis network has no blocks b4..b{network.attribute('img_resolution')}."
        )
    problems = []
    for resolution, block in zip(resolutions, blocks):
        if block.attribute("architecture") != "skip":
            problems.append(f"b{resolution}: architecture={block.attribute('architecture')!r} (only 'skip' is ported)")
        for name in ("conv0", "conv1"):
            layer = block.children.get(name)
            if layer is None:
                continue
            if layer.attribute("activation") != "lrelu":
                problems.append(f"b{resolution}.{name}: activation={layer.attribute('activation')!r} (only 'lrelu')")
            if layer.attribute("use_noise") is not True:
                problems.append(f"b{resolution}.{name}: use_noise={layer.attribute('use_noise')!r} (only True)")
    clamps = {
        (None if layer.attribute("conv_clamp") is None else float(layer.attribute("conv_clamp")))
        for block in blocks
        for layer in block.children.values()
        if layer is not None and layer.class_name in ("SynthesisLayer", "ToRGBLayer")
    }
    if len(clamps) != 1:
        problems.append(f"conv_clamp differs between layers: {sorted(clamps, key=str)} (one value is ported)")
    _raise_unsupported(problems, "StyleGAN2 network settings")
    upsampling_layer = blocks[1].children["conv0"] if len(blocks) > 1 else None
    resample_filter = (upsampling_layer.init_kwargs if upsampling_layer else {}).get(
        "resample_filter", NVLABS_RESAMPLE_FILTER
    )
    return dict(
        **_mapping_config(network),
        block_channels=tuple(int(block.children["conv1"].attribute("out_channels")) for block in blocks),
        img_channels=int(network.attribute("img_channels")),
        resample_filter=tuple(float(tap) for tap in resample_filter),
        conv_clamp=clamps.pop(),
    )


def _stylegan2_network_layout(model: StyleGAN2Generator) -> list[TargetTensor]:
    layout = _Layout(model)
    _mapping_layout(layout, len(model.mapping.layers))
    layout.copy("constant_input", "synthesis.b4.const")
    filter_copies = []
    for index, block in enumerate(model.blocks):
        source = f"synthesis.b{4 * 2**index}"
        filter_copies.append(f"{source}.resample_filter")
        for target_name, source_name in (("upsample_conv", "conv0"), ("conv", "conv1")):
            if getattr(block, target_name) is None:
                continue
            filter_copies.append(f"{source}.{source_name}.resample_filter")
            for name in ("affine.weight", "affine.bias", "weight", "bias", "noise_strength", "noise_const"):
                layout.copy(f"blocks.{index}.{target_name}.{name}", f"{source}.{source_name}.{name}")
        for name in ("affine.weight", "affine.bias", "weight", "bias"):
            layout.copy(f"blocks.{index}.to_rgb.{name}", f"{source}.torgb.{name}")
    layout.identical_copies("upsample_filter", filter_copies, fir_filter_2d(model.config.resample_filter))
    return layout.entries


def convert_stylegan2_network(network: PersistentObject, **tron_settings) -> StyleGAN2Generator:
    """Build a `StyleGAN2Generator` from the ``G_ema`` record of a StyleGAN2(-ADA) network pickle.

    Args:
        network: The generator as read by `load_network_pickle` (``snapshot["G_ema"]``).
        tron_settings: ``truncation_psi``, ``latent_space``, ``noise_mode`` of the converted model.

    Raises:
        CheckpointMismatchError: listing every missing, mis-shaped or unexpected tensor.
        ValueError: for settings the port does not implement.
    """
    config = {**_stylegan2_config_from_network(network), **tron_settings}
    with torch.device("meta"):
        model = StyleGAN2Generator(**config)
    layout = _stylegan2_network_layout(model)
    return convert_state_dict(network.tensors(), layout, model, f"an NVIDIA StyleGAN2 network ({config})")


# Defaults of NVIDIA's StyleGAN3 `SynthesisNetwork` / `SynthesisLayer` arguments that are not stored as attributes.
NVLABS_STYLEGAN3_DEFAULTS = {
    "channel_base": 32768,
    "channel_max": 512,
    "first_cutoff": 2,
    "first_stopband": 2**2.1,
    "last_stopband_rel": 2**0.3,
    "filter_size": 6,
    "lrelu_upsampling": 2,
    "use_radial_filters": False,
}

# `StyleGAN3LayerDesign` fields and the attributes NVIDIA's `SynthesisLayer` stores them in.
_STYLEGAN3_LAYER_ATTRIBUTES = {
    "in_channels": "in_channels",
    "out_channels": "out_channels",
    "in_size": "in_size",
    "out_size": "out_size",
    "in_sampling_rate": "in_sampling_rate",
    "out_sampling_rate": "out_sampling_rate",
    "in_cutoff": "in_cutoff",
    "out_cutoff": "out_cutoff",
    "in_half_width": "in_half_width",
    "out_half_width": "out_half_width",
    "is_to_rgb": "is_torgb",
    "is_critically_sampled": "is_critically_sampled",
    "kernel_size": "conv_kernel",
    "up_factor": "up_factor",
    "down_factor": "down_factor",
    "up_taps": "up_taps",
    "down_taps": "down_taps",
    "radial_down_filter": "down_radial",
    "padding": "padding",
}


def _same_value(ours, theirs) -> bool:
    theirs = theirs.tolist() if hasattr(theirs, "tolist") else theirs
    if isinstance(ours, tuple):
        return isinstance(theirs, (list, tuple)) and list(ours) == [int(value) for value in theirs]
    if isinstance(theirs, list):  # sizes are stored as [width, height]
        return all(_same_value(ours, value) for value in theirs)
    if isinstance(ours, float):
        return theirs is not None and math.isclose(ours, float(theirs), rel_tol=1e-9, abs_tol=1e-12)
    return ours == theirs


def _stylegan3_config_from_network(network: PersistentObject) -> tuple[dict, list[str]]:
    synthesis = network.children["synthesis"]
    layer_names = list(synthesis.attribute("layer_names") or [])
    layers = [synthesis.children.get(name) for name in layer_names]
    if not layers or any(layer is None for layer in layers):
        raise CheckpointMismatchError(f"The synthesis network lacks some of its layers {layer_names}.")
    settings = {
        **NVLABS_STYLEGAN3_DEFAULTS,
        **{k: v for k, v in synthesis.init_kwargs.items() if k in NVLABS_STYLEGAN3_DEFAULTS},
    }
    clamps = {
        None if layer.attribute("conv_clamp") is None else float(layer.attribute("conv_clamp")) for layer in layers
    }
    if len(clamps) != 1:
        _raise_unsupported([f"conv_clamp differs between layers: {sorted(clamps, key=str)}"], "StyleGAN3 settings")
    config = dict(
        **_mapping_config(network),
        img_resolution=int(network.attribute("img_resolution")),
        img_channels=int(network.attribute("img_channels")),
        channel_base=int(settings["channel_base"]),
        channel_max=int(settings["channel_max"]),
        num_layers=int(synthesis.attribute("num_layers")),
        num_critical=int(synthesis.attribute("num_critical")),
        first_cutoff=float(settings["first_cutoff"]),
        first_stopband=float(settings["first_stopband"]),
        last_stopband_rel=float(settings["last_stopband_rel"]),
        margin_size=int(synthesis.attribute("margin_size")),
        output_scale=float(synthesis.attribute("output_scale")),
        conv_kernel=int(layers[0].attribute("conv_kernel")),
        filter_size=int(settings["filter_size"]),
        lrelu_upsampling=int(settings["lrelu_upsampling"]),
        use_radial_filters=bool(settings["use_radial_filters"]),
        conv_clamp=clamps.pop(),
    )
    return config, layer_names


def _check_stylegan3_design(model: StyleGAN3Generator, network: PersistentObject, layer_names: list[str]) -> None:
    """Every signal-processing parameter the config implies must equal the one stored with the source layer."""
    synthesis = network.children["synthesis"]
    problems = []
    if len(layer_names) != len(model.layer_designs):
        problems.append(f"{len(layer_names)} layers, the configuration implies {len(model.layer_designs)}")
    source_input = synthesis.children.get("input")
    ours_input = model.fourier_input
    for field, ours in (
        ("channels", ours_input.weight.shape[0]),
        ("size", ours_input.size),
        ("sampling_rate", ours_input.sampling_rate),
        ("bandwidth", ours_input.bandwidth),
    ):
        if source_input is None or not _same_value(ours, source_input.attribute(field)):
            theirs = source_input.attribute(field) if source_input is not None else None
            problems.append(f"input.{field}: configuration implies {ours}, the network has {theirs}")
    for name, design in zip(layer_names, model.layer_designs):
        layer = synthesis.children[name]
        for field, attribute in _STYLEGAN3_LAYER_ATTRIBUTES.items():
            ours, theirs = getattr(design, field), layer.attribute(attribute)
            if not _same_value(ours, theirs):
                problems.append(f"{name}.{attribute}: configuration implies {ours}, the network has {theirs}")
    if problems:
        raise CheckpointMismatchError(
            "The StyleGAN3 network's layers differ from those its configuration implies:\n"
            + "\n".join(f"  {problem}" for problem in problems)
        )


def _stylegan3_network_layout(model: StyleGAN3Generator, layer_names: list[str]) -> list[TargetTensor]:
    layout = _Layout(model)
    _mapping_layout(layout, len(model.mapping.layers))
    for target, source in (
        ("weight", "weight"),
        ("affine.weight", "affine.weight"),
        ("affine.bias", "affine.bias"),
        ("transform", "transform"),
        ("frequencies", "freqs"),
        ("phases", "phases"),
    ):
        layout.copy(f"fourier_input.{target}", f"synthesis.input.{source}")
    for index, (name, layer) in enumerate(zip(layer_names, model.layers)):
        names = ["affine.weight", "affine.bias", "weight", "bias", "magnitude_ema"]
        names += [f"{kind}_filter" for kind in ("up", "down") if getattr(layer, f"{kind}_filter") is not None]
        for tensor_name in names:
            layout.copy(f"layers.{index}.{tensor_name}", f"synthesis.{name}.{tensor_name}")
    return layout.entries


def convert_stylegan3_network(network: PersistentObject, **tron_settings) -> StyleGAN3Generator:
    """Build a `StyleGAN3Generator` from the ``G_ema`` record of a StyleGAN3 (T or R) network pickle.

    The layer parameters the configuration implies (sizes, sampling rates, cutoffs, filter lengths, padding) are
    checked against those stored with each source layer; the low-pass filters are taken from the source.

    Args:
        network: The generator as read by `load_network_pickle` (``snapshot["G_ema"]``).
        tron_settings: ``truncation_psi``, ``latent_space`` of the converted model.

    Raises:
        CheckpointMismatchError: listing every missing, mis-shaped or unexpected tensor, or every layer parameter
            that differs.
        ValueError: for settings the port does not implement.
    """
    if "noise_mode" in tron_settings:
        raise ValueError("StyleGAN3 has no noise inputs: `noise_mode` applies to StyleGAN2 networks only.")
    config, layer_names = _stylegan3_config_from_network(network)
    config.update(tron_settings)
    with torch.device("meta"):
        model = StyleGAN3Generator(**config)
    _check_stylegan3_design(model, network, layer_names)
    layout = _stylegan3_network_layout(model, layer_names)
    return convert_state_dict(network.tensors(), layout, model, f"an NVIDIA StyleGAN3 network ({config})")


def network_architecture(network: PersistentObject) -> str:
    """``"stylegan2"`` or ``"stylegan3"``, from the classes the generator record is made of (the embedded source
    code is not needed, and never run)."""
    if network.class_name != "Generator" or not {"mapping", "synthesis"} <= set(network.children):
        raise CheckpointMismatchError(
            f"Expected a StyleGAN `Generator` with `mapping` and `synthesis`; found a {network.class_name!r} with "
            f"submodules {sorted(network.children)}."
        )
    synthesis_parts = {child.class_name for child in network.children["synthesis"].children.values() if child}
    if "SynthesisBlock" in synthesis_parts:
        return "stylegan2"
    if "SynthesisInput" in synthesis_parts:
        return "stylegan3"
    raise CheckpointMismatchError(
        f"The synthesis network is made of {sorted(synthesis_parts)}: neither StyleGAN2 (SynthesisBlock) nor "
        "StyleGAN3 (SynthesisInput + SynthesisLayer)."
    )


def convert_nvlabs_network(network: PersistentObject, **tron_settings):
    """`convert_stylegan2_network` or `convert_stylegan3_network`, as `network_architecture` says."""
    if network_architecture(network) == "stylegan3":
        return convert_stylegan3_network(network, **tron_settings)
    return convert_stylegan2_network(network, **tron_settings)


def load_nvlabs_pickle(path: str | os.PathLike, network_key: str = "G_ema", **tron_settings):
    """Read an NVIDIA network pickle safely and convert its generator (``G_ema`` by default)."""
    snapshot = load_network_pickle(path)
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get(network_key), PersistentObject):
        found = sorted(snapshot) if isinstance(snapshot, dict) else type(snapshot).__name__
        raise CheckpointMismatchError(f"{path} has no network {network_key!r} (found {found}).")
    return convert_nvlabs_network(snapshot[network_key], **tron_settings)


# --------------------------------------------------------------------------------------------------------------------
# rosinality stylegan2-pytorch


def rosinality_block_channels(state_dict: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """Channels of the blocks at sides 4, 8, ... read from a rosinality ``g_ema`` state dict's weight shapes."""
    num_upsampling_blocks = len([key for key in state_dict if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", key)])
    keys = ["conv1.conv.weight"] + [f"convs.{2 * index}.conv.weight" for index in range(num_upsampling_blocks)]
    missing = [key for key in keys if not isinstance(state_dict.get(key), torch.Tensor) or state_dict[key].ndim != 5]
    if missing:
        raise CheckpointMismatchError(f"Cannot read the channel table: missing or malformed {missing}.")
    return tuple(int(state_dict[key].shape[1]) for key in keys)


def _rosinality_layout(model: StyleGAN2Generator) -> list[TargetTensor]:
    layout = _Layout(model)
    for index in range(len(model.mapping.layers)):
        for name in ("weight", "bias"):
            layout.copy(f"mapping.layers.{index}.{name}", f"style.{index + 1}.{name}")
    layout.copy("mapping.w_avg", "latent_avg")
    layout.copy("constant_input", "input.input", (1, *layout.targets["constant_input"]))

    def styled_conv(target: str, source: str, noise_index: int) -> None:
        out_channels, in_channels, _, _ = layout.targets[f"{target}.weight"]
        side = layout.targets[f"{target}.noise_const"][0]
        layout.copy(f"{target}.weight", f"{source}.conv.weight", (1, out_channels, in_channels, 3, 3))
        layout.copy(f"{target}.affine.weight", f"{source}.conv.modulation.weight")
        layout.copy(f"{target}.affine.bias", f"{source}.conv.modulation.bias")
        layout.copy(f"{target}.noise_strength", f"{source}.noise.weight", (1,))
        layout.copy(f"{target}.noise_const", f"noises.noise_{noise_index}", (1, 1, side, side))
        layout.copy(f"{target}.bias", f"{source}.activate.bias")

    def to_rgb(target: str, source: str) -> None:
        img_channels, in_channels, _, _ = layout.targets[f"{target}.weight"]
        layout.copy(f"{target}.weight", f"{source}.conv.weight", (1, img_channels, in_channels, 1, 1))
        layout.copy(f"{target}.affine.weight", f"{source}.conv.modulation.weight")
        layout.copy(f"{target}.affine.bias", f"{source}.conv.modulation.bias")
        layout.copy(f"{target}.bias", f"{source}.bias", (1, img_channels, 1, 1))

    styled_conv("blocks.0.conv", "conv1", 0)
    to_rgb("blocks.0.to_rgb", "to_rgb1")
    kernel_copies = []
    for index in range(1, len(model.blocks)):
        styled_conv(f"blocks.{index}.upsample_conv", f"convs.{2 * index - 2}", 2 * index - 1)
        styled_conv(f"blocks.{index}.conv", f"convs.{2 * index - 1}", 2 * index)
        to_rgb(f"blocks.{index}.to_rgb", f"to_rgbs.{index - 1}")
        kernel_copies += [f"convs.{2 * index - 2}.conv.blur.kernel", f"to_rgbs.{index - 1}.upsample.kernel"]
    # rosinality stores the 2x-upsampling kernels with the gain 2**2 folded in.
    layout.identical_copies("upsample_filter", kernel_copies, fir_filter_2d(model.config.resample_filter), scale=1 / 4)
    return layout.entries


def convert_rosinality_stylegan2(
    state_dict: dict[str, torch.Tensor],
    latent_avg: torch.Tensor | None,
    block_channels: Sequence[int] | None = None,
    mapping_lr_multiplier: float = ROSINALITY_LR_MLP,
    blur_kernel: Sequence[float] = ROSINALITY_BLUR_KERNEL,
    **tron_settings,
) -> StyleGAN2Generator:
    """Build a `StyleGAN2Generator` from a rosinality ``stylegan2-pytorch`` generator.

    Args:
        state_dict: ``checkpoint["g_ema"]``.
        latent_avg: ``checkpoint["latent_avg"]`` ``(style_dim,)``, the truncation centre (our ``w_avg``). ``None``
            (``train.py`` checkpoints store none) estimates it as rosinality's ``mean_latent`` does: the mean ``w``
            of `ROSINALITY_MEAN_LATENT_SAMPLES` draws of ``z`` (seeded, so conversions are reproducible).
        block_channels: Channels per block from 4 px up; read from the weight shapes when not given.
        mapping_lr_multiplier: The ``lr_mlp`` the generator was built with (not stored; 0.01 by default).
        blur_kernel: The ``blur_kernel`` it was built with (checked against the stored kernels).
        tron_settings: ``truncation_psi``, ``latent_space``, ``noise_mode`` of the converted model.

    Returns:
        The model in eval mode; ``synthesize(ws, noise_mode="const")`` equals ``g([ws], input_is_latent=True,
        randomize_noise=False)`` and ``forward(z)`` equals ``g([z], randomize_noise=False)``. rosinality's layers
        do not clamp, so the model has ``conv_clamp=None``.

    Raises:
        CheckpointMismatchError: listing every missing, mis-shaped or unexpected key.
    """
    style_weight = state_dict.get("style.1.weight")
    if not isinstance(style_weight, torch.Tensor) or style_weight.ndim != 2:
        raise CheckpointMismatchError("Not a rosinality StyleGAN2 generator: `style.1.weight` is missing.")
    style_dim = int(style_weight.shape[0])
    mapping_layers = len([key for key in state_dict if re.fullmatch(r"style\.\d+\.weight", key)])
    config = dict(
        z_dim=style_dim,
        w_dim=style_dim,
        block_channels=tuple(block_channels) if block_channels is not None else rosinality_block_channels(state_dict),
        img_channels=3,
        mapping_layers=mapping_layers,
        mapping_lr_multiplier=mapping_lr_multiplier,
        resample_filter=tuple(float(tap) for tap in blur_kernel),
        conv_clamp=None,
        **tron_settings,
    )
    with torch.device("meta"):
        model = StyleGAN2Generator(**config)
    layout = _rosinality_layout(model)
    estimate_latent_avg = latent_avg is None
    if estimate_latent_avg:
        latent_avg = torch.zeros(style_dim)
    model = convert_state_dict(
        {**state_dict, "latent_avg": latent_avg}, layout, model, f"a rosinality StyleGAN2 ({config})"
    )
    if estimate_latent_avg:
        with torch.no_grad():
            z = torch.randn(ROSINALITY_MEAN_LATENT_SAMPLES, style_dim, generator=torch.Generator().manual_seed(0))
            model.mapping.w_avg.copy_(model.mapping(z).mean(dim=0))
    return model


def load_rosinality_checkpoint(path: str | os.PathLike, **kwargs) -> StyleGAN2Generator:
    """Read a rosinality checkpoint with `load_torch_checkpoint` (``torch.load(..., weights_only=True)``) and convert
    ``g_ema``.

    Both layouts work: ``convert_weight.py``'s ``{"g_ema", "latent_avg"}`` and ``train.py``'s (``g_ema`` with
    ``g``, ``d``, optimiser states and the ``argparse.Namespace`` of its options, which is allowed as data; no
    ``latent_avg``). ``kwargs`` go to `convert_rosinality_stylegan2`.
    """
    checkpoint = load_torch_checkpoint(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("g_ema"), dict):
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointMismatchError(
            f"{path} is not a rosinality checkpoint with a `g_ema` state dict (found {found})."
        )
    return convert_rosinality_stylegan2(checkpoint["g_ema"], checkpoint.get("latent_avg"), **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# Either format


def checkpoint_format(path: str | os.PathLike) -> str:
    """``"rosinality"`` for a ``torch.save`` zip archive, ``"nvlabs"`` for anything else (a network pickle)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    return "rosinality" if zipfile.is_zipfile(path) else "nvlabs"


def load_stylegan_checkpoint(path: str | os.PathLike, **kwargs):
    """Convert an NVIDIA network pickle or a rosinality checkpoint, whichever ``path`` is."""
    if checkpoint_format(path) == "rosinality":
        return load_rosinality_checkpoint(path, **kwargs)
    return load_nvlabs_pickle(path, **kwargs)


__all__ = [
    "NVLABS_RESAMPLE_FILTER",
    "ROSINALITY_BLUR_KERNEL",
    "ROSINALITY_LR_MLP",
    "ROSINALITY_MEAN_LATENT_SAMPLES",
    "checkpoint_format",
    "convert_nvlabs_network",
    "convert_rosinality_stylegan2",
    "convert_stylegan2_network",
    "convert_stylegan3_network",
    "load_nvlabs_pickle",
    "load_rosinality_checkpoint",
    "load_stylegan_checkpoint",
    "network_architecture",
    "rosinality_block_channels",
]
