"""Conversion of NVAE training checkpoints (NVlabs/NVAE ``train.py``'s ``checkpoint.pt``) to `NVAEGenerator`.

A checkpoint is ``torch.save({"epoch", "state_dict", "optimizer", "global_step", "args", "arch_instance", "scheduler",
"grad_scalar"})``: the full autoencoder's state dict and the training options as an ``argparse.Namespace``. It is read
with ``torch.load(..., weights_only=True)`` allowing ``argparse.Namespace`` and nothing else (`load_torch_checkpoint`),
so no code from the file runs. The architecture comes from ``args`` (as NVAE's ``AutoEncoder(args, ...)`` reads it)
and the stored ``arch_instance`` cells; only the decoder's tensors are converted (``prior_ftr0``, ``dec_tower``,
``dec_sampler``, ``post_process``, ``image_conditional``), every one mapped explicitly, with missing, mis-shaped or
unknown decoder keys all listed in one `CheckpointMismatchError`. The encoder, its flows and the optimiser state are
not needed to generate and are left out.

State-dict quirk: NVAE's convolutions without weight normalisation register their weight a second time as
``<conv>.weight_normalized`` (the same tensor); those aliases are accepted and ignored.
"""

import argparse
import os

import torch
import torch.nn as nn

from ..models.nvae import NVAECell, NVAECombinerCell, NVAEGenerator, NVAESqueezeExcitation, NVAEWeightNormConv2d
from .checkpoints import CheckpointMismatchError, TargetTensor, convert_state_dict, load_torch_checkpoint


# State-dict prefixes of NVAE's generative path; everything else is the encoder side.
NVAE_DECODER_PREFIXES = ("prior_ftr0", "dec_tower.", "dec_sampler.", "post_process.", "image_conditional.")
# Decoder cells of NVAE's `res_mbconv` architecture (its default, used by every released checkpoint), for checkpoints
# that do not store their `arch_instance` cells.
RES_MBCONV_DECODER_CELLS = {
    "normal_dec": ["mconv_e6k5g0"],
    "up_dec": ["mconv_e6k5g0"],
    "normal_post": ["mconv_e3k5g0"],
    "up_post": ["mconv_e3k5g0"],
}
# Defaults of options that older NVAE checkpoints lack (as NVAE's evaluate.py and the official TR0N fill them in).
NVAE_ARG_DEFAULTS = {"ada_groups": False, "min_groups_per_scale": 1, "num_mixture_dec": 10}
BATCH_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def nvae_resolution(dataset: str) -> int:
    """Image side NVAE trains at for ``--dataset`` (its ``utils.get_input_size``), for the RGB datasets."""
    if dataset == "ffhq":
        return 256
    if dataset == "cifar10":
        return 32
    if dataset.startswith(("celeba", "imagenet", "lsun")):
        return int(dataset.split("_")[-1])
    raise ValueError(
        f"Unsupported NVAE dataset {dataset!r}: the port renders RGB models (ffhq, cifar10, celeba_*, imagenet_*, "
        "lsun_*); binary MNIST/Omniglot decoders are not ported."
    )


def nvae_groups_per_scale(num_scales: int, num_groups: int, adaptive: bool, minimum_groups: int = 1) -> tuple:
    """NVAE's latent groups per scale (highest resolution first): ``num_groups`` at the first scale, halved at every
    further one when ``adaptive`` (``--ada_groups``), but never below ``minimum_groups``."""
    groups = []
    for _ in range(num_scales):
        groups.append(num_groups)
        if adaptive:
            num_groups = max(minimum_groups, num_groups // 2)
    return tuple(groups)


def nvae_config_from_args(args: argparse.Namespace | dict, arch_cells: dict | None = None) -> dict:
    """`NVAEGenerator` config from a checkpoint's training ``args`` and its ``arch_instance`` cells.

    Args:
        args: The checkpoint's ``args`` (namespace or dict of NVAE's ``train.py`` options).
        arch_cells: The checkpoint's ``arch_instance`` dict (``utils.get_arch_cells``); ``None`` accepts only
            ``args.arch_instance == "res_mbconv"``.

    Raises:
        ValueError: for a missing option or a model the port does not render (naming it).
    """
    options = {**NVAE_ARG_DEFAULTS, **(vars(args) if isinstance(args, argparse.Namespace) else dict(args))}
    required = (
        "dataset",
        "num_channels_dec",
        "num_preprocess_blocks",
        "num_latent_scales",
        "num_groups_per_scale",
        "num_latent_per_group",
        "num_cell_per_cond_dec",
        "num_postprocess_blocks",
        "num_postprocess_cells",
        "use_se",
        "arch_instance",
    )
    missing = [name for name in required if name not in options]
    if missing:
        raise ValueError(f"The checkpoint's `args` lack {missing}; is this an NVAE train.py checkpoint?")
    if arch_cells is None:
        if options["arch_instance"] != "res_mbconv":
            raise ValueError(
                f"The checkpoint stores no `arch_instance` cells and its arch_instance is "
                f"{options['arch_instance']!r}; only 'res_mbconv' is known without them."
            )
        arch_cells = RES_MBCONV_DECODER_CELLS
    cell_kinds = ("normal_dec", "up_dec", "normal_post", "up_post")
    missing_cells = [kind for kind in cell_kinds if kind not in arch_cells]
    if missing_cells:
        raise ValueError(f"The checkpoint's `arch_instance` lacks the decoder cells {missing_cells}.")
    num_scales = int(options["num_latent_scales"])
    return {
        "resolution": nvae_resolution(options["dataset"]),
        "num_channels_dec": int(options["num_channels_dec"]),
        "num_preprocess_blocks": int(options["num_preprocess_blocks"]),
        "num_latent_scales": num_scales,
        "groups_per_scale": nvae_groups_per_scale(
            num_scales,
            int(options["num_groups_per_scale"]),
            bool(options["ada_groups"]),
            int(options["min_groups_per_scale"]),
        ),
        "num_latent_per_group": int(options["num_latent_per_group"]),
        "num_cell_per_cond_dec": int(options["num_cell_per_cond_dec"]),
        "num_postprocess_blocks": int(options["num_postprocess_blocks"]),
        "num_postprocess_cells": int(options["num_postprocess_cells"]),
        "decoder_cell_ops": tuple(arch_cells["normal_dec"]),
        "decoder_up_cell_ops": tuple(arch_cells["up_dec"]),
        "postprocess_cell_ops": tuple(arch_cells["normal_post"]),
        "postprocess_up_cell_ops": tuple(arch_cells["up_post"]),
        "use_se": bool(options["use_se"]),
        "num_mixtures": int(options["num_mixture_dec"]),
    }


class _NVAELayout:
    """`TargetTensor`s mapping NVAE's decoder keys onto an `NVAEGenerator`, module by module."""

    def __init__(self, model: NVAEGenerator):
        self.shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
        self.entries: list[TargetTensor] = []

    def copy(self, target: str, source: str, **kwargs) -> None:
        self.entries.append(TargetTensor(target, {source: self.shapes[target]}, **kwargs))

    def weight_norm_conv(self, target: str, source: str, conv: NVAEWeightNormConv2d) -> None:
        self.copy(f"{target}.weight", f"{source}.weight")
        # NVAE keeps one log-norm per output channel as (out, 1, 1, 1).
        (out_channels,) = self.shapes[f"{target}.log_weight_norm"]
        self.entries.append(
            TargetTensor(
                f"{target}.log_weight_norm",
                {f"{source}.log_weight_norm": (out_channels, 1, 1, 1)},
                lambda tensor: tensor.reshape(-1),
            )
        )
        if conv.bias is not None:
            self.copy(f"{target}.bias", f"{source}.bias")

    def plain_conv(self, target: str, source: str) -> None:
        alias = {f"{source}.weight_normalized": self.shapes[f"{target}.weight"]}
        self.copy(f"{target}.weight", f"{source}.weight", optional=alias)

    def batch_norm(self, target: str, source: str) -> None:
        for name in BATCH_NORM_TENSORS:
            # The converter casts every tensor to float32; the step counter is an integer buffer.
            build = (lambda tensor: tensor.long()) if name == "num_batches_tracked" else (lambda tensor: tensor)
            self.copy(f"{target}.{name}", f"{source}.{name}", build=build)

    def cell(self, target: str, source: str, cell: nn.Module) -> None:
        if isinstance(cell, NVAECombinerCell):
            self.weight_norm_conv(f"{target}.conv", f"{source}.conv", cell.conv)
            return
        assert isinstance(cell, NVAECell)
        if isinstance(cell.skip, nn.Sequential):
            self.weight_norm_conv(f"{target}.skip.1", f"{source}.skip.1", cell.skip[1])
        for index, op in enumerate(cell.ops):
            for position, layer in enumerate(op.layers):
                mine, theirs = f"{target}.ops.{index}.layers.{position}", f"{source}._ops.{index}.conv.{position}"
                if isinstance(layer, nn.BatchNorm2d):  # NVAE's SyncBatchNorm wrapper
                    self.batch_norm(mine, f"{theirs}.bn")
                elif isinstance(layer, nn.Sequential):  # ConvBNSwish: conv, SyncBatchNormSwish
                    self.plain_conv(f"{mine}.0", f"{theirs}.conv.0")
                    self.batch_norm(f"{mine}.1", f"{theirs}.conv.1")
                elif isinstance(layer, nn.Conv2d):
                    self.plain_conv(mine, theirs)
        if isinstance(cell.squeeze_excitation, NVAESqueezeExcitation):
            for position in (0, 2):
                for name in ("weight", "bias"):
                    self.copy(
                        f"{target}.squeeze_excitation.gate.{position}.{name}", f"{source}.se.se.{position}.{name}"
                    )


def nvae_layout(model: NVAEGenerator) -> list[TargetTensor]:
    """Every tensor of ``model`` and the NVAE decoder key it comes from."""
    layout = _NVAELayout(model)
    layout.copy("prior_features", "prior_ftr0")
    for index, cell in enumerate(model.decoder_cells):
        layout.cell(f"decoder_cells.{index}", f"dec_tower.{index}", cell)
    for index, head in enumerate(model.prior_heads):
        layout.weight_norm_conv(f"prior_heads.{index}.1", f"dec_sampler.{index}.1", head[1])
    for index, cell in enumerate(model.postprocess_cells):
        layout.cell(f"postprocess_cells.{index}", f"post_process.{index}", cell)
    layout.weight_norm_conv("image_head.1", "image_conditional.1", model.image_head[1])
    return layout.entries


def convert_nvae(
    state_dict: dict[str, torch.Tensor],
    args: argparse.Namespace | dict,
    arch_cells: dict | None = None,
    **tron_settings,
) -> NVAEGenerator:
    """Build an `NVAEGenerator` from an NVAE autoencoder's state dict and training options.

    Args:
        state_dict: ``checkpoint["state_dict"]`` (encoder keys are ignored).
        args: ``checkpoint["args"]``.
        arch_cells: ``checkpoint["arch_instance"]``, if stored.
        tron_settings: ``temperature``, ``prior_mean_groups``, ``noise_seed`` of the converted model.

    Raises:
        CheckpointMismatchError: listing every missing, mis-shaped or unexpected decoder key.
        ValueError: for options the port does not render.
    """
    config = {**nvae_config_from_args(args, arch_cells), **tron_settings}
    with torch.device("meta"):
        model = NVAEGenerator(**config)
    decoder = {key: value for key, value in state_dict.items() if key.startswith(NVAE_DECODER_PREFIXES)}
    return convert_state_dict(decoder, nvae_layout(model), model, f"an NVAE decoder ({config})")


def load_nvae_checkpoint(path: str | os.PathLike, **tron_settings) -> NVAEGenerator:
    """Read an NVAE ``checkpoint.pt`` without running code from it and convert its decoder (`convert_nvae`).

    Raises:
        UnsafePickleError: the file's pickle asks for a global other than torch's tensor rebuilders and
            ``argparse.Namespace`` (nothing from it is executed).
        CheckpointMismatchError / ValueError: as `convert_nvae`.
    """
    checkpoint = load_torch_checkpoint(path)
    if not (
        isinstance(checkpoint, dict)
        and isinstance(checkpoint.get("state_dict"), dict)
        and isinstance(checkpoint.get("args"), (argparse.Namespace, dict))
    ):
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointMismatchError(
            f"{path} is not an NVAE checkpoint with a `state_dict` and training `args` (found {found})."
        )
    arch_cells = checkpoint.get("arch_instance")
    return convert_nvae(
        checkpoint["state_dict"],
        checkpoint["args"],
        arch_cells if isinstance(arch_cells, dict) else None,
        **tron_settings,
    )


__all__ = [
    "NVAE_DECODER_PREFIXES",
    "RES_MBCONV_DECODER_CELLS",
    "convert_nvae",
    "load_nvae_checkpoint",
    "nvae_config_from_args",
    "nvae_groups_per_scale",
    "nvae_layout",
    "nvae_resolution",
]
