"""The pipelines shipped inside the package load offline and generate."""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tron_pipelines import TronPipeline, embedded_pipelines
from tron_pipelines.cli import main
from tron_pipelines.evaluation import HogMlpClassifier
from tron_pipelines.models import TextToImageGenerator
from tron_pipelines.pretrained import EMBEDDED_ROOT


REPO_ROOT = Path(__file__).resolve().parents[1]


def test_every_embedded_pipeline_ships():
    assert embedded_pipelines() == ["tron-mnist", "tron-mnist-ddim", "tron-mnist-t2i", "tron-mnist-text"]


def test_embedded_weights_stay_under_25_mb():
    weights = sum(path.stat().st_size for path in EMBEDDED_ROOT.rglob("*.safetensors"))
    assert weights < 25 * 2**20, f"{weights / 2**20:.1f} MiB of embedded weights"


@pytest.mark.parametrize(
    "name,condition",
    [
        ("tron-mnist", {"class_labels": [0, 7]}),
        ("tron-mnist-ddim", {"class_labels": [0, 7]}),
        ("tron-mnist-text", {"prompt": ["a bold seven", "a thin two leaning left"]}),
        ("tron-mnist-t2i", {"prompt": ["a bold seven", "a thin two leaning left"]}),
    ],
)
def test_embedded_pipeline_generates(name, condition):
    pipe = TronPipeline.from_pretrained(name)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(**condition, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (2, 28, 28, 1)
    assert 0.0 <= out.images.min() and out.images.max() <= 1.0 and np.isfinite(out.energies.numpy()).all()


def test_readme_command_writes_a_grid(tmp_path):
    assert (
        main(
            [
                "generate",
                "a bold seven leaning right",
                "--num-images",
                "2",
                "--seed",
                "0",
                "--steps",
                "2",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["pipeline"] == "tron-mnist-text" and len(manifest["images"]) == 2
    assert (tmp_path / "grid.png").is_file()


def test_text_pipeline_warns_about_words_it_never_learned():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "mnist"))
    from captions import caption_words

    pipe = TronPipeline.from_pretrained("tron-mnist-text")
    pipe.set_progress_bar_config(disable=True)
    # The known words are exactly those the CLIP's training captions can contain.
    assert pipe.config.prompt_vocabulary.split() == caption_words()
    with pytest.warns(UserWarning, match=r"never saw in training: \['cat'\]"):
        pipe("a cat", num_inference_steps=0, output_type="latent")
    with pytest.warns(UserWarning, match=r"\['photo', 'of'\]"):
        pipe("a photo of a three", num_inference_steps=0, output_type="latent")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe(
            ["the thin number two, tilted left", "a small handwritten 5 leaning to the right"],
            num_inference_steps=0,
            output_type="latent",
        )


def test_t2i_pipeline_is_tr0n_on_the_unconditional_text_to_image_model_and_its_own_conditional_mode():
    pipe = TronPipeline.from_pretrained("tron-mnist-t2i")
    pipe.set_progress_bar_config(disable=True)
    generator = pipe.generator
    # G: the pixel-space text-to-image UNet, 2 deterministic DDIM steps, rendering the empty prompt (TR0N's mode).
    assert isinstance(generator, TextToImageGenerator) and generator.decoder is None
    assert generator.config.num_sampler_steps == 2 and generator.config.generator_prompt == ""
    assert generator.config.scheduler_class == "DDIMScheduler" and generator.latent_dim == 784
    # Its text tower is f's (tron-mnist-text's CLIP), unchanged.
    ids = pipe.tokenizer(["a bold seven"], padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(
            generator.text_encoder(ids).last_hidden_state,
            pipe.encoder.text_model(ids).last_hidden_state,
            rtol=0,
            atol=0,
        )
    # The model card's claim: G given the prompt draws the digit (0.997 on 1,600 evaluation images); scored by the
    # independent evaluation classifier, not by f.
    classifier = HogMlpClassifier.from_pretrained(REPO_ROOT / "benchmarks" / "assets" / "mnist-eval-classifier")
    out = pipe(
        ["a seven", "a bold two", "a four leaning left"],
        num_images_per_prompt=2,
        condition_generator_on_prompt=True,
        initialization="prior",
        num_candidates=1,
        num_inference_steps=0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    assert classifier.predict(out.images[..., 0]).tolist() == [7, 7, 2, 2, 4, 4]


def test_generate_command_serves_the_t2i_pipeline(tmp_path):
    assert (
        main(
            [
                "generate",
                "--pipeline",
                "tron-mnist-t2i",
                "a seven",
                "--num-images",
                "2",
                "--seed",
                "0",
                "--steps",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["pipeline"] == "tron-mnist-t2i" and len(manifest["images"]) == 2
    assert (tmp_path / "grid.png").is_file()
