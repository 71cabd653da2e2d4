"""Cost of a synthetic pair by condition route: image (c = CLIP image embedding of G(z)) vs caption (c = CLIP text
embedding of a caption of G(z)) vs their mix, on the embedded `tron-mnist-text`.

    python benchmarks/bench_caption_route.py                  # 2,000 pairs per route + random BLIPs, CPU
    python benchmarks/bench_caption_route.py --device cuda    # on a GPU

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

import torch


REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "examples" / "mnist"))


# BLIP base (Salesforce/blip-image-captioning-base): ViT-B/16 at 384 px, BERT-base decoder, 30,524 tokens.
BLIP_SIZES = {
    "tiny": {"vocab_size": 64, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "image_size": 28, "patch_size": 7},
    "base": {
        "vocab_size": 30524,
        "hidden_size": 768,
        "num_layers": 12,
        "num_heads": 12,
        "image_size": 384,
        "patch_size": 16,
    },
}
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def random_blip(
    folder: Path,
    words: list[str],
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    image_size: int,
    patch_size: int,
    seed: int = 0,
):
    """A random `BlipForConditionalGeneration` (ViT of ``num_layers`` on ``image_size`` px, BERT decoder of
    ``num_layers``) and its `BlipProcessor`, with a word-level tokenizer over ``words`` written to ``folder``."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
        BlipTextConfig,
        BlipVisionConfig,
    )

    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, "a", "picture", "of", *words, "[DEC]"]))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]", model_max_length=512)
    layers = {
        "hidden_size": hidden_size,
        "intermediate_size": 4 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
    }
    config = BlipConfig(
        text_config=BlipTextConfig(
            vocab_size=len(vocab),
            bos_token_id=vocab.index("[DEC]"),
            sep_token_id=3,
            eos_token_id=3,
            pad_token_id=0,
            encoder_hidden_size=hidden_size,
            **layers,
        ).to_dict(),
        vision_config=BlipVisionConfig(image_size=image_size, patch_size=patch_size, **layers).to_dict(),
    )
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    return model, BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def random_blip_of_size(size: str, folder: Path):
    """`random_blip` with the shapes of `BLIP_SIZES[size]` and made-up words filling its vocabulary."""
    settings = dict(BLIP_SIZES[size])
    words = [f"w{index}" for index in range(settings.pop("vocab_size") - len(SPECIAL_TOKENS) - 4)]
    return random_blip(folder, words, **settings)


def time_route(pipe, route, num_pairs: int, batch_size: int) -> dict:
    """Seconds of `make_pairs` with ``route`` end to end, and of each part on its own with the same inputs:
    rendering the latents, captioning the images that were captioned, encoding the conditions."""
    from tron_pipelines.training import PairSource

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
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)

    from captions import MnistCaptioner

    from tron_pipelines import TronPipeline
    from tron_pipelines.training import CaptionRoute, ImageRoute
    from tron_pipelines.training.captioning import TransformersCaptioner

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
