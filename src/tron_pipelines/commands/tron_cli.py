"""The ``tron`` command line: one subcommand per module of this package.

    tron --version
    tron generate "a bold seven leaning right" --num_images 8 --seed 0 --out samples
    tron evaluate --images samples --reference real-images --clip openai/clip-vit-base-patch32
    tron generate-pairs --pipeline <pipeline> --pairs_dir pairs --num_pairs 1000000
    tron train-translator --pipeline <pipeline> --pairs_dir pairs --output_dir tron-translator
    tron build --generator biggan-deep-256 --encoder openai/clip-vit-base-patch32 --output tron-biggan
    tron demo --pipeline tron-mnist-text --pipeline tron-mnist --port 7860
    accelerate launch --num_processes 8 -m tron_pipelines.cli train-translator ...

Each command module has one ``register_<name>(subparsers)`` function that declares its arguments and sets ``handler``,
a function of the parsed arguments that imports what the command needs only when it runs.
"""

import argparse
import sys

from ..utils.options import normalize_option_spelling
from ..version import __version__
from .build import register_build
from .demo import register_demo
from .evaluate import register_evaluate
from .generate import register_generate
from .generate_pairs import register_generate_pairs
from .train_translator import register_train_translator


SUBCOMMANDS = [
    register_generate,
    register_evaluate,
    register_train_translator,
    register_generate_pairs,
    register_build,
    register_demo,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tron",
        description="TR0N: conditional generation from any generator and any encoder. Options are spelled with "
        "underscores (--num_images); dashes work too (--num-images).",
    )
    parser.add_argument("--version", action="version", version=f"tron_pipelines {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(normalize_option_spelling(sys.argv[1:] if argv is None else list(argv)))
    if args.command is None:
        parser.print_help()
        return 2
    args.handler(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
