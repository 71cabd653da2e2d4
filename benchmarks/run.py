"""TR0N benchmark suite: every measurement of the project, one entry point over one harness (`harness.py`).

    python benchmarks/run.py --quick                                  # the default sections, small sizes (< 10 min on 2 cores)
    python benchmarks/run.py                                          # the default sections, full sizes
    python benchmarks/run.py throughput overhead --device cuda --speed_workloads biggan-deep-256-clip
    python benchmarks/run.py sampler --device cuda                    # diffusion G: cost per Langevin step
    python benchmarks/run.py cost --cost_workloads biggan-deep-256 stylegan2-1024   # per-stage costs, full-size G
    python benchmarks/run.py text-to-image --device cuda               # SD-Turbo-sized G + CLIP ViT-H: cost per step
    python benchmarks/run.py pairs --num_pairs 100000                 # pair generation, cache reads, training
    python benchmarks/run.py eval-cost --eval_cost_workload tron-mnist-text --eval_cost_batch_size 16
    python benchmarks/run.py compare --compare_pipelines tron-mnist-text other/tron-mnist-text
    python benchmarks/run.py demo-examples                            # re-measure the demo's examples
    python benchmarks/run.py demo-load                                # `tron demo` under 1, 4, 16 clients
    python benchmarks/run.py quality --pipeline '' --text_pipeline '' --diffusion_pipeline ''   # the head-to-head only

Sections run by default: ``quality`` (initialisations x T steps, with the evaluation model; and the head-to-head of
conditional sampling, noise optimisation and TR0N on the text-to-image G of `tron-mnist-t2i`), ``throughput``
(batched vs one at a time), ``overhead`` (pipeline vs bare forward+backward, per-step breakdown), ``memory`` (peak vs
batch size and steps, memory after every step), ``features`` (bf16/fp16 autocast, channels_last, torch.compile).
Only when named: ``sampler`` (a diffusion-sampler G, `ddpm-cifar10-32-clip` by default: seconds, GFLOP and peak
memory of a Langevin step at 1, 5 and 10 sampler steps, with and without gradient checkpointing), ``cost`` (seconds,
FLOPs and memory of each stage of TR0N for full-size generators with random weights, `cost.COST_WORKLOADS`),
``text-to-image`` (an SD-Turbo-sized text-to-image G with a CLIP ViT-H/14 f at 512 px, random weights: GFLOP,
seconds and peak memory of one optimisation step with and without checkpointing and with the tiny decoder, fp8
weight storage, translator head sizes and the shared-basis head's NLL trade-off; `bench_text_to_image.py`),
``pairs`` (pair generation, cache reads and translator training throughput at 1M pairs), ``eval-cost`` (per-image
cost of a prompts-file run, extrapolated to an evaluation's size), ``compare`` (candidate pipelines' shipped sampling
per digit and prompt, on tuning or evaluation seeds) and ``demo-examples`` (which prompts the embedded
tron-mnist-text draws well; writes the demo's examples, src/tron_pipelines/commands/demo_examples.json) and
``demo-load`` (a ``tron demo`` server under 1, 4 and 16 HTTP clients, then overloaded; `demo_load.py`).

Each section prints its tables and writes ``<section>.json`` (and PNG plots) to ``--output_dir``; ``report.md``
collects all tables under a header saying what produced them. One-off investigations are in ``benchmarks/studies/``.
"""

import json
import os
import sys
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_text_to_image  # noqa: E402
import compare  # noqa: E402
import cost  # noqa: E402
import demo_examples  # noqa: E402
import demo_load  # noqa: E402
import evaluation_cost  # noqa: E402
import pair_throughput  # noqa: E402
import quality  # noqa: E402
import speed  # noqa: E402
import torch  # noqa: E402
from harness import parse_args, run_sections  # noqa: E402
from workloads import load_workload  # noqa: E402


# In the order they run.
SECTIONS = (
    quality.SECTION,
    speed.SPEED_SECTION,
    speed.SAMPLER_SECTION,
    cost.SECTION,
    bench_text_to_image.SECTION,
    pair_throughput.SECTION,
    evaluation_cost.SECTION,
    compare.SECTION,
    demo_examples.SECTION,
    demo_load.SECTION,
)
# `speed.memory_probe_in_subprocess` runs this file with it: one call's peak memory in a fresh process, as JSON.
MEMORY_PROBE = "memory-probe"


def main(argv=None) -> None:
    args = parse_args(SECTIONS, argv, __doc__, hidden_sections=(MEMORY_PROBE,))
    if args.sections == [MEMORY_PROBE]:
        torch.set_num_threads(args.threads)
        workload = load_workload(args.pipeline, args.device)
        print(json.dumps(speed.peak_memory_of_call(workload, args.probe_batch, args.probe_steps)))
        return
    run_sections(SECTIONS, args)


if __name__ == "__main__":
    main()
