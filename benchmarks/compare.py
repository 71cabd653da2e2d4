"""Compare section: pipelines' shipped sampling per digit and per prompt, on the quality benchmark's *tuning* seeds to
choose between candidates without looking at the evaluation seeds, then on the evaluation seeds to report the choice.

    python benchmarks/run.py compare --compare_pipelines outputs/build-caption/tron-mnist-text outputs/build-mix/tron-mnist-text
    python benchmarks/run.py compare --compare_pipelines tron-mnist-text outputs/new/tron-mnist-text --seeds evaluation --samples_per_condition 16

For each pipeline, every class (or benchmark prompt) ``--samples_per_condition`` times on seeds 500000 + i (tuning)
or 1000 + i (evaluation, as the quality section): the pipeline's shipped sampling defaults, and translator draws
followed by ``--compare_steps`` (10) Langevin steps (the claim's arm), scored by the committed evaluation classifier
(`metrics.MnistEvaluator`): energy, accuracy, worst digit and worst prompt, diversity ratio to real digits and
Fréchet distance. With ``--ranking_pool N``, also what the energy alone picks from N prior draws per condition: where
that is the wrong digit, f is the limit, not the translator or the sampler.
"""

from common import format_table
from harness import Section
from metrics import DEFAULT_EVAL_CLASSIFIER, MnistEvaluator
from quality import (
    EVALUATION_SEED,
    TUNING_SEED,
    energy_ranking_latents,
    langevin_snapshots,
    make_conditions,
    render_and_score,
    weakest_conditions,
)
from workloads import load_workload


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


# The section of run.py ----------------------------------------------------------------------------------------------
def add_arguments(group) -> None:
    group.add_argument(
        "--compare_pipelines",
        nargs="+",
        default=None,
        metavar="PIPELINE",
        help="Embedded names or folders to compare.",
    )
    group.add_argument(
        "--samples_per_condition", type=int, default=8, help="compare: images per class or prompt (default 8)."
    )
    group.add_argument("--seeds", choices=["tuning", "evaluation"], default="tuning", help="compare: seed block.")
    group.add_argument(
        "--compare_steps", type=int, default=10, help="compare: Langevin steps after a single translator draw."
    )
    group.add_argument(
        "--ranking_pool",
        type=int,
        default=0,
        help="compare: also score what the energy alone picks: per condition, the lowest-energy images of this many "
        "prior draws (quality.energy_ranking_latents; 0 = off). Shows where f itself prefers the wrong digit.",
    )


def check(args) -> str | None:
    if not args.compare_pipelines:
        return "the compare section needs --compare_pipelines (embedded names or folders)"
    return None


def run(args, sizes: dict, report) -> None:
    evaluator = MnistEvaluator(args.eval_classifier or DEFAULT_EVAL_CLASSIFIER)
    first_seed = {"tuning": TUNING_SEED, "evaluation": EVALUATION_SEED}[args.seeds]
    rows, num_images = [], {}
    for name in args.compare_pipelines:
        workload = load_workload(name, args.device)
        conditions = make_conditions(workload, args.samples_per_condition)
        seeds = [first_seed + i for i in range(len(conditions))]
        num_images[name] = len(conditions)
        defaults = workload.pipe.config.default_num_inference_steps
        arms = {
            f"translator@{args.compare_steps}": langevin_snapshots(
                workload, conditions, seeds, [args.compare_steps], num_candidates=1
            )[args.compare_steps],
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
            report.emit(
                f"Compare: {name}, {arm}", format_table(rows[-1:], COLUMNS) + "\n\n" + weakest_conditions(metrics)
            )
    report.write_json("compare", {"seeds": args.seeds, "first_seed": first_seed, "rows": rows})
    counts = ", ".join(f"{name} {count}" for name, count in num_images.items())
    report.emit(
        f"Compare: {len(args.compare_pipelines)} pipelines",
        f"Images per arm (image i on {args.seeds} seed {first_seed} + i): {counts}.\n\n" + format_table(rows, COLUMNS),
    )


SECTION = Section(
    names=("compare",),
    summary="Candidate pipelines' shipped sampling and translator + T steps per digit and prompt, on tuning or "
    "evaluation seeds.",
    run=run,
    add_arguments=add_arguments,
    check=check,
)
