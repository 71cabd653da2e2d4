"""``tron train-translator``: train a translator on synthetic pairs with Accelerate (one CPU, one GPU or many).

    tron train-translator --pipeline <pipeline> --pairs_dir pairs --output_dir tron-translator
    accelerate launch --num_processes 8 -m tron_pipelines.cli train-translator ...

The options are `tron_pipelines.training.arguments`'s; the training stack is imported only when the command runs, so
that ``tron --help`` stays instant.
"""

import argparse

from ..training.arguments import add_train_translator_arguments


def run_train_translator(args: argparse.Namespace) -> None:
    from ..training.train import train_translator

    train_translator(args)


def register_train_translator(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-translator",
        help="Train a translator on synthetic pairs (Accelerate: one CPU, one GPU or many).",
        description="Train TR0N's translator on pairs (z ~ p(z), c = f(G(z))) from a pipeline's generator and encoder. "
        "Run under `accelerate launch` for several processes.",
    )
    add_train_translator_arguments(parser)
    parser.set_defaults(handler=run_train_translator)
