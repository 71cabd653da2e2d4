"""Assemble a `TronPipeline` from a generator (a generator folder, or any diffusers DDPM / DDIM / LDM / consistency-model
pipeline), an encoder (Hub id or folder) and a translator folder, and optionally push it to the Hub with a model card.

    python conversion_scripts/build_tron_pipeline.py --generator biggan-deep-256 --encoder openai/clip-vit-base-patch32 \
        --translator outputs/translator/translator --preset biggan --dump_path tron-biggan \
        --generator_id deepmind/biggan-deep-256 --generator_license apache-2.0 --encoder_license mit \
        --push_to_hub --hub_model_id org/tron-biggan

Without ``--translator`` the pipeline holds a placeholder translator (one component, untrained) and is the base that
``tron train-translator --pipeline <dump_path>`` trains a translator for:

    python conversion_scripts/build_tron_pipeline.py --generator diffusers:google/ddpm-cifar10-32 --num_sampler_steps 10 \
        --encoder openai/clip-vit-base-patch32 --preset diffusion --dump_path tron-ddpm-cifar10-base
"""

import argparse
import os

from huggingface_hub import create_repo, upload_folder

from tron_pipelines import TranslatorModel
from tron_pipelines.conversion.checkpoints import save_pretrained_atomically
from tron_pipelines.conversion.tr0n import (
    DIFFUSERS_PREFIX,
    SAMPLING_PRESETS,
    assemble_pipeline,
    load_encoder,
    load_generator,
    pipeline_model_card,
    placeholder_translator,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", required=True,
                        help="Generator folder (any tron_pipelines generator), or diffusers:<Hub id or folder> of a DDPM, DDIM, "
                             "LDM or consistency-model pipeline or an AutoencoderKL / VQModel.")
    parser.add_argument("--num_sampler_steps", type=int, default=None,
                        help="diffusers: generators only: sampler steps of G (default 10 for diffusion, 1 for consistency models).")
    parser.add_argument("--encoder", required=True, help="CLIP Hub id or folder, or a classifier folder.")
    parser.add_argument("--translator", default=None,
                        help="TranslatorModel folder (e.g. from `tron train-translator`); omitted: an untrained placeholder, "
                             "for `tron train-translator --pipeline <dump_path>`.")
    parser.add_argument("--preset", default="biggan", choices=sorted(SAMPLING_PRESETS))
    parser.add_argument("--dump_path", required=True, help="Output pipeline folder (written atomically).")
    parser.add_argument("--generator_id", default=None, help="Where the generator weights come from (model card).")
    parser.add_argument("--generator_license", default="see the generator's source")
    parser.add_argument("--encoder_license", default="see the encoder's source")
    parser.add_argument("--translator_notes", default="Trained with `tron train-translator` on synthetic pairs (z ~ p(z), c = f(G(z))).")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", default=None)
    parser.add_argument("--hub_token", default=None)
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. org/tron-biggan).")
    if args.num_sampler_steps is not None and not args.generator.startswith(DIFFUSERS_PREFIX):
        parser.error(f"--num_sampler_steps applies to {DIFFUSERS_PREFIX}<pipeline> generators only.")
    if args.num_sampler_steps is not None and args.num_sampler_steps < 1:
        parser.error(f"--num_sampler_steps must be a positive integer, got {args.num_sampler_steps}.")
    if args.push_to_hub and args.translator is None:
        parser.error("--push_to_hub needs --translator: a pipeline with an untrained translator is a training base only.")
    return args


def diffusers_repo_id(generator: str) -> str | None:
    """The Hub id of a ``diffusers:<id>`` generator (``None`` for folders and other generators)."""
    source = generator[len(DIFFUSERS_PREFIX) :] if generator.startswith(DIFFUSERS_PREFIX) else None
    return source if source is not None and not os.path.isdir(source) else None


def main(argv=None):
    args = parse_args(argv)
    encoder, tokenizer, image_processor = load_encoder(args.encoder)
    sampler_steps = {} if args.num_sampler_steps is None else {"num_sampler_steps": args.num_sampler_steps}
    generator = load_generator(args.generator, **sampler_steps)
    if args.translator is None:
        translator = placeholder_translator(generator, encoder)
        args.translator_notes = "Untrained placeholder: train one with `tron train-translator --pipeline <this folder>`."
    else:
        translator = TranslatorModel.from_pretrained(args.translator).eval()
    pipe = assemble_pipeline(translator, generator, encoder, tokenizer, image_processor, args.preset)
    folder = save_pretrained_atomically(pipe, args.dump_path)
    card = pipeline_model_card(
        pipe,
        args.hub_model_id,
        base_models={"generator": args.generator_id or diffusers_repo_id(args.generator), "encoder": None if os.path.isdir(args.encoder) else args.encoder},
        licenses={"generator": args.generator_license, "encoder": args.encoder_license},
        translator_notes=args.translator_notes,
    )
    card.save(folder / "README.md")
    print(f"Saved the pipeline and its model card to {folder}")
    if args.push_to_hub:
        repo_id = create_repo(args.hub_model_id, exist_ok=True, private=args.private, token=args.hub_token).repo_id
        upload_folder(repo_id=repo_id, folder_path=folder, token=args.hub_token, commit_message="Upload TR0N pipeline")
        print(f"Pushed to https://huggingface.co/{repo_id}")


if __name__ == "__main__":
    main()
