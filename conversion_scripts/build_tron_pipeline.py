"""Assemble a `TronPipeline` from a generator (a folder or any checkpoint `tron build` reads), an encoder (Hub id or
folder) and an already trained translator folder, write it with a model card, and optionally push it to the Hub.

    python conversion_scripts/build_tron_pipeline.py --generator biggan-deep-256 --encoder openai/clip-vit-base-patch32 \
        --translator outputs/translator/translator --preset biggan --dump_path tron-biggan \
        --generator_id deepmind/biggan-deep-256 --generator_license apache-2.0 --encoder_license mit \
        --push_to_hub --hub_model_id org/tron-biggan

To train the translator too, use `tron build`, which runs the same assembly, card and push as its stages. Sources
that cannot be read, or parts that do not fit together, are one error line (for the generator and the encoder, the
one `tron build` gives).
"""

import argparse
from pathlib import Path

from tron_pipelines import TranslatorModel
from tron_pipelines.commands.build_stages import pipeline_card, push_pipeline, save_documented_pipeline
from tron_pipelines.commands.common import one_line_errors
from tron_pipelines.conversion.formats import convert_generator, reading
from tron_pipelines.conversion.tr0n import ENCODER_SOURCES, SAMPLING_PRESETS, assemble_pipeline, load_encoder
from tron_pipelines.training.arguments import add_hub_arguments, add_model_card_arguments


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--generator", required=True, help="Generator folder or checkpoint (any format tron build reads)."
    )
    parser.add_argument(
        "--encoder", required=True, help="CLIP Hub id or folder, a classifier folder, or a pipeline (folder or name)."
    )
    parser.add_argument(
        "--translator", required=True, help="TranslatorModel folder (e.g. from `tron train-translator`)."
    )
    parser.add_argument("--preset", default="biggan", choices=sorted(SAMPLING_PRESETS))
    parser.add_argument("--dump_path", required=True, help="Output pipeline folder (written atomically).")
    parser.add_argument(
        "--translator_notes",
        default="Trained with `tron train-translator` on synthetic pairs (z ~ p(z), c = f(G(z))).",
    )
    add_model_card_arguments(parser)
    add_hub_arguments(parser)
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. org/tron-biggan).")
    return args


def main(argv=None):
    args = parse_args(argv)
    with one_line_errors(Path(__file__).name, (ValueError,)):
        _, generator = convert_generator(args.generator, option="--generator")
        with reading(args.encoder, ENCODER_SOURCES, "--encoder", action="loaded"):
            encoder, tokenizer, image_processor = load_encoder(args.encoder)
        with reading(args.translator, "TranslatorModel folder", "--translator", action="loaded", must_exist=True):
            translator = TranslatorModel.from_pretrained(args.translator).eval()
        pipe = assemble_pipeline(translator, generator, encoder, tokenizer, image_processor, args.preset)
    folder = save_documented_pipeline(pipe, args.dump_path, pipeline_card(pipe, args, args.translator_notes))
    print(f"Saved the pipeline and its model card to {folder}")
    if args.push_to_hub:
        print(f"Pushed to {push_pipeline(folder, args.hub_model_id, args.hub_token, args.private)}")


if __name__ == "__main__":
    main()
