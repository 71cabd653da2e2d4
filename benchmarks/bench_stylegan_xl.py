"""Cost of StyleGAN-XL in TR0N at the ImageNet architecture's real size (256 px by default), random weights.

Compute and memory do not depend on the weights, so `StyleGANXLGenerator` built from the published ImageNet
hyperparameters (16 px stem of 10 layers, one stage of 7 head layers per doubling; 31 layers and 32 ws at 256 px)
with random weights, and a random CLIP ViT-B/32 (`CLIPConfig()`), cost what the released ``imagenet256.pkl`` and
OpenAI's CLIP cost. Each stage runs in a fresh process, so its peak memory is its own:

1. ``forward``: ``G.generate(w)`` for one image, no gradient (the translator's proposal rendered; a synthetic pair's G
   part);
2. ``langevin``: one Langevin step of one image through the real `TronPipeline` (`TronEnergy`: G, DiffAugment to
   ``--num_augmentations`` copies, CLIP image features, cosine energy, backward to ``w``, scheduler step), measured as
   ``pipe(steps=1) - pipe(steps=0)`` with the same latents and condition (the pipeline's preset: "stylegan");
3. ``langevin_checkpointed``: the same with ``pipe.generator.enable_gradient_checkpointing()`` (each synthesis layer
   recomputed in the backward pass instead of storing its upsampled intermediates).

FLOPs (matrix products and convolutions, a lower bound on the work) are counted on the meta device, so they cost
nothing to get and do not depend on the machine.

    nice python benchmarks/bench_stylegan_xl.py --warmup 0             # ImageNet-256, CPU, one thread
    nice python benchmarks/bench_stylegan_xl.py --warmup 0 --stages forward langevin_checkpointed  # < 32 GiB RAM
    python benchmarks/bench_stylegan_xl.py --device cuda --threads 16   # the same on a GPU (peak = CUDA max allocated)
    python benchmarks/bench_stylegan_xl.py --resolution 512             # TR0N's imagenet512.pkl (37 ws)
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from common import FlopCounter, clip_langevin_step, format_table, median_seconds
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from tron_pipelines.conversion.tr0n import assemble_pipeline
from tron_pipelines.encoders import EncoderAdapter
from tron_pipelines.models import StyleGANXLGenerator, TranslatorModel
from tron_pipelines.models.stylegan_xl import imagenet_superres_stages, stylegan_xl_synthesis_layers


STAGES = ("forward", "langevin", "langevin_checkpointed")


def build_models(resolution: int, device: torch.device):
    torch.manual_seed(0)
    layers = stylegan_xl_synthesis_layers(superres_stages=imagenet_superres_stages(resolution))
    generator = StyleGANXLGenerator(synthesis_layers=layers).to(device).eval().requires_grad_(False)
    clip = CLIPModel(CLIPConfig()).to(device).eval().requires_grad_(False)  # the default config is ViT-B/32
    return generator, clip


def count_flops(resolution: int, num_augmentations: int) -> dict:
    """FLOPs of one forward and of one Langevin step's gradient work, on the meta device (nothing is computed)."""
    with torch.device("meta"):
        generator, clip = build_models(resolution, torch.device("meta"))
        adapter = EncoderAdapter(clip)
        latents = torch.zeros(1, generator.latent_dim)
        with FlopCounter() as forward, torch.no_grad():
            generator.generate(latents)
        with FlopCounter() as langevin:
            clip_langevin_step(generator, adapter, latents, num_augmentations)()
        generator.enable_gradient_checkpointing()
        with FlopCounter() as checkpointed:
            clip_langevin_step(generator, adapter, latents, num_augmentations)()
    return {"forward": forward.total, "langevin": langevin.total, "langevin_checkpointed": checkpointed.total}


def timed_stage(fn, device: torch.device, args) -> tuple[float, float]:
    """Median wall seconds of ``fn`` (`median_seconds`) and its mean process CPU seconds per call: on a shared CPU the
    wall clock includes other jobs' time, the CPU time is what an idle core takes."""
    cpu_start = time.process_time()
    seconds, _ = median_seconds(fn, device, args.repeats, args.warmup)
    return seconds, (time.process_time() - cpu_start) / (args.repeats + args.warmup)


def run_stage(args) -> dict:
    device = torch.device(args.device)
    generator, clip = build_models(args.resolution, device)
    generator_seed = torch.Generator(device).manual_seed(0)
    latents = generator.sample_latents(1, generator=generator_seed, device=device)
    if args.stage == "forward":
        with torch.no_grad():
            seconds, cpu_seconds = timed_stage(lambda: generator.generate(latents), device, args)
    else:
        translator = TranslatorModel(condition_dim=512, latent_dim=generator.latent_dim, num_components=10)
        pipe = assemble_pipeline(
            translator.to(device).eval(), generator, clip, image_processor=CLIPImageProcessor(), preset="stylegan"
        )
        pipe.set_progress_bar_config(disable=True)
        if args.stage == "langevin_checkpointed":
            pipe.generator.enable_gradient_checkpointing()
        condition = torch.randn(1, 512, device=device)

        def sample(steps: int):
            return pipe(
                condition_embeds=condition,
                latents=latents,
                num_inference_steps=steps,
                num_augmentations=args.num_augmentations,
                generator=torch.Generator(device).manual_seed(0),
                output_type="latent",
            )

        with_step, with_step_cpu = timed_stage(lambda: sample(1), device, args)
        without_step, without_step_cpu = timed_stage(lambda: sample(0), device, args)
        seconds, cpu_seconds = with_step - without_step, with_step_cpu - without_step_cpu
    result = {"stage": args.stage, "seconds": seconds, "cpu_seconds": cpu_seconds}
    if device.type == "cuda":
        result["peak_GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        result["peak_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=256, help="ImageNet model: 16 times a power of two.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU).")
    parser.add_argument("--num_augmentations", type=int, default=8, help="The method uses 50; cost is linear in it.")
    parser.add_argument("--repeats", type=int, default=1, help="Timed calls per stage (their median).")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed calls first (0 on a CPU: minutes each).")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # one stage, in a child process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.stage:
        print(json.dumps(run_stage(args)))
        return

    with torch.device("meta"):
        generator, clip = build_models(args.resolution, torch.device("meta"))
    flops = count_flops(args.resolution, args.num_augmentations)
    rows = []
    for stage in args.stages:
        child = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--stage", stage], check=True, capture_output=True, text=True
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        rows.append(
            {**result, "tflops": flops[stage] / 1e12, "gflops_per_s": flops[stage] / result["cpu_seconds"] / 1e9}
        )
    memory = "CUDA max allocated GiB" if torch.device(args.device).type == "cuda" else "peak RSS GiB"
    print(
        f"StyleGAN-XL ImageNet-{args.resolution} ({generator.num_ws} ws, "
        f"{sum(p.numel() for p in generator.parameters()) / 1e6:.1f} M parameters) + random CLIP ViT-B/32 "
        f"({sum(p.numel() for p in clip.parameters()) / 1e6:.1f} M), {args.device}, {args.threads} thread(s), "
        f"{args.num_augmentations} augmentations, batch 1"
    )
    columns = [
        ("stage", "stage", ""),
        ("seconds", "wall s", ".1f"),
        ("cpu_seconds", "CPU s", ".1f"),
        ("tflops", "TFLOP", ".3f"),
        ("gflops_per_s", "GFLOP per CPU s", ".1f"),
        ("peak_GiB", memory, ".2f"),
    ]
    print(format_table(rows, columns))


if __name__ == "__main__":
    main()
