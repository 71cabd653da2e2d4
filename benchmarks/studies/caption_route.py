"""Cost of a synthetic pair by condition route: image (c = CLIP image embedding of G(z)) vs caption (c = CLIP text
embedding of a caption of G(z)) vs their mix, on the embedded `tron-mnist-text` (issue 17; the table is in
docs/training.md, "Cost per pair by route").

    python benchmarks/studies/caption_route.py                  # 2,000 pairs per route + random BLIPs, CPU
    python benchmarks/studies/caption_route.py --device cuda    # on a GPU

Captioners: the MNIST rule captioner (`examples/mnist/captions.py`: the digit read by tron-mnist's CNN and three pixel
measures, the one `tron-mnist-text` is built with) and two random BLIP captioners with the method's settings (beam
search, 3 beams, 5-20 tokens), a tiny one (2-layer ViT on 28 px, 2-layer decoder, 64 words) and one of BLIP base's
size (ViT-B/16 at 384 px, BERT-base decoder, 30,524 words): a forward pass costs the same with random weights, so
this is the real cost of the method's captioner, without a download. Each route is timed end to end
(`PairSource.make_pairs`: render, caption, encode), and each part again on its own with the same inputs (the parts
need not add up exactly: timings on a shared machine move).
"""

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
BENCHMARKS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(BENCHMARKS), str(BENCHMARKS.parent / "examples" / "mnist")]

import torch  # noqa: E402
from captions import MnistCaptioner  # noqa: E402
from workloads import random_blip_of_size  # noqa: E402

from tron_pipelines import TronPipeline  # noqa: E402
from tron_pipelines.training import CaptionRoute, ImageRoute, PairSource  # noqa: E402
from tron_pipelines.training.captioning import TransformersCaptioner  # noqa: E402


def time_route(pipe, route, num_pairs: int, batch_size: int) -> dict:
    """Seconds of `make_pairs` with ``route`` end to end, and of each part on its own with the same inputs:
    rendering the latents, captioning the images that were captioned, encoding the conditions."""
    source, adapter = PairSource.from_pipeline(pipe, route), pipe.encoder_adapter
    with warnings.catch_warnings():
        # A random BLIP's captions are longer than the small CLIP reads; the truncation warning is expected.
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        pairs = source.make_pairs(num_pairs, seed=0, batch_size=batch_size)
        total = time.perf_counter() - start
        captions = pairs.get("captions", [None] * num_pairs)
        parts = {"render": 0.0, "caption": 0.0, "encode": 0.0}
        with torch.no_grad():
            for begin in range(0, num_pairs, batch_size):
                rows = range(begin, min(begin + batch_size, num_pairs))
                start = time.perf_counter()
                images = pipe.generator.generate(pairs["latents"][begin : rows.stop])
                parts["render"] += time.perf_counter() - start
                captioned = [row - begin for row in rows if captions[row] is not None]
                others = [row - begin for row in rows if captions[row] is None]
                if captioned:
                    start = time.perf_counter()
                    route.captioner(images[captioned], torch.Generator().manual_seed(0))
                    parts["caption"] += time.perf_counter() - start
                start = time.perf_counter()
                if captioned:
                    adapter.encode_prompts([captions[begin + row] for row in captioned], images.device)
                if others:
                    adapter.encode_generated(images[others])
                parts["encode"] += time.perf_counter() - start
    example = next((text for text in captions if text is not None), "")
    return {"total": total, **parts, "example": example}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="tron-mnist-text")
    parser.add_argument("--num_pairs", type=int, default=2000, help="Pairs per route with the MNIST captioner.")
    parser.add_argument("--tiny_blip_pairs", type=int, default=500)
    parser.add_argument("--base_blip_pairs", type=int, default=16, help="0 skips the BLIP-base-sized captioner.")
    parser.add_argument("--batch_size", type=int, default=500, help="Generation batch (BLIP base: at most 16).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num_threads", type=int, default=None)
    args = parser.parse_args()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    device = torch.device(args.device)
    pipe = TronPipeline.from_pretrained(args.pipeline).to(device)
    pipe.set_progress_bar_config(disable=True)
    mnist = MnistCaptioner().to(device)
    mnist(pipe.generator.sample(2), torch.Generator())  # measures the attribute thresholds once, outside the timings
    rows = [
        ("image", "-", ImageRoute(), args.num_pairs, args.batch_size),
        ("caption", "MNIST rules (CNN f + pixel measures)", CaptionRoute(mnist), args.num_pairs, args.batch_size),
        ("mix 0.5", "MNIST rules (CNN f + pixel measures)", CaptionRoute(mnist, 0.5), args.num_pairs, args.batch_size),
    ]
    with tempfile.TemporaryDirectory() as folder:
        for size, count in (("tiny", args.tiny_blip_pairs), ("base", args.base_blip_pairs)):
            if count:
                (Path(folder) / size).mkdir()
                captioner = TransformersCaptioner(
                    *random_blip_of_size(size, Path(folder) / size),
                    batch_size=min(args.batch_size, 16 if size == "base" else 500),
                )
                label = f"random BLIP {size} ({sum(p.numel() for p in captioner.model.parameters()) / 1e6:.1f} M params), beam 3"
                rows.append(
                    (
                        "caption",
                        label,
                        CaptionRoute(captioner.to(device)),
                        count,
                        min(args.batch_size, 16 if size == "base" else args.batch_size),
                    )
                )
        device_name = (
            torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        )
        print(f"{args.pipeline} on {device_name}, torch {torch.__version__}, load average {os.getloadavg()}\n")
        print(
            "| route | captioner | pairs | ms per pair | pairs/s | parts alone: render / caption / encode (ms per pair) | example caption |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, label, route, count, batch_size in rows:
            timing = time_route(pipe, route, count, batch_size)
            per_pair = 1000 / count
            print(
                f"| {name} | {label} | {count:,} | {timing['total'] * per_pair:.2f} | {count / timing['total']:,.1f} | "
                f"{timing['render'] * per_pair:.2f} / {timing['caption'] * per_pair:.2f} / {timing['encode'] * per_pair:.2f} | "
                f"{timing['example'][:40]!r} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
