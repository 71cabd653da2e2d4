"""TR0N benchmark suite: quality vs steps against the baselines, throughput, overhead, memory and speed features.

    python benchmarks/run.py --quick                                  # everything, small sizes (< 10 min on 2 cores)
    python benchmarks/run.py                                          # everything, full sizes
    python benchmarks/run.py throughput overhead --device cuda --speed_workloads biggan-deep-256-clip
    python benchmarks/run.py sampler --device cuda                    # diffusion G: cost per Langevin step
    python benchmarks/run.py demo-load                                # `tron demo` under 1, 4, 16 clients

Sections (all but ``sampler`` and ``demo-load`` by default): ``quality`` (initialisations x T steps, with the
evaluation model), ``throughput`` (batched vs one at a time), ``overhead`` (pipeline vs bare forward+backward, per-step
breakdown), ``memory`` (peak vs batch size and steps, memory after every step), ``features`` (bf16/fp16 autocast,
channels_last, torch.compile) and, only when named, ``sampler`` (a diffusion-sampler G, `ddpm-cifar10-32-clip` by
default: seconds, GFLOP and peak memory of a Langevin step at 1, 5 and 10 sampler steps, with and without gradient
checkpointing) and ``demo-load`` (`demo_load.py`: a ``tron demo`` server under 1, 4 and 16 HTTP clients, 2 minutes
each, then overloaded; 1 and 4 clients for 30 s with ``--quick``).
Each section prints its tables and writes ``<section>.json`` (and PNG plots) to ``--output_dir``; ``report.md``
collects all tables.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import format_table, matmul_gflops, write_json  # noqa: E402
from workloads import SYNTHETIC_WORKLOADS, load_workload  # noqa: E402


SECTIONS = ("quality", "throughput", "overhead", "memory", "features", "sampler", "demo-load")
DEFAULT_SECTIONS = SECTIONS[:-2]
QUICK = {
    "batch_sizes": [1, 8, 32],
    "repeats": 3,
    "memory_batches": [1, 32],
    "memory_steps": [50],
    "trace_steps": 50,
    "quality": {
        "samples_per_condition": 3,
        "grid_step_sizes": [0.3, 1.0],
        "grid_noise_stds": [0.01, 0.05],
        "tuning_samples_per_condition": 1,
    },
    "text": {"samples_per_condition": 2, "one_prompt_per_digit": True},
    "diffusion": {
        "samples_per_condition": 2,
        "step_counts": [0, 5, 10],
        "grid_step_sizes": [0.3, 1.0],
        "grid_noise_stds": [0.01],
        "tuning_samples_per_condition": 1,
        "fusedream_candidates": 21,
    },
    "sampler": {"batch_size": 1, "sampler_steps": [1, 5, 10], "langevin_steps": 1, "repeats": 1},
    "demo-load": ["--clients", "1", "4", "--duration", "30", "--overload_duration", "30"],
}
FULL = {
    "batch_sizes": [1, 2, 4, 8, 16, 32, 64],
    "repeats": 5,
    "memory_batches": [1, 8, 32, 64],
    "memory_steps": [1, 10, 50, 100],
    "trace_steps": 100,
    "quality": {},
    "text": {"samples_per_condition": 8},
    "diffusion": {
        "samples_per_condition": 8,
        "step_counts": [0, 5, 10, 25],
        "grid_step_sizes": [0.3, 1.0, 3.0],
        "grid_noise_stds": [0.01, 0.1],
        "tuning_samples_per_condition": 2,
        "fusedream_candidates": 51,
    },
    "sampler": {"batch_size": 2, "sampler_steps": [1, 5, 10], "langevin_steps": 2, "repeats": 2},
    "demo-load": [],
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "sections",
        nargs="*",
        help=f"Sections to run, of {', '.join(SECTIONS)} (default: all but sampler and demo-load).",
    )
    parser.add_argument(
        "--pipeline",
        default="tron-mnist",
        help="Class pipeline: embedded name or folder ('' skips it in the quality section).",
    )
    parser.add_argument(
        "--text_pipeline",
        default="tron-mnist-text",
        help="Text pipeline for the quality section ('' to skip it); skipped with a note when it cannot be loaded.",
    )
    parser.add_argument(
        "--diffusion_pipeline",
        default="tron-mnist-ddim",
        help="Class pipeline with a diffusion G for the quality section (smaller sizes: every Langevin step "
        "runs the sampler; '' to skip it); skipped with a note when it cannot be loaded.",
    )
    parser.add_argument(
        "--speed_workloads",
        nargs="+",
        default=None,
        help=f"Workloads of the speed sections: pipelines or {SYNTHETIC_WORKLOADS} "
        "(default: --pipeline and biggan-tiny).",
    )
    parser.add_argument(
        "--sampler_workload",
        default="ddpm-cifar10-32-clip",
        help="Workload of the sampler section: a pipeline whose G is a diffusers sampler, or ddpm-cifar10-32-clip.",
    )
    parser.add_argument(
        "--sampler_batch_size", type=int, default=None, help="Batch of the sampler section (default: by mode)."
    )
    parser.add_argument(
        "--eval_classifier",
        default=None,
        help="Evaluation classifier folder (default: benchmarks/assets/mnist-eval-classifier, committed).",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--quick", action="store_true", help="Small sizes: the whole suite in under 10 minutes on 2 CPU cores."
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Benchmark torch.compile in `features` (default: on, off with --quick: the first compile "
        "takes minutes on 2 cores).",
    )
    parser.add_argument(
        "--batch_sizes", type=int, nargs="+", default=None, help="Throughput batch sizes (default: by mode)."
    )
    parser.add_argument("--repeats", type=int, default=None, help="Timed runs per measurement (default: by mode).")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads.")
    parser.add_argument("--output_dir", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--probe_batch", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--probe_steps", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.sections) - set(SECTIONS) - {"memory-probe"}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    args.sections = args.sections or list(DEFAULT_SECTIONS)
    return args


def environment(args) -> dict:
    """What produced the numbers: machine, versions, commit, load."""

    def git(*arguments):
        return subprocess.run(
            ["git", *arguments], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " + uncommitted changes"
    info = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": commit,
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.sections == ["memory-probe"]:
        from speed import peak_memory_of_call

        print(
            json.dumps(
                peak_memory_of_call(load_workload(args.pipeline, args.device), args.probe_batch, args.probe_steps)
            )
        )
        return
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    sizes = dict(QUICK if args.quick else FULL)
    if args.batch_sizes:
        sizes["batch_sizes"] = args.batch_sizes
    if args.repeats:
        sizes["repeats"] = args.repeats
    include_compile = (not args.quick) if args.compile is None else args.compile
    started = time.perf_counter()
    env = environment(args)
    report = [
        f"# TR0N benchmarks\n\n`{env['command']}` at commit {env['commit']}, {env['date']}, device {args.device}, "
        f"torch {env['torch']}, {env['threads']} threads, load average at start {env['load_average_at_start']}.\n"
    ]
    speed_names = args.speed_workloads or [args.pipeline, "biggan-tiny"]

    def emit(title, text):
        print(f"\n## {title}\n\n{text}", flush=True)
        report.append(f"## {title}\n\n{text}\n")

    if "quality" in args.sections:
        run_quality(args, sizes, output_dir, emit)
    speed_sections = [s for s in ("throughput", "overhead", "memory", "features") if s in args.sections]
    if speed_sections:
        run_speed(args, sizes, speed_names, speed_sections, include_compile, output_dir, emit)
    if "sampler" in args.sections:
        run_sampler(args, sizes["sampler"], output_dir, emit)
    if "demo-load" in args.sections:
        import demo_load  # gradio's imports only when this section runs

        results = demo_load.main([*sizes["demo-load"], "--output_dir", str(output_dir)])
        emit("tron demo under load (text endpoint, page defaults, 127.0.0.1)", demo_load.table(results))

    env["load_average_at_end"] = os.getloadavg()
    env["seconds"] = time.perf_counter() - started
    write_json(output_dir / "environment.json", env)
    report.append(f"Total: {env['seconds']:.0f} s; load average at end {env['load_average_at_end']}.\n")
    (output_dir / "report.md").write_text("\n".join(report))
    print(f"\nTotal {env['seconds']:.0f} s. Results in {output_dir}.")


def run_quality(args, sizes, output_dir: Path, emit) -> None:
    from metrics import DEFAULT_EVAL_CLASSIFIER, MnistEvaluator
    from quality import QualitySettings, quality, quality_tables

    evaluator_dir = args.eval_classifier or DEFAULT_EVAL_CLASSIFIER
    evaluator = MnistEvaluator(evaluator_dir) if Path(evaluator_dir).is_dir() else None
    results = {}
    # Labels name the results and files: the class and text pipelines by their kind, the diffusion one apart.
    for name, overrides, label in (
        (args.pipeline, {}, None),
        (args.text_pipeline, sizes["text"], None),
        (args.diffusion_pipeline, sizes["diffusion"], "diffusion"),
    ):
        if not name:
            continue
        try:
            workload = load_workload(name, args.device)
        except (OSError, ValueError) as error:
            emit(f"Quality: {name}", f"Skipped: cannot load `{name}` ({type(error).__name__}: {str(error)[:200]}).")
            continue
        settings = QualitySettings(**{**sizes["quality"], **overrides})
        result = quality(workload, settings, evaluator, output_dir, label)
        results[label or workload.kind] = result
        emit(f"Quality: {workload.name} ({workload.kind}, {result['seconds']:.0f} s)", quality_tables(result))
    write_json(output_dir / "quality.json", results)


def run_speed(args, sizes, names, sections, include_compile, output_dir: Path, emit) -> None:
    import speed

    repeats, results = sizes["repeats"], {section: [] for section in sections}
    if "throughput" in sections:
        matmul_rate = matmul_gflops(torch.device(args.device))
    for name in names:
        workload = load_workload(name, args.device)
        steps = workload.pipe.config.default_num_inference_steps
        if "throughput" in sections:
            # The default configuration at every batch size; then batch 32 only: without augmentations where the
            # pipeline uses some (one image is then a batch of one for f), and with speed features on both sides.
            variants = [(sizes["batch_sizes"], None, "float32 eager"), ([32], None, "channels_last + bf16 autocast")]
            if not args.quick:
                variants[1:1] = [
                    ([32], None, feature)
                    for feature in ("channels_last", "fused batch norm + channels_last")
                    if feature in speed.applicable_features(workload)
                ]
                if workload.pipe.config.default_num_augmentations:
                    variants.insert(1, ([32], 0, "float32 eager"))
            workload_results = []
            for batch_sizes, num_augmentations, feature in variants:
                result = speed.throughput(
                    workload, batch_sizes, steps, repeats, num_augmentations=num_augmentations, feature=feature
                )
                workload_results.append(result)
                emit(
                    f"Throughput: {workload.name}, {feature}, N={result['num_augmentations']} augmentations, {steps} steps",
                    format_table(
                        [
                            dict(row, rounds=" ".join(f"{r:.2f}" for r in row["speedup_per_round"]))
                            for row in result["rows"]
                        ],
                        [
                            ("batch_size", "batch", "d"),
                            ("batched_images_per_second", "batched img/s", ".1f"),
                            ("loop_images_per_second", "one-at-a-time img/s", ".1f"),
                            ("speedup", "speed-up", ".2f"),
                            ("rounds", "speed-up per round", ""),
                            ("batched_gflops_per_second", "batched GFLOP/s", ".1f"),
                        ],
                    )
                    + f"\n\nBatched vs one-at-a-time at batch {result['loop_batch']}, same seeds: {result['agreement']}; "
                    f"batched run vs itself with the initial latents moved by 1e-6: {result['sensitivity_to_1e-6_latent_change']}",
                )
            summary = speed.best_settings_speedup(workload_results, 32, matmul_rate)
            emit(
                f"Throughput summary: {workload.name}, batch 32",
                f"fastest batched setting `{summary['batched_feature']}` {summary['batched_images_per_second']:.1f} img/s vs fastest "
                f"one-at-a-time setting `{summary['loop_feature']}` {summary['loop_images_per_second']:.1f} img/s: "
                f"**{summary['speedup']:.2f}x** (a ratio of median rates; default settings: {summary['default_speedup']:.2f}x, median of back-to-back ratios).\n\n"
                f"Work per image: {workload_results[0]['gflops_per_image']:.3f} GFLOP of matrix products and convolutions. "
                f"Default settings: batched {summary['default_batched_gflops_per_second']:.1f} GFLOP/s "
                f"(**{summary['default_share_of_matmul_rate']:.0%}** of this machine's float32 matrix-product rate, "
                f"{summary['matmul_gflops']:.1f} GFLOP/s), one-at-a-time {summary['default_loop_gflops_per_second']:.1f} GFLOP/s; "
                f"a batched call at the full matrix-product rate would be **{summary['float32_ceiling_speedup']:.2f}x** the loop.",
            )
            results["throughput"].extend(workload_results)
            results.setdefault("throughput_summary", []).append(summary)
        if "overhead" in sections:
            result = speed.overhead(workload, 32, steps, repeats)
            results["overhead"].append(result)
            stages = [{"stage": k, "ms": v * 1e3} for k, v in result["stage_seconds_per_step"].items()]
            emit(
                f"Overhead: {workload.name}, batch 32, {steps} steps",
                f"pipeline {result['pipeline_seconds']:.3f} s / bare forward+backward {result['bare_seconds']:.3f} s = "
                f"**{result['overhead_ratio']:.3f}** (median of per-run ratios {result['median_pairwise_ratio']:.3f}); "
                f"fixed cost (0-step call: candidates, final render) {result['fixed_seconds']:.3f} s, bare {result['bare_fixed_seconds']:.3f} s; "
                f"host syncs in a call: {result['host_syncs_in_call']}.\n\n"
                + format_table(
                    stages
                    + [
                        {"stage": "bare fwd+bwd step", "ms": result["bare_per_step_seconds"] * 1e3},
                        {"stage": "pipeline step", "ms": result["per_step_seconds"] * 1e3},
                    ],
                    [("stage", "per-step stage", ""), ("ms", "ms", ".2f")],
                ),
            )
        if "memory" in sections:
            result = speed.memory(
                workload, sizes["memory_batches"], sizes["memory_steps"], 32, steps, sizes["trace_steps"], args.threads
            )
            results["memory"].append(result)
            trace = result["per_step"]
            emit(
                f"Memory: {workload.name} ({result['measure']})",
                format_table(
                    result["by_batch"] + result["by_steps"],
                    [("batch_size", "batch", "d"), ("steps", "steps", "d"), ("peak_MiB", "peak MiB", ".1f")],
                )
                + f"\n\nAfter each of {trace['steps']} steps at batch {trace['batch_size']}: first {trace['MiB_per_step'][0]:.1f} MiB, "
                f"last {trace['MiB_per_step'][-1]:.1f} MiB, slope over the second half {trace['growth_MiB_per_step_second_half']:.3f} MiB/step.",
            )
        if "features" in sections:
            result = speed.speed_features(workload, 32, steps, max(2, repeats - 1), include_compile)
            results["features"].append(result)
            rows = [dict(row, rounds=" ".join(f"{r:.2f}" for r in row["speedup_per_round"])) for row in result["rows"]]
            emit(
                f"Speed features: {workload.name}, batch 32, {steps} steps",
                format_table(
                    rows,
                    [
                        ("feature", "feature", ""),
                        ("images_per_second", "img/s", ".1f"),
                        ("speedup", "speed-up", ".2f"),
                        ("rounds", "speed-up per round", ""),
                        ("mean_energy", "mean E", ".4f"),
                        ("median_abs_energy_change", "median |ΔE|", ".1e"),
                        ("max_abs_energy_change", "max |ΔE|", ".1e"),
                        ("first_call_seconds", "first call s", ".1f"),
                    ],
                )
                + "\n\nSpeed-up: median of per-round ratios to float32 eager (features timed in interleaved rounds; compiled "
                "features after the others, against float32 eager's median). ΔE: change of each image's final energy "
                "against float32 eager with the same seeds.",
            )
        del workload
    plots = {"throughput": speed.plot_throughput, "overhead": speed.plot_overhead, "memory": speed.plot_memory}
    if "throughput_summary" in results:
        write_json(output_dir / "throughput_summary.json", results.pop("throughput_summary"))
    for section, result in results.items():
        if section in plots and result:
            plots[section](
                result if section != "throughput" else [r for r in result if len(r["rows"]) > 1],
                output_dir / f"{section}.png",
            )
        write_json(output_dir / f"{section}.json", result)


def run_sampler(args, sizes: dict, output_dir: Path, emit) -> None:
    import speed

    workload = load_workload(args.sampler_workload, args.device)
    batch_size = args.sampler_batch_size or sizes["batch_size"]
    result = speed.sampler_cost(
        workload, batch_size, sizes["sampler_steps"], sizes["langevin_steps"], sizes["repeats"]
    )
    write_json(output_dir / "sampler.json", result)
    emit(
        f"Sampler cost: {workload.name} ({result['parameters_M']:.1f} M parameters in G), batch {batch_size}, "
        f"N={result['num_augmentations']} augmentations",
        format_table(
            result["rows"],
            [
                ("sampler_steps", "sampler steps", "d"),
                ("checkpointing", "checkpointing", ""),
                ("seconds_per_langevin_step", "s / Langevin step", ".2f"),
                ("gflops_per_langevin_step", "GFLOP / Langevin step", ".1f"),
                ("generator_gflops", "of which G fwd+bwd", ".1f"),
                ("peak_MiB", "peak MiB", ".0f"),
            ],
        )
        + f"\n\nPeak memory: {result['measure']}. GFLOP: matrix products and convolutions, forward and backward "
        "(attention is not counted on CPU).",
    )


if __name__ == "__main__":
    main()
