"""Train the translators of the embedded MNIST pipelines and assemble `tron-mnist`, `tron-mnist-text`,
`tron-mnist-ddim` and `tron-mnist-t2i`.

Needs the frozen parts from the other scripts of this folder (GAN generator, classifier f, CLIP, diffusion model).
Each translator is trained with this package's own trainer (`tron train-translator`) on synthetic pairs
z ~ N(0, I), c = f(G(z)): class probabilities for `tron-mnist` and `tron-mnist-ddim` (the same classifier f; G the GAN
or the diffusion model sampled by DDIM); for `tron-mnist-text`, the route in `PAIR_ARGS` (the CLIP *text* embedding of
a caption of G(z) written by `captions.MnistCaptioner`, as the CLIP's training captions were, so that training and
prompt conditions come from the same text encoder; see its model card for the comparison with image embeddings).
`tron-mnist-t2i` takes the same caption route and CLIP, with G the text-to-image diffusion model of `train_t2i.py`
rendering the empty prompt (TR0N's unconditional mode; its own conditional mode is `condition_generator_on_prompt`).

    python examples/mnist/build_pipelines.py --generator outputs/mnist/generator --classifier outputs/mnist/classifier \
        --clip outputs/mnist/clip --ddpm outputs/mnist/ddpm/pipeline --t2i outputs/mnist/t2i/model \
        --work_dir outputs/build --output_root src/tron_pipelines/pretrained

Every pipeline whose parts are given is trained, or those named by ``--pipelines``; e.g. ``--classifier
src/tron_pipelines/pretrained/tron-mnist/encoder --ddpm outputs/mnist/ddpm/pipeline`` builds `tron-mnist-ddim` alone,
and ``--from_embedded --t2i outputs/mnist/t2i/model --pipelines tron-mnist-t2i`` builds `tron-mnist-t2i` (what the
committed one was made with).

Rebuild a translator from the frozen parts the package ships (what the committed `tron-mnist-text` was made with):

    python examples/mnist/build_pipelines.py --from_embedded --pipelines tron-mnist-text --work_dir outputs/build

A trial with other pair or training options (how the caption route was chosen over a 50/50 mix, on tuning seeds with
`python benchmarks/run.py compare`):

    python examples/mnist/build_pipelines.py --from_embedded --pipelines tron-mnist-text --work_dir outputs/build-mix \
        --output_root outputs/mix --train_overrides "--condition_route mix --caption_ratio 0.5"

After a change of the sampling settings below, reassemble without training, from the trained pipelines of a build or
from the embedded pipelines themselves (their model cards are kept):

    python examples/mnist/build_pipelines.py --reassemble_from "src/tron_pipelines/pretrained/{name}"
"""

import argparse
import shlex
from pathlib import Path

import torch
from captions import caption_words
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

from tron_pipelines import ConvClassifier, ConvGenerator, LangevinScheduler, TranslatorModel, TronPipeline
from tron_pipelines.models import DiffusionSamplerGenerator, load_diffusers_generator
from tron_pipelines.pretrained import EMBEDDED_ROOT
from tron_pipelines.training.arguments import parse_train_args
from tron_pipelines.training.train import train_translator
from tron_pipelines.utils.files import save_pretrained_atomically, write_folder_atomically


# Sampling settings chosen with the evaluation classifier on tuning seeds (500000 + i), not the benchmark's evaluation
# seeds; the model cards give the measurements. The translators' mixtures are almost as wide as the prior (the GAN's
# classes are entangled in z), so a best-of-N search over translator draws does most of the work, and
# Langevin refines the winner.
SAMPLING = {
    "tron-mnist": {
        "scheduler": {"step_size": 1.0, "noise_std": 0.01, "momentum": 0.5, "max_grad_norm": 1.0},
        "default_num_inference_steps": 10,
        "default_num_augmentations": 0,
        "default_num_candidates": 4,
        "augmentation_policy": "translation",
    },
    "tron-mnist-text": {
        "scheduler": {"step_size": 1.0, "noise_std": 0.01, "momentum": 0.5, "max_grad_norm": 1.0},
        "default_num_inference_steps": 10,
        "default_num_augmentations": 4,
        "default_num_candidates": 16,
        "augmentation_policy": "translation",
        # The CLIP learned only its captions' words; other words get a warning (`TronPipeline` prompt_vocabulary).
        "prompt_vocabulary": " ".join(caption_words()),
    },
    # Chosen on tuning seeds (4 per digit; step sizes 0.3 / 1 / 3 x 1 / 4 / 8 candidates x 0 / 5 / 10 steps): x_T
    # says little about the digit (the translator's one-candidate proposals are 0.33 accurate), so the best of 8
    # proposals does most of the work (0.975 at 0 steps) and 5 steps of size 1 finish it (1.0, FD 113 vs 140 with
    # 4 candidates and 10 steps); step size 3 overshoots.
    "tron-mnist-ddim": {
        "scheduler": {"step_size": 1.0, "noise_std": 0.01, "momentum": 0.5, "max_grad_norm": 1.0},
        "default_num_inference_steps": 5,
        "default_num_augmentations": 0,
        "default_num_candidates": 8,
        "augmentation_policy": "translation",
    },
    # Chosen on tuning seeds (`benchmarks/studies/t2i_sampling.py`, one image per benchmark prompt, 10 steps; share of
    # requests obeyed): 1 / 4 / 16 / 64 candidates x 0 / 4 augmentations x step size 1 / 3. The translator barely
    # narrows the prior (validation NLL 1.420 per dimension against 1.431 untrained), so the search and a larger step
    # do the work: best of 16 + 4 augmentations + step 3: digit 0.90, FD 187.5 (one draw, step 1: 0.62, FD 331.7).
    "tron-mnist-t2i": {
        "scheduler": {"step_size": 3.0, "noise_std": 0.01, "momentum": 0.5, "max_grad_norm": 1.0},
        "default_num_inference_steps": 10,
        "default_num_augmentations": 4,
        "default_num_candidates": 16,
        "augmentation_policy": "translation",
        "prompt_vocabulary": " ".join(caption_words()),
    },
}
# DDIM steps of the diffusion G of `tron-mnist-ddim` (each one a UNet pass forward, and backward in every Langevin step).
DDIM_SAMPLER_STEPS = 4
# DDIM steps of the text-to-image G of `tron-mnist-t2i`: its model card's evaluation (train_t2i.py) shows one step
# blurred (posterior-mean digits: FD 349, diversity 0.31 of real) and two steps sharp at half the cost of four.
T2I_SAMPLER_STEPS = 2

TRAINING_ARGS = [
    "--num_pairs",
    "100000",
    "--num_components",
    "10",
    "--hidden_dim",
    "256",
    "--train_batch_size",
    "256",
    "--max_train_steps",
    "2000",
    "--learning_rate",
    "1e-3",
    "--lr_warmup_steps",
    "100",
    "--validation_steps",
    "1000",
    "--checkpointing_steps",
    "100000",
    "--generation_batch_size",
    "500",
    "--overwrite_output_dir",
]
# How each translator's pairs are made (`tron train-translator` options).
CAPTION_ROUTE_ARGS = [
    "--condition_route",
    "caption",
    "--captioner",
    "captions:MnistCaptioner",
    "--condition_noise",
    "none",
]
PAIR_ARGS = {
    "tron-mnist": ["--condition_noise", "none"],
    "tron-mnist-text": CAPTION_ROUTE_ARGS,
    "tron-mnist-ddim": ["--condition_noise", "none"],
    "tron-mnist-t2i": CAPTION_ROUTE_ARGS,
}
# Recipe changes per pipeline. tron-mnist-t2i: the shared-basis mean head (rank 64) keeps the translator of a
# 784-value latent at 1.2 MB instead of 8 MB (all embedded pipelines must stay under 25 MB together); 25,000 pairs
# because each pair costs two UNet passes.
TRAINING_OVERRIDES = {"tron-mnist-t2i": ["--mean_rank", "64", "--num_pairs", "25000"]}
# The frozen parts each pipeline is trained from (command-line arguments).
PARTS = {
    "tron-mnist": ("generator", "classifier"),
    "tron-mnist-text": ("generator", "clip"),
    "tron-mnist-ddim": ("ddpm", "classifier"),
    "tron-mnist-t2i": ("t2i", "clip"),
}
TEXT_PIPELINES = ("tron-mnist-text", "tron-mnist-t2i")


def part_folders(args) -> dict:
    """Folders of the frozen parts: the command line's, or with ``--from_embedded`` the embedded pipelines' own
    (tron-mnist's generator and CNN f, tron-mnist-text's CLIP; the DDPM is not embedded as a diffusers pipeline)."""
    folders = {part: getattr(args, part) for part in ("generator", "classifier", "clip", "ddpm", "t2i")}
    if args.from_embedded:
        folders.update(
            generator=EMBEDDED_ROOT / "tron-mnist" / "generator",
            classifier=EMBEDDED_ROOT / "tron-mnist" / "encoder",
            clip=EMBEDDED_ROOT / "tron-mnist-text",
        )
    return folders


def base_pipeline(name: str, folders: dict) -> TronPipeline:
    """The frozen parts of pipeline ``name`` with an untrained translator of the right size (the trainer builds its
    own)."""
    if name == "tron-mnist-ddim":
        generator = DiffusionSamplerGenerator.from_diffusers(folders["ddpm"], num_sampler_steps=DDIM_SAMPLER_STEPS)
    elif name == "tron-mnist-t2i":
        generator = load_diffusers_generator(folders["t2i"], num_sampler_steps=T2I_SAMPLER_STEPS, generator_prompt="")
    else:
        generator = ConvGenerator.from_pretrained(folders["generator"]).eval()
    if name in TEXT_PIPELINES:
        # train_clip.py writes model, tokenizer and image processor to one folder; a pipeline keeps them in subfolders.
        clip_folder = Path(folders["clip"])
        subfolder = (lambda part: {"subfolder": part}) if (clip_folder / "encoder").is_dir() else (lambda part: {})
        clip = CLIPModel.from_pretrained(clip_folder, **subfolder("encoder")).eval()
        translator = TranslatorModel(condition_dim=clip.config.projection_dim, latent_dim=generator.latent_dim)
        return TronPipeline(
            translator,
            generator,
            clip,
            LangevinScheduler(),
            tokenizer=AutoTokenizer.from_pretrained(clip_folder, **subfolder("tokenizer")),
            image_processor=CLIPImageProcessor.from_pretrained(clip_folder, **subfolder("image_processor")),
        )
    classifier = ConvClassifier.from_pretrained(folders["classifier"]).eval()
    translator = TranslatorModel(condition_dim=classifier.config.num_classes, latent_dim=generator.latent_dim)
    return TronPipeline(translator, generator, classifier, LangevinScheduler())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--pipelines",
        nargs="+",
        choices=list(SAMPLING),
        default=None,
        help="Pipelines to build (default: every one whose parts are given, or all with --reassemble_from).",
    )
    parser.add_argument(
        "--generator", help="ConvGenerator folder, train_generator.py (training tron-mnist, tron-mnist-text)."
    )
    parser.add_argument(
        "--classifier", help="ConvClassifier folder, train_classifier.py (training tron-mnist, tron-mnist-ddim)."
    )
    parser.add_argument("--clip", help="CLIP folder, train_clip.py (training tron-mnist-text).")
    parser.add_argument("--ddpm", help="DDPMPipeline folder, train_ddpm.py's pipeline/ (training tron-mnist-ddim).")
    parser.add_argument("--t2i", help="Text-to-image model folder, train_t2i.py's model/ (training tron-mnist-t2i).")
    parser.add_argument(
        "--from_embedded",
        action="store_true",
        help="Train from the frozen parts inside the embedded pipelines (tron-mnist's generator and CNN f, "
        "tron-mnist-text's CLIP) instead of --generator, --classifier and --clip.",
    )
    parser.add_argument("--work_dir", default="outputs/build")
    parser.add_argument("--output_root", default="src/tron_pipelines/pretrained")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train_overrides",
        default="",
        help="`tron train-translator` options that replace the recipe's for a trial build, e.g. "
        '"--condition_route mix --caption_ratio 0.5 --num_pairs 50000" (written to --output_root like a real build).',
    )
    parser.add_argument(
        "--reassemble_from",
        default=None,
        help="Skip training: take each pipeline's trained parts from this folder pattern ({name} = tron-mnist, "
        "tron-mnist-text, tron-mnist-ddim, tron-mnist-t2i), e.g. 'outputs/build/trained-{name}' or the embedded 'src/tron_pipelines/pretrained/{name}', "
        "and reassemble them with SAMPLING.",
    )
    args = parser.parse_args()
    folders = part_folders(args)
    given = [name for name, parts in PARTS.items() if all(folders[part] for part in parts)]
    names = args.pipelines or (list(SAMPLING) if args.reassemble_from else given)
    missing = sorted({f"--{part} (for {name})" for name in names for part in PARTS[name] if not folders[part]})
    if args.reassemble_from is None and (missing or not names):
        parser.error(
            f"training needs {', '.join(missing) or 'the parts of a pipeline'}"
            # --from_embedded supplies the GAN, the CNN and the CLIP, not the diffusion models.
            f"{'' if args.from_embedded else ' or --from_embedded'} (or --reassemble_from to skip training)."
        )
    torch.manual_seed(args.seed)
    work = Path(args.work_dir)
    for name in names:
        if args.reassemble_from:
            trained = TronPipeline.from_pretrained(args.reassemble_from.format(name=name))
            report = f"reassembled from {args.reassemble_from.format(name=name)}"
        else:
            base_dir = work / f"base-{name}"
            save_pretrained_atomically(base_pipeline(name, folders), base_dir)
            train_args = parse_train_args(
                [
                    "--pipeline",
                    str(base_dir),
                    "--pairs_dir",
                    str(work / f"pairs-{name}"),
                    "--output_dir",
                    str(work / f"trained-{name}"),
                    "--seed",
                    str(args.seed),
                    *TRAINING_ARGS,
                    *PAIR_ARGS[name],
                    *TRAINING_OVERRIDES.get(name, []),
                    *shlex.split(args.train_overrides),
                ]
            )
            result = train_translator(train_args)
            trained = TronPipeline.from_pretrained(result.output_dir)
            report = f"translator validation {result.metrics}"
        settings = dict(SAMPLING[name])
        pipe = TronPipeline(
            translator=trained.translator,
            generator=trained.generator,
            encoder=trained.encoder,
            scheduler=LangevinScheduler(**settings.pop("scheduler")),
            tokenizer=trained.tokenizer,
            image_processor=trained.image_processor,
            **settings,
        )
        output = Path(args.output_root) / name
        # The model cards are written by hand from the benchmark's measurements: a rebuild keeps them.
        card = (output / "README.md").read_text() if (output / "README.md").is_file() else None

        def write(staging: Path, pipe=pipe, card=card) -> None:
            pipe.save_pretrained(staging, safe_serialization=True)
            if card is not None:
                (staging / "README.md").write_text(card)

        folder = write_folder_atomically(output, write)
        print(f"{name}: {report}; saved to {folder}")


if __name__ == "__main__":
    main()
