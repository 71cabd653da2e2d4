"""Convert the official TR0N BigGAN checkpoint (BigGAN-PyTorch layout, 256/512 px) to a `BigGANGenerator` folder.

Example:
    python conversion_scripts/convert_biggan_pytorch_to_diffusers.py \
        --checkpoint_path weights/biggan-512.pth --dump_path checkpoints/biggan-512

``--checkpoint_path`` is a bare generator state dict (the official TR0N's
``tr0n/modules/BigGAN_utils/weights/biggan-{256,512}.pth``), read with ``torch.load(..., weights_only=True)``. Spectral
norm is folded into the weights. The result is written with `save_pretrained` (safetensors) into a temporary sibling
folder that is renamed to ``--dump_path`` once complete. A source that cannot be converted is one error line, the one
`tron build` gives for it.
"""

import argparse
from pathlib import Path

from tron_pipelines.commands.common import one_line_errors
from tron_pipelines.conversion.biggan import BIGGAN_PYTORCH_SN_EPS
from tron_pipelines.conversion.formats import convert_generator, generator_formats
from tron_pipelines.models.biggan import BIGGAN_ARCHITECTURES
from tron_pipelines.utils.files import save_pretrained_atomically


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_path", required=True, help="BigGAN-PyTorch generator state dict (.pth).")
    parser.add_argument(
        "--resolution",
        type=int,
        default=None,
        choices=sorted(BIGGAN_ARCHITECTURES),
        help="Output side (default: inferred from the number of residual blocks in the checkpoint).",
    )
    parser.add_argument("--dump_path", required=True, help="Output folder (replaced if it exists).")
    parser.add_argument(
        "--sn_eps",
        type=float,
        default=BIGGAN_PYTORCH_SN_EPS,
        help="Spectral-norm epsilon of the power iteration (1e-8 in the official TR0N).",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with one_line_errors(Path(__file__).name, (ValueError,)):
        _, model = convert_generator(
            args.checkpoint_path,
            generator_formats(["biggan-pytorch"]),
            "--checkpoint_path",
            resolution=args.resolution,
            sn_eps=args.sn_eps,
        )
    path = save_pretrained_atomically(model, args.dump_path)
    print(f"Saved BigGANGenerator ({model.resolution} px) to {path}")


if __name__ == "__main__":
    main()
