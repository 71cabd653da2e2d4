"""Shared machinery of the checkpoint converters: explicit key-by-key layouts, one error that lists every mismatch,
and a torch checkpoint loader that runs nothing from the file (atomic saving is
`tron_pipelines.utils.save_pretrained_atomically`)."""

import argparse
import os
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers import ModelMixin

from .network_pickle import UnsafePickleError


# Plain data that training scripts store beside their weights (rosinality's and NVAE's train.py save their argparse
# options): the only globals `load_torch_checkpoint` allows beyond torch's weights-only set.
CHECKPOINT_DATA_GLOBALS = (argparse.Namespace,)


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the expected architecture."""


@dataclass(frozen=True)
class TargetTensor:
    """One tensor of the converted model, built from one or more checkpoint tensors.

    ``sources`` maps checkpoint keys to their expected shapes, in the order ``build`` takes them. ``optional`` keys
    (same format) are allowed but unused, e.g. BigGAN-PyTorch's logged singular values ``sv0``.
    """

    target: str
    sources: dict[str, tuple[int, ...]]
    build: Callable[..., torch.Tensor] = lambda tensor: tensor
    optional: dict[str, tuple[int, ...]] = field(default_factory=dict)


def check_checkpoint(state_dict: dict[str, torch.Tensor], layout: list[TargetTensor], description: str) -> None:
    """Raise a `CheckpointMismatchError` listing every missing, mis-shaped and unexpected key."""
    expected = {key: shape for entry in layout for key, shape in entry.sources.items()}
    allowed = {**expected, **{key: shape for entry in layout for key, shape in entry.optional.items()}}
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in allowed]
    not_tensors = [key for key in state_dict if key in allowed and not isinstance(state_dict[key], torch.Tensor)]
    mis_shaped = [
        f"{key}: expected {allowed[key]}, found {tuple(state_dict[key].shape)}"
        for key in state_dict
        if key in allowed and key not in not_tensors and tuple(state_dict[key].shape) != allowed[key]
    ]
    problems = []
    for title, items in (
        ("missing keys", missing),
        ("mis-shaped keys", mis_shaped),
        ("keys that are not tensors", not_tensors),
        ("unexpected keys", unexpected),
    ):
        if items:
            problems.append(f"{len(items)} {title}:\n" + "\n".join(f"  {item}" for item in items))
    if problems:
        raise CheckpointMismatchError(f"The checkpoint does not match {description}.\n" + "\n".join(problems))


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], layout: list[TargetTensor], model: ModelMixin, description: str
) -> ModelMixin:
    check_checkpoint(state_dict, layout, description)
    with torch.no_grad():
        converted = {
            entry.target: entry.build(*(state_dict[key].to(torch.float32) for key in entry.sources)).contiguous()
            for entry in layout
        }
    # `model` was built on the meta device: `assign` installs the converted tensors as its parameters and buffers, and
    # `strict` checks that the layout produced every one of them, no more.
    model.load_state_dict(converted, strict=True, assign=True)
    return model.eval()


def load_torch_checkpoint(path: str | os.PathLike, mmap: bool = False):
    """``torch.load(path, map_location="cpu", weights_only=True)`` with `CHECKPOINT_DATA_GLOBALS` allowed.

    A ``torch.save`` zip archive's pickle is first read as opcodes (nothing is unpickled), so that every global outside
    the allow-list is named at once; the weights-only unpickler then refuses anything else.

    Args:
        mmap: Memory-map the tensors (zip archives only): a cheap look at what a file holds.

    Raises:
        UnsafePickleError: the pickle asks for a global outside the allow-list (nothing from it was executed).
    """
    allowed = ", ".join(f"{cls.__module__}.{cls.__name__}" for cls in CHECKPOINT_DATA_GLOBALS)
    with torch.serialization.safe_globals(list(CHECKPOINT_DATA_GLOBALS)):
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path) if zipfile.is_zipfile(path) else []
        if unsafe:
            raise UnsafePickleError(
                f"Refusing to load {path}: its pickle asks for {', '.join(f'`{name}`' for name in sorted(unsafe))}, "
                f"outside torch's weights-only globals and {allowed}, so it may run code. Nothing from it was executed."
            )
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as error:
            reason = str(error).strip().splitlines()[-1]
            raise UnsafePickleError(f"Refusing to load {path}: {reason} Nothing from it was executed.") from None


__all__ = [
    "CHECKPOINT_DATA_GLOBALS",
    "CheckpointMismatchError",
    "TargetTensor",
    "check_checkpoint",
    "convert_state_dict",
    "load_torch_checkpoint",
]
