"""Compare pipelines' shipped sampling per digit and per prompt: on the quality benchmark's *tuning* seeds to choose
between candidates without looking at the evaluation seeds, then on the evaluation seeds to report the choice.

    python benchmarks/bench_compare_pipelines.py outputs/build-caption/tron-mnist-text outputs/build-mix/tron-mnist-text
    python benchmarks/bench_compare_pipelines.py tron-mnist-text outputs/new/tron-mnist-text --seeds evaluation --samples_per_condition 16

For each pipeline, every class (or benchmark prompt) ``--samples_per_condition`` times on seeds 500000 + i (tuning)
or 1000 + i (evaluation, as `benchmarks/run.py quality`): the pipeline's shipped sampling defaults, and translator draws followed by 10 Langevin steps (the claim's arm), scored by
the committed evaluation classifier (`metrics.MnistEvaluator`): energy, accuracy, worst digit and worst prompt,
diversity ratio to real digits and Fréchet distance. With ``--ranking_pool N``, also what the energy alone picks
from N prior draws per condition: where that is the wrong digit, f is the limit, not the translator or the sampler.
"""

import argparse
import os
import sys
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import format_table  # noqa: E402
from metrics import MnistEvaluator  # noqa: E402
from quality import (  # noqa: E402
    EVALUATION_SEED,
    TUNING_SEED,
    energy_ranking_latents,
    langevin_snapshots,
    make_conditions,
    render_and_score,
    weakest_conditions,
)
from workloads import load_workload  # noqa: E402


COLUMNS = [
    ("pipeline", "pipeline", "s"),
    ("arm", "arm", "s"),
    ("energy", "energy", ".3f"),
    ("accuracy", "accuracy", ".3f"),
    ("worst_class_accuracy", "worst digit", ".3f"),
    ("worst_prompt_accuracy", "worst prompt", ".3f"),
    ("diversity_ratio", "diversity / real", ".3f"),
    ("frechet_distance", "FD", ".1f"),
]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipelines", nargs="+", help="Embedded names or folders.")
    parser.add_argument("--samples_per_condition", type=int, default=8)
    parser.add_argument("--seeds", choices=["tuning", "evaluation"], default="tuning")
    parser.add_argument("--steps", type=int, default=10, help="Langevin steps after a single translator draw.")
    parser.add_argument(
        "--ranking_pool",
        type=int,
        default=0,
        help="Also score what the energy alone picks: per condition, the lowest-energy images of this many prior "
        "draws (quality.energy_ranking_latents; 0 = off). Shows where f itself prefers the wrong digit.",
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    evaluator = MnistEvaluator()
    first_seed = {"tuning": TUNING_SEED, "evaluation": EVALUATION_SEED}[args.seeds]
    rows = []
    for name in args.pipelines:
        workload = load_workload(name)
        conditions = make_conditions(workload, args.samples_per_condition)
        seeds = [first_seed + i for i in range(len(conditions))]
        defaults = workload.pipe.config.default_num_inference_steps
        arms = {
            f"translator@{args.steps}": langevin_snapshots(
                workload, conditions, seeds, [args.steps], num_candidates=1
            )[args.steps],
            f"shipped defaults@{defaults}": langevin_snapshots(
                workload, conditions, seeds, [defaults], num_candidates=None
            )[defaults],
        }
        if args.ranking_pool:
            arms[f"energy's pick of {args.ranking_pool} prior draws"] = {
                "latents": energy_ranking_latents(workload, conditions, args.samples_per_condition, args.ranking_pool)
            }
        for arm, snapshot in arms.items():
            metrics, _ = render_and_score(workload, conditions, snapshot["latents"], evaluator)
            rows.append({"pipeline": name, "arm": arm, **metrics})
            print(format_table(rows[-1:], COLUMNS), flush=True)
            print(weakest_conditions(metrics), flush=True)
    print(
        f"\n{len(conditions)} images per pipeline and arm, {args.seeds} seeds {first_seed}..{first_seed + len(conditions) - 1}\n"
    )
    print(format_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
