"""``tron generate-pairs``: write (or re-encode) a resumable cache of synthetic pairs, split over the processes of
``accelerate launch``.

    tron generate-pairs --pipeline <pipeline> --pairs_dir pairs --num_pairs 1000000
    tron generate-pairs --pipeline <pipeline with a new encoder> --reencode_from pairs --pairs_dir pairs-new

The options are `tron_pipelines.training.arguments`'s; accelerate and the pair machinery are imported only when the
command runs, so that ``tron --help`` stays instant.
"""

import argparse

from ..training.arguments import add_generate_pairs_arguments, check_generate_pairs_args


def run_generate_pairs(args: argparse.Namespace):
    """Write a pair cache with every process of an `accelerate launch`, or re-encode one (``--reencode_from``);
    returns the finished `PairCache`."""
    from accelerate import Accelerator

    from ..training.pairs import generate_pairs_from_args, load_training_pipeline, reencode_pairs

    check_generate_pairs_args(args)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    if args.reencode_from is not None:
        pipeline = load_training_pipeline(args.pipeline).to(accelerator.device)
        cache = reencode_pairs(pipeline, args.reencode_from, args.pairs_dir, accelerator=accelerator)
    else:
        cache = generate_pairs_from_args(args, accelerator)
    accelerator.print(
        f"Pair cache {args.pairs_dir!r}: {len(cache)} pairs in {cache.manifest['num_shards']} shard(s), complete."
    )
    return cache


def register_generate_pairs(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate-pairs",
        help="Write a resumable cache of synthetic pairs (sharded safetensors + manifest).",
        description="Generate synthetic pairs (z ~ p(z), c = f(G(z))) into a sharded cache; every process of an "
        "`accelerate launch` writes its own shards, and re-running finishes an interrupted cache.",
    )
    add_generate_pairs_arguments(parser)
    parser.set_defaults(handler=run_generate_pairs)
