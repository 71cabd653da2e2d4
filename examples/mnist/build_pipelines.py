"""Train the translators of the embedded MNIST pipelines and assemble `tron-mnist` and `tron-mnist-text`.

Needs the frozen parts from the other scripts of this folder (generator, classifier f, CLIP), or takes them from the
embedded pipelines themselves (`--from_embedded`). Each translator is trained with this package's own trainer
(`tron train-translator`) on synthetic pairs z ~ N(0, I), c = f(G(z)): class probabilities for `tron-mnist`; for
`tron-mnist-text`, the route in `PAIR_ARGS` (the CLIP *text* embedding of a caption of G(z) written by
`captions.MnistCaptioner`, as the CLIP's training captions were, so that training and prompt conditions come from the
same text encoder; see its model card for the comparison with image embeddings).

    python examples/mnist/build_pipelines.py --generator outputs/mnist/generator --classifier outputs/mnist/classifier \
        --clip outputs/mnist/clip --work_dir outputs/build --output_root src/tron_pipelines/pretrained

Rebuild one translator from the frozen parts the package ships (what the committed `tron-mnist-text` was made with):

    python examples/mnist/build_pipelines.py --from_embedded --only tron-mnist-text --work_dir outputs/build

A trial with other pair or training options (how the caption route was chosen over a 50/50 mix, on tuning seeds with
`benchmarks/bench_compare_pipelines.py`):

    python examples/mnist/build_pipelines.py --from_embedded --only tron-mnist-text --work_dir outputs/build-mix \
        --output_root outputs/mix --train_overrides "--condition_route mix --caption_ratio 0.5"

After a change of the sampling settings below, reassemble without training, from the trained pipelines of a build or
from the embedded pipelines themselves (their model cards are kept):

    python examples/mnist/build_pipelines.py --reassemble_from "src/tron_pipelines/pretrained/{name}"
"""

import argparse
import shlex
from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

from captions import caption_words

from tron_pipelines import ConvClassifier, ConvGenerator, LangevinScheduler, TranslatorModel, TronPipeline
from tron_pipelines.conversion.checkpoints import save_pretrained_atomically
from tron_pipelines.pretrained import EMBEDDED_ROOT
from tron_pipelines.training.arguments import parse_train_args
from tron_pipelines.training.train import train_translator

# Sampling settings chosen with the evaluation classifier on tuning seeds (500000 + i), not the benchmark's evaluation
# seeds; the model cards give the measurements. The translators' mixtures are almost as wide as the prior (the GAN's
# classes are entangled in z), so a best-of-N search over translator draws does most of the work, and
# Langevin refines the winner.
SAMPLING = {
    "tron-mnist": {
        "scheduler": dict(step_size=1.0, noise_std=0.01, momentum=0.5, max_grad_norm=1.0),
        "default_num_inference_steps": 10,
        "default_num_augmentations": 0,
        "default_num_candidates": 4,
        "augmentation_policy": "translation",
    },
    "tron-mnist-text": {
        "scheduler": dict(step_size=1.0, noise_std=0.01, momentum=0.5, max_grad_norm=1.0),
        "default_num_inference_steps": 10,
        "default_num_augmentations": 4,
        "default_num_candidates": 16,
        "augmentation_policy": "translation",
        # The CLIP learned only its captions' words; other words get a warning (`TronPipeline` prompt_vocabulary).
        "prompt_vocabulary": " ".join(caption_words()),
    },
}

TRAINING_ARGS = [
    "--num_pairs", "100000", "--num_components", "10", "--hidden_dim", "256", "--train_batch_size", "256",
    "--max_train_steps", "2000", "--learning_rate", "1e-3", "--lr_warmup_steps", "100", "--validation_steps", "1000",
    "--checkpointing_steps", "100000", "--generation_batch_size", "500", "--overwrite_output_dir",
]
# How each translator's pairs are made (`tron train-translator` options).
PAIR_ARGS = {
    "tron-mnist": ["--condition_noise", "none"],
    "tron-mnist-text": ["--condition_route", "caption", "--captioner", "captions:MnistCaptioner", "--condition_noise", "none"],
}


def frozen_part_folders(args) -> dict[str, Path]:
    """Folders of the generator, the classifier f and the CLIP (model, tokenizer and image processor)."""
    if args.from_embedded:
        text = EMBEDDED_ROOT / "tron-mnist-text"
        return {
            "generator": text / "generator", "classifier": EMBEDDED_ROOT / "tron-mnist" / "encoder", "clip": text / "encoder",
            "tokenizer": text / "tokenizer", "image_processor": text / "image_processor",
        }
    return {"generator": args.generator, "classifier": args.classifier, "clip": args.clip, "tokenizer": args.clip, "image_processor": args.clip}


def base_pipelines(args) -> dict[str, TronPipeline]:
    """The frozen parts with an untrained translator of the right size (the trainer builds its own)."""
    folders = frozen_part_folders(args)
    generator = ConvGenerator.from_pretrained(folders["generator"]).eval()
    classifier = ConvClassifier.from_pretrained(folders["classifier"]).eval()
    clip = CLIPModel.from_pretrained(folders["clip"]).eval()
    untrained = lambda condition_dim: TranslatorModel(condition_dim=condition_dim, latent_dim=generator.latent_dim)  # noqa: E731
    return {
        "tron-mnist": TronPipeline(untrained(classifier.config.num_classes), generator, classifier, LangevinScheduler()),
        "tron-mnist-text": TronPipeline(
            untrained(clip.config.projection_dim), generator, clip, LangevinScheduler(),
            tokenizer=AutoTokenizer.from_pretrained(folders["tokenizer"]),
            image_processor=CLIPImageProcessor.from_pretrained(folders["image_processor"]),
        ),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", help="Generator folder (training only).")
    parser.add_argument("--classifier", help="Classifier folder (training only).")
    parser.add_argument("--clip", help="CLIP folder (training only).")
    parser.add_argument(
        "--from_embedded", action="store_true",
        help="Train from the frozen parts inside the embedded pipelines (tron-mnist's generator and CNN f, "
        "tron-mnist-text's CLIP) instead of --generator, --classifier and --clip.",
    )
    parser.add_argument("--only", choices=list(SAMPLING), default=None, help="Build this pipeline only.")
    parser.add_argument("--work_dir", default="outputs/build")
    parser.add_argument("--output_root", default="src/tron_pipelines/pretrained")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train_overrides", default="",
        help="`tron train-translator` options that replace the recipe's for a trial build, e.g. "
        "\"--condition_route mix --caption_ratio 0.5 --num_pairs 50000\" (written to --output_root like a real build).",
    )
    parser.add_argument(
        "--reassemble_from", default=None,
        help="Skip training: take each pipeline's trained parts from this folder pattern ({name} = tron-mnist, "
        "tron-mnist-text), e.g. 'outputs/build/trained-{name}' or the embedded 'src/tron_pipelines/pretrained/{name}', "
        "and reassemble them with SAMPLING.",
    )
    args = parser.parse_args()
    if args.reassemble_from is None and not (args.from_embedded or (args.generator and args.classifier and args.clip)):
        parser.error("training needs --generator, --classifier and --clip, or --from_embedded (or --reassemble_from to skip training).")
    torch.manual_seed(args.seed)
    work = Path(args.work_dir)
    names = SAMPLING if args.reassemble_from else base_pipelines(args)
    for name in [args.only] if args.only else names:
        if args.reassemble_from:
            trained = TronPipeline.from_pretrained(args.reassemble_from.format(name=name))
            report = f"reassembled from {args.reassemble_from.format(name=name)}"
        else:
            base_dir = work / f"base-{name}"
            save_pretrained_atomically(names[name], base_dir)
            train_args = parse_train_args(
                ["--pipeline", str(base_dir), "--pairs_dir", str(work / f"pairs-{name}"), "--output_dir", str(work / f"trained-{name}"),
                 "--seed", str(args.seed), *TRAINING_ARGS, *PAIR_ARGS[name],
                 *shlex.split(args.train_overrides)]
            )
            result = train_translator(train_args)
            trained = TronPipeline.from_pretrained(result.output_dir)
            report = f"translator validation {result.metrics}"
        settings = dict(SAMPLING[name])
        pipe = TronPipeline(
            translator=trained.translator, generator=trained.generator, encoder=trained.encoder,
            scheduler=LangevinScheduler(**settings.pop("scheduler")), tokenizer=trained.tokenizer,
            image_processor=trained.image_processor, **settings,
        )
        output = Path(args.output_root) / name
        # The model cards are written by hand from the benchmark's measurements: a rebuild keeps them.
        card = (output / "README.md").read_text() if (output / "README.md").is_file() else None
        folder = save_pretrained_atomically(pipe, output)
        if card is not None:
            (folder / "README.md").write_text(card)
        print(f"{name}: {report}; saved to {folder}")


if __name__ == "__main__":
    main()
