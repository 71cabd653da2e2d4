"""Convert an official TR0N translator checkpoint into a complete `TronPipeline` folder.

Example (the method's BigGAN-512 + CLIP ViT-B/32 translator):

    python conversion_scripts/convert_biggan_pytorch_to_diffusers.py --checkpoint_path biggan-512.pth --resolution 512 --dump_path biggan-512
    python conversion_scripts/convert_tr0n_original_to_diffusers.py \
        --checkpoint_path outputs/tr0n-biggan/model_best.pth --generator biggan-512 \
        --encoder openai/clip-vit-base-patch32 --latent_threshold 2.0 --preset biggan --dump_path tron-biggan

Sources that cannot be read, or parts that do not fit together, are one error line (for the generator and the
encoder, the one `tron build` gives).
"""

import argparse
from pathlib import Path

from tron_pipelines.commands.common import one_line_errors
from tron_pipelines.conversion.formats import convert_generator, reading
from tron_pipelines.conversion.tr0n import (
    ENCODER_SOURCES,
    SAMPLING_PRESETS,
    assemble_pipeline,
    load_encoder,
    load_tr0n_translator,
)
from tron_pipelines.utils.files import save_pretrained_atomically


TRANSLATOR_CHECKPOINT = "official TR0N translator checkpoint: a .pth with translator_state_dict"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint_path", required=True, help="Official checkpoint (model_best.pth or checkpoint-epoch{N}.pth)."
    )
    parser.add_argument(
        "--generator",
        required=True,
        help="Generator folder (e.g. a converted BigGANGenerator) or checkpoint (any format tron build reads).",
    )
    parser.add_argument(
        "--encoder", required=True, help="CLIP Hub id or folder (with tokenizer and image processor), or a pipeline."
    )
    parser.add_argument(
        "--latent_threshold",
        type=float,
        default=None,
        help="tau of tau*tanh on the means: 2.0 for BigGAN translators, omit for StyleGAN/NVAE.",
    )
    parser.add_argument(
        "--preset",
        default="biggan",
        choices=sorted(SAMPLING_PRESETS),
        help="Sampling settings of the method's scripts.",
    )
    parser.add_argument("--dump_path", required=True, help="Output pipeline folder (written atomically).")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with one_line_errors(Path(__file__).name, (ValueError,)):
        with reading(args.checkpoint_path, TRANSLATOR_CHECKPOINT, "--checkpoint_path", must_exist=True):
            translator = load_tr0n_translator(args.checkpoint_path, args.latent_threshold)
        _, generator = convert_generator(args.generator, option="--generator")
        with reading(args.encoder, ENCODER_SOURCES, "--encoder", action="loaded"):
            encoder, tokenizer, image_processor = load_encoder(args.encoder)
        pipe = assemble_pipeline(translator, generator, encoder, tokenizer, image_processor, args.preset)
    print(f"Saved the pipeline to {save_pretrained_atomically(pipe, args.dump_path)}")


if __name__ == "__main__":
    main()
