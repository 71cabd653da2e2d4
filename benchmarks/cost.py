"""Cost section: seconds, FLOPs and memory of each stage of TR0N for full-size generators, with random weights.

Compute does not depend on the weights, so a full-size architecture with random weights gives the real costs without
a download. Each workload of `COST_WORKLOADS` (``--cost_workloads``) is a G with f = CLIP ViT-B/32 (unless the
entry names another encoder) and a translator sized for both as `tron build` sizes it (`training.new_translator`:
K = 10, hidden width 4 d). Stages (``--cost_stages``; default every stage the generator has, `stages_of`):

1. mapping: ``z -> w`` for a batch of ``--mapping_batch`` (the prior's cost per draw; generators with a mapping
   network, e.g. StyleGAN);
2. synthesis_forward: ``G(latents)`` for a batch of ``--pair_batch``, no gradient;
3. pairs: G forward + f image forward per pair (translator training data), batch ``--pair_batch``;
4. train: one AdamW step of the translator at the method's batch 16;
5. langevin: one Langevin step of one image: G forward+backward and CLIP forward+backward on ``--num_augmentations``
   augmented copies (the method uses 50; the cost is linear in it).

Seconds are the median of ``repeats`` calls after a warm-up (mapping and train: 5x as many calls); FLOPs count the
matrix products and convolutions, forward and backward (`common.FlopCounter`: 2 per multiply-add, a lower bound on
the work, independent of the machine). Memory: on a GPU each stage's max allocated; on every device the process's
peak RSS after the workload (all stages so far, and earlier workloads of the run: name one workload and one stage
to see that stage's alone).

A new generator joins with one entry of `COST_WORKLOADS`: a name, a description and a function building the
full-size G (random weights, the released configuration), plus ``encoder=`` when f is not CLIP ViT-B/32.
"""

import resource
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from common import FlopCounter, clip_langevin_step, format_table, median_seconds, translator_train_step
from harness import Section
from workloads import biggan_deep_generator, clip_vit_b32

from tron_pipelines.encoders import EncoderAdapter
from tron_pipelines.models import StyleGAN2Generator, StyleGAN3Generator, TronGenerator
from tron_pipelines.models.stylegan2 import stylegan2_block_channels
from tron_pipelines.training import new_translator


STAGES = ("mapping", "synthesis_forward", "pairs", "train", "langevin")
TRAIN_BATCH = 16  # the method's translator batch


@dataclass(frozen=True)
class CostWorkload:
    """A full-size G (and f) to measure.

    Attributes:
        description: What it is (architecture, configuration).
        generator: Builds G with random weights.
        encoder: Builds f with random weights (a model `EncoderAdapter` reads; CLIP-like for the Langevin stage).
    """

    description: str
    generator: Callable[[], TronGenerator]
    encoder: Callable[[], torch.nn.Module] = clip_vit_b32


def stylegan2_generator(resolution: int) -> StyleGAN2Generator:
    """NVIDIA's StyleGAN2 config F (the 1024 px FFHQ network's channel base) at ``resolution``."""
    return StyleGAN2Generator(block_channels=stylegan2_block_channels(resolution))


def stylegan3_generator(resolution: int, rotation_equivariant: bool = False) -> StyleGAN3Generator:
    """NVIDIA's StyleGAN3-T, or -R (``rotation_equivariant``: 1x1 convolutions, radial filters, twice the
    channels), with the 1024 px FFHQ networks' channel base, at ``resolution``."""
    if rotation_equivariant:
        return StyleGAN3Generator(
            img_resolution=resolution, conv_kernel=1, use_radial_filters=True, channel_base=65536, channel_max=1024
        )
    return StyleGAN3Generator(img_resolution=resolution)


COST_WORKLOADS = {
    **{
        f"biggan-deep-{resolution}": CostWorkload(
            f"BigGAN-deep-{resolution} (the released config) + CLIP ViT-B/32",
            partial(biggan_deep_generator, resolution),
        )
        for resolution in (128, 256, 512)
    },
    **{
        f"stylegan2-{resolution}": CostWorkload(
            f"StyleGAN2 config F at {resolution} px + CLIP ViT-B/32",
            partial(stylegan2_generator, resolution),
        )
        for resolution in (256, 512, 1024)
    },
    **{
        f"stylegan3-{kind}-{resolution}": CostWorkload(
            f"StyleGAN3-{kind.upper()} at {resolution} px + CLIP ViT-B/32",
            partial(stylegan3_generator, resolution, rotation_equivariant=kind == "r"),
        )
        for kind in ("t", "r")
        for resolution in (256, 512, 1024)
    },
}


def stages_of(generator: TronGenerator) -> tuple[str, ...]:
    """The `STAGES` that ``generator`` has: ``mapping`` only with a mapping network (`map_latents`)."""
    return STAGES if hasattr(generator, "map_latents") else STAGES[1:]


def stage_costs(
    generator: TronGenerator,
    encoder: torch.nn.Module,
    stages: list[str],
    repeats: int,
    pair_batch: int = 4,
    mapping_batch: int = 64,
    num_augmentations: int = 8,
) -> dict:
    """``{"stages": {stage: {"unit", "units", "seconds", "flops"[, "max_allocated_GiB"]}}, "parameters_M": {...}}``
    for each of ``stages`` (of `STAGES`), with frozen ``generator`` and ``encoder`` on one device: ``seconds`` and
    ``flops`` are those of one call, which does ``units`` of ``unit``."""
    missing = [stage for stage in stages if stage not in stages_of(generator)]
    if missing:
        raise ValueError(f"{type(generator).__name__} has no stage {missing}; its stages are {stages_of(generator)}.")
    device = generator.device
    adapter = EncoderAdapter(encoder)
    translator = new_translator(generator, adapter, num_components=10).to(device)
    latents = generator.sample_latents(pair_batch, device=device)
    parts = generator.split_latents(generator.sample_latents(TRAIN_BATCH, device=device))
    auxiliary = {spec.name: parts[spec.name] for spec in generator.auxiliary_latents}
    train_step = translator_train_step(
        translator,
        torch.randn(TRAIN_BATCH, adapter.condition_dim, device=device),
        parts[generator.main_latent.name],
        auxiliary or None,
    )
    # name -> (work of one call, calls timed, needs autograd, what one call does)
    work = {
        "mapping": (
            partial(generator.map_latents, torch.randn(mapping_batch, generator.config.z_dim, device=device))
            if "mapping" in stages
            else None,
            5 * repeats,
            False,
            ("z", mapping_batch),
        ),
        "synthesis_forward": (partial(generator.generate, latents), repeats, False, ("image", pair_batch)),
        "pairs": (lambda: adapter.encode_generated(generator.generate(latents)), repeats, False, ("pair", pair_batch)),
        "train": (train_step, 5 * repeats, True, (f"step of batch {TRAIN_BATCH}", 1)),
        "langevin": (
            clip_langevin_step(generator, adapter, generator.sample_latents(1, device=device), num_augmentations),
            repeats,
            True,
            (f"Langevin step of 1 image, {num_augmentations} augmentations", 1),
        ),
    }
    results = {}
    for name in stages:
        fn, calls, needs_grad, (unit, units) = work[name]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.set_grad_enabled(needs_grad):
            seconds, _ = median_seconds(fn, device, calls)
            with FlopCounter() as counter:
                fn()
        results[name] = {"unit": unit, "units": units, "seconds": seconds, "flops": counter.total}
        if device.type == "cuda":
            results[name]["max_allocated_GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
    parameters = {
        "generator": sum(p.numel() for p in generator.parameters()) / 1e6,
        "encoder": sum(p.numel() for p in encoder.parameters()) / 1e6,
        "translator": sum(p.numel() for p in translator.parameters()) / 1e6,
    }
    return {"stages": results, "parameters_M": parameters}


def cost_table(stages: dict) -> str:
    """Markdown table of `stage_costs`'s stages: per call and per unit."""
    rows = [
        {
            "stage": name,
            "unit": stage["unit"],
            "units": stage["units"],
            "seconds": stage["seconds"],
            "gflops": stage["flops"] / 1e9,
            "seconds_per_unit": stage["seconds"] / stage["units"],
            "gflops_per_unit": stage["flops"] / 1e9 / stage["units"],
            "max_allocated_GiB": stage.get("max_allocated_GiB"),
        }
        for name, stage in stages.items()
    ]
    columns = [
        ("stage", "stage", ""),
        ("unit", "unit", ""),
        ("units", "units per call", "d"),
        ("seconds", "s per call", ".3g"),
        ("gflops", "GFLOP per call", ".4g"),
        ("seconds_per_unit", "s per unit", ".3g"),
        ("gflops_per_unit", "GFLOP per unit", ".4g"),
    ]
    if any(row["max_allocated_GiB"] is not None for row in rows):
        columns.append(("max_allocated_GiB", "max allocated GiB", ".2f"))
    return format_table(rows, columns)


# The section of run.py ----------------------------------------------------------------------------------------------
def add_arguments(group) -> None:
    group.add_argument(
        "--cost_workloads",
        nargs="+",
        default=["biggan-deep-256"],
        choices=sorted(COST_WORKLOADS),
        metavar="WORKLOAD",
        help=f"Full-size generators of the cost section, of {', '.join(COST_WORKLOADS)} (default: biggan-deep-256).",
    )
    group.add_argument(
        "--cost_stages",
        nargs="+",
        default=list(STAGES),
        choices=STAGES,
        help="Stages of the cost section (default: every stage a workload has).",
    )
    group.add_argument("--pair_batch", type=int, default=4, help="cost: batch of the synthesis and pair stages.")
    group.add_argument("--mapping_batch", type=int, default=64, help="cost: batch of the mapping stage.")
    group.add_argument(
        "--num_augmentations",
        type=int,
        default=None,
        help="Augmented copies per image: cost's Langevin stage (default 8; the method uses 50, the cost is linear in "
        "it) and eval-cost's pipeline calls (default: the pipeline's).",
    )


def run(args, sizes: dict, report) -> None:
    device = torch.device(args.device)
    results = {}
    for name in args.cost_workloads:
        workload = COST_WORKLOADS[name]
        torch.manual_seed(0)
        generator = workload.generator().to(device).eval().requires_grad_(False)
        stages = [stage for stage in args.cost_stages if stage in stages_of(generator)]
        encoder = workload.encoder().to(device).eval().requires_grad_(False)
        result = stage_costs(
            generator,
            encoder,
            stages,
            sizes["repeats"],
            args.pair_batch,
            args.mapping_batch,
            8 if args.num_augmentations is None else args.num_augmentations,
        )
        # ru_maxrss is in KiB on Linux: the process's peak so far.
        result["peak_rss_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        result["description"] = workload.description
        results[name] = result
        parameters = result["parameters_M"]
        skipped = [stage for stage in args.cost_stages if stage not in stages]
        report.emit(
            f"Cost: {name}, {device}, {sizes['repeats']} timed calls (mapping and train: {5 * sizes['repeats']})",
            f"{workload.description}, random weights: G {parameters['generator']:.1f} M parameters, f "
            f"{parameters['encoder']:.1f} M, translator {parameters['translator']:.2f} M.\n\n"
            + cost_table(result["stages"])
            + f"\n\nPeak RSS of the process so far: {result['peak_rss_GiB']:.2f} GiB."
            + (f" Not a stage of this workload: {', '.join(skipped)}." if skipped else ""),
        )
        del generator, encoder
    report.write_json("cost", results)


SECTION = Section(
    names=("cost",),
    summary="Seconds, FLOPs and memory of each stage (mapping, synthesis, pairs, translator step, Langevin step) "
    "for full-size generators with random weights.",
    run=run,
    add_arguments=add_arguments,
    quick={"repeats": 1},
    full={"repeats": 2},
)
