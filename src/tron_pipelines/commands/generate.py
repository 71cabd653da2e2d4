"""``tron generate``: sample images from a pipeline (an embedded one by default) and write PNGs, a grid and a manifest.

    tron generate "a bold seven leaning right" --num_images 8 --seed 0 --out samples
    tron generate --pipeline tron-mnist --class_label 3 --num_images 8 --out threes
    tron generate "a red car" --pipeline my-sd-turbo-reno --condition_generator_on_prompt --init prior \
        --reward_weights pickscore=0.05 clip_score=0.01 --out cars      # a text-to-image G with reward models

Many conditions at once (a prompts file, or a list of class labels), batched, resumable and split over the processes
of ``accelerate launch``, are `generate_many`'s:

    tron generate --pipeline tron-mnist --class_labels 0-9 --num_images 32 --out digits
    accelerate launch --num_processes 8 -m tron_pipelines.cli generate --prompts_file captions.txt --out coco
"""

import argparse

from ..utils.options import name_and_weight, non_negative_int, positive_int
from .common import (
    CommandError,
    in_cli_terms,
    load_pipeline,
    reward_call_options,
    rewards_per_image,
    writable_folder,
)
from .samples import write_samples


DEFAULT_PIPELINE = "tron-mnist-text"


def class_label_list(text: str) -> list[int]:
    """argparse type: class labels as ranges and lists, ``0-9`` or ``0,3,5-7``, in that order."""
    labels = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()) or (dash and int(last) < int(first)):
            raise argparse.ArgumentTypeError(f"must be class labels like 0-9 or 0,3,5-7, got {text!r}")
        labels.extend(range(int(first), int(last if dash else first) + 1))
    return labels


def register_generate(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="Generate images for a prompt or a class label (offline with the embedded pipelines).",
        description="Generate images with a TR0N pipeline: a local folder, an embedded name (tron-mnist, "
        "tron-mnist-text, tron-mnist-ddim, tron-mnist-t2i) or a Hub id. One condition writes OUT/0.png ..., OUT/grid.png and OUT/manifest.json. Many "
        "(--prompts_file, --class_labels) write OUT/000000.png ... and OUT/manifest.jsonl, resumably, in batches, with "
        "every process of `accelerate launch -m tron_pipelines.cli generate ...`.",
    )
    parser.add_argument("prompt", nargs="?", default=None, help="Text condition (text pipelines).")
    parser.add_argument(
        "--pipeline",
        default=DEFAULT_PIPELINE,
        help=f"Pipeline folder, embedded name or Hub id (default {DEFAULT_PIPELINE}).",
    )
    parser.add_argument(
        "--class_label", type=non_negative_int, default=None, help="Class condition (class pipelines)."
    )
    parser.add_argument(
        "--prompts_file",
        default=None,
        help="Many conditions: one prompt per line, or a .jsonl file with one JSON object per line "
        'holding "prompt", "class_label" or "image" (a path relative to the file), optionally "seed".',
    )
    parser.add_argument(
        "--class_labels", type=class_label_list, default=None, help="Many class conditions, e.g. 0-9 or 0,3,5-7."
    )
    parser.add_argument(
        "--num_images",
        type=positive_int,
        default=None,
        help="Images per condition (default 8 for one prompt or class label, 1 with --prompts_file or --class_labels).",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="Seed of image 0 (default 0); image i uses seed + i, so each image is reproducible alone.",
    )
    parser.add_argument(
        "--batch_size",
        type=positive_int,
        default=16,
        help="With --prompts_file or --class_labels: images sampled at once per process (default 16).",
    )
    parser.add_argument(
        "--steps",
        type=non_negative_int,
        default=None,
        help="Langevin steps, 0 = translator only (default: the pipeline's).",
    )
    parser.add_argument(
        "--candidates",
        type=positive_int,
        default=None,
        help="Initial draws per image; the lowest-energy one is refined (default: the pipeline's).",
    )
    parser.add_argument(
        "--init",
        default="translator",
        choices=["translator", "translator_mean", "prior"],
        help="Initialisation of the latents.",
    )
    parser.add_argument(
        "--condition_generator_on_prompt",
        action="store_true",
        help="Give the prompt to G too (a text-to-image G): images are G(z | prompt) and the latents are optimised "
        "for it, reward-based noise optimisation's (ReNO's) setting. Default: G renders its own generator prompt "
        "(TR0N's setting, the one the translator was trained in).",
    )
    parser.add_argument(
        "--reward_weights",
        nargs="+",
        type=name_and_weight,
        default=None,
        metavar="NAME=WEIGHT",
        help="A pipeline with reward models: each reward's weight in the energy for this run, e.g. pickscore=0.05 "
        "hps=5 (rewards not named keep the pipeline's weights; 0 reports a reward without optimising it). Every "
        "image's rewards are printed and recorded in the manifest whenever the pipeline has reward models.",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device, e.g. cpu or cuda (default cpu; with --prompts_file or --class_labels, the device "
        "Accelerate gives the process, e.g. cuda:<local rank> under accelerate launch).",
    )
    parser.add_argument("--out", default="tron-samples", help="Output folder (created if needed).")
    parser.set_defaults(handler=run_generate)


def run_generate(args: argparse.Namespace) -> None:
    try:
        _generate(args)
    except CommandError as error:
        raise SystemExit(f"tron generate: error: {error}") from None


def _generate(args: argparse.Namespace) -> None:
    given = [
        name
        for name, value in (
            ("a prompt", args.prompt),
            ("--class_label", args.class_label),
            ("--prompts_file", args.prompts_file),
            ("--class_labels", args.class_labels),
        )
        if value is not None
    ]
    if len(given) != 1:
        got = f" (got {' and '.join(given)})" if given else ""
        raise CommandError(
            f"give either a prompt or --class_label, or many conditions with --prompts_file or --class_labels{got}."
        )
    if args.prompts_file is not None or args.class_labels is not None:
        from .generate_many import generate_many  # imported when it runs: it would add 0.1 s to `tron --help`

        args.num_images = args.num_images or 1
        return generate_many(args)
    args.num_images = args.num_images or 8
    reward_options = reward_call_options(args)
    folder = writable_folder(args.out)
    pipe = load_pipeline(args.pipeline, args.device or "cpu")

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
            **reward_options,
        )
    except (ValueError, TypeError) as error:
        raise CommandError(in_cli_terms(str(error))) from None

    label = {"prompt": args.prompt} if args.prompt is not None else {"class_label": args.class_label}
    rewards = rewards_per_image(out)
    reward_settings = {"reward_weights": pipe.reward_weights_for(reward_options["reward_weights"])} if rewards else {}
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
            "condition_generator_on_prompt": args.condition_generator_on_prompt,
            **reward_settings,
        },
        rewards=rewards,
    )
    if rewards:
        weights = ", ".join(f"{name} {weight:g}" for name, weight in reward_settings["reward_weights"].items())
        print(f"Rewards per image (weights {weights}):")
        for index, (energy, values) in enumerate(zip(out.energies.tolist(), rewards)):
            scores = ", ".join(f"{name} {value:.4f}" for name, value in values.items())
            print(f"  {index}.png: {scores} (energy {energy:.4f})")
    print(f"Wrote {args.num_images} images, grid.png and manifest.json to {folder}")
