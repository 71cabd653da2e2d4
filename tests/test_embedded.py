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


def test_every_embedded_pipeline_ships():
    assert embedded_pipelines() == ["tron-mnist", "tron-mnist-ddim", "tron-mnist-text"]


@pytest.mark.parametrize(
    "name,condition",
    [
        ("tron-mnist", {"class_labels": [0, 7]}),
        ("tron-mnist-ddim", {"class_labels": [0, 7]}),
        ("tron-mnist-text", {"prompt": ["a bold seven", "a thin two leaning left"]}),
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
