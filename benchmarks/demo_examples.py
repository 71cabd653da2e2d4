"""Demo-examples section: which prompts the embedded `tron-mnist-text` draws well, written as the demo's examples.

    python benchmarks/run.py demo-examples                            # 50 prompts x 32 images, about 12 min on 2 busy cores
    python benchmarks/run.py demo-examples --images_per_prompt 8 --dry_run
    python benchmarks/run.py demo-examples --reuse_measurements       # choose again from the stored scores, no sampling

Candidates are the text benchmark's 50 prompts (per digit: plain, thin, bold, leaning left, leaning right, in the
phrasing the small CLIP was trained on; `benchmarks/workloads.py`). Each is sampled at the pipeline's shipped defaults
on evaluation seeds (not the demo's seeds 0, 1, ...), and the images are scored by the committed evaluation classifier
(`benchmarks/assets/mnist-eval-classifier`, which shares nothing with the CLIP that Langevin follows); the requested
stroke weight or slant is measured on the pixels. Per digit, the best prompt that reaches --min_accuracy (and
--min_attribute where it asks for an attribute) becomes an example. Everything measured goes to
`src/tron_pipelines/commands/demo_examples.json`, the one list the demo reads (and to ``demo-examples.json`` in the
output folder); re-run after retraining the pipeline.
"""

import json
import os

import numpy as np
import torch
from common import format_table
from harness import Section
from metrics import DEFAULT_EVAL_CLASSIFIER, MnistEvaluator
from tqdm.auto import tqdm
from workloads import REPO_ROOT, mnist_prompts

from tron_pipelines import TronPipeline
from tron_pipelines.utils.files import write_json_atomically


PIPELINE = "tron-mnist-text"
EXAMPLES_FILE = REPO_ROOT / "src" / "tron_pipelines" / "commands" / "demo_examples.json"
EVALUATION_SEED = 10_000
COMMAND = "python benchmarks/run.py demo-examples"


def measure(
    pipe: TronPipeline, evaluator: MnistEvaluator, images_per_prompt: int, prompts_per_batch: int = 5
) -> list[dict]:
    """Digit accuracy and attribute obedience of every candidate prompt at the pipeline's defaults (image i of every
    prompt uses seed ``EVALUATION_SEED + i``)."""
    prompts, requests = mnist_prompts()
    rows = []
    for start in tqdm(range(0, len(prompts), prompts_per_batch), desc=f"{len(prompts)} prompts"):
        batch = prompts[start : start + prompts_per_batch]
        generators = [
            torch.Generator().manual_seed(EVALUATION_SEED + i) for _ in batch for i in range(images_per_prompt)
        ]
        images = pipe(batch, num_images_per_prompt=images_per_prompt, generator=generators, output_type="np").images
        for offset, (prompt, request) in enumerate(zip(batch, requests[start : start + prompts_per_batch])):
            own = images[offset * images_per_prompt : (offset + 1) * images_per_prompt]
            scores = evaluator.score_prompts(own, [request] * images_per_prompt)
            asked = [scores[f"{name}_obeyed"] for name in ("stroke_weight", "slant") if scores[f"{name}_requests"]]
            rows.append(
                {
                    "prompt": prompt,
                    "digit": request["label"],
                    "digit_accuracy": round(scores["accuracy"], 4),
                    "attribute_obeyed": round(asked[0], 4) if asked else None,
                }
            )
    return rows


def choose_examples(rows: list[dict], min_accuracy: float, min_attribute: float) -> list[dict]:
    """One example per digit: among the prompts that pass both bars, those with the best digit accuracy (then
    attribute obedience, then asking for an attribute, which shows more of the method); ties go round the phrasings
    by digit, so the examples show thin, bold and slanted digits alike."""

    def score(row):
        return (row["digit_accuracy"], row["attribute_obeyed"] or 1.0, row["attribute_obeyed"] is not None)

    examples = []
    for digit in sorted({row["digit"] for row in rows}):
        passing = [
            row
            for row in rows
            if row["digit"] == digit
            and row["digit_accuracy"] >= min_accuracy
            and (row["attribute_obeyed"] or 1.0) >= min_attribute
        ]
        if passing:
            best = [row for row in passing if score(row) == max(map(score, passing))]
            examples.append(best[digit % len(best)])
    return examples


# The section of run.py ----------------------------------------------------------------------------------------------
def add_arguments(group) -> None:
    group.add_argument(
        "--images_per_prompt", type=int, default=32, help="demo-examples: images per prompt (default 32)."
    )
    group.add_argument(
        "--min_accuracy",
        type=float,
        default=0.95,
        help="demo-examples: least digit accuracy of an example (default 0.95).",
    )
    group.add_argument(
        "--min_attribute",
        type=float,
        default=0.9,
        help="demo-examples: least share of images obeying the asked stroke weight or slant (default 0.9).",
    )
    group.add_argument(
        "--dry_run",
        action="store_true",
        help=f"demo-examples: print the table only; do not write {EXAMPLES_FILE.name}.",
    )
    group.add_argument(
        "--reuse_measurements",
        action="store_true",
        help=f"demo-examples: choose again from the scores stored in {EXAMPLES_FILE.name} instead of sampling.",
    )


def check(args) -> str | None:
    if args.images_per_prompt < 2 and not args.reuse_measurements:
        return f"--images_per_prompt must be at least 2 (a prompt's score includes a Fréchet distance), got {args.images_per_prompt}"
    if args.reuse_measurements and PIPELINE not in (
        json.loads(EXAMPLES_FILE.read_text()) if EXAMPLES_FILE.is_file() else {}
    ):
        return f"--reuse_measurements: {EXAMPLES_FILE} holds no measurements of {PIPELINE}"
    return None


def run(args, sizes: dict, report) -> None:
    measured = json.loads(EXAMPLES_FILE.read_text()) if EXAMPLES_FILE.is_file() else {}
    if args.reuse_measurements:
        rows, settings = measured[PIPELINE]["all_prompts"], measured[PIPELINE]["settings"]
    else:
        pipe = TronPipeline.from_pretrained(PIPELINE).to(args.device)
        pipe.set_progress_bar_config(disable=True)
        evaluator_dir = args.eval_classifier or DEFAULT_EVAL_CLASSIFIER
        rows = measure(pipe, MnistEvaluator(evaluator_dir), args.images_per_prompt)
        settings = {
            "images_per_prompt": args.images_per_prompt,
            "seeds": f"{EVALUATION_SEED}..{EVALUATION_SEED + args.images_per_prompt - 1}",
            "num_inference_steps": pipe.config.default_num_inference_steps,
            "num_candidates": pipe.config.default_num_candidates,
            "num_augmentations": pipe.config.default_num_augmentations,
            "scored_by": os.path.relpath(evaluator_dir, REPO_ROOT),
        }
    settings = {**settings, "min_accuracy": args.min_accuracy, "min_attribute": args.min_attribute}
    examples = choose_examples(rows, args.min_accuracy, args.min_attribute)
    measurement = {"measured_by": COMMAND, "settings": settings, "examples": examples, "all_prompts": rows}
    report.write_json("demo-examples", measurement)
    accuracies = np.array([row["digit_accuracy"] for row in rows])
    table = format_table(
        [dict(row, example="yes" if row in examples else "") for row in rows],
        [
            ("prompt", "prompt", ""),
            ("digit_accuracy", "digit accuracy", ".3f"),
            ("attribute_obeyed", "attribute obeyed", ".3f"),
            ("example", "example", ""),
        ],
    )
    written = "not written (--dry_run)" if args.dry_run else f"written to {EXAMPLES_FILE.relative_to(REPO_ROOT)}"
    report.emit(
        f"Demo examples: {PIPELINE}, {settings['images_per_prompt']} images per prompt",
        f"{table}\n\n{len(rows)} prompts x {settings['images_per_prompt']} images: digit accuracy mean "
        f"{accuracies.mean():.3f}, worst {accuracies.min():.3f}; {len(examples)} examples (one per digit at >= "
        f"{args.min_accuracy}), {written}.",
    )
    if not args.dry_run:
        write_json_atomically(EXAMPLES_FILE, {**measured, PIPELINE: measurement})


SECTION = Section(
    names=("demo-examples",),
    summary=f"Which prompts the embedded {PIPELINE} draws well, scored by the evaluation classifier; writes the "
    f"demo's examples ({EXAMPLES_FILE.name}).",
    run=run,
    add_arguments=add_arguments,
    check=check,
)
