"""Convert a StyleGAN2 / StyleGAN3 checkpoint to a `StyleGAN2Generator` / `StyleGAN3Generator` folder.

Examples:
    # NVIDIA network pickle (StyleGAN2-ADA-PyTorch or StyleGAN3; T and R)
    python conversion_scripts/convert_stylegan_to_diffusers.py \
        --checkpoint_path stylegan2-ffhq-1024x1024.pkl --dump_path checkpoints/stylegan2-ffhq-1024
    # rosinality stylegan2-pytorch checkpoint (g_ema + latent_avg)
    python conversion_scripts/convert_stylegan_to_diffusers.py \
        --checkpoint_path 550000.pt --dump_path checkpoints/stylegan2-ffhq-256

One script for both formats: it tells them apart by the file itself, as `tron build` does (`conversion.formats`: a
``torch.save`` archive with ``g_ema`` is rosinality's, a pickle is NVIDIA's), so users need not know which kind of
file they have, and the TR0N options are the same. Network pickles are read by an allow-list unpickler that never
runs code from the file (it refuses, naming the global, anything a network pickle does not need); rosinality
checkpoints by ``torch.load(..., weights_only=True)``. Every key and shape is checked (all problems listed at once,
exit status 1); any other source that cannot be converted (missing, empty, corrupt, of another format) is one error
line, the one `tron build` gives for it. The folder is written with `save_pretrained` (safetensors) into a temporary
sibling that is renamed to ``--dump_path`` once complete.
"""

import argparse
from pathlib import Path

from tron_pipelines.commands.common import one_line_errors
from tron_pipelines.conversion.formats import detect_generator_format, generator_formats
from tron_pipelines.conversion.stylegan import ROSINALITY_BLUR_KERNEL, ROSINALITY_LR_MLP
from tron_pipelines.models.stylegan2 import LATENT_SPACES, NOISE_MODES
from tron_pipelines.utils.files import save_pretrained_atomically


STYLEGAN_FORMATS = ("nvlabs", "rosinality")


def comma_separated(cast):
    def parse(text: str):
        try:
            return tuple(cast(item) for item in text.split(","))
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from error

    return parse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint_path", required=True, help="NVIDIA network pickle (.pkl) or rosinality checkpoint (.pt)."
    )
    parser.add_argument("--dump_path", required=True, help="Output folder (replaced if it exists).")
    parser.add_argument(
        "--format",
        choices=["auto", *STYLEGAN_FORMATS],
        default="auto",
        help="Which kind of file --checkpoint_path is (default: recognised from the file).",
    )
    tron = parser.add_argument_group("TR0N settings of the converted generator")
    tron.add_argument(
        "--truncation_psi", type=float, default=1.0, help="Truncation of the prior (1 = none, the method's)."
    )
    tron.add_argument(
        "--latent_space", choices=LATENT_SPACES, default="w", help="Optimise one w (the method) or all of w+."
    )
    tron.add_argument(
        "--noise_mode", choices=NOISE_MODES, default=None, help="StyleGAN2 noise inputs (default: const)."
    )
    nvlabs = parser.add_argument_group("NVIDIA network pickles")
    nvlabs.add_argument("--network", default="G_ema", help="Which network of the pickle (G_ema, the method's; or G).")
    rosinality = parser.add_argument_group("rosinality checkpoints (settings the file does not store)")
    rosinality.add_argument(
        "--channels",
        type=comma_separated(int),
        default=None,
        help="Channels per block from 4 px up, e.g. 512,512,512,512,512,256,128,64,32 (default: read from the shapes).",
    )
    rosinality.add_argument("--lr_mlp", type=float, default=ROSINALITY_LR_MLP, help="The generator's lr_mlp.")
    rosinality.add_argument(
        "--blur_kernel",
        type=comma_separated(float),
        default=ROSINALITY_BLUR_KERNEL,
        help="The generator's blur_kernel.",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tron_settings = {"truncation_psi": args.truncation_psi, "latent_space": args.latent_space}
    if args.noise_mode is not None:
        tron_settings["noise_mode"] = args.noise_mode
    with one_line_errors(Path(__file__).name, (ValueError,)):
        formats = generator_formats(STYLEGAN_FORMATS if args.format == "auto" else [args.format])
        source_format = detect_generator_format(args.checkpoint_path, formats, "--checkpoint_path")
        if source_format.name == "rosinality":
            settings = {
                "block_channels": args.channels,
                "mapping_lr_multiplier": args.lr_mlp,
                "blur_kernel": args.blur_kernel,
            }
        else:
            settings = {"network_key": args.network}
        model = source_format.convert(args.checkpoint_path, "--checkpoint_path", **settings, **tron_settings)
    path = save_pretrained_atomically(model, args.dump_path)
    print(f"Saved {type(model).__name__} ({model.resolution} px, {source_format.name} source) to {path}")


if __name__ == "__main__":
    main()
