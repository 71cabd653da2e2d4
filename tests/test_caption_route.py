"""The caption route of translator training: captioners (a tiny random BLIP, rule-based ones), caption and mix pairs,
caches that store captions, re-encoding with a new CLIP, and a translator trained on captions.

Tiny CPU models, offline, one thread.
"""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.state import AcceleratorState, GradientState
from conftest import WORDS, tiny_clip, tiny_generator
from test_training import train_args

from tron_pipelines import EncoderAdapter, TronPipeline
from tron_pipelines.cli import main as cli_main
from tron_pipelines.training import (
    CaptionRoute,
    ImageRoute,
    PairCache,
    PairCacheError,
    PairSource,
    generate_pairs,
    read_manifest,
    reencode_pairs,
    train_translator,
)
from tron_pipelines.training.captioning import Captioner, TransformersCaptioner, load_captioner


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from workloads import random_blip  # noqa: E402  (the random BLIP the pair-cost study times)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


class QuartileCaptioner(Captioner):
    """Names the quartile of an image's score on the first principal direction of the tiny generator's images (a
    function of z that G keeps: a linear fit from z explains 96% of its variance), with a random article."""

    NOUNS = ("cat", "dog", "red car", "number seven")

    def __init__(self):
        generator = tiny_generator(0)
        with torch.no_grad():
            flat = generator.generate(
                generator.sample_latents(512, generator=torch.Generator().manual_seed(123))
            ).flatten(1)
        self.mean = flat.mean(dim=0)
        self.direction = torch.linalg.svd(flat - self.mean, full_matrices=False).Vh[0]
        self.edges = self.scores(flat).quantile(torch.tensor([0.25, 0.5, 0.75]))

    def scores(self, flat: torch.Tensor) -> torch.Tensor:
        return (flat - self.mean) @ self.direction

    def quartiles(self, images: torch.Tensor) -> torch.Tensor:
        return torch.bucketize(self.scores(images.detach().flatten(1).cpu()), self.edges)

    def __call__(self, images, generator=None):
        articles = torch.randint(0, 2, (len(images),), generator=generator).tolist()
        return [
            f"{('a', 'the')[article]} {self.NOUNS[quartile]}"
            for article, quartile in zip(articles, self.quartiles(images).tolist())
        ]

    def identity(self):
        return {"class": "test_caption_route.QuartileCaptioner"}


@pytest.fixture(scope="module")
def blip(tmp_path_factory):
    """A random BLIP captioner: 2-layer ViT on 16 px, 2-layer BERT decoder, the test tokenizer's words."""
    return random_blip(
        tmp_path_factory.mktemp("blip"),
        WORDS,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        image_size=16,
        patch_size=4,
        seed=3,
    )


def cache_contents(folder: Path) -> dict:
    cache = PairCache(folder)
    return {**cache[torch.arange(len(cache))], "captions": cache.captions()}


def assert_same_pairs(actual: dict, expected: dict) -> None:
    assert actual["captions"] == expected["captions"]
    assert torch.equal(actual["latents"], expected["latents"])
    torch.testing.assert_close(actual["conditions"], expected["conditions"], rtol=0, atol=1e-6)


# Captioners -------------------------------------------------------------------------------------------------------
def test_blip_captions_generated_images_as_transformers_would(blip, source):
    model, processor = blip
    with torch.no_grad():
        images = source.generator.generate(
            source.generator.sample_latents(6, generator=torch.Generator().manual_seed(0))
        )
    captioner = TransformersCaptioner(model, processor, num_beams=2, min_length=5, max_length=10, batch_size=4)
    # "a picture of" and the begin token count towards the method's lengths, as in BLIP.
    assert captioner.prompt == "a picture of " and captioner.prompt_length == 4
    assert captioner.generate_kwargs() == {
        "min_new_tokens": 1,
        "max_new_tokens": 6,
        "repetition_penalty": 1.1,
        "do_sample": False,
        "num_beams": 2,
    }
    captions = captioner(images)

    # The same images through transformers directly: HWC float arrays in [0, 1], the prompt, generate, decode.
    arrays = [((image + 1) / 2).permute(1, 2, 0).numpy() for image in images]
    inputs = processor(images=arrays, text=["a picture of"] * 6, return_tensors="pt", do_rescale=False)
    ids = model.generate(**inputs, num_beams=2, min_new_tokens=1, max_new_tokens=6, repetition_penalty=1.1)
    decoded = processor.batch_decode(ids, skip_special_tokens=True)
    assert all(text.startswith("a picture of ") for text in decoded)
    assert captions == [text[len("a picture of ") :] for text in decoded]
    assert all(1 <= len(processor.tokenizer(c, add_special_tokens=False).input_ids) <= 6 for c in captions)

    nucleus = TransformersCaptioner(model, processor, decoding="nucleus", max_length=12)
    first = nucleus(images, torch.Generator().manual_seed(5))
    assert nucleus(images, torch.Generator().manual_seed(5)) == first  # seeded by the caller's generator
    assert nucleus(images, torch.Generator().manual_seed(6)) != first
    identity = nucleus.identity()
    assert identity["class"].endswith("BlipForConditionalGeneration") and identity["decoding"] == "nucleus"
    assert identity["top_p"] == 0.9 and identity["max_length"] == 12 and len(identity["fingerprint"]) == 16

    with pytest.raises(ValueError, match="max_length"):
        TransformersCaptioner(model, processor, max_length=4)  # no room after the 4-token prompt
    with pytest.raises(ValueError, match="`repetition_penalty` must be > 0, got 0"):
        TransformersCaptioner(model, processor, repetition_penalty=0)
    with pytest.raises(ValueError, match="apply to transformers captioning models only"):
        load_captioner("test_caption_route:QuartileCaptioner", decoding="greedy")


# Routes and caches ------------------------------------------------------------------------------------------------
def test_mix_route_honours_its_ratio_and_each_pair_its_route(source, tmp_path):
    ratio, count = 0.25, 400
    mix = PairSource(source.generator, source.adapter, CaptionRoute(QuartileCaptioner(), ratio))
    pairs = mix.make_pairs(count, seed=7, batch_size=100)
    captioned = [index for index, caption in enumerate(pairs["captions"]) if caption is not None]
    # Binomial(400, 0.25): standard deviation 8.7 pairs.
    assert abs(len(captioned) - ratio * count) < 3 * (count * ratio * (1 - ratio)) ** 0.5

    # Latents do not depend on the route; each condition is what its own route gives, computed here independently.
    image_pairs = PairSource(source.generator, source.adapter, ImageRoute()).make_pairs(count, seed=7, batch_size=100)
    assert torch.equal(pairs["latents"], image_pairs["latents"])
    others = [index for index in range(count) if index not in captioned]
    torch.testing.assert_close(pairs["conditions"][others], image_pairs["conditions"][others], rtol=0, atol=1e-6)
    with torch.no_grad():
        texts = [pairs["captions"][index] for index in captioned]
        expected = source.adapter.encode_prompts(texts, "cpu")
        quartiles = QuartileCaptioner().quartiles(source.generator.generate(pairs["latents"][captioned]))
    torch.testing.assert_close(pairs["conditions"][captioned], expected, rtol=0, atol=1e-5)
    assert [text.split(" ", 1)[1] for text in texts] == [QuartileCaptioner.NOUNS[q] for q in quartiles.tolist()]

    # The cache records the route (ratio and captioner included) and refuses another one.
    generate_pairs(mix, tmp_path / "mix", 64, 32, seed=0, generation_batch_size=32, show_progress=False)
    condition = read_manifest(tmp_path / "mix")["condition"]
    assert condition == {
        "route": "mix",
        "captioner": {"class": "test_caption_route.QuartileCaptioner"},
        "caption_ratio": 0.25,
        "dim": 16,
    }
    other_ratio = PairSource(source.generator, source.adapter, CaptionRoute(QuartileCaptioner(), 0.5))
    for other in (other_ratio, source):
        with pytest.raises(PairCacheError, match="condition: cache has"):
            generate_pairs(other, tmp_path / "mix", 64, 32, seed=0, generation_batch_size=32, show_progress=False)


def test_caption_cache_stores_captions_and_resumes_to_the_same_pairs(blip, source, tmp_path):
    captioner = TransformersCaptioner(*blip, decoding="nucleus", max_length=7)
    route_source = PairSource(source.generator, source.adapter, CaptionRoute(captioner))
    reference = tmp_path / "uninterrupted"
    generate_pairs(route_source, reference, 48, 16, seed=1, generation_batch_size=8, show_progress=False)
    manifest = read_manifest(reference)
    assert manifest["condition"]["route"] == "caption" and manifest["condition"]["captioner"] == captioner.identity()
    expected = cache_contents(reference)
    assert len(expected["captions"]) == 48 and all(isinstance(text, str) for text in expected["captions"])
    with torch.no_grad():
        encoded = torch.cat(
            [source.adapter.encode_prompts(expected["captions"][i : i + 8], "cpu") for i in range(0, 48, 8)]
        )
    torch.testing.assert_close(expected["conditions"], encoded, rtol=0, atol=1e-6)

    # Interrupted: one shard never written, one whose captions were damaged, the manifest not complete.
    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed)
    (resumed / "shard-00001.safetensors").unlink()
    damaged = resumed / "shard-00002.safetensors"
    data = damaged.read_bytes()
    start = data.index(b'"captions":"')
    letter = next(i for i in range(start + len(b'"captions":"'), len(data)) if chr(data[i]).isalpha())
    damaged.write_bytes(data[:letter] + bytes([data[letter] ^ 0x01]) + data[letter + 1 :])  # one letter of a caption
    (resumed / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.warns(UserWarning, match="captions checksum mismatch"):
        generate_pairs(route_source, resumed, 48, 16, seed=1, generation_batch_size=8, show_progress=False)
    assert_same_pairs(cache_contents(resumed), expected)


def test_reencoding_with_a_new_clip_equals_captioning_again(source, tokenizer, tmp_path):
    route = CaptionRoute(QuartileCaptioner(), 0.5)
    original = tmp_path / "original"
    generate_pairs(
        PairSource(source.generator, source.adapter, route),
        original,
        96,
        32,
        seed=2,
        generation_batch_size=16,
        show_progress=False,
    )

    new_clip = EncoderAdapter(tiny_clip(len(tokenizer), seed=7), tokenizer, source.adapter.image_processor)
    captioned_again = tmp_path / "captioned-again"
    generate_pairs(
        PairSource(source.generator, new_clip, route),
        captioned_again,
        96,
        32,
        seed=2,
        generation_batch_size=16,
        show_progress=False,
    )
    new_source = PairSource(source.generator, new_clip)
    reencoded = reencode_pairs(new_source, original, tmp_path / "reencoded", show_progress=False)
    assert_same_pairs(cache_contents(tmp_path / "reencoded"), cache_contents(captioned_again))
    assert not torch.allclose(
        reencoded[torch.arange(96)]["conditions"], PairCache(original)[torch.arange(96)]["conditions"]
    )
    manifest = reencoded.manifest
    assert manifest["condition"] == read_manifest(captioned_again)["condition"]
    assert manifest["reencoded_from"]["encoder"] == read_manifest(original)["encoder"]

    image_cache = tmp_path / "image"
    generate_pairs(source, image_cache, 32, 32, generation_batch_size=16, show_progress=False)
    with pytest.raises(PairCacheError, match="holds no captions"):
        reencode_pairs(new_source, image_cache, tmp_path / "nothing", show_progress=False)


# Training ---------------------------------------------------------------------------------------------------------
def test_caption_pairs_train_a_translator_that_follows_captions(pipeline_dir, tmp_path):
    output_dir = tmp_path / "out"
    result = train_translator(
        train_args(
            pipeline_dir,
            output_dir,
            "--condition-route",
            "caption",
            "--captioner",
            "test_caption_route:QuartileCaptioner",
            "--pairs_dir",
            tmp_path / "pairs",
            "--num_pairs",
            512,
            "--pairs_per_shard",
            256,
            "--max_train_steps",
            160,
            "--learning_rate",
            3e-3,
            "--validation_steps",
            160,
            "--num_validation_pairs",
            128,
        )
    )
    assert PairCache(tmp_path / "pairs").has_captions
    # Measured: 1.406 -> 1.343 nats per dimension.
    assert result.metrics["nll_per_dim"] < result.initial_metrics["nll_per_dim"] - 0.03, (
        result.initial_metrics,
        result.metrics,
    )
    card = (output_dir / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["condition_route"] == "caption" and metadata["captioner"] == "test_caption_route.QuartileCaptioner"
    assert "--condition_route caption --captioner test_caption_route:QuartileCaptioner" in metadata["train_command"]
    assert "`caption`: the text encoder's embedding of a caption of G(z)" in card

    # Translator draws for a caption land in that caption's quartile far more often than chance (1/4).
    pipe = TronPipeline.from_pretrained(output_dir)
    pipe.set_progress_bar_config(disable=True)
    captioner = QuartileCaptioner()
    for quartile in (0, 3):
        out = pipe(
            f"a {QuartileCaptioner.NOUNS[quartile]}",
            num_images_per_prompt=64,
            num_inference_steps=0,
            num_candidates=1,
            output_type="pt",
            generator=torch.Generator().manual_seed(quartile),
        )
        hits = (captioner.quartiles(out.images * 2 - 1) == quartile).float().mean().item()
        assert hits > 0.5, (quartile, hits)  # measured: 0.69 and 0.72


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (["--condition-route", "caption"], r"--condition_route caption. needs `--captioner`"),
        (["--captioner", "x:y"], r"--captioner only apply to `--condition_route caption` or `mix`, not 'image'"),
        (
            ["--condition_route", "caption", "--captioner", "x:y", "--caption_ratio", "0.5"],
            r"--caption_ratio. is the caption fraction",
        ),
        (
            ["--condition_route", "mix", "--captioner", "x:y", "--caption_ratio", "1"],
            r"strictly between 0 and 1; got 1.0",
        ),
        (
            ["--condition_route", "blip"],
            r"--condition_route. must be 'image', 'caption', 'mix' or 'package.module:function'",
        ),
        (
            ["--condition_route", "caption", "--captioner", "x:y", "--caption_decoding", "top_k"],
            r"--caption_decoding. must be one of",
        ),
        # The captioner's own rules, checked once for both (`check_caption_settings`).
        (
            ["--condition_route", "caption", "--captioner", "x:y", "--caption_repetition_penalty", "0"],
            r"--caption_repetition_penalty. must be > 0, got 0.0",
        ),
        (
            ["--condition_route", "mix", "--captioner", "x:y", "--caption_top_p", "1.5"],
            r"--caption_top_p. must be in \(0, 1\], got 1.5",
        ),
        (
            ["--condition_route", "caption", "--captioner", "no_such_module:f"],
            r"--captioner. 'no_such_module:f' could not be imported",
        ),
    ],
)
def test_bad_route_arguments_fail_before_work(extra, pattern, pipeline_dir, tmp_path):
    with pytest.raises(ValueError, match=pattern):
        cli_main(
            [
                "generate-pairs",
                "--pipeline",
                str(pipeline_dir),
                "--pairs_dir",
                str(tmp_path / "pairs"),
                "--num_pairs",
                "8",
                *extra,
            ]
        )
    assert not (tmp_path / "pairs").exists()


def test_caption_route_needs_a_text_encoder(classifier_pipe):
    with pytest.raises(
        ValueError, match="encodes captions with the pipeline's text encoder, but its encoder is a classifier"
    ):
        PairSource.from_pipeline(classifier_pipe, CaptionRoute(QuartileCaptioner()))
