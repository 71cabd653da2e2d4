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


# A text-to-image G with reward models: --condition_generator_on_prompt, --reward_weights, rewards per image ----------
@pytest.fixture(scope="module")
def reward_pipeline_dir(tokenizer, tmp_path_factory) -> str:
    """A pipeline over a tiny Stable Diffusion G with PickScore and CLIP-score rewards (weights 2 and 0.5), scoring
    plain images (no augmentations: its energy is minus the weighted sum of the reported rewards)."""
    from conftest import tiny_clip
    from test_text_to_image_generators import text_to_image_tron_pipeline

    from tron_pipelines import ClipScoreReward, NoiseOptimizationScheduler, PickScoreReward, RewardModels

    rewards = RewardModels(
        {
            "pickscore": PickScoreReward.from_clip(tiny_clip(len(tokenizer), seed=3), tokenizer),
            "clip_score": ClipScoreReward.from_clip(tiny_clip(len(tokenizer), seed=5), tokenizer),
        }
    )
    folder = tmp_path_factory.mktemp("reward-pipe")
    TronPipeline.from_pipe(
        text_to_image_tron_pipeline(tokenizer),
        rewards=rewards,
        reward_weights={"pickscore": 2.0, "clip_score": 0.5},
        scheduler=NoiseOptimizationScheduler(learning_rate=0.5),
        default_num_augmentations=0,
    ).save_pretrained(folder)
    return str(folder)


REWARD_RUN = ["--num_images", "2", "--seed", "3", "--steps", "2", "--init", "prior"]


def test_reward_options_reach_the_call_and_each_images_rewards_are_recorded(reward_pipeline_dir, tmp_path, capsys):
    import torch

    out_dir = tmp_path / "cars"
    options = ["--condition_generator_on_prompt", "--reward_weights", "clip_score=4"]
    generate("a red car", "--pipeline", reward_pipeline_dir, *REWARD_RUN, *options, "--out", str(out_dir))
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["condition_generator_on_prompt"] is True
    assert manifest["reward_weights"] == {"pickscore": 2.0, "clip_score": 4.0}  # the call's, over the saved ones
    # The same call made directly: the recorded rewards and energies are its.
    pipe = TronPipeline.from_pretrained(reward_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    direct = pipe(
        "a red car",
        num_images_per_prompt=2,
        num_inference_steps=2,
        initialization="prior",
        generator=[torch.Generator().manual_seed(3 + i) for i in range(2)],
        condition_generator_on_prompt=True,
        reward_weights={"clip_score": 4.0},
    )
    printed = capsys.readouterr().out
    weights = ", ".join(f"{name} {weight:g}" for name, weight in manifest["reward_weights"].items())
    assert f"Rewards per image (weights {weights}):" in printed and "clip_score 4" in weights
    for index, entry in enumerate(manifest["images"]):
        expected = {name: float(values[index]) for name, values in direct.rewards.items()}
        assert entry["rewards"] == pytest.approx(expected, abs=1e-5)
        assert entry["energy"] == pytest.approx(float(direct.energies[index]), abs=1e-5)
        assert entry["energy"] == pytest.approx(-2.0 * expected["pickscore"] - 4.0 * expected["clip_score"], abs=1e-5)
        line = next(line for line in printed.splitlines() if line.startswith(f"  {index}.png: "))
        assert line.endswith(f" (energy {entry['energy']:.4f})")
        assert all(f"{name} {value:.4f}" in line for name, value in expected.items())
    # Without the option G renders its own generator prompt: other images from the same seeds.
    generate("a red car", "--pipeline", reward_pipeline_dir, *REWARD_RUN, "--out", str(tmp_path / "own"))
    assert json.loads((tmp_path / "own" / "manifest.json").read_text())["reward_weights"] == {
        "pickscore": 2.0,
        "clip_score": 0.5,
    }
    assert Image.open(tmp_path / "own" / "0.png").tobytes() != Image.open(out_dir / "0.png").tobytes()


def test_many_conditions_record_each_images_rewards_and_refuse_other_weights_on_rerun(reward_pipeline_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red car\na cat\n")
    run = [
        "--pipeline",
        reward_pipeline_dir,
        "--prompts_file",
        str(prompts),
        "--steps",
        "1",
        "--out",
        str(tmp_path / "o"),
    ]
    generate(*run, "--condition_generator_on_prompt", "--reward_weights", "pickscore=1")
    lines = [json.loads(line) for line in (tmp_path / "o" / "manifest.jsonl").read_text().splitlines()]
    assert [sorted(line["rewards"]) for line in lines] == [["clip_score", "pickscore"]] * 2
    for line in lines:
        weighted = 1.0 * line["rewards"]["pickscore"] + 0.5 * line["rewards"]["clip_score"]
        assert line["energy"] == pytest.approx(-weighted, abs=1e-5)
    with pytest.raises(SystemExit) as exit_info:  # the same folder with other weights, or without the option
        generate(*run, "--reward_weights", "pickscore=1")
    assert "condition_generator_on_prompt True -> None" in str(exit_info.value.code)


@pytest.mark.parametrize(
    "pipeline,options,message",
    [
        ("class", ["--class_label", "1", "--reward_weights", "pickscore=1"], "--reward_weights needs reward models"),
        ("class", ["--class_label", "1", "--condition_generator_on_prompt"], "--condition_generator_on_prompt needs"),
        ("reward", ["a cat", "--reward_weights", "hps=5"], "--reward_weights names ['hps']"),
        ("reward", ["a cat", "--reward_weights", "pickscore=1", "pickscore=2"], "gives pickscore more than once"),
    ],
)
def test_reward_option_mistakes_are_one_line(
    class_pipeline_dir, reward_pipeline_dir, tmp_path, pipeline, options, message
):
    folder = class_pipeline_dir if pipeline == "class" else reward_pipeline_dir
    with pytest.raises(SystemExit) as exit_info:
        generate("--pipeline", folder, *options, "--steps", "0", "--num_images", "1", "--out", str(tmp_path / "o"))
    error = str(exit_info.value.code)
    assert error.startswith("tron generate: error:") and message in error and "\n" not in error


@pytest.mark.parametrize("value", ["pickscore", "=1", "pickscore=high"])
def test_reward_weights_are_name_equals_number_before_loading(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        generate("--pipeline", "no-such-pipeline", "a cat", "--reward_weights", value, "--out", str(tmp_path / "o"))
    assert exit_info.value.code == 2
    assert (
        f"argument --reward_weights: must be NAME=WEIGHT like pickscore=0.05, got {value!r}" in capsys.readouterr().err
    )
