"""Pairs section: translator training data: pair generation (pairs/s), cache reads, training (steps/s) and peak memory.

    python benchmarks/run.py pairs                           # 1M pairs x 512-dim conditions, tiny models
    python benchmarks/run.py pairs --num_pairs 100000        # quicker
    python benchmarks/run.py pairs --pairs_pipeline <folder> # real generator and encoder (e.g. BigGAN + CLIP)

Without --pairs_pipeline, the pairs come from a small random pipeline whose encoder makes 512-dim conditions (CLIP
ViT-B/32's size) from a generator with 128 latents (BigGAN-512's z), so generation is cheap and the benchmark
measures the cache and the training loop at the real data size. Peak memory is reported as resident set size (RSS)
split into anonymous memory (what the process allocated) and file-backed pages (memory-mapped cache pages: page cache
the kernel can drop).
"""

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
from common import format_table
from harness import Section
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

from tron_pipelines import ConvGenerator, LangevinScheduler, TranslatorModel, TronPipeline
from tron_pipelines.training import (
    PairCache,
    PairSource,
    generate_pairs,
    load_training_pipeline,
    parse_train_args,
    train_translator,
)


class MemoryMonitor:
    """Samples the process's resident memory in a background thread and keeps the peaks of one phase."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.process = psutil.Process()
        self.peak = {"rss": 0, "anonymous": 0, "file": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, int]:
        status = Path(f"/proc/{self.process.pid}/status")
        if status.is_file():  # Linux splits RSS into anonymous and file-backed pages
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            kib = lambda name: int(fields[name].split()[0]) * 1024  # noqa: E731
            return {"rss": kib("VmRSS"), "anonymous": kib("RssAnon"), "file": kib("RssFile") + kib("RssShmem")}
        rss = self.process.memory_info().rss
        return {"rss": rss, "anonymous": rss, "file": 0}

    def _run(self):
        while not self._stop.is_set():
            for name, value in self.sample().items():
                self.peak[name] = max(self.peak[name], value)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        for name, value in self.sample().items():
            self.peak[name] = max(self.peak[name], value)

    @staticmethod
    def _in_gib(values: dict[str, int]) -> dict[str, float]:
        return {f"{name}_GiB": value / 2**30 for name, value in values.items()}

    def peak_GiB(self) -> dict[str, float]:
        """``{"rss_GiB", "anonymous_GiB", "file_GiB"}``: the peaks of the phase."""
        return self._in_gib(self.peak)

    def now_GiB(self) -> dict[str, float]:
        """The same keys, now."""
        return self._in_gib(self.sample())


def build_benchmark_pipeline(folder: Path, condition_dim: int, latent_dim: int) -> Path:
    """A random pipeline: ConvGenerator (16x16 RGB) + a one-layer CLIP whose projection has ``condition_dim`` values."""
    torch.manual_seed(0)
    encoder = CLIPModel(
        CLIPConfig(
            text_config=CLIPTextConfig(
                hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
            ).to_dict(),
            vision_config=CLIPVisionConfig(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=16,
                patch_size=8,
            ).to_dict(),
            projection_dim=condition_dim,
        )
    ).eval()
    generator = ConvGenerator(
        latent_dim=latent_dim, out_channels=3, base_channels=8, base_resolution=4, channel_multipliers=(2, 1)
    ).eval()
    pipeline = TronPipeline(
        translator=TranslatorModel(condition_dim=condition_dim, latent_dim=latent_dim, num_components=2, hidden_dim=8),
        generator=generator,
        encoder=encoder,
        scheduler=LangevinScheduler(),
    )
    pipeline.save_pretrained(folder)
    return folder


# The section of run.py ----------------------------------------------------------------------------------------------
def add_arguments(group) -> None:
    group.add_argument(
        "--pairs_pipeline", default=None, help="Pipeline of the pairs section (default: a random tiny one)."
    )
    group.add_argument("--num_pairs", type=int, default=1_000_000)
    group.add_argument("--condition_dim", type=int, default=512, help="Condition size of the default pipeline.")
    group.add_argument("--latent_dim", type=int, default=128, help="Latent size of the default pipeline.")
    group.add_argument("--pairs_per_shard", type=int, default=65536)
    group.add_argument("--generation_batch_size", type=int, default=1024)
    group.add_argument(
        "--read_batch_size", type=int, default=4096, help="Batch of the shuffled full read of the cache."
    )
    group.add_argument("--train_steps", type=int, default=200)
    group.add_argument("--train_batch_size", type=int, default=256)
    group.add_argument("--mixed_precision", default="no", choices=("no", "fp16", "bf16"))
    group.add_argument(
        "--work_dir", default=None, help="Where the pair cache goes (default: a temporary folder, deleted)."
    )


def run(args, sizes: dict, report) -> None:
    if args.device == "cpu":
        # Read by the accelerators of `generate_pairs` and `train_translator` (the latter makes its own).
        os.environ["ACCELERATE_USE_CPU"] = "1"
    from accelerate import Accelerator  # after ACCELERATE_USE_CPU is set

    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="tron-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    phases = []
    try:
        pipeline_path = args.pairs_pipeline or str(
            build_benchmark_pipeline(work_dir / "pipeline", args.condition_dim, args.latent_dim)
        )
        accelerator = Accelerator(mixed_precision=args.mixed_precision)
        device = accelerator.device
        pipeline = load_training_pipeline(pipeline_path).to(device)
        source = PairSource.from_pipeline(pipeline)
        phases.append({"phase": "after imports and loading the pipeline", **MemoryMonitor().now_GiB()})
        num_latents = sum(s["dim"] for s in source.latent_specs)

        pairs_dir = work_dir / "pairs"
        with MemoryMonitor() as memory:
            start = time.perf_counter()
            generate_pairs(
                source,
                pairs_dir,
                args.num_pairs,
                args.pairs_per_shard,
                seed=0,
                generation_batch_size=args.generation_batch_size,
                accelerator=accelerator,
            )
            seconds = time.perf_counter() - start
        cache_bytes = sum(p.stat().st_size for p in pairs_dir.glob("*.safetensors"))
        phases.append(
            {
                "phase": f"generation (`generate_pairs`, batches of {args.generation_batch_size}, shards of "
                f"{args.pairs_per_shard:,})",
                "speed": f"{args.num_pairs / seconds:,.0f} pairs/s ({seconds:.1f} s)",
                "pairs_per_second": args.num_pairs / seconds,
                **memory.peak_GiB(),
            }
        )
        del pipeline, source
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

        with MemoryMonitor() as memory:
            start = time.perf_counter()
            cache = PairCache(pairs_dir, verify_checksums=True)
            open_seconds = time.perf_counter() - start
            order = torch.randperm(len(cache), generator=torch.Generator().manual_seed(0))
            start = time.perf_counter()
            for begin in range(0, len(cache), args.read_batch_size):
                cache[order[begin : begin + args.read_batch_size]]
            read_seconds = time.perf_counter() - start
        phases.append(
            {
                "phase": f"opening with checksums ({cache_bytes / 2**30:.2f} GiB hashed)",
                "speed": f"{open_seconds:.1f} s",
                "seconds": open_seconds,
            }
        )
        phases.append(
            {
                "phase": f"one shuffled pass over the cache in batches of {args.read_batch_size}",
                "speed": f"{len(cache) / read_seconds:,.0f} pairs/s",
                "pairs_per_second": len(cache) / read_seconds,
                **memory.peak_GiB(),
            }
        )
        condition_dim = cache.condition_dim
        del cache  # unmaps the files: the training phase below starts from its own mapping

        train_argv = [
            "--pipeline",
            pipeline_path,
            "--pairs_dir",
            str(pairs_dir),
            "--output_dir",
            str(work_dir / "train"),
            "--train_batch_size",
            str(args.train_batch_size),
            "--max_train_steps",
            str(args.train_steps),
            "--learning_rate",
            "1e-4",
            "--checkpointing_steps",
            str(10**9),
            "--validation_steps",
            str(10**9),
            "--num_validation_pairs",
            "256",
            "--num_validation_conditions",
            "0",
            "--report_to",
            "none",
            "--mixed_precision",
            args.mixed_precision,
            "--skip_pair_checksums",
        ]
        with MemoryMonitor() as memory:
            result = train_translator(parse_train_args(train_argv))
        phases.append(
            {
                "phase": f"training (`train_translator`, batch {args.train_batch_size}, K=10, hidden "
                f"{4 * condition_dim}, {args.train_steps} steps)",
                "speed": f"{result.steps_per_second:.2f} steps/s ({result.pairs_per_second:,.0f} pairs/s)",
                "steps_per_second": result.steps_per_second,
                "pairs_per_second": result.pairs_per_second,
                **memory.peak_GiB(),
            }
        )
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    report.write_json("pairs", {"device": str(device), "cache_bytes": cache_bytes, "phases": phases})
    report.emit(
        f"Pairs: {args.num_pairs:,} pairs, {condition_dim}-dim conditions + {num_latents} latents, {device} "
        f"({device_name})",
        format_table(
            phases,
            [
                ("phase", "phase", ""),
                ("speed", "speed", ""),
                ("rss_GiB", "peak RSS GiB", ".2f"),
                ("anonymous_GiB", "anonymous", ".2f"),
                ("file_GiB", "file-backed", ".2f"),
            ],
        )
        + f"\n\nCache: {cache_bytes / 2**30:.2f} GiB. The first row is the RSS after loading, not a peak.",
    )


SECTION = Section(
    names=("pairs",),
    summary="Translator training data: pair generation, cache reads and translator training throughput, peak memory.",
    run=run,
    add_arguments=add_arguments,
)
