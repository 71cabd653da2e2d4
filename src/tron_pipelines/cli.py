"""The ``tron`` command line.

    tron --version
    tron generate "a bold seven leaning right" --num_images 8 --seed 0 --out samples
    tron evaluate --images samples --reference real-images --clip openai/clip-vit-base-patch32
    tron generate-pairs --pipeline <pipeline> --pairs_dir pairs --num_pairs 1000000
    tron train-translator --pipeline <pipeline> --pairs_dir pairs --output_dir tron-translator
    tron build --generator biggan-deep-256 --encoder openai/clip-vit-base-patch32 --output tron-biggan
    tron demo --pipeline tron-mnist-text --pipeline tron-mnist --port 7860
    accelerate launch --num_processes 8 -m tron_pipelines.cli train-translator ...

Each subcommand is added by one ``register_<name>(subparsers)`` function that declares its arguments and sets
``handler``, a function of the parsed arguments that imports what the command needs only when it runs.
"""

import argparse
import sys

from .evaluate_command import register_evaluate
from .generate_command import non_negative_int, positive_int, register_generate
from .version import __version__


def _run_train_translator(args: argparse.Namespace):
    from .training.train import train_translator

    return train_translator(args)


def _run_generate_pairs(args: argparse.Namespace):
    from .training.pairs import generate_pairs_command

    return generate_pairs_command(args)


def register_train_translator(subparsers) -> None:
    from .training.arguments import add_train_translator_arguments

    parser = subparsers.add_parser(
        "train-translator",
        help="Train a translator on synthetic pairs (Accelerate: one CPU, one GPU or many).",
        description="Train TR0N's translator on pairs (z ~ p(z), c = f(G(z))) from a pipeline's generator and encoder. "
        "Run under `accelerate launch` for several processes.",
    )
    add_train_translator_arguments(parser)
    parser.set_defaults(handler=_run_train_translator)


def register_generate_pairs(subparsers) -> None:
    from .training.arguments import add_generate_pairs_arguments

    parser = subparsers.add_parser(
        "generate-pairs",
        help="Write a resumable cache of synthetic pairs (sharded safetensors + manifest).",
        description="Generate synthetic pairs (z ~ p(z), c = f(G(z))) into a sharded cache; every process of an "
        "`accelerate launch` writes its own shards, and re-running finishes an interrupted cache.",
    )
    add_generate_pairs_arguments(parser)
    parser.set_defaults(handler=_run_generate_pairs)


def _run_build(args: argparse.Namespace):
    from .build import BuildError, run_build

    try:
        return run_build(args)
    except BuildError as error:
        raise SystemExit(f"tron build: error: {error}" if error.echo else 1) from None


def register_build(subparsers) -> None:
    from .training.arguments import BUILD_DESCRIPTION, add_build_arguments

    parser = subparsers.add_parser(
        "build",
        help="From a generator checkpoint and an encoder to a trained, documented pipeline (resumable stages).",
        description=BUILD_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_build_arguments(parser)
    parser.set_defaults(handler=_run_build)


def _run_demo(args: argparse.Namespace):
    try:
        from .demo import run_demo_command
    except ModuleNotFoundError as error:
        if error.name != "gradio":
            raise
        raise SystemExit("tron demo: error: the demo needs gradio: pip install 'tron-pipelines[demo]'") from None
    return run_demo_command(args)


def port_number(text: str) -> int:
    """argparse type: a TCP port, 1..65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {text}")
    return value


def register_demo(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="Serve an interactive web demo of pipelines (Gradio; pip install 'tron-pipelines[demo]').",
        description="Serve a web page to sample from TR0N pipelines: text, image, class and interpolation tabs, "
        "progress and Stop, energies, the translator's proposals, a zip download. Offline with the embedded "
        "pipelines; the page can use only the pipelines named here.",
    )
    parser.add_argument(
        "--pipeline",
        action="append",
        default=None,
        metavar="NAME_OR_PATH",
        help="Pipeline folder, embedded name or Hub id; repeat for several (default: tron-mnist-text and tron-mnist).",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="Address to bind (default 127.0.0.1: this machine only; 0.0.0.0 serves the network).",
    )
    parser.add_argument("--port", type=port_number, default=7860, help="Port (default 7860).")
    parser.add_argument("--max_images", type=positive_int, default=16, help="Most images per request (default 16).")
    parser.add_argument(
        "--max_steps", type=non_negative_int, default=200, help="Most Langevin steps per request (default 200)."
    )
    parser.add_argument("--share", action="store_true", help="Also open a public gradio.live link (off by default).")
    parser.add_argument("--device", default="cpu", help="torch device of the pipelines, e.g. cpu or cuda.")
    parser.set_defaults(handler=_run_demo)


SUBCOMMANDS = [
    register_generate,
    register_evaluate,
    register_train_translator,
    register_generate_pairs,
    register_build,
    register_demo,
]


def normalize_option_spelling(argv: list[str]) -> list[str]:
    """Options are spelled with underscores (``--num_images``, as in diffusers' and accelerate's scripts); the same
    names with dashes (``--num-images``) are accepted and rewritten here. Nothing after ``--`` is touched."""
    normalized = []
    for index, word in enumerate(argv):
        if word == "--":
            return normalized + argv[index:]
        if word.startswith("--") and len(word) > 2:
            name, equals, value = word.partition("=")
            word = "--" + name[2:].replace("-", "_") + equals + value
        normalized.append(word)
    return normalized


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
