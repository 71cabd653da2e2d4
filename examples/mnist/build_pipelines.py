"""Train the translators of the embedded MNIST pipelines and assemble `tron-mnist` and `tron-mnist-text`.

Needs the frozen parts from the other scripts of this folder (generator, classifier f, CLIP). Each translator is
trained with this package's own trainer (`tron train-translator`) on synthetic pairs z ~ N(0, I), c = f(G(z)):
class probabilities for `tron-mnist`, CLIP *image* embeddings with norm-matched condition noise for
`tron-mnist-text` (at sampling time the condition is a CLIP *text* embedding, as in the method).

    python examples/mnist/build_pipelines.py --generator outputs/mnist/generator --classifier outputs/mnist/classifier \
        --clip outputs/mnist/clip --work_dir outputs/build --output_root src/tron_pipelines/pretrained
"""

import argparse
from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

from tron_pipelines import ConvClassifier, ConvGenerator, LangevinScheduler, TranslatorModel, TronPipeline
from tron_pipelines.conversion.checkpoints import save_pretrained_atomically
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
    },
}

TRAINING_ARGS = [
    "--num_pairs", "100000", "--num_components", "10", "--hidden_dim", "256", "--train_batch_size", "256",
    "--max_train_steps", "2000", "--learning_rate", "1e-3", "--lr_warmup_steps", "100", "--validation_steps", "1000",
    "--checkpointing_steps", "100000", "--generation_batch_size", "500", "--overwrite_output_dir",
]
CONDITION_NOISE = {"tron-mnist": ["--condition_noise", "none"], "tron-mnist-text": ["--condition_noise", "adaptive", "--condition_noise_scale", "0.3"]}


def base_pipelines(args) -> dict[str, TronPipeline]:
    """The frozen parts with an untrained translator of the right size (the trainer builds its own)."""
    generator = ConvGenerator.from_pretrained(args.generator).eval()
    classifier = ConvClassifier.from_pretrained(args.classifier).eval()
    clip = CLIPModel.from_pretrained(args.clip).eval()
    untrained = lambda condition_dim: TranslatorModel(condition_dim=condition_dim, latent_dim=generator.latent_dim)  # noqa: E731
    return {
        "tron-mnist": TronPipeline(untrained(classifier.config.num_classes), generator, classifier, LangevinScheduler()),
        "tron-mnist-text": TronPipeline(
            untrained(clip.config.projection_dim), generator, clip, LangevinScheduler(),
            tokenizer=AutoTokenizer.from_pretrained(args.clip), image_processor=CLIPImageProcessor.from_pretrained(args.clip),
        ),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", required=True)
    parser.add_argument("--classifier", required=True)
    parser.add_argument("--clip", required=True)
    parser.add_argument("--work_dir", default="outputs/build")
    parser.add_argument("--output_root", default="src/tron_pipelines/pretrained")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reassemble", action="store_true",
        help="Skip training: reassemble from the translators already trained in --work_dir (after changing SAMPLING).",
    )
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    work = Path(args.work_dir)
    for name, base in base_pipelines(args).items():
        base_dir = work / f"base-{name}"
        save_pretrained_atomically(base, base_dir)
        train_args = parse_train_args(
            ["--pipeline", str(base_dir), "--pairs_dir", str(work / f"pairs-{name}"), "--output_dir", str(work / f"trained-{name}"),
             "--seed", str(args.seed), *TRAINING_ARGS, *CONDITION_NOISE[name]]
        )
        if args.reassemble:
            trained = TronPipeline.from_pretrained(train_args.output_dir)
            report = f"reassembled from {train_args.output_dir}"
        else:
            result = train_translator(train_args)
            trained = TronPipeline.from_pretrained(result.output_dir)
            report = f"translator validation {result.metrics}"
        settings = SAMPLING[name]
        pipe = TronPipeline(
            translator=trained.translator, generator=trained.generator, encoder=trained.encoder,
            scheduler=LangevinScheduler(**settings["scheduler"]), tokenizer=trained.tokenizer,
            image_processor=trained.image_processor,
            default_num_inference_steps=settings["default_num_inference_steps"],
            default_num_augmentations=settings["default_num_augmentations"],
            default_num_candidates=settings["default_num_candidates"],
            augmentation_policy=settings["augmentation_policy"],
        )
        folder = save_pretrained_atomically(pipe, Path(args.output_root) / name)
        print(f"{name}: {report}; saved to {folder}")


if __name__ == "__main__":
    main()
