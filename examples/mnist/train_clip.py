"""Train the small CLIP of the text-conditional MNIST pipeline: a transformers `CLIPModel` with an offline
`CLIPTokenizer` and `CLIPImageProcessor`, learned contrastively from digits and captions made on the fly.

Captions (`captions.py`, shared with the caption route of the pipeline's translator) name the digit and, each at
random, the attributes measured on the pixels by `data.attribute_categories` (stroke weight thin/bold, slant
left/upright/right, size small/large), with phrasing variants: "a bold 7", "the number seven, leaning right",
"seven", "a thin small 3". Several images in a batch can fit one caption ("seven"
fits every 7), so the contrastive targets are spread uniformly over all matching pairs instead of the diagonal only.

The tokenizer's BPE vocabulary is built here: every character a caption or a typical prompt may contain (and its
end-of-word form), plus merges learned from the caption words until each of them is one token. Other words fall
back to smaller pieces; characters outside that alphabet become the unknown token.

Model, tokenizer and image processor are saved together in ``--output_dir`` (the ``encoder``, ``tokenizer`` and
``image_processor`` components of a text pipeline).

    python examples/mnist/train_clip.py --output_dir outputs/mnist/clip --seed 0
"""

import argparse
import json
import math
import string
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from captions import ATTRIBUTE_PROBABILITY, attribute_codes, caption_words, sample_captions
from data import DIGIT_WORDS, NUM_CLASSES, SIZES, SLANTS, STROKE_WEIGHTS, UNSPECIFIED, attribute_categories, load_split
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextConfig, CLIPTokenizer, CLIPVisionConfig


EXTRA_PROMPT_WORDS = ("a", "an", "of", "photo", "picture", "image", "drawing", "written", "in", "with", "and")
# Characters of the BPE alphabet: what the CLIP pre-tokenizer can produce from plain ASCII text after lowercasing.
ALPHABET = string.ascii_lowercase + string.digits + string.punctuation
# Captions are at most ~12 tokens; the margin leaves room for longer user prompts.
MAX_TEXT_LENGTH = 32
BOS_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|endoftext|>"
# CLIP's default unknown token is the end-of-text token, but the text tower pools at the first end-of-text id, so an
# unknown character would cut the prompt short there. A separate token keeps the pooling at the real end.
UNK_TOKEN = "<|unknown|>"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/mnist/clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_steps", type=int, default=1200)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--weight_decay", type=float, default=0.05)
    parser.add_argument(
        "--attribute_probability",
        type=float,
        default=ATTRIBUTE_PROBABILITY,
        help="Chance that each defined attribute of an image is named in its caption.",
    )
    parser.add_argument("--text_hidden_size", type=int, default=64)
    parser.add_argument("--vision_hidden_size", type=int, default=64)
    parser.add_argument("--num_layers", type=int, default=3, help="Transformer layers of each tower.")
    parser.add_argument("--patch_size", type=int, default=7, help="7 gives 16 patches, 3x cheaper than 4 on CPU.")
    parser.add_argument("--projection_dim", type=int, default=64)
    parser.add_argument("--max_shift", type=int, default=2, help="Random translation of training digits, in pixels.")
    parser.add_argument(
        "--max_shear",
        type=float,
        default=0.0,
        help="Random horizontal shear of training digits, uniform in [-max_shear, max_shear] (slant units "
        "of data.slant); captions are measured after it.",
    )
    parser.add_argument(
        "--shear_probability", type=float, default=0.5, help="Chance that a training digit is sheared."
    )
    parser.add_argument("--log_every", type=int, default=100)
    parser.add_argument("--num_threads", type=int, default=2)
    return parser.parse_args(argv)


# Captions.


def caption_matches(caption_labels, caption_codes, image_labels, image_codes) -> torch.Tensor:
    """``(num_captions, num_images)`` bool: the image is the caption's digit and has every attribute it names."""
    matches = caption_labels[:, None] == image_labels[None, :]
    for attribute in range(caption_codes.shape[1]):
        named = caption_codes[:, attribute, None]
        matches &= (named == UNSPECIFIED) | (named == image_codes[None, :, attribute])
    return torch.from_numpy(matches)


# Tokenizer.


def caption_vocabulary() -> list[str]:
    """The tokenizer's words: every caption word, plus a few words common in prompts ("a photo of ...") that no
    caption contains."""
    return sorted({word for word in caption_words() if not word.isdigit()} | set(EXTRA_PROMPT_WORDS))


def learn_bpe_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges, most frequent pair first (ties alphabetical), until every word is a single token.

    Applying merges by rank (what BPE tokenizers do) replays exactly this sequence on each of these words, so each
    one ends as one token.
    """
    segmentations = [list(word[:-1]) + [word[-1] + "</w>"] for word in words]
    merges = []
    while any(len(pieces) > 1 for pieces in segmentations):
        pair_counts = Counter(pair for pieces in segmentations for pair in zip(pieces, pieces[1:]))
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
        merges.append(best)
        for index, pieces in enumerate(segmentations):
            merged, position = [], 0
            while position < len(pieces):
                if position + 1 < len(pieces) and (pieces[position], pieces[position + 1]) == best:
                    merged.append(pieces[position] + pieces[position + 1])
                    position += 2
                else:
                    merged.append(pieces[position])
                    position += 1
            segmentations[index] = merged
    return merges


def build_tokenizer(max_length: int) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over `ALPHABET` with merges making every caption word one token."""
    merges = learn_bpe_merges(caption_vocabulary())
    vocab = {BOS_TOKEN: 0, EOS_TOKEN: 1, UNK_TOKEN: 2}
    for token in [*ALPHABET, *(c + "</w>" for c in ALPHABET), *(left + right for left, right in merges)]:
        vocab.setdefault(token, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, unk_token=UNK_TOKEN, model_max_length=max_length)


# Model and images.


def build_model(args: argparse.Namespace, vocab_size: int, max_length: int, image_size: int) -> CLIPModel:
    """A tiny CLIP: text and ViT towers of `args.num_layers` layers, RGB input (grey digits replicated)."""
    text_config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=args.text_hidden_size,
        intermediate_size=4 * args.text_hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=4,
        max_position_embeddings=max_length,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=args.vision_hidden_size,
        intermediate_size=4 * args.vision_hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=4,
        num_channels=3,
        image_size=image_size,
        patch_size=args.patch_size,
    )
    config = CLIPConfig(
        text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), projection_dim=args.projection_dim
    )
    return CLIPModel(config)


def build_image_processor(image_size: int) -> CLIPImageProcessor:
    """Grey digits in, 3-channel ``(x - 0.5) / 0.5`` out at the model's size: the same input `pixel_values` gives."""
    return CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": image_size},
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=True,
    )


def pixel_values(images: torch.Tensor) -> torch.Tensor:
    """Grey ``(B, H, W)`` in ``[0, 1]`` -> ``(B, 3, H, W)`` normalised with mean = std = 0.5 (replicated channels)."""
    return ((images - 0.5) / 0.5).unsqueeze(1).expand(-1, 3, -1, -1)


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each ``(H, W)`` image by whole pixels in ``[-max_shift, max_shift]`` (zero fill). Whole-pixel shifts
    leave every caption attribute (thickness, shear, box size) unchanged."""
    if max_shift == 0:
        return images
    padded = F.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (len(images), 2), generator=generator)
    side_rows, side_cols = images.shape[1:]
    return torch.stack([p[r : r + side_rows, c : c + side_cols] for p, (r, c) in zip(padded, offsets.tolist())])


def shear_images(images: torch.Tensor, shears: torch.Tensor) -> torch.Tensor:
    """Shear ``(B, H, W)`` images horizontally about their centre by ``shears`` ``(B,)`` (bilinear, zero fill): the
    measured `data.slant` of each image grows by about its shear (positive leans further right)."""
    # affine_grid maps output to input coordinates (x right, y down, both in [-1, 1]); sampling the input at
    # x + s * y moves the lower rows left for s > 0, so the top leans right.
    theta = torch.zeros(len(images), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 1] = shears
    grid = F.affine_grid(theta, (len(images), 1, *images.shape[1:]), align_corners=False)
    return F.grid_sample(
        images.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    ).squeeze(1)


def random_shear(
    images: torch.Tensor, max_shear: float, probability: float, generator: torch.Generator
) -> torch.Tensor:
    """Shear each of ``(B, H, W)`` images with chance ``probability`` by a shear uniform in ``[-max_shear, max_shear]``.

    Real digits mostly lean right (3% of the training zeros lean left): shearing shows the CLIP every digit at every
    slant, so that slant words are learned apart from the digit. Captions must be measured on the result.
    """
    shears = (torch.rand(len(images), generator=generator) * 2 - 1) * max_shear
    shears = shears * (torch.rand(len(images), generator=generator) < probability)
    return shear_images(images, shears)


# Evaluation.


@torch.no_grad()
def embed_texts(model: CLIPModel, tokenizer: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    """L2-normalised text embeddings."""
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    features = model.get_text_features(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask)
    return F.normalize(_tensor(features), dim=-1)


@torch.no_grad()
def embed_images(model: CLIPModel, pixels: torch.Tensor) -> torch.Tensor:
    """L2-normalised image embeddings of normalised ``pixel_values``."""
    features = torch.cat([_tensor(model.get_image_features(pixel_values=chunk)) for chunk in pixels.split(500)])
    return F.normalize(features, dim=-1)


def _tensor(output) -> torch.Tensor:
    # transformers 5 returns an output object whose `pooler_output` is the projected embedding.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def binary_prompt_accuracy(image_embeds, labels, codes, prompt_pairs) -> tuple[float, int]:
    """Accuracy of choosing, per image whose attribute code is 0 or 1, the closer of its digit's two prompts
    ``prompt_pairs[digit] = (text embedding for code 0, text embedding for code 1)``, and how many images counted."""
    keep = (codes == 0) | (codes == 1)
    pairs = prompt_pairs[torch.from_numpy(labels[keep])]  # (N, 2, D)
    chosen = torch.einsum("nkd,nd->nk", pairs, image_embeds[torch.from_numpy(keep)]).argmax(dim=1).numpy()
    return float((chosen == codes[keep]).mean()), int(keep.sum())


def evaluate(model: CLIPModel, tokenizer: CLIPTokenizer, images: np.ndarray, labels: np.ndarray) -> dict:
    """Zero-shot digit accuracy from "the number k" prompts, and thin/bold, left/right, small/large accuracy from
    choosing between two prompts that differ only in the attribute, on held-out digits."""
    model.eval()
    image_embeds = embed_images(model, pixel_values(torch.from_numpy(images)))
    digit_prompts = embed_texts(model, tokenizer, [f"the number {word}" for word in DIGIT_WORDS])
    predicted = (image_embeds @ digit_prompts.T).argmax(dim=1).numpy()
    categories = attribute_categories(images, labels)

    def prompt_pairs(template: str, choices: tuple[str, str]) -> torch.Tensor:
        texts = [template.format(choice=choice, word=word) for word in DIGIT_WORDS for choice in choices]
        return embed_texts(model, tokenizer, texts).view(NUM_CLASSES, 2, -1)

    weight_accuracy, weight_count = binary_prompt_accuracy(
        image_embeds, labels, categories["stroke_weight"], prompt_pairs("a {choice} {word}", STROKE_WEIGHTS)
    )
    # Left/right only: recode left -> 0, right -> 1, upright -> not counted.
    left_right = np.select(
        [categories["slant"] == SLANTS.index("left"), categories["slant"] == SLANTS.index("right")],
        [0, 1],
        UNSPECIFIED,
    )
    slant_accuracy, slant_count = binary_prompt_accuracy(
        image_embeds, labels, left_right, prompt_pairs("the number {word}, leaning {choice}", ("left", "right"))
    )
    size_accuracy, size_count = binary_prompt_accuracy(
        image_embeds, labels, categories["size"], prompt_pairs("a {choice} {word}", SIZES)
    )
    return {
        "zero_shot_digit_accuracy": float((predicted == labels).mean()),
        "thin_vs_bold_accuracy": weight_accuracy,
        "thin_vs_bold_images": weight_count,
        "left_vs_right_accuracy": slant_accuracy,
        "left_vs_right_images": slant_count,
        "small_vs_large_accuracy": size_accuracy,
        "small_vs_large_images": size_count,
    }


def check_saved_folder(folder: Path, tokenizer: CLIPTokenizer, images: np.ndarray, texts: list[str]) -> dict:
    """Reload the tokenizer and image processor and check they reproduce what training used: the image processor on
    PIL digits gives the training `pixel_values`; the reloaded tokenizer gives the same ids, its decoded text encodes
    back to them, caption words stay whole, and unknown characters become the unknown token."""
    reloaded = CLIPTokenizer.from_pretrained(folder)
    processor = CLIPImageProcessor.from_pretrained(folder)
    pil_images = [Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L") for image in images]
    processed = processor(images=pil_images, return_tensors="pt").pixel_values
    expected = pixel_values(torch.from_numpy(np.round(images * 255) / 255).float())
    ids = [reloaded(text).input_ids for text in texts]
    same_ids = ids == [tokenizer(text).input_ids for text in texts]
    round_trip = all(reloaded(reloaded.decode(i, skip_special_tokens=True)).input_ids == i for i in ids)
    split_words = [w for w in caption_vocabulary() if len(reloaded(w, add_special_tokens=False).input_ids) != 1]
    return {
        "image_processor_max_abs_difference": float((processed - expected).abs().max()),
        "tokenizer_reload_same_ids": same_ids,
        "tokenizer_decode_round_trip": round_trip,
        "caption_words_split_into_pieces": split_words,
        "unseen_word_tokens": reloaded.tokenize("zebra"),
        "unknown_character_tokens": reloaded.tokenize("é"),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    output_dir = Path(args.output_dir)

    split = load_split()
    image_size = split.train_images.shape[-1]
    train_images = torch.from_numpy(split.train_images)
    train_codes = attribute_codes(split.train_images, split.train_labels)

    tokenizer = build_tokenizer(MAX_TEXT_LENGTH)
    model = build_model(args, len(tokenizer), MAX_TEXT_LENGTH, image_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    warmup = max(1, args.max_steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / args.max_steps))
    )

    for step in range(1, args.max_steps + 1):
        model.train()
        batch = torch.randint(len(train_images), (args.batch_size,), generator=generator)
        labels, codes = split.train_labels[batch.numpy()], train_codes[batch.numpy()]
        images = train_images[batch]
        if args.max_shear:
            images = random_shear(images, args.max_shear, args.shear_probability, generator)
            codes = attribute_codes(images.numpy(), labels)
        captions, named_codes = sample_captions(labels, codes, args.attribute_probability, rng)
        inputs = tokenizer(captions, padding=True, return_tensors="pt")
        outputs = model(
            input_ids=inputs.input_ids,
            attention_mask=inputs.attention_mask,
            pixel_values=pixel_values(random_shift(images, args.max_shift, generator)),
        )
        matches = caption_matches(labels, named_codes, labels, codes).float()
        # Each caption's target is spread over all images it describes, and each image's over all captions that fit.
        text_loss = -(F.log_softmax(outputs.logits_per_text, dim=1) * matches / matches.sum(1, keepdim=True)).sum(1)
        image_loss = -(F.log_softmax(outputs.logits_per_image, dim=1) * matches.T / matches.sum(0)[:, None]).sum(1)
        loss = (text_loss.mean() + image_loss.mean()) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # CLIP's cap on the temperature
        if step % args.log_every == 0 or step == args.max_steps:
            print(
                f"step {step}/{args.max_steps} loss {loss.item():.4f} scale {model.logit_scale.exp().item():.1f} "
                f"e.g. {captions[0]!r}",
                flush=True,
            )

    model.eval()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    build_image_processor(image_size).save_pretrained(output_dir)

    reloaded = CLIPModel.from_pretrained(output_dir).eval()
    reloaded_tokenizer = CLIPTokenizer.from_pretrained(output_dir)
    metrics = evaluate(reloaded, reloaded_tokenizer, split.held_out_images, split.held_out_labels)
    example_images, example_labels = split.held_out_images[:8], split.held_out_labels[:8]
    example_codes = attribute_codes(example_images, example_labels)
    example_captions = sample_captions(example_labels, example_codes, 1.0, np.random.default_rng(args.seed))[0]
    metrics.update(check_saved_folder(output_dir, tokenizer, split.held_out_images[:64], example_captions))
    metrics.update(
        {
            "example_captions": example_captions,
            "vocab_size": len(tokenizer),
            "num_parameters": sum(p.numel() for p in reloaded.parameters()),
            "steps": args.max_steps,
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
