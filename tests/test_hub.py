"""Loading from the Hub, proven offline against a prepared Hugging Face cache (the layout huggingface_hub writes)."""

import numpy as np
import pytest
import torch
from conftest import HUB_COMMIT, fill_hub_cache

from tron_pipelines import TronPipeline, embedded_pipelines
from tron_pipelines.pipelines.loading import PipelineNotFoundError
from tron_pipelines.pretrained import resolve_pretrained_path


def test_from_pretrained_with_a_hub_id(classifier_pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    classifier_pipe.save_pretrained(tmp_path / "saved")
    fill_hub_cache(tmp_path / "saved", tmp_path / "cache", "org/tron-tiny")
    pipe = TronPipeline.from_pretrained("org/tron-tiny", cache_dir=tmp_path / "cache")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config._name_or_path == "org/tron-tiny"  # the name asked for, not the snapshot folder
    kwargs = {"class_labels": [1], "num_inference_steps": 2, "output_type": "np"}
    np.testing.assert_allclose(
        pipe(generator=torch.Generator().manual_seed(0), **kwargs).images,
        classifier_pipe(generator=torch.Generator().manual_seed(0), **kwargs).images,
        atol=5e-4,
    )


def test_hub_download_arguments_are_passed_on(classifier_pipe, tmp_path, monkeypatch):
    # Offline, a revision or a cache folder the cache does not hold is an error, not the cached main branch.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    classifier_pipe.save_pretrained(tmp_path / "saved")
    fill_hub_cache(tmp_path / "saved", tmp_path / "cache", "org/tron-tiny")
    assert TronPipeline.download("org/tron-tiny", cache_dir=tmp_path / "cache", revision="main").endswith(HUB_COMMIT)
    with pytest.raises(PipelineNotFoundError, match="offline and not in the local Hub cache"):
        TronPipeline.from_pretrained("org/tron-tiny", cache_dir=tmp_path / "cache", revision="v2")
    with pytest.raises(PipelineNotFoundError, match="offline and not in the local Hub cache"):
        TronPipeline.from_pretrained("org/tron-tiny", cache_dir=tmp_path / "elsewhere")


def test_resolution_order(tmp_path, monkeypatch):
    assert resolve_pretrained_path("org/repo") == "org/repo"
    assert resolve_pretrained_path(tmp_path) == tmp_path
    for name in embedded_pipelines():
        assert resolve_pretrained_path(name).endswith(name)
        # A local folder of the same name wins over the embedded pipeline.
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path)
        assert resolve_pretrained_path(name) == name
