"""Every generator source `tron build` accepts, recognised from its files: one `GeneratorFormat` per format.

`GENERATOR_FORMATS` is a table: each entry says how to recognise its format (``detect``, from the files alone, reading
no more than headers or a memory-mapped archive index), how to turn it into a `TronGenerator` (``load``) and which
sampling preset fits the result (``default_preset``). A new source is one more entry. Each entry imports its
converter (and torch) only when it is asked, so recognising a format, or refusing a path that does not exist, costs
no more than reading the files; a path that does not exist is refused before anything else is imported.

A source that cannot be used is one `SourceError` line naming it (and the option it was given as): it does not
exist, it is in no known format, or its converter failed on it (`reading` turns whatever a converter or loader
raises into that line). `tron build` and every script of ``conversion_scripts/`` report these same lines.

    >>> from tron_pipelines.conversion.formats import convert_generator
    >>> generator_format, generator = convert_generator("biggan-deep-256", default_truncation=0.5)
"""

import argparse
import functools
import json
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..utils.constants import DIFFUSERS_PREFIX
from ..utils.messages import first_line


# The preset of each generator class of this package (`tron_pipelines.conversion.tr0n.SAMPLING_PRESETS`).
PRESET_OF_GENERATOR_CLASS = {
    "BigGANGenerator": "biggan",
    "BigGANDeepGenerator": "biggan",
    "StyleGAN2Generator": "stylegan",
    "StyleGAN3Generator": "stylegan",
    "NVAEGenerator": "nvae",
    "DiffusionSamplerGenerator": "diffusion",
    "ConsistencyModelGenerator": "diffusion",
    "TextToImageGenerator": "diffusion",
    "StableDiffusionXLGenerator": "diffusion",
}
# First bytes of a pickle of protocol 2 or later (PROTO opcode), what an NVIDIA network pickle starts with.
PICKLE_PROTOCOL_OPCODE = b"\x80"


class SourceError(ValueError):
    """A file, folder or model name given to a converter or loader that cannot be used, said in one line that names it
    (after the option it was given as, when known)."""


class MissingSourceError(SourceError, FileNotFoundError):
    """The path does not exist."""


class UnknownGeneratorFormatError(SourceError):
    """No entry of the format table recognises the files."""


def _named(source, option: str | None) -> str:
    return f"{option} {source}" if option else str(source)


@contextmanager
def reading(
    source, what: str, option: str | None = None, action: str = "converted", must_exist: bool = False
) -> Iterator[None]:
    """Whatever the body raises while reading ``source`` becomes one `SourceError`: ``"<option> <source> (<what>)
    could not be <action>: <ErrorType>: <first line>"``; with ``must_exist``, a path that does not exist is said so
    first (`MissingSourceError`). A checkpoint whose keys do not match keeps its list of every mismatch (one key per
    line), the point of that error."""
    if must_exist and not os.path.exists(source):
        raise MissingSourceError(f"{_named(source, option)} does not exist.")
    try:
        yield
    except SourceError:
        raise
    except Exception as error:  # noqa: BLE001 - a reader may raise anything on a user's file: one line naming the file
        # Imported here, when a conversion has failed: torch is loaded by then, and the format table stays light.
        from .checkpoints import CheckpointMismatchError

        detail = str(error) if isinstance(error, CheckpointMismatchError) else first_line(error)
        raise SourceError(f"{_named(source, option)} ({what}) could not be {action}: {detail}") from error


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
        prefix: For sources named by a ``prefix:`` string rather than a path (``"diffusers:"``): the prefix alone
            claims a source for this format.
    """

    name: str
    description: str
    detect: Callable[[str], bool]
    load: Callable[..., object]
    default_preset: Callable[[str], str | None]
    prefix: str | None = None

    def convert(self, source: str | os.PathLike, option: str | None = None, **settings):
        """``load(source, **settings)``; any failure is one `SourceError` line naming ``source`` and this format."""
        with reading(source, self.description, option, must_exist=self.prefix is None):
            return self.load(str(source), **settings)


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
    stat = path.stat()
    return _peek_torch_archive_version(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


# Several formats peek at the same file in one detection: it is unpickled once per version of the file.
@functools.lru_cache(maxsize=4)
def _peek_torch_archive_version(path: str, mtime_ns: int, size: int):
    from .checkpoints import load_torch_checkpoint

    try:
        return load_torch_checkpoint(path, mmap=True)
    except Exception:  # noqa: BLE001 - anything torch cannot read safely is simply not this format
        return None


# tron_pipelines generator folders -------------------------------------------------------------------------------
def _load_tron_generator(source: str, **config_overrides):
    from .tr0n import tron_generator_class

    return tron_generator_class(source).from_pretrained(source, **config_overrides).eval()


def _tron_generator_preset(source: str) -> str | None:
    from .tr0n import tron_generator_class

    return PRESET_OF_GENERATOR_CLASS.get(tron_generator_class(source).__name__)


def _is_tron_generator(source: str) -> bool:
    if not (Path(source) / "config.json").is_file():
        return False
    from .tr0n import tron_generator_class

    return tron_generator_class(source) is not None


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


# NVAE ------------------------------------------------------------------------------------------------------------
def _is_nvae(source: str) -> bool:
    checkpoint = _peek_torch_archive(Path(source))
    return (
        isinstance(checkpoint, dict)
        and isinstance(checkpoint.get("args"), argparse.Namespace)
        and isinstance(checkpoint.get("state_dict"), dict)
        and "prior_ftr0" in checkpoint["state_dict"]
    )


def _load_nvae(source: str, **settings):
    from .nvae import load_nvae_checkpoint

    return load_nvae_checkpoint(source, **settings)


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
        _is_tron_generator,
        _load_tron_generator,
        _tron_generator_preset,
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
        "NVIDIA StyleGAN2-ADA / StyleGAN3 network pickle (.pkl)",
        _is_network_pickle,
        _load_network_pickle,
        lambda source: "stylegan",
    ),
    GeneratorFormat(
        "nvae",
        "NVAE training checkpoint (checkpoint.pt with state_dict and args; settings: temperature, prior_mean_groups, "
        "noise_seed)",
        _is_nvae,
        _load_nvae,
        lambda source: "nvae",
    ),
    GeneratorFormat(
        "diffusers",
        "diffusers:<Hub id or folder> of a DDPM / DDIM / LDM / consistency-model pipeline, a Stable Diffusion (1.x, 2.x, "
        "Turbo, LCM) / SDXL / pixel-space text-to-image pipeline, or an AutoencoderKL / VQModel (settings: "
        "num_sampler_steps, scheduler_class, scheduler_overrides; for text-to-image also generator_prompt, "
        "guidance_scale, timesteps, decoder)",
        lambda source: source.startswith(DIFFUSERS_PREFIX),
        _load_diffusers,
        lambda source: "diffusion",
        prefix=DIFFUSERS_PREFIX,
    ),
)


def format_list(formats: Sequence[GeneratorFormat] = GENERATOR_FORMATS) -> str:
    """The formats, one line: ``"a; b; c"``."""
    return "; ".join(f"{entry.name}: {entry.description}" for entry in formats)


def generator_formats(names: Sequence[str]) -> tuple[GeneratorFormat, ...]:
    """The entries of `GENERATOR_FORMATS` called ``names`` (a converter script's share of the table)."""
    by_name = {entry.name: entry for entry in GENERATOR_FORMATS}
    return tuple(by_name[name] for name in names)


def check_generator_source(source: str | os.PathLike, option: str | None = None) -> None:
    """`MissingSourceError` when ``source`` is neither a path that exists nor claimed by a prefixed format; reads
    nothing and imports nothing (`tron build` calls it before loading torch)."""
    source = str(source)
    if not any(entry.prefix and source.startswith(entry.prefix) for entry in GENERATOR_FORMATS):
        if not os.path.exists(source):
            raise MissingSourceError(f"{_named(source, option)} does not exist.")


def detect_generator_format(
    source: str | os.PathLike, formats: Sequence[GeneratorFormat] = GENERATOR_FORMATS, option: str | None = None
) -> GeneratorFormat:
    """The first entry of ``formats`` (default: all of `GENERATOR_FORMATS`) that recognises ``source``.

    Raises:
        MissingSourceError: ``source`` is neither an existing path nor claimed by a prefixed format (a
            ``FileNotFoundError`` too).
        UnknownGeneratorFormatError: no entry of ``formats`` recognises it; the message lists them, and names the
            format of the whole table it is in, if any.
    """
    source = str(source)
    check_generator_source(source, option)
    for entry in formats:
        if entry.detect(source):
            return entry
    if Path(source).is_file() and zipfile.is_zipfile(source):
        from .checkpoints import load_torch_checkpoint
        from .network_pickle import UnsafePickleError

        try:
            load_torch_checkpoint(source, mmap=True)
        except UnsafePickleError as error:  # said as such, rather than as an unknown format
            raise UnknownGeneratorFormatError(str(error)) from None
        except Exception:  # noqa: BLE001 - unreadable for another reason: an unknown format, as below
            pass
    message = f"{_named(source, option)} is in no known generator format. Known formats: {format_list(formats)}."
    elsewhere = next((entry for entry in GENERATOR_FORMATS if entry not in formats and entry.detect(source)), None)
    if elsewhere is not None:
        message += f" It is a {elsewhere.name} source ({elsewhere.description}), which `tron build` reads."
    raise UnknownGeneratorFormatError(message)


def convert_generator(
    source: str | os.PathLike,
    formats: Sequence[GeneratorFormat] = GENERATOR_FORMATS,
    option: str | None = None,
    **settings,
) -> tuple[GeneratorFormat, object]:
    """Recognise ``source`` among ``formats`` and convert it: ``(its format, the generator in eval mode)``. Every
    failure is one `SourceError` line naming ``source`` (after ``option``, e.g. ``"--generator"``)."""
    entry = detect_generator_format(source, formats, option)
    return entry, entry.convert(source, option, **settings)


def load_any_generator(source: str | os.PathLike, **settings):
    """Detect the format of ``source`` and load (converting if needed) its generator, in eval mode."""
    return convert_generator(source, **settings)[1]


__all__ = [
    "GENERATOR_FORMATS",
    "GeneratorFormat",
    "MissingSourceError",
    "PRESET_OF_GENERATOR_CLASS",
    "SourceError",
    "UnknownGeneratorFormatError",
    "check_generator_source",
    "convert_generator",
    "detect_generator_format",
    "format_list",
    "generator_formats",
    "load_any_generator",
    "reading",
]
