"""Every generator source `tron build` accepts, recognised from its files: one `GeneratorFormat` per format.

`GENERATOR_FORMATS` is a table: each entry says how to recognise its format (``detect``, from the files alone, reading
no more than headers or a memory-mapped archive index), how to turn it into a `TronGenerator` (``load``) and which
sampling preset fits the result (``default_preset``). A new source is one more entry.

    >>> from tron_pipelines.conversion.formats import detect_generator_format
    >>> generator_format = detect_generator_format("biggan-deep-256")    # a pytorch-pretrained-biggan folder
    >>> generator = generator_format.load("biggan-deep-256", default_truncation=0.5)
"""

import argparse
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


# The preset of each generator class of this package (`tron_pipelines.conversion.tr0n.SAMPLING_PRESETS`).
PRESET_OF_GENERATOR_CLASS = {
    "BigGANGenerator": "biggan",
    "BigGANDeepGenerator": "biggan",
    "StyleGAN2Generator": "stylegan",
    "StyleGAN3Generator": "stylegan",
    "StyleGANXLGenerator": "stylegan",
    "DiffusionSamplerGenerator": "diffusion",
    "ConsistencyModelGenerator": "diffusion",
}
# First bytes of a pickle of protocol 2 or later (PROTO opcode), what an NVIDIA network pickle starts with.
PICKLE_PROTOCOL_OPCODE = b"\x80"


class UnknownGeneratorFormatError(ValueError):
    """No entry of `GENERATOR_FORMATS` recognises the files."""


@dataclass(frozen=True)
class GeneratorFormat:
    """One generator source format.

    Attributes:
        name: Short name, recorded in build manifests (``"pytorch-pretrained-biggan"``).
        description: What the user has, for error messages (``"pytorch-pretrained-biggan folder (config.json +
            pytorch_model.bin)"``).
        detect: ``detect(source) -> bool``, whether the path (or ``prefix:`` string) ``source`` is in this format.
        load: ``load(source, **settings) -> TronGenerator``, in eval mode; ``settings`` are the converter's options or
            config overrides (e.g. ``default_truncation``, ``truncation_psi``).
        default_preset: ``default_preset(source) -> str | None``, the sampling preset that fits the generator, ``None``
            when unknown.
    """

    name: str
    description: str
    detect: Callable[[str], bool]
    load: Callable[..., object]
    default_preset: Callable[[str], str | None]


def _json_config(folder: Path) -> dict | None:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return config if isinstance(config, dict) else None


def _peek_torch_archive(path: Path):
    """The object of a ``torch.save`` zip archive, tensors memory-mapped (nothing read but the index), or ``None``."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return None
    import torch

    try:
        # rosinality's train.py stores its argparse options next to the weights: plain data, allowed.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - anything torch cannot read safely is simply not this format
        return None


# tron_pipelines generator folders -------------------------------------------------------------------------------
def _tron_generator_class(source: str) -> str | None:
    from .. import models

    config = _json_config(Path(source)) if Path(source).is_dir() else None
    class_name = config.get("_class_name") if config else None
    generator_class = getattr(models, class_name, None) if isinstance(class_name, str) else None
    return (
        class_name if isinstance(generator_class, type) and issubclass(generator_class, models.TronGenerator) else None
    )


def _load_tron_generator(source: str, **config_overrides):
    from .. import models

    return getattr(models, _tron_generator_class(source)).from_pretrained(source, **config_overrides).eval()


# pytorch-pretrained-biggan --------------------------------------------------------------------------------------
def _is_pytorch_pretrained_biggan(source: str) -> bool:
    config = _json_config(Path(source)) if Path(source).is_dir() else None
    return bool(config) and {"z_dim", "layers"} <= config.keys() and (Path(source) / "pytorch_model.bin").is_file()


def _load_pytorch_pretrained_biggan(source: str, **config_overrides):
    from .biggan import load_pytorch_pretrained_biggan

    return load_pytorch_pretrained_biggan(source, **config_overrides)


# BigGAN-PyTorch -------------------------------------------------------------------------------------------------
def _is_biggan_pytorch(source: str) -> bool:
    state_dict = _peek_torch_archive(Path(source))
    return (
        isinstance(state_dict, dict)
        and "shared.weight" in state_dict
        and any(key.startswith("blocks.0.0.") for key in state_dict)
    )


def _load_biggan_pytorch(source: str, resolution: int | None = None, **config_overrides):
    from .biggan import load_biggan_pytorch

    return load_biggan_pytorch(source, resolution, **config_overrides)


# StyleGAN -------------------------------------------------------------------------------------------------------
def _is_rosinality(source: str) -> bool:
    checkpoint = _peek_torch_archive(Path(source))
    return isinstance(checkpoint, dict) and isinstance(checkpoint.get("g_ema"), dict)


def _load_rosinality(source: str, **settings):
    from .stylegan import load_rosinality_checkpoint

    return load_rosinality_checkpoint(source, **settings)


def _is_diffusers(source: str) -> bool:
    from .tr0n import DIFFUSERS_PREFIX

    return source.startswith(DIFFUSERS_PREFIX)


def _load_diffusers(source: str, **settings):
    from .tr0n import load_generator

    return load_generator(source, **settings)


def _is_network_pickle(source: str) -> bool:
    path = Path(source)
    if not path.is_file() or zipfile.is_zipfile(path):
        return False
    with open(path, "rb") as file:
        return file.read(1) == PICKLE_PROTOCOL_OPCODE


def _load_network_pickle(source: str, **settings):
    from .stylegan import load_nvlabs_pickle

    return load_nvlabs_pickle(source, **settings)


GENERATOR_FORMATS: tuple[GeneratorFormat, ...] = (
    GeneratorFormat(
        "tron_pipelines",
        "tron_pipelines generator folder (config.json naming a TronGenerator class)",
        lambda source: _tron_generator_class(source) is not None,
        _load_tron_generator,
        lambda source: PRESET_OF_GENERATOR_CLASS.get(_tron_generator_class(source)),
    ),
    GeneratorFormat(
        "pytorch-pretrained-biggan",
        "pytorch-pretrained-biggan BigGAN-deep folder (config.json + pytorch_model.bin)",
        _is_pytorch_pretrained_biggan,
        _load_pytorch_pretrained_biggan,
        lambda source: "biggan",
    ),
    GeneratorFormat(
        "biggan-pytorch",
        "BigGAN-PyTorch generator state dict (.pth, the official TR0N's biggan-256/512.pth)",
        _is_biggan_pytorch,
        _load_biggan_pytorch,
        lambda source: "biggan",
    ),
    GeneratorFormat(
        "rosinality",
        "rosinality stylegan2-pytorch checkpoint (.pt with g_ema)",
        _is_rosinality,
        _load_rosinality,
        lambda source: "stylegan",
    ),
    GeneratorFormat(
        "nvlabs",
        "NVIDIA StyleGAN2-ADA / StyleGAN3 or StyleGAN-XL network pickle (.pkl)",
        _is_network_pickle,
        _load_network_pickle,
        lambda source: "stylegan",
    ),
    GeneratorFormat(
        "diffusers",
        "diffusers:<Hub id or folder> of a DDPM / DDIM / LDM / consistency-model pipeline or an AutoencoderKL / VQModel "
        "(settings: num_sampler_steps, scheduler_class, scheduler_overrides)",
        _is_diffusers,
        _load_diffusers,
        lambda source: "diffusion",
    ),
)


def format_list() -> str:
    """The accepted formats, one line: ``"a; b; c"``."""
    return "; ".join(f"{entry.name}: {entry.description}" for entry in GENERATOR_FORMATS)


def detect_generator_format(source: str | os.PathLike) -> GeneratorFormat:
    """The first entry of `GENERATOR_FORMATS` that recognises ``source``.

    Raises:
        FileNotFoundError: ``source`` is neither an existing path nor claimed by a prefixed format.
        UnknownGeneratorFormatError: no format recognises it (the message lists them).
    """
    source = str(source)
    for entry in GENERATOR_FORMATS:
        if entry.detect(source):
            return entry
    if not os.path.exists(source):
        raise FileNotFoundError(f"{source} does not exist.")
    raise UnknownGeneratorFormatError(f"{source} is in no known generator format. Known formats: {format_list()}.")


def load_any_generator(source: str | os.PathLike, **settings):
    """Detect the format of ``source`` and load (converting if needed) its generator, in eval mode."""
    return detect_generator_format(source).load(str(source), **settings)


__all__ = [
    "GENERATOR_FORMATS",
    "GeneratorFormat",
    "PRESET_OF_GENERATOR_CLASS",
    "UnknownGeneratorFormatError",
    "detect_generator_format",
    "format_list",
    "load_any_generator",
]
