"""Measure which prompts the embedded `tron-mnist-text` draws well, and write them as the demo's examples.

    python benchmarks/demo_examples.py                       # 50 prompts x 32 images, about 12 min on 2 busy cores
    python benchmarks/demo_examples.py --images_per_prompt 8 --dry_run
    python benchmarks/demo_examples.py --reuse_measurements  # choose again from the stored scores, no sampling

Candidates are the text benchmark's 50 prompts (per digit: plain, thin, bold, leaning left, leaning right, in the
phrasing the small CLIP was trained on; `benchmarks/workloads.py`). Each is sampled at the pipeline's shipped defaults
on evaluation seeds (not the demo's seeds 0, 1, ...), and the images are scored by the committed evaluation classifier
(`benchmarks/assets/mnist-eval-classifier`, which shares nothing with the CLIP that Langevin follows); the requested
stroke weight or slant is measured on the pixels. Per digit, the best prompt that reaches --min_accuracy (and
--min_attribute where it asks for an attribute) becomes an example. Everything measured goes to
`src/tron_pipelines/commands/demo_examples.json`, the one list the demo reads; re-run after retraining the pipeline.
"""

import argparse
import json
import os
import sys
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from metrics import MnistEvaluator  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from workloads import mnist_prompts  # noqa: E402

from tron_pipelines import TronPipeline  # noqa: E402
from tron_pipelines.utils.files import write_json_atomically  # noqa: E402


PIPELINE = "tron-mnist-text"
EXAMPLES_FILE = REPO_ROOT / "src" / "tron_pipelines" / "commands" / "demo_examples.json"
EVALUATION_SEED = 10_000


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images_per_prompt", type=int, default=32, help="Images per prompt (default 32).")
    parser.add_argument(
        "--min_accuracy", type=float, default=0.95, help="Least digit accuracy of an example (default 0.95)."
    )
    parser.add_argument(
        "--min_attribute",
        type=float,
        default=0.9,
        help="Least share of images obeying the asked stroke weight or slant (default 0.9).",
    )
    parser.add_argument(
        "--dry_run", action="store_true", help=f"Print the table only; do not write {EXAMPLES_FILE.name}."
    )
    parser.add_argument(
        "--reuse_measurements",
        action="store_true",
        help=f"Choose again from the scores stored in {EXAMPLES_FILE.name} instead of sampling.",
    )
    return parser.parse_args(argv)


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


def main(argv=None) -> None:
    args = parse_args(argv)
    measured = json.loads(EXAMPLES_FILE.read_text()) if EXAMPLES_FILE.is_file() else {}
    if args.reuse_measurements:
        rows, settings = measured[PIPELINE]["all_prompts"], measured[PIPELINE]["settings"]
    else:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        pipe = TronPipeline.from_pretrained(PIPELINE)
        pipe.set_progress_bar_config(disable=True)
        rows = measure(pipe, MnistEvaluator(), args.images_per_prompt)
        settings = {
            "images_per_prompt": args.images_per_prompt,
            "seeds": f"{EVALUATION_SEED}..{EVALUATION_SEED + args.images_per_prompt - 1}",
            "num_inference_steps": pipe.config.default_num_inference_steps,
            "num_candidates": pipe.config.default_num_candidates,
            "num_augmentations": pipe.config.default_num_augmentations,
            "scored_by": "benchmarks/assets/mnist-eval-classifier",
        }
    settings = {**settings, "min_accuracy": args.min_accuracy, "min_attribute": args.min_attribute}
    examples = choose_examples(rows, args.min_accuracy, args.min_attribute)

    print("| prompt | digit accuracy | attribute obeyed | example |\n|---|---|---|---|")
    for row in rows:
        attribute = "" if row["attribute_obeyed"] is None else f"{row['attribute_obeyed']:.3f}"
        print(f"| {row['prompt']} | {row['digit_accuracy']:.3f} | {attribute} | {'yes' if row in examples else ''} |")
    accuracies = np.array([row["digit_accuracy"] for row in rows])
    print(
        f"\n{len(rows)} prompts x {settings['images_per_prompt']} images: digit accuracy mean {accuracies.mean():.3f}, "
        f"worst {accuracies.min():.3f}; {len(examples)} examples (one per digit at >= {args.min_accuracy})."
    )
    if args.dry_run:
        return
    measured[PIPELINE] = {
        "measured_by": "python benchmarks/demo_examples.py",
        "settings": settings,
        "examples": examples,
        "all_prompts": rows,
    }
    write_json_atomically(EXAMPLES_FILE, measured)
    print(f"Wrote {EXAMPLES_FILE.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
