"""What every ``tron`` command shares: one kind of user error, loading a pipeline for a command, checking an output
folder, quiet loading and the pipeline's argument names in command-line terms.

Only the standard library is imported at the top: torch and diffusers are imported by the functions that need them,
so that ``tron --help`` stays instant.
"""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..utils.messages import first_line


class CommandError(Exception):
    """A user error: printed as one line, no traceback."""


@contextmanager
def one_line_errors(prog: str, errors: tuple[type[BaseException], ...] = (CommandError,)) -> Iterator[None]:
    """For a command-line script's body: an error of the kinds ``errors`` ends the script with ``"<prog>: error:
    <message>"`` (argparse's form) and exit status 1, without a traceback."""
    try:
        yield
    except errors as error:
        raise SystemExit(f"{prog}: error: {error}") from None


def writable_folder(path: str, option: str = "--out") -> Path:
    """``path`` as a folder, created if needed, after checking that a file can be written there (before any model
    loads); otherwise a `CommandError` naming ``option``."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise CommandError(f"{option} {path}: cannot write there ({error.strerror or error}).") from None
    return folder


def disable_loading_progress_bars() -> None:
    """One progress bar per command (its work's): diffusers' and transformers' loading bars would add two more for a
    second's work."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def load_pipeline(name: str, device: str):
    """`TronPipeline.from_pretrained(name)` on ``device`` for a command: its errors as one-line `CommandError`s naming
    ``--pipeline`` or ``--device``, its progress bar labelled "Langevin steps"."""
    import torch

    from ..pipelines import TronPipeline
    from ..pipelines.loading import PipelineNotFoundError

    disable_loading_progress_bars()
    try:
        pipe = TronPipeline.from_pretrained(name)
    except PipelineNotFoundError as error:
        raise CommandError(f"--pipeline {error}") from None
    except (OSError, ValueError) as error:
        raise CommandError(f"--pipeline {name!r} could not be loaded: {first_line(error, with_type=False)}") from None
    pipe.set_progress_bar_config(desc="Langevin steps")
    try:
        return pipe.to(torch.device(device))
    except (RuntimeError, AssertionError) as error:
        raise CommandError(f"--device {device}: {error}") from None


# The pipeline's errors name its arguments; say which `tron generate` option they came from.
PIPELINE_ARGUMENT_OPTIONS = {
    "`class_labels`": "--class_label",
    "`num_inference_steps`": "--steps",
    "`initialization`": "--init",
    "`num_candidates`": "--candidates",
    "initialization='translator_mean'": "--init translator_mean",
    "`reward_weights`": "--reward_weights",
    "`condition_generator_on_prompt=True`": "--condition_generator_on_prompt",
}


def in_cli_terms(message: str) -> str:
    """A pipeline error message with its argument names replaced by the options of ``tron generate``."""
    for argument, option in PIPELINE_ARGUMENT_OPTIONS.items():
        message = message.replace(argument, option)
    return message


def reward_call_options(args) -> dict:
    """The pipeline call's ``condition_generator_on_prompt`` and ``reward_weights`` from ``tron generate``'s
    ``--condition_generator_on_prompt`` and ``--reward_weights NAME=WEIGHT ...`` (a `CommandError` for a name given
    twice; names the pipeline lacks are the pipeline's to refuse)."""
    pairs = args.reward_weights or []
    names = [name for name, _ in pairs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise CommandError(f"--reward_weights gives {', '.join(repeated)} more than once.")
    return {
        "condition_generator_on_prompt": args.condition_generator_on_prompt,
        "reward_weights": dict(pairs) or None,
    }


def rewards_per_image(out) -> list[dict[str, float]] | None:
    """``[{reward name: value}, ...]``, one per image of a pipeline output, or None when the pipeline has no
    rewards."""
    if out.rewards is None:
        return None
    names = list(out.rewards)
    return [dict(zip(names, values)) for values in zip(*(out.rewards[name].tolist() for name in names))]


__all__ = [
    "CommandError",
    "PIPELINE_ARGUMENT_OPTIONS",
    "disable_loading_progress_bars",
    "in_cli_terms",
    "load_pipeline",
    "one_line_errors",
    "reward_call_options",
    "rewards_per_image",
    "writable_folder",
]
