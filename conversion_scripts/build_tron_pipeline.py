"""Assemble a `TronPipeline` from a generator folder, an encoder (Hub id or folder) and a translator folder, and
optionally push it to the Hub with a model card.

    python conversion_scripts/build_tron_pipeline.py --generator biggan-deep-256 --encoder openai/clip-vit-base-patch32 \
        --translator outputs/translator/translator --preset biggan --dump_path tron-biggan \
        --generator_id deepmind/biggan-deep-256 --generator_license apache-2.0 --encoder_license mit \
        --push_to_hub --hub_model_id org/tron-biggan
"""

import argparse
import os

from huggingface_hub import create_repo, upload_folder

from tron_pipelines import TranslatorModel
from tron_pipelines.conversion.checkpoints import save_pretrained_atomically
from tron_pipelines.conversion.tr0n import SAMPLING_PRESETS, assemble_pipeline, load_encoder, load_generator, pipeline_model_card


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", required=True, help="Generator folder (any tron_pipelines generator).")
    parser.add_argument("--encoder", required=True, help="CLIP Hub id or folder, or a classifier folder.")
    parser.add_argument("--translator", required=True, help="TranslatorModel folder (e.g. from `tron train-translator`).")
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
    return args


def main(argv=None):
    args = parse_args(argv)
    encoder, tokenizer, image_processor = load_encoder(args.encoder)
    translator = TranslatorModel.from_pretrained(args.translator).eval()
    pipe = assemble_pipeline(translator, load_generator(args.generator), encoder, tokenizer, image_processor, args.preset)
    folder = save_pretrained_atomically(pipe, args.dump_path)
    card = pipeline_model_card(
        pipe,
        args.hub_model_id,
        base_models={"generator": args.generator_id, "encoder": None if os.path.isdir(args.encoder) else args.encoder},
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
