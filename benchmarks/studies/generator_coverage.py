"""How often an MNIST pipeline's generator G makes each digit, stroke weight and slant, beside real digits.

A prompt can ask only for what G makes: where G rarely draws a digit in a style ("a zero leaning left"), the
translator and the Langevin steps have little to find. ``--num_samples`` prior draws of G are rendered, their digit
read by the evaluation classifier and their stroke weight and slant measured on the pixels as the CLIP's training
captions were (`data.attribute_categories`); the held-out real digits are measured the same way.

Issue 17's diagnosis of the weakest prompts; the figures are in tron-mnist-text's model card ("What limits the
weakest prompts").

    python benchmarks/studies/generator_coverage.py                       # tron-mnist-text's G, 20,000 draws (1 min)
    python benchmarks/studies/generator_coverage.py other/pipeline --num_samples 5000
"""

import argparse
import os
import sys
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/

import torch  # noqa: E402
from common import format_table  # noqa: E402
from metrics import MnistEvaluator  # noqa: E402

from tron_pipelines import TronPipeline  # noqa: E402


COLUMNS = [("digit", "digit", "d"), ("source", "images", "s"), ("share", "share of images", ".3f")] + [
    (name, f"{name} (of the digit)", ".3f") for name in ("thin", "bold", "left", "upright", "right")
]


def generator_images(pipe, num_samples: int, seed: int, chunk_size: int = 2000) -> torch.Tensor:
    """``num_samples`` prior draws of ``pipe.generator``, rendered ``(N, C, H, W)`` in [-1, 1]."""
    latents = pipe.generator.sample_latents(
        num_samples, generator=torch.Generator(pipe.device).manual_seed(seed), device=pipe.device
    )
    with torch.no_grad():
        return torch.cat([pipe.generator.generate(chunk).clamp(-1, 1).cpu() for chunk in latents.split(chunk_size)])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", nargs="?", default="tron-mnist-text", help="Embedded name or folder.")
    parser.add_argument("--num_samples", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.num_samples < 1:
        parser.error(f"--num_samples must be positive, got {args.num_samples}.")
    torch.set_num_threads(args.threads)
    evaluator = MnistEvaluator()
    pipe = TronPipeline.from_pretrained(args.pipeline)
    grey = ((generator_images(pipe, args.num_samples, args.seed) + 1) / 2).mean(dim=1).numpy()
    read = evaluator.classifier.predict(grey)
    split = evaluator.split
    sources = {
        f"G, {args.num_samples} draws (digit as read)": evaluator.attribute_shares(grey, read),
        f"real held-out ({len(split.held_out_labels)})": evaluator.attribute_shares(
            split.held_out_images, split.held_out_labels
        ),
    }
    rows = [
        {**shares[digit], "source": source}
        for digit in range(evaluator.data.NUM_CLASSES)
        for source, shares in sources.items()
    ]
    print(format_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
