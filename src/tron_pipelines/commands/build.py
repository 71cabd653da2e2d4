"""``tron build``: from a generator checkpoint and an encoder to a trained, documented (and pushed) TR0N pipeline.

    tron build --generator biggan-deep-256 --encoder openai/clip-vit-base-patch32 --output tron-biggan
    accelerate launch --multi_gpu --num_processes 8 -m tron_pipelines.cli build ... --mixed_precision bf16

The options are `tron_pipelines.training.arguments`'s (they extend ``tron train-translator``'s); the stages are
`tron_pipelines.commands.build_stages`', imported only when the command runs so that ``tron --help`` stays instant.
"""

import argparse

from ..training.arguments import BUILD_DESCRIPTION, add_build_arguments


def run_build(args: argparse.Namespace) -> None:
    # A --generator that does not exist is said at once, not after the tens of seconds torch, accelerate and
    # transformers take to load (the format table checks paths with the standard library alone). Imported here, not
    # at the top: its zipfile and dataclasses imports would add 40 ms to `tron --help`.
    from ..conversion.formats import SourceError, check_generator_source

    try:
        check_generator_source(args.generator, "--generator")
    except SourceError as error:
        raise SystemExit(f"tron build: error: {error}") from None
    from .build_stages import BuildError, run_build

    try:
        run_build(args)
    except BuildError as error:
        raise SystemExit(f"tron build: error: {error}" if error.echo else 1) from None


def register_build(subparsers) -> None:
    parser = subparsers.add_parser(
        "build",
        help="From a generator checkpoint and an encoder to a trained, documented pipeline (resumable stages).",
        description=BUILD_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_build_arguments(parser)
    parser.set_defaults(handler=run_build)
