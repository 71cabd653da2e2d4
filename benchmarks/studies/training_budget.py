"""How much translator training gives usable results: validation figures and sample quality per step budget
(issue 11; the table is in docs/training.md, "How much training is enough").

    python benchmarks/studies/training_budget.py                           # tron-mnist, budgets 50 200 500 2000
    python benchmarks/studies/training_budget.py --steps 50 500 --num_pairs 20000

One pair cache is made from the pipeline's generator and encoder, then a new translator is trained for each budget
with the settings the embedded pipeline was built with (batch 256, AdamW 1e-3, 100 warmup steps, cosine schedule;
`examples/mnist/build_pipelines.py`), and the result is scored on the quality benchmark's evaluation seeds: translator
draws alone (0 Langevin steps, one draw) and the pipeline's own sampling defaults, by the committed evaluation
classifier (`metrics.MnistEvaluator`). Seconds are wall-clock on this machine.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/

import torch  # noqa: E402
from common import format_table  # noqa: E402
from metrics import MnistEvaluator  # noqa: E402
from quality import EVALUATION_SEED, langevin_snapshots, make_conditions, render_and_score  # noqa: E402
from workloads import Workload, load_workload  # noqa: E402

from tron_pipelines import TronPipeline  # noqa: E402
from tron_pipelines.training.arguments import parse_train_args  # noqa: E402
from tron_pipelines.training.pairs import generate_pairs, load_training_pipeline  # noqa: E402
from tron_pipelines.training.train import train_translator  # noqa: E402


# The embedded pipelines' training settings (build_pipelines.py), minus the step count.
TRAINING_ARGS = [
    "--num_components",
    "10",
    "--hidden_dim",
    "256",
    "--train_batch_size",
    "256",
    "--learning_rate",
    "1e-3",
    "--lr_warmup_steps",
    "100",
    "--checkpointing_steps",
    "1000000",
    "--report_to",
    "none",
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--pipeline", default="tron-mnist", help="Embedded name or folder (its translator is replaced)."
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 200, 500, 2000], help="Training step budgets.")
    parser.add_argument(
        "--num_pairs", type=int, default=100_000, help="Pairs in the cache (the embedded build used 100,000)."
    )
    parser.add_argument("--samples_per_condition", type=int, default=16, help="Evaluation images per class or prompt.")
    parser.add_argument(
        "--work_dir", default=None, help="Where the cache and translators go (default: a temporary folder)."
    )
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def score(workload: Workload, evaluator: MnistEvaluator, samples_per_condition: int) -> dict:
    """Accuracy of translator draws alone and of the pipeline's sampling defaults, on the evaluation seeds."""
    conditions = make_conditions(workload, samples_per_condition)
    seeds = [EVALUATION_SEED + i for i in range(len(conditions))]
    steps = workload.pipe.config.default_num_inference_steps
    alone = langevin_snapshots(workload, conditions, seeds, [0], "translator", num_candidates=1)[0]
    shipped = langevin_snapshots(workload, conditions, seeds, [steps], "translator", num_candidates=None)[steps]
    alone_metrics, _ = render_and_score(workload, conditions, alone["latents"], evaluator)
    shipped_metrics, _ = render_and_score(workload, conditions, shipped["latents"], evaluator)
    return {
        "translator_accuracy": alone_metrics["accuracy"],
        "translator_diversity": alone_metrics["diversity_ratio"],
        "defaults_accuracy": shipped_metrics["accuracy"],
        "defaults_worst_class_accuracy": shipped_metrics["worst_class_accuracy"],
        "defaults_diversity": shipped_metrics["diversity_ratio"],
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="tron-budget-"))
    embedded = TronPipeline.from_pretrained(args.pipeline)
    base = work / "base"
    embedded.save_pretrained(base)
    started = time.perf_counter()
    generate_pairs(load_training_pipeline(base), work / "pairs", args.num_pairs, generation_batch_size=500)
    pair_seconds = time.perf_counter() - started
    evaluator = MnistEvaluator()
    rows = []
    for budget in args.steps:
        output_dir = work / f"translator-{budget}"
        train_args = parse_train_args(
            [
                "--pipeline",
                str(base),
                "--pairs_dir",
                str(work / "pairs"),
                "--output_dir",
                str(output_dir),
                "--max_train_steps",
                str(budget),
                "--validation_steps",
                str(budget),
                "--overwrite_output_dir",
                *TRAINING_ARGS,
            ]
        )
        started = time.perf_counter()
        result = train_translator(train_args)
        train_seconds = time.perf_counter() - started
        workload = load_workload(str(output_dir))
        row = {
            "steps": budget,
            "pairs_seen": budget * 256,
            "train_seconds": train_seconds,
            "nll_per_dim": result.metrics["nll_per_dim"],
            "std_mean": result.metrics["std_mean"],
            "residual_std": result.metrics["residual_std"],
            **score(workload, evaluator, args.samples_per_condition),
        }
        rows.append(row)
        print(format_table([row], COLUMNS), flush=True)
    print(f"\nPair cache: {args.num_pairs} pairs in {pair_seconds:.0f} s. Work folder: {work}\n")
    print(format_table(rows, COLUMNS))


COLUMNS = [
    ("steps", "training steps", "d"),
    ("pairs_seen", "pairs seen", "d"),
    ("train_seconds", "seconds (incl. validation)", ".0f"),
    ("nll_per_dim", "val NLL / dim", ".3f"),
    ("std_mean", "fitted std", ".3f"),
    ("residual_std", "data std", ".3f"),
    ("translator_accuracy", "accuracy, translator alone", ".3f"),
    ("translator_diversity", "diversity / real", ".3f"),
    ("defaults_accuracy", "accuracy, shipped sampling", ".3f"),
    ("defaults_worst_class_accuracy", "worst digit", ".3f"),
    ("defaults_diversity", "diversity / real", ".3f"),
]

if __name__ == "__main__":
    main()
