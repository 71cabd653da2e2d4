"""Per-batch cost of each stage of TR0N with StyleGAN (FFHQ 1024 px by default) + CLIP ViT-B/32, random weights.

Compute does not depend on the weights, so the full-size architectures with random weights give the real costs.
Prints seconds, FLOPs and peak memory for:

1. mapping: ``z -> w`` for a batch (the prior's cost per draw);
2. synthesis forward: ``G(w)`` for a batch, no gradient;
3. pairs: G forward + CLIP image forward per pair (translator training data);
4. translator training: one AdamW step at the method's batch 16 (d=512, K=10, w of 512);
5. sampling: one Langevin step per image: G forward+backward and CLIP forward+backward on N augmented copies.

    python benchmarks/bench_stylegan_stages.py                       # StyleGAN2 FFHQ-1024, CPU
    python benchmarks/bench_stylegan_stages.py --device cuda          # the same on a GPU
    python benchmarks/bench_stylegan_stages.py --architecture stylegan3-t --resolution 256
"""

import argparse
import json
import resource

import torch
from common import FlopCounter, clip_langevin_step, median_seconds, translator_train_step
from transformers import CLIPConfig, CLIPModel

from tron_pipelines.encoders import EncoderAdapter
from tron_pipelines.models import StyleGAN2Generator, StyleGAN3Generator, TranslatorModel
from tron_pipelines.models.stylegan2 import stylegan2_block_channels


# NVIDIA's released configurations: StyleGAN2 config F; StyleGAN3-T and -R (R doubles the channels, 1x1 convs and
# radial filters). Channel bases are those of the 1024 px FFHQ networks.
ARCHITECTURES = {
    "stylegan2": lambda resolution: StyleGAN2Generator(block_channels=stylegan2_block_channels(resolution)),
    "stylegan3-t": lambda resolution: StyleGAN3Generator(img_resolution=resolution),
    "stylegan3-r": lambda resolution: StyleGAN3Generator(
        img_resolution=resolution, conv_kernel=1, use_radial_filters=True, channel_base=65536, channel_max=1024
    ),
}


STAGES = ("mapping", "synthesis_forward", "pairs", "train", "langevin")


def stage(fn, device, repeats, **extra):
    """Median seconds of ``repeats`` calls (after a warm-up) and the FLOPs of one call (matrix products and
    convolutions, forward and backward: a lower bound on the work)."""
    seconds, _ = median_seconds(fn, device, repeats)
    with FlopCounter() as counter:
        fn()
    return {**extra, "seconds": seconds, "flops": counter.total}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="stylegan2", choices=sorted(ARCHITECTURES))
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mapping_batch", type=int, default=64)
    parser.add_argument("--pair_batch", type=int, default=4)
    parser.add_argument(
        "--num_augmentations",
        type=int,
        default=8,
        help="Copies per image in the sampling step (the method uses 50; cost is linear in it).",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--stages", nargs="+", default=list(STAGES), choices=STAGES, help="Stages to run (default: all)."
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    generator = ARCHITECTURES[args.architecture](args.resolution).to(device).eval().requires_grad_(False)
    clip = CLIPModel(CLIPConfig()).to(device).eval().requires_grad_(False)  # the default config is ViT-B/32
    adapter = EncoderAdapter(clip)
    w_dim = generator.config.w_dim
    translator = TranslatorModel(condition_dim=512, latent_dim=w_dim, num_components=10).to(device)
    results = {
        "architecture": args.architecture,
        "resolution": args.resolution,
        "num_ws": generator.num_ws,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "parameters_M": {
            "generator": sum(p.numel() for p in generator.parameters()) / 1e6,
            "clip": sum(p.numel() for p in clip.parameters()) / 1e6,
            "translator": sum(p.numel() for p in translator.parameters()) / 1e6,
        },
    }

    z = torch.randn(args.mapping_batch, generator.config.z_dim, device=device)
    latents = generator.sample_latents(args.pair_batch, device=device)
    conditions, targets = torch.randn(16, 512, device=device), torch.randn(16, w_dim, device=device)
    # name -> (work of one unit, repeats, needs autograd, what one unit is)
    stages = {
        "mapping": (lambda: generator.map_latents(z), 5 * args.repeats, False, {"batch": args.mapping_batch}),
        "synthesis_forward": (lambda: generator.generate(latents), args.repeats, False, {"batch": args.pair_batch}),
        "pairs": (
            lambda: adapter.encode_generated(generator.generate(latents)),
            args.repeats,
            False,
            {"batch": args.pair_batch},
        ),
        "train": (translator_train_step(translator, conditions, targets), 5 * args.repeats, True, {"batch": 16}),
        "langevin": (
            clip_langevin_step(generator, adapter, generator.sample_latents(1, device=device), args.num_augmentations),
            args.repeats,
            True,
            {"batch": 1, "num_augmentations": args.num_augmentations},
        ),
    }
    for name in args.stages:
        work, repeats, needs_grad, unit = stages[name]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.set_grad_enabled(needs_grad):
            results[name] = stage(work, device, repeats, **unit)
        if device.type == "cuda":
            results[name]["max_allocated_GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
    # The process's peak: run one stage per invocation (--stages) to see that stage's.
    results["peak_rss_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
