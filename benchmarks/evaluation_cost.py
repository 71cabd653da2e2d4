"""Eval-cost section: per-image cost of a prompts-file run, to size an evaluation such as the paper's 40,504 COCO
captions (docs/evaluation.md).

Calls the pipeline as ``tron generate --prompts_file`` does (a batch of conditions, one generator per image, the
pipeline's candidates) with T Langevin steps for each T of ``--eval_cost_steps``, fits seconds per image = a + b T,
and extrapolates to ``--num_images`` images at ``--target_steps``. Both wall-clock and process CPU seconds are given: on a
shared machine the CPU seconds of a one-thread run (``--threads 1``) are what an idle core would take. Also times
CLIP image features per image (what the CLIP score and FD_CLIP encode) on the workload's encoder when it is a CLIP.

    python benchmarks/run.py eval-cost --eval_cost_workload biggan-deep-256-clip --num_augmentations 50
    python benchmarks/run.py eval-cost --eval_cost_workload tron-mnist-text --eval_cost_batch_size 16 --eval_cost_steps 0 10 20
"""

import platform
import time

import numpy as np
import torch
from common import format_table, median_seconds, seeded_generators
from harness import Section
from workloads import Workload, load_workload


def evaluation_cost(
    workload: Workload,
    batch_size: int,
    step_counts: list[int],
    repeats: int,
    num_augmentations: int | None = None,
    num_candidates: int | None = None,
    target_steps: int = 100,
    num_images: int = 40504,
) -> dict:
    """Seconds and CPU seconds per image of a prompts-file run at each T of ``step_counts`` (median of ``repeats``
    calls of ``batch_size`` images after one warm-up call), the fit a + b T, and the extrapolation to ``num_images``
    images at ``target_steps``; plus CLIP image features per image when f is a CLIP. ``num_augmentations`` /
    ``num_candidates``: ``None`` for the pipeline's defaults."""
    pipe, device = workload.pipe, workload.device
    conditions = workload.condition_kwargs(batch_size)
    generators = lambda: seeded_generators(range(batch_size), device)  # noqa: E731
    settings = {
        "num_augmentations": num_augmentations,
        "num_candidates": num_candidates,
        "output_type": "np",
    }
    pipe(**conditions, num_inference_steps=0, generator=generators(), **settings)  # warm-up

    per_image, cpu_per_image = {}, {}
    for steps in step_counts:
        cpu_start = time.process_time()
        seconds, _ = median_seconds(
            lambda: pipe(**conditions, num_inference_steps=steps, generator=generators(), **settings),
            device,
            repeats,
            warmup=0,
        )
        per_image[steps] = seconds / batch_size
        cpu_per_image[steps] = (time.process_time() - cpu_start) / repeats / batch_size
    slope, intercept = np.polyfit(list(per_image), list(per_image.values()), 1)
    cpu_slope, cpu_intercept = np.polyfit(list(cpu_per_image), list(cpu_per_image.values()), 1)
    at_target, cpu_at_target = intercept + slope * target_steps, cpu_intercept + cpu_slope * target_steps
    result = {
        "workload": workload.name,
        "description": workload.description,
        "device": str(device),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "batch_size": batch_size,
        "num_augmentations": pipe.config.default_num_augmentations if num_augmentations is None else num_augmentations,
        "num_candidates": pipe.num_candidates,
        "seconds_per_image": {str(steps): value for steps, value in per_image.items()},
        "cpu_seconds_per_image": {str(steps): value for steps, value in cpu_per_image.items()},
        "seconds_per_image_per_step": slope,
        "seconds_per_image_before_langevin": intercept,
        "cpu_seconds_per_image_per_step": cpu_slope,
        "cpu_seconds_per_image_before_langevin": cpu_intercept,
        "target": {
            "steps": target_steps,
            "num_images": num_images,
            "seconds_per_image": at_target,
            "hours": at_target * num_images / 3600,
            "cpu_seconds_per_image": cpu_at_target,
            "cpu_hours": cpu_at_target * num_images / 3600,
        },
    }
    adapter = pipe.encoder_adapter
    if adapter.kind == "clip":
        images = torch.rand(batch_size, adapter.channels, adapter.image_size, adapter.image_size, device=device)
        cpu_start = time.process_time()
        with torch.no_grad():
            seconds, _ = median_seconds(
                lambda: adapter.features(adapter.preprocess_generated(images * 2 - 1)), device, 2
            )
        result["clip_image_features_seconds_per_image"] = seconds / batch_size
        result["clip_image_features_cpu_seconds_per_image"] = (time.process_time() - cpu_start) / 3 / batch_size
    return result


# The section of run.py ----------------------------------------------------------------------------------------------
def add_arguments(group) -> None:
    group.add_argument(
        "--eval_cost_workload",
        default="biggan-deep-256-clip",
        help="Workload of the eval-cost section: a synthetic workload name or a pipeline.",
    )
    group.add_argument("--eval_cost_batch_size", type=int, default=1, help="eval-cost: images per pipeline call.")
    group.add_argument(
        "--eval_cost_steps", type=int, nargs="+", default=[0, 1, 2], help="eval-cost: T values timed (at least two)."
    )
    group.add_argument("--num_candidates", type=int, default=None, help="eval-cost: default: the pipeline's.")
    group.add_argument(
        "--target_steps", type=int, default=100, help="eval-cost: T of the extrapolation (the method's 100)."
    )
    group.add_argument(
        "--num_images",
        type=int,
        default=40504,
        help="eval-cost: images of the extrapolation (COCO val 2014 captions).",
    )


def check(args) -> str | None:
    if len(set(args.eval_cost_steps)) < 2:
        return f"--eval_cost_steps needs at least two different T values to fit a + b T, got {args.eval_cost_steps}"
    return None


def run(args, sizes: dict, report) -> None:
    workload = load_workload(args.eval_cost_workload, args.device)
    result = evaluation_cost(
        workload,
        args.eval_cost_batch_size,
        args.eval_cost_steps,
        sizes["repeats"],
        args.num_augmentations,
        args.num_candidates,
        args.target_steps,
        args.num_images,
    )
    report.write_json("eval-cost", result)
    rows = [
        {"steps": int(steps), "seconds": seconds, "cpu_seconds": result["cpu_seconds_per_image"][steps]}
        for steps, seconds in result["seconds_per_image"].items()
    ]
    target = result["target"]
    rows.append(
        {
            "steps": f"{target['steps']} (fit a + b T)",
            "seconds": target["seconds_per_image"],
            "cpu_seconds": target["cpu_seconds_per_image"],
        }
    )
    text = format_table(
        rows, [("steps", "T", ""), ("cpu_seconds", "CPU s per image", ".4g"), ("seconds", "wall s per image", ".4g")]
    ) + (
        f"\n\nPer Langevin step: {result['cpu_seconds_per_image_per_step']:.4g} CPU s, "
        f"{result['seconds_per_image_per_step']:.4g} s per image; before the steps (T = 0): "
        f"{result['cpu_seconds_per_image_before_langevin']:.4g} CPU s, {result['seconds_per_image_before_langevin']:.4g} s. "
        f"{target['num_images']:,} images at T = {target['steps']}: {target['cpu_hours']:,.1f} CPU hours, "
        f"{target['hours']:,.1f} hours of wall-clock time."
    )
    if "clip_image_features_seconds_per_image" in result:
        text += (
            f" CLIP image features: {result['clip_image_features_cpu_seconds_per_image']:.4g} CPU s, "
            f"{result['clip_image_features_seconds_per_image']:.4g} s per image."
        )
    report.emit(
        f"Eval cost: {workload.name}, batch {result['batch_size']}, {result['num_augmentations']} augmentations, "
        f"best of {result['num_candidates']}, {sizes['repeats']} timed calls per T",
        f"{workload.description}; {result['machine']}.\n\n" + text,
    )


SECTION = Section(
    names=("eval-cost",),
    summary="Per-image cost of a prompts-file run, fitted over T and extrapolated to an evaluation's size.",
    run=run,
    add_arguments=add_arguments,
    check=check,
    quick={"repeats": 1},
    full={"repeats": 1},
)
