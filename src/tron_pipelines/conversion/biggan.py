"""Conversion of BigGAN checkpoints to `BigGANDeepGenerator` / `BigGANGenerator`.

Two source formats:

- `pytorch-pretrained-biggan` folders (``config.json`` + ``pytorch_model.bin``) of DeepMind's BigGAN-deep 128/256/512:
  `load_pytorch_pretrained_biggan` / `convert_pytorch_pretrained_biggan` -> `BigGANDeepGenerator`.
- BigGAN-PyTorch state dicts of the TF-Hub BigGAN 256/512 used by the official TR0N (``biggan-{256,512}.pth``):
  `load_biggan_pytorch` / `convert_biggan_pytorch` -> `BigGANGenerator`.

Both sources store spectrally normalised layers as a raw weight plus power-iteration vectors, and divide the weight by
its estimated largest singular value on every forward. In eval mode those vectors are frozen, so the divided weight
is a constant: the converters compute it once (in float32, with the same operations as the original eval forward)
and store plain weights. Every checkpoint key is mapped explicitly; a checkpoint with missing, mis-shaped or unknown
keys is rejected with a `CheckpointMismatchError` that lists all of them.
"""

import json
import math
import os
import re
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.biggan import BIGGAN_ARCHITECTURES, BOTTOM_WIDTH, BigGANGenerator
from ..models.biggan_deep import BigGANDeepGenerator
from .checkpoints import CheckpointMismatchError, TargetTensor, convert_state_dict


# Spectral-norm epsilon of the official TR0N generator (BigGAN-PyTorch's parser default, kept by `get_G`).
BIGGAN_PYTORCH_SN_EPS = 1e-8


# --------------------------------------------------------------------------------------------------------------------
# Spectral norm folding


def fold_torch_spectral_norm(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Weight that `torch.nn.utils.spectral_norm` uses in eval mode: ``weight / (u . (W v))``.

    Args:
        weight: ``weight_orig`` ``(out, ...)``; ``W`` is its ``(out, -1)`` view.
        u: ``weight_u`` ``(out,)``.
        v: ``weight_v`` ``(prod(...),)``.
    """
    sigma = torch.dot(u, torch.mv(weight.reshape(weight.shape[0], -1), v))
    return weight / sigma


def fold_biggan_pytorch_spectral_norm(weight: torch.Tensor, u0: torch.Tensor, eps: float) -> torch.Tensor:
    """Weight that BigGAN-PyTorch's ``SN`` layers use in eval mode: one power iteration from the frozen ``u0``.

    ``v = normalize(u0 W)``, ``u = normalize(v W^T)``, ``sigma = v W^T u^T``, result ``weight / sigma``, where
    ``normalize`` divides by ``max(norm, eps)``.

    Args:
        weight: ``(out, ...)``; ``W`` is its ``(out, -1)`` view.
        u0: ``(1, out)``.
        eps: BigGAN-PyTorch's ``SN_eps``.
    """
    matrix = weight.reshape(weight.shape[0], -1)
    v = F.normalize(u0 @ matrix, eps=eps)
    u = F.normalize(v @ matrix.t(), eps=eps)
    sigma = ((v @ matrix.t()) @ u.t()).squeeze()
    return weight / sigma


# --------------------------------------------------------------------------------------------------------------------
# pytorch-pretrained-biggan (BigGAN-deep) -> BigGANDeepGenerator


def biggan_deep_config_from_pytorch_pretrained(package_config: dict) -> dict:
    """`BigGANDeepGenerator` config for a `pytorch_pretrained_biggan.BigGANConfig` dict (its ``config.json``).

    Raises:
        ValueError: for a config the package itself cannot run (it hard-codes a 16x first block, a 1x last block
            and shortcuts that halve the channels).
    """
    required = ("z_dim", "channel_width", "num_classes", "layers", "attention_layer_position", "eps", "n_stats")
    missing = [key for key in required if key not in package_config]
    if missing:
        raise ValueError(f"The pytorch-pretrained-biggan config lacks {missing}.")
    layers = [(bool(upsample), int(c_in), int(c_out)) for upsample, c_in, c_out in package_config["layers"]]
    if any(current[2] != following[1] for current, following in pairwise(layers)):
        raise ValueError(f"Each layer must take the channels of the previous one, got layers {layers}.")
    multipliers = [layers[0][1]] + [c_out for _, _, c_out in layers]
    if multipliers[0] != 16 or multipliers[-1] != 1:
        raise ValueError(f"pytorch-pretrained-biggan needs layers from 16x to 1x channels, got {layers}.")
    if any(c_out not in (c_in, c_in / 2) for _, c_in, c_out in layers):
        raise ValueError(f"pytorch-pretrained-biggan layers keep or halve the channels, got {layers}.")
    if not 0 <= package_config["attention_layer_position"] < len(layers):
        raise ValueError("`attention_layer_position` must point at a layer; models without attention are unsupported.")
    output_dim = package_config.get("output_dim")
    resolution = BOTTOM_WIDTH * 2 ** sum(upsample for upsample, _, _ in layers)
    if output_dim is not None and output_dim != resolution:
        raise ValueError(f"`output_dim` is {output_dim} but the layers produce {resolution} px.")
    return {
        "latent_dim": package_config["z_dim"],
        # The package sizes its class embedding with `z_dim` (its `class_embed_dim` is unused), so we do too.
        "class_embed_dim": package_config["z_dim"],
        "num_classes": package_config["num_classes"],
        "channel_width": package_config["channel_width"],
        "channel_multipliers": tuple(multipliers),
        "upsample_blocks": tuple(upsample for upsample, _, _ in layers),
        "attention_block_index": package_config["attention_layer_position"],
        "num_truncations": package_config["n_stats"],
        "eps": package_config["eps"],
    }


def _torch_spectral_norm_weight(
    target: str, source: str, shape: tuple[int, ...], transform: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> TargetTensor:
    """``{source}.weight_orig/weight_u/weight_v`` -> folded ``target``, optionally transformed after folding."""

    def build(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        folded = fold_torch_spectral_norm(weight, u, v)
        return transform(folded) if transform is not None else folded

    sources = {
        f"{source}.weight_orig": shape,
        f"{source}.weight_u": (shape[0],),
        f"{source}.weight_v": (math.prod(shape[1:]),),
    }
    return TargetTensor(target, sources, build)


def _pytorch_pretrained_biggan_layout(model: BigGANDeepGenerator) -> list[TargetTensor]:
    config = model.config
    targets = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    layout = []

    def copy(target: str, source: str) -> None:
        layout.append(TargetTensor(target, {source: targets[target]}))

    def folded(target: str, source: str) -> None:
        layout.append(_torch_spectral_norm_weight(target, source, targets[target]))

    # nn.Linear(num_classes, dim, bias=False) in the package; a (num_classes, dim) table here.
    embedding_shape = targets["class_embedding.weight"]
    layout.append(
        TargetTensor("class_embedding.weight", {"embeddings.weight": embedding_shape[::-1]}, lambda w: w.t())
    )

    # The package reshapes the projection's output as (4, 4, C) (TF's channels-last order) and permutes it to
    # (C, 4, 4). Reordering the output rows once lets the converted model reshape straight to (C, 4, 4).
    projection_channels = targets["input_projection.bias"][0] // BOTTOM_WIDTH**2

    def channels_first_rows(tensor: torch.Tensor) -> torch.Tensor:
        rows = tensor.reshape(BOTTOM_WIDTH, BOTTOM_WIDTH, projection_channels, *tensor.shape[1:])
        return rows.movedim(2, 0).reshape(tensor.shape)

    layout.append(
        _torch_spectral_norm_weight(
            "input_projection.weight",
            "generator.gen_z",
            targets["input_projection.weight"],
            channels_first_rows,
        )
    )
    layout.append(
        TargetTensor(
            "input_projection.bias", {"generator.gen_z.bias": targets["input_projection.bias"]}, channels_first_rows
        )
    )

    # The package keeps the attention layer in the same list as the blocks, just before block `attention_index`.
    attention_index = config.attention_block_index
    for index in range(len(model.blocks)):
        source = f"generator.layers.{index + (index >= attention_index)}"
        target = f"blocks.{index}"
        for stage in range(4):
            norm_source, norm_target = f"{source}.bn_{stage}", f"{target}.norm{stage + 1}"
            copy(f"{norm_target}.truncation_means", f"{norm_source}.running_means")
            copy(f"{norm_target}.truncation_vars", f"{norm_source}.running_vars")
            folded(f"{norm_target}.scale.weight", f"{norm_source}.scale")
            folded(f"{norm_target}.shift.weight", f"{norm_source}.offset")
            folded(f"{target}.conv{stage + 1}.weight", f"{source}.conv_{stage}")
            copy(f"{target}.conv{stage + 1}.bias", f"{source}.conv_{stage}.bias")

    attention_source = f"generator.layers.{attention_index}"
    for target_name, source_name in (
        ("to_query", "snconv1x1_theta"),
        ("to_key", "snconv1x1_phi"),
        ("to_value", "snconv1x1_g"),
        ("to_out", "snconv1x1_o_conv"),
    ):
        folded(f"attention.{target_name}.weight", f"{attention_source}.{source_name}")
    layout.append(
        TargetTensor("attention.residual_scale", {f"{attention_source}.gamma": (1,)}, lambda gamma: gamma.reshape(()))
    )

    copy("output_norm.truncation_means", "generator.bn.running_means")
    copy("output_norm.truncation_vars", "generator.bn.running_vars")
    copy("output_norm.weight", "generator.bn.weight")
    copy("output_norm.bias", "generator.bn.bias")

    # The package's RGB convolution has `channel_width` outputs of which it keeps the first 3: fold with all of them
    # (sigma depends on the whole matrix), then drop the unused ones.
    rgb_in_channels = targets["to_rgb.weight"][1]
    rgb_source_shape = (rgb_in_channels, rgb_in_channels, 3, 3)
    layout.append(
        _torch_spectral_norm_weight("to_rgb.weight", "generator.conv_to_rgb", rgb_source_shape, lambda w: w[:3])
    )
    layout.append(
        TargetTensor("to_rgb.bias", {"generator.conv_to_rgb.bias": (rgb_in_channels,)}, lambda bias: bias[:3])
    )
    return layout


def convert_pytorch_pretrained_biggan(
    state_dict: dict[str, torch.Tensor], package_config: dict, **config_overrides
) -> BigGANDeepGenerator:
    """Build a `BigGANDeepGenerator` from a `pytorch_pretrained_biggan.BigGAN` state dict and its config dict.

    Args:
        state_dict: The package's ``pytorch_model.bin`` contents (or ``BigGAN.state_dict()``).
        package_config: The package's ``config.json`` contents.
        config_overrides: TR0N settings of the converted model (``default_truncation``, ``latent_threshold``, ...).

    Returns:
        The model in eval mode, float32, with ``model(noise, class_vector, truncation)`` equal to the package model's
        eval-mode output.

    Raises:
        CheckpointMismatchError: listing every missing, mis-shaped or unexpected key.
    """
    config = {**biggan_deep_config_from_pytorch_pretrained(package_config), **config_overrides}
    with torch.device("meta"):
        model = BigGANDeepGenerator(**config)
    layout = _pytorch_pretrained_biggan_layout(model)
    resolution = model.resolution
    return convert_state_dict(
        state_dict, layout, model, f"pytorch-pretrained-biggan BigGAN-deep {resolution} px ({config})"
    )


def load_pytorch_pretrained_biggan(folder: str | os.PathLike, **config_overrides) -> BigGANDeepGenerator:
    """Read a pytorch-pretrained-biggan folder (``config.json`` + ``pytorch_model.bin``) and convert it.

    The weights are read with ``torch.load(..., weights_only=True)``: tensors only, no pickled code.
    """
    folder = Path(folder)
    with open(folder / "config.json", encoding="utf-8") as file:
        package_config = json.load(file)
    state_dict = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    return convert_pytorch_pretrained_biggan(state_dict, package_config, **config_overrides)


# --------------------------------------------------------------------------------------------------------------------
# BigGAN-PyTorch (official TR0N) -> BigGANGenerator


def _biggan_pytorch_spectral_norm_weight(target: str, source: str, shape: tuple[int, ...], eps: float) -> TargetTensor:
    """``{source}.weight/u0`` (+ optional ``sv0``) -> folded ``target``."""
    return TargetTensor(
        target,
        {f"{source}.weight": shape, f"{source}.u0": (1, shape[0])},
        lambda weight, u0: fold_biggan_pytorch_spectral_norm(weight, u0, eps),
        optional={f"{source}.sv0": (1,)},
    )


def _biggan_pytorch_layout(model: BigGANGenerator, sn_eps: float) -> list[TargetTensor]:
    targets = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    layout = []

    def copy(target: str, source: str) -> None:
        layout.append(TargetTensor(target, {source: targets[target]}))

    def folded(target: str, source: str) -> None:
        layout.append(_biggan_pytorch_spectral_norm_weight(target, source, targets[target], sn_eps))

    copy("class_embedding.weight", "shared.weight")
    folded("input_projection.weight", "linear")
    copy("input_projection.bias", "linear.bias")
    for index in range(len(model.blocks)):
        source, target = f"blocks.{index}.0", f"blocks.{index}"
        for norm in ("norm1", "norm2"):
            norm_source = f"{source}.bn{norm[-1]}"
            folded(f"{target}.{norm}.scale.weight", f"{norm_source}.gain")
            folded(f"{target}.{norm}.shift.weight", f"{norm_source}.bias")
            copy(f"{target}.{norm}.running_mean", f"{norm_source}.stored_mean")
            copy(f"{target}.{norm}.running_var", f"{norm_source}.stored_var")
        for conv_target, conv_source in (("conv1", "conv1"), ("conv2", "conv2"), ("shortcut", "conv_sc")):
            folded(f"{target}.{conv_target}.weight", f"{source}.{conv_source}")
            copy(f"{target}.{conv_target}.bias", f"{source}.{conv_source}.bias")

    attention_source = f"blocks.{model.attention_block_index}.1"
    for target_name, source_name in (("to_query", "theta"), ("to_key", "phi"), ("to_value", "g"), ("to_out", "o")):
        folded(f"attention.{target_name}.weight", f"{attention_source}.{source_name}")
    copy("attention.residual_scale", f"{attention_source}.gamma")

    copy("output_norm.weight", "output_layer.0.gain")
    copy("output_norm.bias", "output_layer.0.bias")
    copy("output_norm.running_mean", "output_layer.0.stored_mean")
    copy("output_norm.running_var", "output_layer.0.stored_var")
    folded("to_rgb.weight", "output_layer.2")
    copy("to_rgb.bias", "output_layer.2.bias")
    return layout


def convert_biggan_pytorch(
    state_dict: dict[str, torch.Tensor],
    resolution: int,
    channel_width: int | None = None,
    sn_eps: float = BIGGAN_PYTORCH_SN_EPS,
    **config_overrides,
) -> BigGANGenerator:
    """Build a `BigGANGenerator` from a BigGAN-PyTorch generator state dict (TR0N's ``biggan-{256,512}.pth``).

    Args:
        state_dict: Bare generator state dict; ``sv0`` entries (logged singular values) may be present or not.
        resolution: 256 or 512; selects the architecture in `BIGGAN_ARCHITECTURES`.
        channel_width: BigGAN's ``G_ch``; read from ``output_layer.0.gain`` when not given (96 for the released
            checkpoints).
        sn_eps: Spectral-norm epsilon of the power iteration (1e-8 in the official TR0N).
        config_overrides: Other `BigGANGenerator` settings (``eps``, ``latent_threshold``, ...).

    Returns:
        The model in eval mode, float32, computing the original generator's eval-mode ``G(z, y)``.

    Raises:
        CheckpointMismatchError: listing every missing, mis-shaped or unexpected key.
    """
    if resolution not in BIGGAN_ARCHITECTURES:
        raise ValueError(f"`resolution` must be one of {sorted(BIGGAN_ARCHITECTURES)}, got {resolution}.")
    if channel_width is None:
        output_gain = state_dict.get("output_layer.0.gain")
        # Without it, build the released width so that the error lists everything against a sensible architecture.
        channel_width = output_gain.shape[0] if isinstance(output_gain, torch.Tensor) and output_gain.ndim == 1 else 96
    config = {**BIGGAN_ARCHITECTURES[resolution], "channel_width": channel_width, **config_overrides}
    with torch.device("meta"):
        model = BigGANGenerator(**config)
    layout = _biggan_pytorch_layout(model, sn_eps)
    return convert_state_dict(state_dict, layout, model, f"BigGAN-PyTorch BigGAN {resolution} px ({config})")


def biggan_pytorch_resolution(state_dict: dict[str, torch.Tensor]) -> int:
    """The resolution (a key of `BIGGAN_ARCHITECTURES`) whose number of residual blocks a BigGAN-PyTorch state dict
    has (``blocks.{i}.0.*`` keys: 6 blocks at 256 px, 7 at 512 px).

    Raises:
        CheckpointMismatchError: when no architecture has that many blocks.
    """
    block_indices = {int(match.group(1)) for key in state_dict if (match := re.match(r"blocks\.(\d+)\.0\.", key))}
    by_blocks = {
        len(architecture["channel_multipliers"]) - 1: resolution
        for resolution, architecture in BIGGAN_ARCHITECTURES.items()
    }
    if len(block_indices) not in by_blocks:
        expected = ", ".join(f"{blocks} ({resolution} px)" for blocks, resolution in sorted(by_blocks.items()))
        raise CheckpointMismatchError(
            f"A BigGAN-PyTorch generator has {expected} residual blocks; this state dict has {len(block_indices)}: give the resolution."
        )
    return by_blocks[len(block_indices)]


def load_biggan_pytorch(
    checkpoint_path: str | os.PathLike,
    resolution: int | None = None,
    sn_eps: float = BIGGAN_PYTORCH_SN_EPS,
    **config_overrides,
) -> BigGANGenerator:
    """Read a bare BigGAN-PyTorch state dict with ``torch.load(..., weights_only=True)`` and convert it; the resolution
    is inferred from the number of blocks (`biggan_pytorch_resolution`) unless given."""
    state_dict = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict):
        raise CheckpointMismatchError(f"Expected a bare state dict in {checkpoint_path}, found {type(state_dict)}.")
    if resolution is None:
        resolution = biggan_pytorch_resolution(state_dict)
    return convert_biggan_pytorch(state_dict, resolution, sn_eps=sn_eps, **config_overrides)


__all__ = [
    "BIGGAN_PYTORCH_SN_EPS",
    "biggan_pytorch_resolution",
    "biggan_deep_config_from_pytorch_pretrained",
    "convert_biggan_pytorch",
    "convert_pytorch_pretrained_biggan",
    "fold_biggan_pytorch_spectral_norm",
    "fold_torch_spectral_norm",
    "load_biggan_pytorch",
    "load_pytorch_pretrained_biggan",
]
