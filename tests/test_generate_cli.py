"""`tron generate`: files, manifest and one-line errors."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from tron_pipelines import TronPipeline
from tron_pipelines.cli import main
from tron_pipelines.utils.options import normalize_option_spelling


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
    assert (
        generate(
            "a bold seven",
            "--pipeline",
            text_pipeline_dir,
            "--num-images",
            "3",
            "--seed",
            "5",
            "--steps",
            "2",
            "--out",
            str(out),
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert [entry["file"] for entry in manifest["images"]] == ["0.png", "1.png", "2.png"]
    assert [entry["seed"] for entry in manifest["images"]] == [5, 6, 7]
    assert all(
        entry["prompt"] == "a bold seven" and isinstance(entry["energy"], float) for entry in manifest["images"]
    )
    assert manifest["num_inference_steps"] == 2
    assert Image.open(out / "1.png").size == (16, 16)
    assert Image.open(out / "grid.png").size == (48, 16)
    assert not [p for p in os.listdir(out) if p.startswith(".")]


def test_each_image_is_reproducible_alone(class_pipeline_dir, tmp_path):
    generate(
        "--pipeline",
        class_pipeline_dir,
        "--class-label",
        "2",
        "--num-images",
        "3",
        "--seed",
        "0",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "a"),
    )
    generate(
        "--pipeline",
        class_pipeline_dir,
        "--class-label",
        "2",
        "--num-images",
        "1",
        "--seed",
        "2",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "b"),
    )
    assert Image.open(tmp_path / "a" / "2.png").tobytes() == Image.open(tmp_path / "b" / "0.png").tobytes()
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["images"][0]["class_label"] == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--pipeline", "no-such-pipeline", "--class_label", "1"],
            "--pipeline 'no-such-pipeline' is neither a local folder",
        ),
        (["--class_label", "9"], "--class_label"),
        (["a bold seven"], "prompt"),
        ([], "either a prompt or --class_label"),
        (["--class_label", "1", "--candidates", "2", "--init", "translator_mean"], "--init translator_mean"),
    ],
)
def test_bad_input_is_one_line(class_pipeline_dir, tmp_path, args, message):
    if "--pipeline" not in args:
        args = ["--pipeline", class_pipeline_dir, *args]
    with pytest.raises(SystemExit) as exit_info:
        generate(*args, "--out", str(tmp_path / "out"))
    error = str(exit_info.value.code)
    assert error.startswith("tron generate: error:") and message in error and "\n" not in error


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("--steps", "-1", "argument --steps: must be an integer >= 0, got -1"),
        ("--candidates", "0", "argument --candidates: must be an integer >= 1, got 0"),
        ("--num-images", "0", "argument --num_images: must be an integer >= 1, got 0"),
        ("--class-label", "-2", "argument --class_label: must be an integer >= 0, got -2"),
        ("--seed", "-1", "argument --seed: must be an integer >= 0, got -1"),
    ],
)
def test_bad_numbers_are_rejected_before_loading(tmp_path, capsys, option, value, message):
    # The pipeline does not exist: had anything been loaded, the error would be about it.
    with pytest.raises(SystemExit) as exit_info:
        generate("--pipeline", "no-such-pipeline", "--class_label", "1", option, value, "--out", str(tmp_path / "out"))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_dashes_and_underscores_are_the_same_options(class_pipeline_dir, tmp_path):
    generate(
        "--pipeline",
        class_pipeline_dir,
        "--class-label",
        "2",
        "--num-images",
        "2",
        "--steps",
        "1",
        "--out",
        str(tmp_path / "dashes"),
    )
    generate(
        "--pipeline",
        class_pipeline_dir,
        "--class_label",
        "2",
        "--num_images",
        "2",
        "--steps",
        "1",
        "--out",
        str(tmp_path / "underscores"),
    )
    for name in ("0.png", "1.png"):
        assert (
            Image.open(tmp_path / "dashes" / name).tobytes() == Image.open(tmp_path / "underscores" / name).tobytes()
        )


def test_option_spelling_is_normalized_up_to_the_separator():
    assert normalize_option_spelling(
        ["generate", "--num-images=3", "--class-label", "1", "--", "--not-an-option"]
    ) == [
        "generate",
        "--num_images=3",
        "--class_label",
        "1",
        "--",
        "--not-an-option",
    ]


@pytest.mark.parametrize(
    "candidates,init,expected", [(None, "translator", 3), ("2", "translator", 2), (None, "translator_mean", 1)]
)
def test_manifest_records_the_candidates_used(classifier_components, tmp_path, candidates, init, expected):
    TronPipeline(**classifier_components, default_num_candidates=3).save_pretrained(tmp_path / "pipe")
    options = ["--candidates", candidates] if candidates else []
    generate(
        "--pipeline",
        str(tmp_path / "pipe"),
        "--class_label",
        "1",
        "--num_images",
        "1",
        "--steps",
        "1",
        "--init",
        init,
        *options,
        "--out",
        str(tmp_path / "out"),
    )
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["num_candidates"] == expected


def test_help_says_the_seed_default(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "Seed of image 0 (default 0)" in " ".join(capsys.readouterr().out.split())


def test_unwritable_output_dir(class_pipeline_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        generate("--pipeline", class_pipeline_dir, "--class-label", "1", "--out", str(blocker / "out"))
    assert "--out" in str(exit_info.value.code)


def test_a_real_process_shows_one_progress_bar_and_no_traceback(class_pipeline_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "tron_pipelines.cli",
        "generate",
        "--pipeline",
        class_pipeline_dir,
        "--class_label",
        "1",
        "--num_images",
        "2",
        "--steps",
        "3",
        "--out",
        str(tmp_path / "out"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    bars = {
        line.split(":")[0]
        for line in result.stderr.replace("\r", "\n").splitlines()
        if "it/s]" in line or "s/it]" in line
    }
    assert bars == {"Langevin steps"}, result.stderr

    command[command.index(class_pipeline_dir)] = "no-such-pipeline"
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("tron generate: error: --pipeline")
