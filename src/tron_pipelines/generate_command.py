"""``tron generate``: sample images from a pipeline (an embedded one by default) and write PNGs, a grid and a manifest.

    tron generate "a bold seven leaning right" --num_images 8 --seed 0 --out samples
    tron generate --pipeline tron-mnist --class_label 3 --num_images 8 --out threes
"""

import argparse
import tempfile
from pathlib import Path

DEFAULT_PIPELINE = "tron-mnist-text"


class CommandError(Exception):
    """A user error: printed as one line, no traceback."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (checked while parsing, before any model loads)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (checked while parsing, before any model loads)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def register_generate(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="Generate images for a prompt or a class label (offline with the embedded pipelines).",
        description="Generate images with a TR0N pipeline: a local folder, an embedded name (tron-mnist, "
        "tron-mnist-text, tron-mnist-ddim) or a Hub id. Writes OUT/0.png ..., OUT/grid.png and OUT/manifest.json.",
    )
    parser.add_argument("prompt", nargs="?", default=None, help="Text condition (text pipelines).")
    parser.add_argument("--pipeline", default=DEFAULT_PIPELINE, help=f"Pipeline folder, embedded name or Hub id (default {DEFAULT_PIPELINE}).")
    parser.add_argument("--class_label", type=non_negative_int, default=None, help="Class condition (class pipelines).")
    parser.add_argument("--num_images", type=positive_int, default=8, help="Images to generate (default 8).")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="Seed of image 0 (default 0); image i uses seed + i, so each image is reproducible alone.")
    parser.add_argument("--steps", type=non_negative_int, default=None, help="Langevin steps, 0 = translator only (default: the pipeline's).")
    parser.add_argument("--candidates", type=positive_int, default=None,
                        help="Initial draws per image; the lowest-energy one is refined (default: the pipeline's).")
    parser.add_argument("--init", default="translator", choices=["translator", "translator_mean", "prior"], help="Initialisation of the latents.")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda.")
    parser.add_argument("--out", default="tron-samples", help="Output folder (created if needed).")
    parser.set_defaults(handler=run_generate)


def _writable_folder(path: str) -> Path:
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise CommandError(f"--out {path}: cannot write there ({error.strerror or error}).") from None
    return folder


def _load_pipeline(name: str, device: str):
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from .pipelines import TronPipeline
    from .pipelines.loading import PipelineNotFoundError

    # One progress bar per command: the Langevin steps'. Loading bars would add two more for a second's work.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        pipe = TronPipeline.from_pretrained(name)
    except PipelineNotFoundError as error:
        raise CommandError(f"--pipeline {error}") from None
    except (OSError, ValueError) as error:
        raise CommandError(f"--pipeline {name!r} could not be loaded: {str(error).splitlines()[0]}") from None
    pipe.set_progress_bar_config(desc="Langevin steps")
    try:
        return pipe.to(torch.device(device))
    except (RuntimeError, AssertionError) as error:
        raise CommandError(f"--device {device}: {error}") from None


def run_generate(args: argparse.Namespace) -> None:
    try:
        _generate(args)
    except CommandError as error:
        raise SystemExit(f"tron generate: error: {error}") from None


def _generate(args: argparse.Namespace) -> None:
    if (args.prompt is None) == (args.class_label is None):
        raise CommandError("give either a prompt or --class_label.")
    folder = _writable_folder(args.out)
    pipe = _load_pipeline(args.pipeline, args.device)

    import torch

    generators = [torch.Generator().manual_seed(args.seed + i) for i in range(args.num_images)]
    condition = {"prompt": args.prompt} if args.prompt is not None else {"class_labels": args.class_label}
    try:
        out = pipe(
            **condition,
            num_images_per_prompt=args.num_images,
            num_inference_steps=args.steps,
            initialization=args.init,
            num_candidates=args.candidates,
            generator=generators,
        )
    except (ValueError, TypeError) as error:
        raise CommandError(_in_cli_terms(str(error))) from None

    from .samples import write_samples

    label = {"prompt": args.prompt} if args.prompt is not None else {"class_label": args.class_label}
    write_samples(
        folder,
        out.images,
        out.energies.tolist(),
        conditions=[label] * args.num_images,
        seeds=[args.seed + index for index in range(args.num_images)],
        settings={
            "pipeline": args.pipeline,
            "num_inference_steps": pipe.num_timesteps,
            "initialization": args.init,
            "num_candidates": pipe.num_candidates,
        },
    )
    print(f"Wrote {args.num_images} images, grid.png and manifest.json to {folder}")


# The pipeline's errors name its arguments; say which command-line option they came from.
_OPTION_NAMES = {
    "`class_labels`": "--class_label", "`num_inference_steps`": "--steps", "`initialization`": "--init",
    "`num_candidates`": "--candidates", "initialization='translator_mean'": "--init translator_mean",
}


def _in_cli_terms(message: str) -> str:
    for argument, option in _OPTION_NAMES.items():
        message = message.replace(argument, option)
    return message
