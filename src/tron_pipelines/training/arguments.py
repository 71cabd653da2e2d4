"""Command-line arguments of ``tron train-translator``, ``tron generate-pairs`` and ``tron build``, named like diffusers'
training examples.

Only argparse is imported here, so that ``tron --help`` does not load the training stack.
"""

import argparse
import json
import math
import shlex
import sys

from ..utils.options import non_negative_int, normalize_option_spelling, positive_int


# The method's network learning rate: Adam 1e-4, cosine, for 10 epochs of 1M pairs at batch 16 (625,000 steps).
METHOD_LEARNING_RATE = 1e-4
# `resolve_learning_rate` chooses, for a run too short for the method's rate, the rate whose learning-rate budget
# (`learning_rate_budget`) is CHOSEN_LEARNING_RATE_BUDGET, at most MAX_CHOSEN_LEARNING_RATE. On `tron-mnist`, 200 steps
# of batch 64 (docs/training.md): 1e-4 (budget 0.01) leaves the validation NLL where it was, 1e-3 (0.1) lowers it by
# 0.012 nats/dim, 3e-3 (0.3) by 0.032; wider translators (hidden 256) learn as well at 3e-3 as at 1e-3.
CHOSEN_LEARNING_RATE_BUDGET = 0.3
MAX_CHOSEN_LEARNING_RATE = 3e-3
# Below this budget a run is warned about: half the README's 200-step recipe (1e-3, 100 warmup steps, cosine: 0.1),
# five times the 0.01 that learns nothing.
MIN_LEARNING_RATE_BUDGET = 0.05
CONDITION_NOISES = ("none", "isotropic", "covariance", "adaptive")
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
PAIR_DTYPES = ("float32", "float16")


class _ArgumentGroup:
    """An argument group that leaves out the options whose destination is in ``exclude``: ``tron build`` reuses the
    training options but sets some of them itself (`BUILD_SETS`)."""

    def __init__(self, parser: argparse.ArgumentParser, title: str, exclude: tuple[str, ...]):
        self.group = parser.add_argument_group(title)
        self.exclude = exclude

    def add_argument(self, *flags, **kwargs) -> None:
        if flags[0].lstrip("-") not in self.exclude:
            self.group.add_argument(*flags, **kwargs)


def add_pair_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """Where pairs come from: the pipeline, the cache and the condition route (shared by the commands), minus the
    options named in ``exclude``."""
    group = _ArgumentGroup(parser, "pairs", exclude)
    group.add_argument(
        "--pipeline",
        type=str,
        required=True,
        help="Saved TronPipeline (folder, embedded name or Hub repo id) providing the generator and the encoder. Its "
        "translator, if any, is not used.",
    )
    group.add_argument(
        "--pairs_dir",
        type=str,
        default=None,
        help="Folder of a pair cache (sharded safetensors + manifest.json). With --num_pairs the cache is generated "
        "there first (or finished, if it was interrupted); alone, an existing cache is read.",
    )
    group.add_argument(
        "--num_pairs",
        type=int,
        default=None,
        help="Number of synthetic pairs (per epoch, when pairs are made on the fly because --pairs_dir is not given).",
    )
    group.add_argument("--pairs_per_shard", type=int, default=65536, help="Pairs per cache shard file.")
    group.add_argument(
        "--generation_batch_size",
        type=int,
        default=64,
        help="Images rendered and encoded at once when making pairs (part of a cache's identity).",
    )
    group.add_argument(
        "--pairs_dtype", type=str, default="float32", choices=PAIR_DTYPES, help="Storage type of a cache."
    )
    group.add_argument(
        "--condition_route",
        type=str,
        default="image",
        help="How a pair's condition comes from G(z): 'image' (the encoder's embedding or class probabilities of the "
        "image), 'caption' (the text encoder's embedding of a --captioner caption of the image: the method's BLIP "
        "route), 'mix' (per pair, caption with probability --caption_ratio, else image), or 'package.module:function' "
        "for a custom fn(images in [-1, 1], encoder_adapter) -> (B, condition_dim).",
    )
    group.add_argument(
        "--captioner",
        type=str,
        default=None,
        help="Captioner of the caption and mix routes: a transformers image-to-text model (folder or Hub id, e.g. "
        "Salesforce/blip-image-captioning-base), or 'package.module:name' naming a function fn(images in [-1, 1], "
        "generator) -> list of captions, a tron_pipelines.captioning.Captioner, or a Captioner class built with no "
        "arguments.",
    )
    group.add_argument(
        "--caption_ratio",
        type=float,
        default=None,
        help="Mix route: chance that a pair takes the caption route (default 0.5).",
    )
    captions = parser.add_argument_group(
        "caption decoding (transformers captioners; default: the method's BLIP settings)"
    )
    captions.add_argument(
        "--caption_decoding",
        type=str,
        default=None,
        help="'beam' (default), 'greedy' or 'nucleus' (sampling, seeded per shard).",
    )
    captions.add_argument("--caption_num_beams", type=int, default=None, help="Beams of beam search (default 3).")
    captions.add_argument(
        "--caption_top_p", type=float, default=None, help="Nucleus mass of nucleus sampling (default 0.9)."
    )
    captions.add_argument(
        "--caption_min_length",
        type=int,
        default=None,
        help="Least tokens of prompt and caption, the prompt counted with its begin token as BLIP counts it (default 5).",
    )
    captions.add_argument(
        "--caption_max_length", type=int, default=None, help="Most tokens of prompt and caption (default 20)."
    )
    captions.add_argument(
        "--caption_repetition_penalty", type=float, default=None, help="Repetition penalty (default 1.1)."
    )
    captions.add_argument(
        "--caption_prompt",
        type=str,
        default=None,
        help="Text the caption continues, stripped from it (default: 'a picture of ' for BLIP, none for other models).",
    )
    group.add_argument(
        "--seed", type=int, default=0, help="Seed of the pairs, the translator's initialisation and the data order."
    )
    group.add_argument(
        "--mixed_precision",
        type=str,
        default=None,
        choices=MIXED_PRECISIONS,
        help="Mixed precision through Accelerate (default: the `accelerate config` value, else 'no'). bf16 needs "
        "PyTorch >= 1.10 and an Ampere GPU or a recent CPU.",
    )


def add_generate_pairs_arguments(parser: argparse.ArgumentParser) -> None:
    add_pair_arguments(parser)
    parser.add_argument(
        "--reencode_from",
        type=str,
        default=None,
        help="A caption or mix cache to re-encode with --pipeline's encoder (e.g. a new CLIP) into --pairs_dir: same "
        "latents and captions, no captioning. Its route, pair count, shards and seed are kept.",
    )


def add_train_translator_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """The options of ``tron train-translator``, minus those named in ``exclude``."""
    add_pair_arguments(parser, exclude)
    model = _ArgumentGroup(parser, "translator", exclude)
    model.add_argument(
        "--output_dir",
        type=str,
        default="tron-translator",
        help="Where the pipeline, the checkpoints and the logs go.",
    )
    model.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Train into a non-empty --output_dir (its old checkpoints are removed).",
    )
    model.add_argument(
        "--translator_name_or_path",
        type=str,
        default=None,
        help="Start from this translator (a translator folder, or a pipeline folder with translator/) instead of a new one.",
    )
    model.add_argument("--num_components", type=int, default=10, help="Mixture components K of a new translator.")
    model.add_argument(
        "--hidden_dim", type=int, default=None, help="Trunk width of a new translator (default 4 x condition size)."
    )
    model.add_argument(
        "--mean_rank",
        type=int,
        default=None,
        help="Rank of a new translator's shared-basis mean head (default: the method's full head). For latents of many "
        "thousand values, e.g. 64 for Stable Diffusion's 16,384-value noise: 3 M weights instead of 503 M "
        "(docs/text-to-image.md).",
    )
    model.add_argument(
        "--init_std",
        type=float,
        default=None,
        help="Initial std of a new translator's components. Default: the per-dimension std of G's latents over the "
        "validation pairs, so that an under-trained translator is over-dispersed (like the prior), never collapsed; the "
        "method's 0.01 makes every sample of a short run alike.",
    )

    loss = _ArgumentGroup(parser, "loss and condition noise", exclude)
    loss.add_argument(
        "--nll_weight", type=float, default=1e-4, help="Weight alpha of the NLL against the auxiliary-latent MSE."
    )
    loss.add_argument(
        "--condition_noise",
        type=str,
        default="none",
        choices=CONDITION_NOISES,
        help="Training-only noise on the conditions, to mimic text embeddings with image embeddings: 'isotropic' "
        "(c + s n, n ~ N(0, I)), 'covariance' (n ~ N(0, Sigma), Sigma of the cached conditions), 'adaptive' (n rescaled "
        "to the norm of c). The method uses 0.5 (LAION CLIP) or 0.2 (OpenAI CLIP) for image-embedding pairs, none for "
        "caption pairs and image-conditioned translators.",
    )
    loss.add_argument("--condition_noise_scale", type=float, default=0.2, help="Scale s of the condition noise.")

    optimization = _ArgumentGroup(parser, "optimisation", exclude)
    optimization.add_argument(
        "--train_batch_size", type=int, default=16, help="Pairs per device per step (the method's 16)."
    )
    optimization.add_argument(
        "--num_train_epochs", type=int, default=10, help="Epochs, unless --max_train_steps is given."
    )
    optimization.add_argument(
        "--max_train_steps", type=int, default=None, help="Total optimisation steps (overrides --num_train_epochs)."
    )
    optimization.add_argument(
        "--gradient_accumulation_steps", type=int, default=1, help="Micro-batches per optimisation step."
    )
    optimization.add_argument(
        "--learning_rate",
        type=float,
        default=None,
        help="AdamW learning rate of the network. Default: the method's 1e-4 for a long run; for a short one, the rate "
        f"whose sum over the run's schedule (about how far Adam can move a weight) is {CHOSEN_LEARNING_RATE_BUDGET}, "
        f"at most {MAX_CHOSEN_LEARNING_RATE:g}: 3e-3 for 200 cosine steps, 3e-4 for 2,000, 1e-4 from 6,000 on "
        f"(docs/training.md). A rate whose sum is under {MIN_LEARNING_RATE_BUDGET} cannot move the translator: the run "
        "says so.",
    )
    optimization.add_argument(
        "--std_learning_rate",
        type=float,
        default=2e-2,
        help="AdamW learning rate of the per-dimension log-std. With one small learning rate the std barely moves from "
        "its 0.01 initialisation (Adam moves a parameter by about lr per step), so samples come out far too narrow.",
    )
    optimization.add_argument(
        "--std_adam_beta2",
        type=float,
        default=0.9,
        help="Adam beta2 of the log-std. Its gradient shrinks like 1/std^2 as the std grows; with a long second-moment "
        "memory (0.999) the early, huge gradients keep its steps tiny for thousands of steps.",
    )
    optimization.add_argument(
        "--lr_scheduler", type=str, default="cosine", choices=LR_SCHEDULERS, help="diffusers' get_scheduler name."
    )
    optimization.add_argument(
        "--lr_warmup_steps", type=int, default=0, help="Linear warmup steps of the learning rates."
    )
    optimization.add_argument("--adam_beta1", type=float, default=0.9)
    optimization.add_argument("--adam_beta2", type=float, default=0.999)
    optimization.add_argument(
        "--adam_weight_decay", type=float, default=0.0, help="Weight decay of the network (never of the log-std)."
    )
    optimization.add_argument("--adam_epsilon", type=float, default=1e-8)
    optimization.add_argument(
        "--max_grad_norm", type=float, default=1.0, help="Global gradient-norm clip (0 disables)."
    )
    optimization.add_argument(
        "--use_ema", action="store_true", help="Keep an exponential moving average of the weights and save it."
    )
    optimization.add_argument("--ema_max_decay", type=float, default=0.9999)
    optimization.add_argument("--ema_inv_gamma", type=float, default=1.0)
    optimization.add_argument("--ema_power", type=float, default=3 / 4)

    run = _ArgumentGroup(parser, "checkpoints, validation and logging", exclude)
    run.add_argument("--checkpointing_steps", type=int, default=500, help="Save a resumable checkpoint every N steps.")
    run.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep at most this many checkpoints.")
    run.add_argument(
        "--resume_from_checkpoint",
        type=str,
        default=None,
        help="'latest' (the newest checkpoint in --output_dir, or a fresh start when there is none) or a checkpoint path.",
    )
    run.add_argument(
        "--validation_steps", type=int, default=500, help="Validate every N steps (and at the start and the end)."
    )
    run.add_argument("--num_validation_pairs", type=int, default=256, help="Held-out pairs for the validation NLL.")
    run.add_argument(
        "--num_validation_conditions",
        type=int,
        default=16,
        help="Validation conditions whose translator-only samples are scored by the energy (0 skips it).",
    )
    run.add_argument(
        "--skip_pair_checksums",
        action="store_true",
        help="Do not hash a cache's shards on opening (headers are still checked).",
    )
    run.add_argument("--logging_dir", type=str, default="logs", help="Tracker folder, relative to --output_dir.")
    run.add_argument(
        "--report_to",
        type=str,
        default="auto",
        help="Accelerate tracker ('tensorboard', 'wandb', ...); 'auto' uses tensorboard when installed; 'none' only prints.",
    )
    run.add_argument(
        "--push_to_hub", action="store_true", help="Upload the trained pipeline and its model card to the Hub."
    )
    run.add_argument(
        "--hub_model_id", type=str, default=None, help="Hub repo id (default: the --output_dir folder name)."
    )
    run.add_argument("--hub_token", type=str, default=None, help="Hub token (default: the stored login).")


# Options of `tron train-translator` that `tron build` sets itself (its stage folders, resuming) or defines its own way
# (the push of the finished pipeline).
BUILD_SETS = (
    "pipeline",
    "pairs_dir",
    "output_dir",
    "overwrite_output_dir",
    "translator_name_or_path",
    "resume_from_checkpoint",
    "push_to_hub",
    "hub_model_id",
    "hub_token",
)
# `tron build --num_pairs` default: the method's 1,000,000 pairs.
BUILD_DEFAULT_NUM_PAIRS = 1_000_000
BUILD_DESCRIPTION = """\
From a generator checkpoint and an encoder to a trained, documented (and optionally pushed) TR0N pipeline, in stages:
convert the generator, assemble it with the encoder and an untrained translator, make synthetic pairs (z ~ p(z),
c = f(G(z))), train the translator, write the model card with the validation figures and a sample grid, push. Each
stage is skipped when its output is complete and was built from the same inputs; run the same command again to finish
an interrupted build (training resumes from its last checkpoint). A changed input reruns the stages that depend on it.
Run under `accelerate launch` for several processes (pairs and training are split over them).

Layout of --output:
  OUTPUT/pipeline/     the pipeline: TronPipeline.from_pretrained("OUTPUT/pipeline"), with README.md (model card)
                       and samples/ (the card's sample grid); nothing else
  OUTPUT/build.json    per stage: what it was built from (fingerprints of inputs and settings), what it produced, seconds
  OUTPUT/stages/       the stages' work: convert/ (converted generator), assemble/ (base pipeline), pairs/ (pair
                       cache), train/ (checkpoints, logs, training card)

Without --num_pairs, the method's 1,000,000 pairs (days of CPU time for full-size models; minutes on GPUs)."""


def key_value(text: str) -> tuple[str, object]:
    """argparse type: ``KEY=VALUE``, the value read as JSON when it is JSON (``0.5``, ``true``, ``[1, 2]``), else text."""
    key, equals, value = text.partition("=")
    if not key or not equals:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _key_value_text(item: tuple[str, object]) -> str:
    """The ``KEY=VALUE`` text that `key_value` reads back as ``item``."""
    key, value = item
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def add_model_card_arguments(parser: argparse.ArgumentParser) -> None:
    """What a pipeline's model card says about its base models (``tron build``, ``build_tron_pipeline.py``)."""
    group = parser.add_argument_group("model card")
    group.add_argument(
        "--generator_id",
        type=str,
        default=None,
        help="Where the generator weights come from, e.g. deepmind/biggan-deep-256 (the card's base model).",
    )
    group.add_argument(
        "--generator_license", type=str, default="see the generator's source", help="Licence of the generator weights."
    )
    group.add_argument(
        "--encoder_license", type=str, default="see the encoder's source", help="Licence of the encoder weights."
    )


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """Pushing a finished pipeline folder to the Hub (``tron build``, ``build_tron_pipeline.py``)."""
    group = parser.add_argument_group("Hub")
    group.add_argument(
        "--push_to_hub", action="store_true", help="Upload the pipeline folder and its model card to the Hub."
    )
    group.add_argument(
        "--hub_model_id",
        type=str,
        default=None,
        help="Hub repo id, e.g. org/tron-biggan (required with --push_to_hub).",
    )
    group.add_argument("--hub_token", type=str, default=None, help="Hub token (default: the stored login).")
    group.add_argument("--private", action="store_true", help="Create the Hub repo private.")


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``tron build``: its sources and output, every ``tron train-translator`` option it does not set
    itself, the sample grid, the model card and the Hub."""
    sources = parser.add_argument_group("generator, encoder and output")
    sources.add_argument(
        "--generator",
        type=str,
        required=True,
        help="A generator folder or checkpoint, its format detected from the files: a tron_pipelines generator folder, "
        "a pytorch-pretrained-biggan folder, a BigGAN-PyTorch .pth, a rosinality .pt, an NVIDIA .pkl or an NVAE checkpoint.pt.",
    )
    sources.add_argument(
        "--encoder",
        type=str,
        required=True,
        help="A saved pipeline, whose encoder, tokenizer and image processor are used (an embedded name such as "
        "tron-mnist-text, a pipeline folder or its encoder/ folder), a CLIP Hub id or folder, an OpenCLIP folder, or a "
        "classifier folder.",
    )
    sources.add_argument(
        "--output",
        type=str,
        required=True,
        help="Build folder (layout above); an earlier build's folder continues it.",
    )
    sources.add_argument(
        "--preset",
        type=str,
        default=None,
        help="Sampling preset of the pipeline: biggan, stylegan, nvae or diffusion (`SAMPLING_PRESETS`; default: the one of the generator's format or class).",
    )
    sources.add_argument(
        "--generator_config",
        type=key_value,
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="Settings of the converted generator, e.g. default_truncation=0.5 (BigGAN-deep), truncation_psi=0.7 or "
        "latent_space=w+ (StyleGAN), resolution=512 (BigGAN-PyTorch), noise_seed=0 (NVAE).",
    )
    add_train_translator_arguments(parser, exclude=BUILD_SETS)
    parser.set_defaults(num_pairs=BUILD_DEFAULT_NUM_PAIRS)

    samples = parser.add_argument_group("sample grid of the model card")
    samples.add_argument(
        "--sample_prompts",
        type=str,
        nargs="+",
        default=None,
        help="Prompts of the grid (CLIP encoders; default: a few for the preset).",
    )
    samples.add_argument(
        "--sample_class_labels",
        type=int,
        nargs="+",
        default=None,
        help="Classes of the grid (classifier encoders; default: the first 8).",
    )
    samples.add_argument(
        "--sample_images", type=positive_int, default=2, help="Images per prompt or class (default 2)."
    )
    samples.add_argument(
        "--sample_steps",
        type=non_negative_int,
        default=None,
        help="Langevin steps of the samples (default: the preset's).",
    )
    samples.add_argument(
        "--sample_augmentations",
        type=non_negative_int,
        default=None,
        help="Augmented copies per image (default: the preset's).",
    )
    samples.add_argument("--no_samples", action="store_true", help="Write the model card without a sample grid.")
    add_model_card_arguments(parser)
    add_hub_arguments(parser)


def build_build_parser(prog: str = "tron build") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=BUILD_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_build_arguments(parser)
    return parser


def parse_build_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``tron build`` arguments (``sys.argv[1:]`` when ``argv`` is None; dashes work as underscores)."""
    return build_build_parser().parse_args(normalize_option_spelling(sys.argv[1:] if argv is None else list(argv)))


def build_train_translator_parser(prog: str = "tron train-translator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Train a TR0N translator on synthetic pairs with Accelerate."
    )
    add_train_translator_arguments(parser)
    return parser


def parse_train_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``tron train-translator`` arguments (``sys.argv[1:]`` when ``argv`` is None; dashes in option names work
    as underscores, as in ``tron``)."""
    return build_train_translator_parser().parse_args(
        normalize_option_spelling(sys.argv[1:] if argv is None else list(argv))
    )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


CAPTION_SETTINGS = {
    "caption_decoding": "decoding",
    "caption_num_beams": "num_beams",
    "caption_top_p": "top_p",
    "caption_min_length": "min_length",
    "caption_max_length": "max_length",
    "caption_repetition_penalty": "repetition_penalty",
    "caption_prompt": "prompt",
}


def caption_settings(args: argparse.Namespace) -> dict:
    """The caption decoding options given on the command line, as `TransformersCaptioner` keyword arguments."""
    return {
        keyword: getattr(args, name) for name, keyword in CAPTION_SETTINGS.items() if getattr(args, name) is not None
    }


def check_pair_args(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` naming the argument for impossible pair settings."""
    # Imports torch: imported when arguments are checked, not when ``tron --help`` builds the parser.
    from .routes import check_route_arguments

    _require(args.num_pairs is None or args.num_pairs >= 1, f"`--num_pairs` must be >= 1, got {args.num_pairs}.")
    _require(args.pairs_per_shard >= 1, f"`--pairs_per_shard` must be >= 1, got {args.pairs_per_shard}.")
    _require(
        args.generation_batch_size >= 1, f"`--generation_batch_size` must be >= 1, got {args.generation_batch_size}."
    )
    _require(args.seed >= 0, f"`--seed` must be >= 0, got {args.seed}.")
    check_route_arguments(args.condition_route, args.captioner, args.caption_ratio, caption_settings(args))


def check_generate_pairs_args(args: argparse.Namespace) -> None:
    check_pair_args(args)
    _require(args.pairs_dir is not None, "`--pairs_dir` is required: where the cache is written.")
    if args.reencode_from is not None:
        _require(
            args.num_pairs is None and args.condition_route == "image" and args.captioner is None,
            "`--reencode_from` keeps the original cache's route and pair count: do not give --num_pairs, "
            "--condition_route or --captioner with it.",
        )
        return
    _require(args.num_pairs is not None, "`--num_pairs` is required: how many pairs the cache holds.")


def check_train_args(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` naming the argument for impossible training settings (before anything is loaded)."""
    check_pair_args(args)
    _require(
        args.pairs_dir is not None or args.num_pairs is not None,
        "Give `--pairs_dir` (a pair cache) or `--num_pairs` (pairs made on the fly), or both (a cache generated first).",
    )
    for name in (
        "train_batch_size",
        "num_train_epochs",
        "gradient_accumulation_steps",
        "checkpointing_steps",
        "validation_steps",
        "num_validation_pairs",
        "num_components",
    ):
        _require(getattr(args, name) >= 1, f"`--{name}` must be >= 1, got {getattr(args, name)}.")
    for name in ("max_train_steps", "checkpoints_total_limit", "hidden_dim", "mean_rank"):
        value = getattr(args, name)
        _require(value is None or value >= 1, f"`--{name}` must be >= 1, got {value}.")
    _require(args.lr_warmup_steps >= 0, f"`--lr_warmup_steps` must be >= 0, got {args.lr_warmup_steps}.")
    _require(
        0 <= args.num_validation_conditions <= args.num_validation_pairs,
        f"`--num_validation_conditions` must be between 0 and --num_validation_pairs ({args.num_validation_pairs}), got {args.num_validation_conditions}.",
    )
    for name in ("learning_rate", "std_learning_rate", "nll_weight"):
        value = getattr(args, name)
        _require(value is None or value > 0, f"`--{name}` must be > 0, got {value}.")
    _require(args.init_std is None or args.init_std > 0, f"`--init_std` must be > 0, got {args.init_std}.")
    _require(
        args.max_grad_norm >= 0, f"`--max_grad_norm` must be >= 0 (0 disables clipping), got {args.max_grad_norm}."
    )
    _require(
        args.condition_noise == "none" or args.condition_noise_scale > 0,
        f"`--condition_noise_scale` must be > 0 with --condition_noise {args.condition_noise}, got {args.condition_noise_scale}.",
    )


def learning_rate_budget(learning_rate: float, steps: int, warmup_steps: int, lr_scheduler: str) -> float:
    """The sum of the learning rates a run of ``steps`` optimisation steps is scheduled to take: Adam moves a weight
    by about the learning rate per step, so this is about the farthest any weight can move. A linear warmup and a
    decaying schedule (cosine, linear, polynomial) each count half their steps; diffusers' ``constant`` has no
    warmup."""
    warmup = 0 if lr_scheduler == "constant" else min(warmup_steps, steps)
    after_warmup = 1.0 if lr_scheduler in ("constant", "constant_with_warmup") else 0.5
    return learning_rate * (warmup / 2 + (steps - warmup) * after_warmup)


def resolve_learning_rate(args: argparse.Namespace, steps: int) -> tuple[float, str | None]:
    """The network learning rate of a run of ``steps`` optimisation steps, and a warning when it cannot move the
    translator in those steps (its `learning_rate_budget` is under `MIN_LEARNING_RATE_BUDGET`), else ``None``.

    ``--learning_rate`` when given. Otherwise the method's 1e-4 for a run long enough for it, and for a shorter one the
    rate whose budget is `CHOSEN_LEARNING_RATE_BUDGET`, at most `MAX_CHOSEN_LEARNING_RATE`: the default of a long run
    stays the method's, and a short run learns.
    """
    unit_budget = learning_rate_budget(1.0, steps, args.lr_warmup_steps, args.lr_scheduler)
    chosen = args.learning_rate is None
    if chosen:
        wanted = CHOSEN_LEARNING_RATE_BUDGET / unit_budget  # a run has a step, so the unit budget is >= 0.5
        learning_rate = min(MAX_CHOSEN_LEARNING_RATE, max(METHOD_LEARNING_RATE, wanted))
    else:
        learning_rate = args.learning_rate
    budget = learning_rate * unit_budget
    if budget >= MIN_LEARNING_RATE_BUDGET:
        return learning_rate, None
    schedule = f"{steps} {args.lr_scheduler} steps ({args.lr_warmup_steps} warmup)"
    if chosen:
        rate = f"The learning rate {learning_rate:g} (the most it is raised to for a short run)"
        advice = f"train for about {math.ceil(steps * CHOSEN_LEARNING_RATE_BUDGET / budget)} steps"
    else:
        rate = f"--learning_rate {learning_rate:g}"
        advice = (
            f"raise it to {CHOSEN_LEARNING_RATE_BUDGET / unit_budget:.2g}, or leave it out to have it chosen from the "
            "number of steps"
        )
    return learning_rate, (
        f"{rate} over {schedule} lets Adam move a weight by {budget:.3g} at most: too little for the translator to "
        f"learn (a run needs {MIN_LEARNING_RATE_BUDGET} at least; docs/training.md). To learn, {advice}."
    )


def command_line(
    args: argparse.Namespace,
    command: str = "tron train-translator",
    parser: argparse.ArgumentParser | None = None,
    required: tuple[str, ...] = ("pipeline",),
    skip: tuple[str, ...] = (),
) -> str:
    """A shell command that repeats ``args`` of ``parser`` (default: train-translator's): the command, the
    ``required`` options and every other option that differs from its default, except those in ``skip`` (the Hub
    token never appears)."""
    parser = parser or build_train_translator_parser()
    defaults = vars(parser.parse_args([word for name in required for word in (f"--{name}", "")]))
    words = command.split()
    for name, default in defaults.items():
        value = getattr(args, name, default)
        if name in ("hub_token", *skip) or (value == default and name not in required):
            continue
        if value is True:
            words.append(f"--{name}")
        elif isinstance(value, (list, tuple)):
            words += [
                f"--{name}",
                *(_key_value_text(item) if isinstance(item, tuple) else str(item) for item in value),
            ]
        else:
            words += [f"--{name}", str(value)]
    return shlex.join(words)


__all__ = [
    "BUILD_SETS",
    "add_build_arguments",
    "add_hub_arguments",
    "add_model_card_arguments",
    "build_build_parser",
    "key_value",
    "parse_build_args",
    "add_pair_arguments",
    "add_generate_pairs_arguments",
    "add_train_translator_arguments",
    "build_train_translator_parser",
    "parse_train_args",
    "check_pair_args",
    "caption_settings",
    "check_generate_pairs_args",
    "check_train_args",
    "command_line",
    "learning_rate_budget",
    "resolve_learning_rate",
]
