"""Tiny random components, built in-process, for offline tests."""

import json
import os
import shutil
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


import pytest
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextConfig, CLIPTokenizer, CLIPVisionConfig

from tron_pipelines import ConvClassifier, ConvGenerator, LangevinScheduler, TranslatorModel, TronPipeline


torch.set_num_threads(min(2, torch.get_num_threads()))


def reset_accelerate_state() -> None:
    """Accelerate's state is a process-wide singleton: forget it, so that the next in-process run builds its own."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def fresh_accelerate_state():
    """Use with ``pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")`` in modules whose tests run
    Accelerate in-process."""
    yield
    reset_accelerate_state()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_thread")``): as many as the
    subprocesses they compare with (``OMP_NUM_THREADS=1``), since the thread count changes float reductions; and two
    threads per process on a shared 2-core machine stall for whole seconds in OpenMP barriers."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "number",
    "bold",
    "thin",
    "seven",
    "three",
    "red",
    "car",
    "cat",
    "dog",
    "leaning",
    "right",
    "left",
]


def tiny_tokenizer(tmp_path_factory) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over a handful of words (every word one merged token)."""
    import json

    letters = sorted({c for w in WORDS for c in w})
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in letters + [c + "</w>" for c in letters]:
        vocab.setdefault(token, len(vocab))
    merges = []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merge = (pieces[0], pieces[1])
            if " ".join(merge) not in merges:
                merges.append(" ".join(merge))
            pieces = ["".join(merge)] + pieces[2:]
            vocab.setdefault(pieces[0], len(vocab))
    folder = tmp_path_factory.mktemp("tokenizer")
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory)


def tiny_clip(vocab_size: int, seed: int = 0) -> CLIPModel:
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ).to_dict(),
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=16,
            patch_size=4,
        ).to_dict(),
        projection_dim=16,
    )
    return CLIPModel(config).eval()


def tiny_generator(seed: int = 0, **kwargs) -> ConvGenerator:
    torch.manual_seed(seed)
    config = {
        "latent_dim": 8,
        "out_channels": 3,
        "base_channels": 8,
        "base_resolution": 4,
        "channel_multipliers": (2, 1),
    }
    config.update(kwargs)
    generator = ConvGenerator(**config)
    calibrate_batch_norm(generator, torch.randn(256, config["latent_dim"]))
    return generator


HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_hub_cache(folder, cache_dir, repo_id):
    """A saved folder laid out as the Hugging Face cache holds a downloaded repo (what `snapshot_download` writes),
    so that Hub loading is tested offline: ``models--org--name/refs/main`` naming `HUB_COMMIT`, and
    ``snapshots/<commit>/`` with the files."""
    repo_cache = cache_dir / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo_cache / "snapshots" / HUB_COMMIT)
    (repo_cache / "refs").mkdir(parents=True)
    (repo_cache / "refs" / "main").write_text(HUB_COMMIT)


def calibrate_batch_norm(model, inputs):
    """Set batch-norm statistics to those of `inputs`, as training would, and switch to eval mode.

    Fresh statistics (mean 0, var 1) make a random model's output nearly constant, so energies would hardly vary.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(inputs)
    return model.eval()


@pytest.fixture
def clip_components(tokenizer):
    generator = tiny_generator()
    torch.manual_seed(1)
    translator = TranslatorModel(condition_dim=16, latent_dim=8, num_components=3, hidden_dim=32).eval()
    return {
        "translator": translator,
        "generator": generator,
        "encoder": tiny_clip(len(tokenizer)),
        "scheduler": LangevinScheduler(step_size=0.5, noise_std=0.01, momentum=0.5),
        "tokenizer": tokenizer,
        "image_processor": CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
    }


@pytest.fixture
def clip_pipe(clip_components):
    pipe = TronPipeline(**clip_components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def classifier_components():
    generator = tiny_generator(out_channels=1)
    torch.manual_seed(2)
    classifier = ConvClassifier(num_classes=4, in_channels=1, image_size=16, channels=(8, 16))
    with torch.no_grad():
        classifier.head.weight.mul_(3.0)  # confident, varied logits, like a trained classifier
        images = generator.generate(torch.randn(256, 8))
    calibrate_batch_norm(classifier, (images + 1) / 2 / 0.5 - 1)
    translator = TranslatorModel(condition_dim=4, latent_dim=8, num_components=3, hidden_dim=16).eval()
    return {
        "translator": translator,
        "generator": generator,
        "encoder": classifier,
        "scheduler": LangevinScheduler(step_size=0.5, noise_std=0.01),
    }


@pytest.fixture
def classifier_pipe(classifier_components):
    pipe = TronPipeline(**classifier_components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(folder: Path, tokenizer, generator_seed: int = 0) -> Path:
    """A tiny CLIP pipeline saved without a translator (training builds its own)."""
    torch.manual_seed(1)
    pipe = TronPipeline(
        translator=TranslatorModel(condition_dim=16, latent_dim=8, num_components=3, hidden_dim=32),
        generator=tiny_generator(generator_seed),
        encoder=tiny_clip(len(tokenizer)),
        scheduler=LangevinScheduler(step_size=0.5, noise_std=0.01),
        tokenizer=tokenizer,
        image_processor=CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
    )
    pipe.save_pretrained(folder)
    shutil.rmtree(folder / "translator")
    index = json.loads((folder / "model_index.json").read_text())
    index["translator"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny CLIP pipeline folder without a translator, shared by a test module."""
    return save_pipeline(tmp_path_factory.mktemp("pipeline") / "tiny", tokenizer)


@pytest.fixture(scope="module")
def source(pipeline_dir):
    """Pairs of `pipeline_dir` by the image route."""
    from tron_pipelines.training import PairSource, load_training_pipeline

    return PairSource.from_pipeline(load_training_pipeline(pipeline_dir))
