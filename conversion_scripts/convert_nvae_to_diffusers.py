"""Convert an NVAE training checkpoint (NVlabs/NVAE ``checkpoint.pt``) to an `NVAEGenerator` folder.

Examples:
    # The FFHQ-256 checkpoint the method uses, at its sampling temperature (0.6), noise drawn afresh on every call
    python conversion_scripts/convert_nvae_to_diffusers.py \
        --checkpoint_path checkpoints/ffhq/checkpoint.pt --dump_path checkpoints/nvae-ffhq-256
    # The same decoder as a fixed map of the top latent (the sampled groups' noise drawn once from seed 0)
    python conversion_scripts/convert_nvae_to_diffusers.py \
        --checkpoint_path checkpoints/ffhq/checkpoint.pt --dump_path checkpoints/nvae-ffhq-256-fixed --noise_seed 0

The checkpoint is read with ``torch.load(..., weights_only=True)`` allowing ``argparse.Namespace`` (the training
options stored beside the weights) and nothing else: a file whose pickle asks for any other global is refused, naming
it, before anything from it runs. The architecture is read from the stored ``args`` and ``arch_instance``; only the
decoder is converted, every key and shape checked (all problems listed at once, exit status 1), and the folder is
written with `save_pretrained` (safetensors) into a temporary sibling that is renamed to ``--dump_path`` once complete.
"""

import argparse
import sys

from tron_pipelines.conversion.network_pickle import UnsafePickleError
from tron_pipelines.conversion.nvae import load_nvae_checkpoint
from tron_pipelines.utils.files import save_pretrained_atomically


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_path", required=True, help="NVAE checkpoint.pt (state_dict + args).")
    parser.add_argument("--dump_path", required=True, help="Output folder (replaced if it exists).")
    tron = parser.add_argument_group("TR0N settings of the converted generator")
    tron.add_argument(
        "--temperature", type=float, default=0.6, help="Sampling temperature (0.6 in the method's NVAE runs)."
    )
    tron.add_argument(
        "--prior_mean_groups",
        type=int,
        default=7,
        help="Groups after the top that take their prior mean (the method: 7; 0 samples every group, as NVAE does).",
    )
    tron.add_argument(
        "--noise_seed",
        type=int,
        default=None,
        help="Draw the sampled groups' noise once from this seed (G a fixed map of z); default: fresh on every call.",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        model = load_nvae_checkpoint(
            args.checkpoint_path,
            temperature=args.temperature,
            prior_mean_groups=args.prior_mean_groups,
            noise_seed=args.noise_seed,
        )
    except (ValueError, UnsafePickleError) as error:  # mismatched keys, unsupported settings, a refused global
        sys.exit(f"error: {error}")
    path = save_pretrained_atomically(model, args.dump_path)
    mode = "fresh noise" if args.noise_seed is None else f"noise seed {args.noise_seed}"
    print(
        f"Saved NVAEGenerator ({model.resolution} px, top latent {model.top_latent_shape} = {model.latent_dim} values, "
        f"{model.num_groups} groups, temperature {args.temperature}, {mode}) to {path}"
    )


if __name__ == "__main__":
    main()
