"""Issue 26: the sampling defaults of `tron-mnist-t2i` (TR0N on the unconditional text-to-image G), chosen on the
quality benchmark's *tuning* seeds (500000 + i), never the evaluation seeds the model card and the head-to-head report.

    python benchmarks/studies/t2i_sampling.py --pipeline outputs/built/tron-mnist-t2i --images_per_prompt 1

Every setting runs 10 Langevin steps (the issue's TR0N arm) from the best of ``num_candidates`` translator draws, with
``num_augmentations`` augmented copies in the energy and the given step size (noise 0.01, momentum 0.5, gradient
clipping 1.0, as the other embedded pipelines), on every benchmark prompt. Scored by the evaluation classifier and
pixel measures (`metrics.MnistEvaluator`). The chosen setting obeys the largest share of the requests (each image's
digit, and the stroke weight or slant its prompt names); ties go to the lower Fréchet distance (seconds vary with
the machine's load).
"""

import argparse
import os
import sys
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/

import torch  # noqa: E402
from common import format_table, seeded_generators  # noqa: E402
from metrics import MnistEvaluator  # noqa: E402
from workloads import TUNING_SEED, load_workload, make_conditions  # noqa: E402

from tron_pipelines import LangevinScheduler, TronPipeline  # noqa: E402


# (candidates, augmentations, step size)
GRID = [(1, 0, 1.0), (4, 0, 1.0), (16, 0, 1.0), (16, 4, 1.0), (16, 0, 3.0), (16, 4, 3.0), (64, 0, 3.0)]
COLUMNS = [
    ("num_candidates", "candidates", "d"),
    ("num_augmentations", "augmentations", "d"),
    ("step_size", "step size", "g"),
    ("seconds_per_image", "s / image", ".3f"),
    ("accuracy", "digit accuracy", ".3f"),
    ("stroke_weight_obeyed", "stroke obeyed", ".3f"),
    ("slant_obeyed", "slant obeyed", ".3f"),
    ("diversity_ratio", "diversity / real", ".3f"),
    ("frechet_distance", "FD", ".1f"),
]


def requests_obeyed(row: dict, num_images: int) -> float:
    """Share of everything the prompts asked for that the images obey: each image's digit, and the stroke weight or
    slant of the prompts that name one (each request counts once, so the few attribute requests do not outweigh the
    digits)."""
    obeyed = row["accuracy"] * num_images
    asked = num_images
    for attribute in ("stroke_weight", "slant"):
        obeyed += row[f"{attribute}_obeyed"] * row[f"{attribute}_requests"]
        asked += row[f"{attribute}_requests"]
    return obeyed / asked


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="tron-mnist-t2i")
    parser.add_argument("--images_per_prompt", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    workload = load_workload(args.pipeline)
    evaluator = MnistEvaluator()
    conditions = make_conditions(workload, args.images_per_prompt)
    seeds = [TUNING_SEED + i for i in range(len(conditions))]
    rows = []
    for num_candidates, num_augmentations, step_size in GRID:
        pipe = TronPipeline.from_pipe(
            workload.pipe, scheduler=LangevinScheduler.from_config(workload.pipe.scheduler.config, step_size=step_size)
        )
        pipe.set_progress_bar_config(disable=True)
        started = time.perf_counter()
        out = pipe(
            **conditions.call_kwargs,
            num_inference_steps=args.steps,
            num_candidates=num_candidates,
            num_augmentations=num_augmentations,
            generator=seeded_generators(seeds, "cpu"),
            output_type="np",
        )
        seconds = (time.perf_counter() - started) / len(conditions)
        scores = evaluator.score_prompts(out.images, conditions.requests)
        row = {
            "num_candidates": num_candidates,
            "num_augmentations": num_augmentations,
            "step_size": step_size,
            "seconds_per_image": seconds,
            **scores,
        }
        rows.append(row)
        print(format_table([row], COLUMNS).splitlines()[-1], flush=True)
    print(f"\n{len(conditions)} images per setting, tuning seeds {seeds[0]}..{seeds[-1]}, {args.steps} steps:\n")
    print(format_table(rows, COLUMNS))
    for row in rows:
        row["requests_obeyed"] = requests_obeyed(row, len(conditions))
    print(format_table(rows, [*COLUMNS[:3], ("requests_obeyed", "requests obeyed", ".3f")]))
    best = max(rows, key=lambda row: (row["requests_obeyed"], -row["frechet_distance"]))
    print(f"\nChosen: { ({key: best[key] for key in ('num_candidates', 'num_augmentations', 'step_size')}) }")


if __name__ == "__main__":
    main()
