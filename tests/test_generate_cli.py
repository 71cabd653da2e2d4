"""`tron generate`: files, manifest and one-line errors."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from tron_pipelines.cli import main


@pytest.fixture
def class_pipeline_dir(classifier_pipe, tmp_path):
    classifier_pipe.save_pretrained(tmp_path / "class-pipe")
    return str(tmp_path / "class-pipe")


@pytest.fixture
def text_pipeline_dir(clip_pipe, tmp_path):
    clip_pipe.save_pretrained(tmp_path / "text-pipe")
    return str(tmp_path / "text-pipe")


def generate(*args):
    return main(["generate", *args])


def test_writes_images_grid_and_manifest(text_pipeline_dir, tmp_path):
    out = tmp_path / "samples"
    assert generate("a bold seven", "--pipeline", text_pipeline_dir, "--num-images", "3", "--seed", "5", "--steps", "2", "--out", str(out)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [entry["file"] for entry in manifest["images"]] == ["0.png", "1.png", "2.png"]
    assert [entry["seed"] for entry in manifest["images"]] == [5, 6, 7]
    assert all(entry["prompt"] == "a bold seven" and isinstance(entry["energy"], float) for entry in manifest["images"])
    assert manifest["num_inference_steps"] == 2
    assert Image.open(out / "1.png").size == (16, 16)
    assert Image.open(out / "grid.png").size == (48, 16)
    assert not [p for p in os.listdir(out) if p.startswith(".")]


def test_each_image_is_reproducible_alone(class_pipeline_dir, tmp_path):
    generate("--pipeline", class_pipeline_dir, "--class-label", "2", "--num-images", "3", "--seed", "0", "--steps", "2", "--out", str(tmp_path / "a"))
    generate("--pipeline", class_pipeline_dir, "--class-label", "2", "--num-images", "1", "--seed", "2", "--steps", "2", "--out", str(tmp_path / "b"))
    assert Image.open(tmp_path / "a" / "2.png").tobytes() == Image.open(tmp_path / "b" / "0.png").tobytes()
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["images"][0]["class_label"] == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["--pipeline", "no-such-pipeline", "--class-label", "1"], "--pipeline 'no-such-pipeline': not a pipeline folder"),
        (["--class-label", "9"], "--class-label"),
        (["a bold seven"], "prompt"),
        (["--class-label", "1", "--num-images", "0"], "--num-images"),
        ([], "either a prompt or --class-label"),
        (["--class-label", "1", "--candidates", "0"], "--candidates must be an integer >= 1"),
        (["--class-label", "1", "--candidates", "2", "--init", "translator_mean"], "--init translator_mean"),
    ],
)
def test_bad_input_is_one_line(class_pipeline_dir, tmp_path, args, message):
    if "--pipeline" not in args:
        args = ["--pipeline", class_pipeline_dir, *args]
    with pytest.raises(SystemExit) as exit_info:
        generate(*args, "--out", str(tmp_path / "out"))
    error = str(exit_info.value.code)
    assert error.startswith("tron generate: error:") and message in error and "\n" not in error


def test_unwritable_output_dir(class_pipeline_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        generate("--pipeline", class_pipeline_dir, "--class-label", "1", "--out", str(blocker / "out"))
    assert "--out" in str(exit_info.value.code)


def test_errors_have_no_traceback_in_a_real_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tron_pipelines.cli", "generate", "--pipeline", "no-such-pipeline", "--class-label", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("tron generate: error: --pipeline")
