"""Benchmark of translator training data: pair generation (pairs/s), cache reads, training (steps/s) and peak memory.

    python benchmarks/bench_pairs.py                      # 1M pairs x 512-dim conditions, tiny models, CPU or GPU
    python benchmarks/bench_pairs.py --num_pairs 100000   # quicker
    python benchmarks/bench_pairs.py --pipeline <folder>  # real generator and encoder (e.g. BigGAN + CLIP)

Without --pipeline, the pairs come from a small random pipeline whose encoder makes 512-dim conditions (CLIP ViT-B/32's
size) from a generator with 128 latents (BigGAN-512's z), so generation is cheap and the benchmark measures the cache
and the training loop at the real data size. Peak memory is reported as resident set size (RSS) split into anonymous
memory (what the process allocated) and file-backed pages (memory-mapped cache pages: page cache the kernel can drop).
"""

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch


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
    def _format(values: dict[str, int], label: str) -> str:
        gib = lambda value: f"{value / 2**30:.2f} GiB"  # noqa: E731
        return (
            f"{label} {gib(values['rss'])} (anonymous {gib(values['anonymous'])}, file-backed {gib(values['file'])})"
        )

    def describe(self) -> str:
        return self._format(self.peak, "peak RSS")

    def describe_now(self) -> str:
        return self._format(self.sample(), "RSS")


def build_benchmark_pipeline(folder: Path, condition_dim: int, latent_dim: int) -> Path:
    """A random pipeline: ConvGenerator (16x16 RGB) + a one-layer CLIP whose projection has ``condition_dim`` values."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    from tron_pipelines import ConvGenerator, LangevinScheduler, TranslatorModel, TronPipeline

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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--pipeline", type=str, default=None, help="Pipeline to benchmark (default: a random tiny one)."
    )
    parser.add_argument("--num_pairs", type=int, default=1_000_000)
    parser.add_argument("--condition_dim", type=int, default=512, help="Condition size of the default pipeline.")
    parser.add_argument("--latent_dim", type=int, default=128, help="Latent size of the default pipeline.")
    parser.add_argument("--pairs_per_shard", type=int, default=65536)
    parser.add_argument("--generation_batch_size", type=int, default=1024)
    parser.add_argument(
        "--read_batch_size", type=int, default=4096, help="Batch of the shuffled full read of the cache."
    )
    parser.add_argument("--train_steps", type=int, default=200)
    parser.add_argument("--train_batch_size", type=int, default=256)
    parser.add_argument("--mixed_precision", type=str, default="no", choices=("no", "fp16", "bf16"))
    parser.add_argument("--cpu", action="store_true", help="Run on the CPU even when a GPU is available.")
    parser.add_argument("--num_threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    parser.add_argument(
        "--work_dir", type=str, default=None, help="Where the cache goes (default: a temporary folder, deleted)."
    )
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.cpu:
        os.environ["ACCELERATE_USE_CPU"] = "1"
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    from accelerate import Accelerator

    from tron_pipelines.training import (
        PairCache,
        PairSource,
        generate_pairs,
        load_training_pipeline,
        parse_train_args,
        train_translator,
    )

    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="tron-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        pipeline_path = args.pipeline or str(
            build_benchmark_pipeline(work_dir / "pipeline", args.condition_dim, args.latent_dim)
        )
        accelerator = Accelerator(mixed_precision=args.mixed_precision)
        device = accelerator.device
        pipeline = load_training_pipeline(pipeline_path).to(device)
        source = PairSource.from_pipeline(pipeline)
        device_name = (
            torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        )
        print(f"device: {device} ({device_name}); torch {torch.__version__}")
        print(f"baseline after loading: {MemoryMonitor().describe_now()}")
        print(
            f"pairs: {args.num_pairs:,} x {source.condition_dim}-dim conditions + {sum(s['dim'] for s in source.latent_specs)} latents"
        )

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
        print(
            f"generation: {args.num_pairs / seconds:,.0f} pairs/s ({seconds:.1f}s, cache {cache_bytes / 2**30:.2f} GiB); {memory.describe()}"
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
        print(
            f"cache: opened with checksums in {open_seconds:.1f}s; one shuffled pass in batches of {args.read_batch_size}: "
            f"{len(cache) / read_seconds:,.0f} pairs/s; {memory.describe()}"
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
        print(
            f"training: {result.steps_per_second:.2f} steps/s x {args.train_batch_size} pairs = {result.pairs_per_second:,.0f} "
            f"pairs/s (translator K=10, hidden {4 * condition_dim}); {memory.describe()}"
        )
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
