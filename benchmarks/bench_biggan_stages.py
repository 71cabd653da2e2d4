"""Per-batch cost of each stage of building and using tron-biggan (BigGAN-deep + CLIP ViT-B/32), with random weights.

Compute does not depend on the weights, so the full-size architectures with random weights give the real costs.
Prints seconds, FLOPs and peak memory per batch for:

1. pair generation: G forward + CLIP image forward per pair;
2. translator training: one AdamW step at the method's batch 16 (d=512, K=10, latent 128 + class embedding 128);
3. sampling: one Langevin step per image: G forward+backward and CLIP forward+backward on N augmented copies.

    python benchmarks/bench_biggan_stages.py --resolution 256 --device cpu
"""

import argparse
import json
import time

import psutil
import torch
from common import clip_langevin_step, translator_train_step
from pytorch_pretrained_biggan import BigGANConfig
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPConfig, CLIPModel

from tron_pipelines import BigGANDeepGenerator, EncoderAdapter, TranslatorModel
from tron_pipelines.conversion.biggan import biggan_deep_config_from_pytorch_pretrained


# Block lists of the released biggan-deep-{128,256,512} config.json files: (upsample, in, out) channel multipliers.
_SHARED_LAYERS = [(False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8)]
DEEP_LAYERS = {
    128: _SHARED_LAYERS + [(False, 8, 8), (True, 8, 4), (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1)],
    256: _SHARED_LAYERS
    + [
        (False, 8, 8),
        (True, 8, 8),
        (False, 8, 8),
        (True, 8, 4),
        (False, 4, 4),
        (True, 4, 2),
        (False, 2, 2),
        (True, 2, 1),
    ],
    512: _SHARED_LAYERS
    + [
        (False, 8, 8),
        (True, 8, 8),
        (False, 8, 8),
        (True, 8, 4),
        (False, 4, 4),
        (True, 4, 2),
        (False, 2, 2),
        (True, 2, 1),
        (False, 1, 1),
        (True, 1, 1),
    ],
}


def timed(fn, device, repeats):
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def flops(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=256, choices=sorted(DEEP_LAYERS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pair_batch", type=int, default=4)
    parser.add_argument(
        "--num_augmentations",
        type=int,
        default=8,
        help="Copies per image in the sampling step (the method uses 50; cost is linear in it).",
    )
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    package_config = BigGANConfig(output_dim=args.resolution, layers=DEEP_LAYERS[args.resolution]).__dict__
    generator = BigGANDeepGenerator(**biggan_deep_config_from_pytorch_pretrained(package_config)).to(device).eval()
    clip = CLIPModel(CLIPConfig()).to(device).eval()  # the default config is ViT-B/32 (512-d projections)
    adapter = EncoderAdapter(clip)
    translator = TranslatorModel(
        condition_dim=512, latent_dim=128, num_components=10, latent_threshold=2.0, auxiliary_latent_dims={"y": 128}
    ).to(device)
    results = {"resolution": args.resolution, "device": str(device), "threads": torch.get_num_threads()}
    results["parameters_M"] = {
        "generator": sum(p.numel() for p in generator.parameters()) / 1e6,
        "clip": sum(p.numel() for p in clip.parameters()) / 1e6,
        "translator": sum(p.numel() for p in translator.parameters()) / 1e6,
    }

    latents = generator.sample_latents(args.pair_batch, device=device)

    @torch.no_grad()
    def make_pairs():
        return adapter.encode_generated(generator.generate(latents))

    results["pairs"] = {
        "batch": args.pair_batch,
        "seconds_per_batch": timed(make_pairs, device, args.repeats),
        "flops_per_batch": flops(make_pairs),
    }

    conditions, targets, classes = (
        torch.randn(16, 512, device=device),
        torch.randn(16, 128, device=device).clamp(-2, 2),
        torch.randn(16, 128, device=device),
    )
    train_step = translator_train_step(translator, conditions, targets, {"y": classes})

    results["train"] = {
        "batch": 16,
        "seconds_per_step": timed(train_step, device, 5 * args.repeats),
        "flops_per_step": flops(train_step),
    }

    langevin_step = clip_langevin_step(
        generator, adapter, generator.sample_latents(1, device=device), args.num_augmentations
    )

    results["langevin"] = {
        "batch": 1,
        "num_augmentations": args.num_augmentations,
        "seconds_per_step": timed(langevin_step, device, args.repeats),
        "flops_per_step": flops(langevin_step),
    }
    results["peak_rss_GiB"] = psutil.Process().memory_info().rss / 2**30
    if device.type == "cuda":
        results["max_allocated_GiB"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
