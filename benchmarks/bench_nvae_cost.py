"""Cost of TR0N with NVAE's FFHQ-256 decoder + a CLIP ViT-B/32, random weights: forward, one Langevin step, memory.

Compute does not depend on the weights, so the full-size architectures with random weights give the real costs. The
decoder is `NVAEGenerator()`'s defaults: NVAE's README FFHQ command line (5 latent scales, groups (16, 8, 4, 4, 4),
20 latents per group, 30 decoder channels, top latent 20 x 8 x 8 = 1280 values, 36 groups of which 28 sampled).
CLIP is `CLIPModel(CLIPConfig())`, whose defaults are ViT-B/32's sizes. Stages:

1. ``forward``: ``G(z)`` for one image, no gradient (what one synthetic pair costs on the generator side);
2. ``langevin_step``: the gradient work of one Langevin step for one image through `TronEnergy`, the pipeline's
   energy: G forward, DiffAugment to ``--num_augmentations`` copies, CLIP forward, and the backward pass of both to z;
3. ``pipeline`` (not run by default): a whole `TronPipeline` call for one image with ``--pipeline_steps`` Langevin
   steps (translator initialisation, the steps, the final render and its energy), from a condition embedding.

Prints a table of seconds (median of ``--repeats`` after ``--warmup`` calls), GFLOPs (convolutions and matrix products,
forward and backward: a lower bound on the work) and memory: the process's peak resident memory so far (it includes
the stages before: run one stage per process with ``--stages`` for its own), and on a GPU the peak allocated memory of
each stage.

    nice python benchmarks/bench_nvae_cost.py --warmup 0 --repeats 1          # CPU (minutes)
    python benchmarks/bench_nvae_cost.py --device cuda --stages forward langevin_step pipeline   # the same on a GPU
    python benchmarks/bench_nvae_cost.py --device cuda --dtype bfloat16 --num_augmentations 50   # the method's 50 copies
"""

import argparse
import resource

import torch
from common import FlopCounter, format_table, median_seconds
from transformers import CLIPConfig, CLIPModel

from tron_pipelines import TranslatorModel
from tron_pipelines.conversion.tr0n import assemble_pipeline
from tron_pipelines.encoders import EncoderAdapter
from tron_pipelines.energies import ConditionTerm, TronEnergy
from tron_pipelines.models import NVAEGenerator


STAGES = ("forward", "langevin_step", "pipeline")


def measure(fn, device: torch.device, repeats: int, warmup: int, needs_grad: bool) -> dict:
    """Median seconds of ``fn`` and the FLOPs of one call. On a CPU the FLOPs are counted during the timed calls (the
    counter's per-operation Python overhead is milliseconds against seconds of work); on a GPU in a call of their own,
    since that overhead would show in the time there."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    counter = FlopCounter()

    def counted():
        counter.total = 0
        with counter:
            fn()

    with torch.set_grad_enabled(needs_grad):
        seconds, _ = median_seconds(fn if device.type == "cuda" else counted, device, repeats, warmup)
        if device.type == "cuda":
            counted()
    row = {"seconds": seconds, "gflops": counter.total / 1e9}
    if device.type == "cuda":
        row["gpu_peak_GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
    row["rss_peak_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="autocast dtype of G, f.")
    parser.add_argument("--num_augmentations", type=int, default=8, help="Copies per image (the method uses 50).")
    parser.add_argument("--pipeline_steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1, help="Untimed calls first (0 is fine on a CPU).")
    parser.add_argument(
        "--stages",
        nargs="+",
        default=["forward", "langevin_step"],
        choices=STAGES,
        help="Default: forward, langevin_step.",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    autocast_dtype = torch.bfloat16 if args.dtype == "bfloat16" else None
    torch.manual_seed(0)

    generator = NVAEGenerator().to(device).eval().requires_grad_(False)
    clip = CLIPModel(CLIPConfig()).to(device).eval().requires_grad_(False)
    adapter = EncoderAdapter(clip)
    translator = TranslatorModel(condition_dim=512, latent_dim=generator.latent_dim, num_components=10).to(device)
    latents = generator.sample_latents(1, device=device)
    condition = torch.randn(1, adapter.condition_dim, device=device)
    energy = TronEnergy(
        generator, adapter, "cosine", [ConditionTerm(condition)], args.num_augmentations, autocast_dtype=autocast_dtype
    )

    def langevin_step():
        leaf = latents.detach().requires_grad_(True)
        torch.autograd.grad(energy(leaf).sum(), leaf)

    pipe = assemble_pipeline(translator.eval(), generator, clip, preset="nvae")
    pipe.set_progress_bar_config(disable=True)

    def pipeline():
        pipe(
            condition_embeds=condition,
            num_inference_steps=args.pipeline_steps,
            num_augmentations=args.num_augmentations,
            autocast_dtype=autocast_dtype,
            output_type="pt",
        )

    stages = {
        "forward": (lambda: generator.generate(latents), False),
        "langevin_step": (langevin_step, True),
        "pipeline": (pipeline, False),  # the pipeline enables autograd around the energy itself
    }
    rows = []
    for name in args.stages:
        fn, needs_grad = stages[name]
        if name == "forward" and autocast_dtype is not None:
            fn = torch.autocast(device.type, dtype=autocast_dtype)(fn)
        rows.append({"stage": name, **measure(fn, device, args.repeats, args.warmup, needs_grad)})

    print(
        f"NVAE FFHQ-256 decoder ({sum(p.numel() for p in generator.parameters()) / 1e6:.1f} M parameters, "
        f"{generator.resolution} px) + CLIP ViT-B/32 "
        f"({sum(p.numel() for p in clip.parameters()) / 1e6:.1f} M); device {device}, {args.dtype}, "
        f"{torch.get_num_threads()} CPU threads, {args.num_augmentations} augmentations"
        + (f", pipeline with {args.pipeline_steps} steps" if "pipeline" in args.stages else "")
    )
    columns = [
        ("stage", "stage", ""),
        ("seconds", "seconds", ".3f"),
        ("gflops", "GFLOPs", ".1f"),
        ("rss_peak_GiB", "process peak RSS (GiB)", ".2f"),
    ]
    if device.type == "cuda":
        columns.append(("gpu_peak_GiB", "GPU peak allocated (GiB)", ".2f"))
    print(format_table(rows, columns))


if __name__ == "__main__":
    main()
