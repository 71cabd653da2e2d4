"""Per-image cost of a prompts-file run, to size an evaluation such as the paper's 40,504 COCO captions
(docs/evaluation.md).

Calls the pipeline as ``tron generate --prompts_file`` does (a batch of conditions, one generator per image, the
pipeline's candidates) with T Langevin steps for each T of ``--steps``, fits seconds per image = a + b T, and
extrapolates to ``--num_images`` images at ``--target_steps``. Both wall-clock and process CPU seconds are given: on a
shared machine the CPU seconds of a one-thread run (``OMP_NUM_THREADS=1``) are what an idle core would take. Also times CLIP image features per image (what the
CLIP score and FD_CLIP encode) on the workload's encoder when it is a CLIP. Prints JSON.

    python benchmarks/bench_sampling_cost.py --workload biggan-deep-256-clip --num_augmentations 50 --batch_size 1
    python benchmarks/bench_sampling_cost.py --workload tron-mnist-text --batch_size 16 --steps 0 10 20
"""

import argparse
import json
import platform
import time

import numpy as np
import torch
from common import median_seconds, seeded_generators
from workloads import load_workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="biggan-deep-256-clip", help="A synthetic workload name or a pipeline.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, default=1, help="Images per pipeline call.")
    parser.add_argument("--num_augmentations", type=int, default=None, help="Default: the pipeline's.")
    parser.add_argument("--num_candidates", type=int, default=None, help="Default: the pipeline's.")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 1, 2], help="T values timed (at least two).")
    parser.add_argument(
        "--repeats", type=int, default=1, help="Timed calls per T (median); one untimed warm-up call first."
    )
    parser.add_argument("--target_steps", type=int, default=100, help="T of the extrapolation (the method's 100).")
    parser.add_argument(
        "--num_images", type=int, default=40504, help="Images of the extrapolation (COCO val 2014 captions)."
    )
    args = parser.parse_args()

    workload = load_workload(args.workload, args.device)
    pipe, device = workload.pipe, workload.device
    conditions = workload.condition_kwargs(args.batch_size)
    generators = lambda: seeded_generators(range(args.batch_size), device)  # noqa: E731
    settings = {
        "num_augmentations": args.num_augmentations,
        "num_candidates": args.num_candidates,
        "output_type": "np",
    }
    pipe(**conditions, num_inference_steps=0, generator=generators(), **settings)  # warm-up

    per_image, cpu_per_image = {}, {}
    for steps in args.steps:
        cpu_start = time.process_time()
        seconds, _ = median_seconds(
            lambda: pipe(**conditions, num_inference_steps=steps, generator=generators(), **settings),
            device,
            args.repeats,
            warmup=0,
        )
        per_image[steps] = seconds / args.batch_size
        cpu_per_image[steps] = (time.process_time() - cpu_start) / args.repeats / args.batch_size
    slope, intercept = np.polyfit(list(per_image), list(per_image.values()), 1)
    cpu_slope, cpu_intercept = np.polyfit(list(cpu_per_image), list(cpu_per_image.values()), 1)
    at_target, cpu_at_target = intercept + slope * args.target_steps, cpu_intercept + cpu_slope * args.target_steps
    result = {
        "workload": workload.name,
        "description": workload.description,
        "device": str(device),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "batch_size": args.batch_size,
        "num_augmentations": pipe.config.default_num_augmentations
        if args.num_augmentations is None
        else args.num_augmentations,
        "num_candidates": pipe.num_candidates,
        "seconds_per_image": {str(steps): value for steps, value in per_image.items()},
        "cpu_seconds_per_image": {str(steps): value for steps, value in cpu_per_image.items()},
        "seconds_per_image_per_step": slope,
        "seconds_per_image_before_langevin": intercept,
        "cpu_seconds_per_image_per_step": cpu_slope,
        "cpu_seconds_per_image_before_langevin": cpu_intercept,
        "target": {
            "steps": args.target_steps,
            "num_images": args.num_images,
            "seconds_per_image": at_target,
            "hours": at_target * args.num_images / 3600,
            "cpu_seconds_per_image": cpu_at_target,
            "cpu_hours": cpu_at_target * args.num_images / 3600,
        },
    }
    adapter = pipe.encoder_adapter
    if adapter.kind == "clip":
        images = torch.rand(args.batch_size, adapter.channels, adapter.image_size, adapter.image_size, device=device)
        cpu_start = time.process_time()
        with torch.no_grad():
            seconds, _ = median_seconds(
                lambda: adapter.features(adapter.preprocess_generated(images * 2 - 1)), device, 2
            )
        result["clip_image_features_seconds_per_image"] = seconds / args.batch_size
        result["clip_image_features_cpu_seconds_per_image"] = (time.process_time() - cpu_start) / 3 / args.batch_size
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
