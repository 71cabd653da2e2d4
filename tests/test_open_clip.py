"""OpenCLIP encoders behind the CLIP interface (runs only where the `open_clip` extra is installed)."""

import numpy as np
import pytest
import torch


open_clip = pytest.importorskip(
    "open_clip", reason="open_clip_torch is not installed (extra: tron-pipelines[open_clip])"
)

from tron_pipelines import OpenCLIPEncoder, TronPipeline  # noqa: E402


def tiny_config(vocab_size):
    return {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 16, "layers": 2, "width": 32, "patch_size": 4, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": vocab_size, "width": 32, "heads": 2, "layers": 2},
    }


@pytest.fixture
def open_clip_pipe(clip_components, tokenizer):
    torch.manual_seed(0)
    encoder = OpenCLIPEncoder(
        model_name=None, model_config=tiny_config(len(tokenizer)), projection_dim=16, image_size=16
    ).eval()
    clip_components.update(encoder=encoder, image_processor=None)
    pipe = TronPipeline(**clip_components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_features_are_open_clip_features(open_clip_pipe, tokenizer):
    encoder = open_clip_pipe.encoder
    ids = tokenizer(["a red car"], padding="max_length", max_length=16, return_tensors="pt").input_ids
    torch.testing.assert_close(encoder.get_text_features(ids), encoder.model.encode_text(ids))
    pixels = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(encoder.get_image_features(pixels), encoder.model.encode_image(pixels))
    adapter = open_clip_pipe.encoder_adapter
    assert adapter.kind == "clip" and adapter.condition_dim == 16 and adapter.image_size == 16


def test_pipeline_with_open_clip_round_trips(open_clip_pipe, tmp_path):
    kwargs = {"prompt": "a red car", "num_inference_steps": 2, "num_augmentations": 2, "output_type": "np"}
    before = open_clip_pipe(generator=torch.Generator().manual_seed(0), **kwargs)
    open_clip_pipe.save_pretrained(tmp_path)
    reloaded = TronPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert isinstance(reloaded.encoder, OpenCLIPEncoder)
    after = reloaded(generator=torch.Generator().manual_seed(0), **kwargs)
    np.testing.assert_allclose(before.images, after.images, atol=5e-4)
