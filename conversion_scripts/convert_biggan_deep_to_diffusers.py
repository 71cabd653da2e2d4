"""Convert a pytorch-pretrained-biggan BigGAN-deep folder (128/256/512 px) to a `BigGANDeepGenerator` folder.

Example:
    python conversion_scripts/convert_biggan_deep_to_diffusers.py \
        --checkpoint_path biggan-deep-256 --dump_path checkpoints/biggan-deep-256

``--checkpoint_path`` holds the package's ``config.json`` and ``pytorch_model.bin``. The result is written with
`save_pretrained` (safetensors) into a temporary sibling folder that is renamed to ``--dump_path`` once complete. A
source that cannot be converted is one error line, the one `tron build` gives for it.
"""

import argparse
from pathlib import Path

from tron_pipelines.commands.common import one_line_errors
from tron_pipelines.conversion.formats import convert_generator, generator_formats
from tron_pipelines.utils.files import save_pretrained_atomically


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_path", required=True, help="Folder with config.json and pytorch_model.bin.")
    parser.add_argument("--dump_path", required=True, help="Output folder (replaced if it exists).")
    parser.add_argument(
        "--default_truncation",
        type=float,
        default=1.0,
        help="Truncation in (0, 1] that `generate` (the TR0N interface) runs at; also selects the batch-norm "
        "statistics. Prefer multiples of 0.02, where the statistics are stored exactly.",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with one_line_errors(Path(__file__).name, (ValueError,)):
        _, model = convert_generator(
            args.checkpoint_path,
            generator_formats(["pytorch-pretrained-biggan"]),
            "--checkpoint_path",
            default_truncation=args.default_truncation,
        )
    path = save_pretrained_atomically(model, args.dump_path)
    print(f"Saved BigGANDeepGenerator ({model.resolution} px) to {path}")


if __name__ == "__main__":
    main()
