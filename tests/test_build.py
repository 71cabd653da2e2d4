"""`tron build`: a tiny BigGAN-deep (pytorch-pretrained-biggan format) + tiny CLIP built into a pipeline in one command;
stages skipped, resumed and rebuilt from the manifest; format detection; bad input refused before any stage.

In-process builds use the `tron` command line itself (`main`); the killed build runs in a subprocess, like
`test_training.py`'s killed training run.
"""

import contextlib
import io
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import reset_accelerate_state, tiny_clip
from test_biggan import biggan_pytorch_state_dict, random_package_biggan
from test_training import KILLER, SUBPROCESS_ENV, free_port, shard_contents
from test_tron_biggan import TINY_DEEP
from transformers import CLIPImageProcessor

from tron_pipelines import ConvClassifier, ConvGenerator, TronPipeline
from tron_pipelines import build as tron_build
from tron_pipelines.cli import main
from tron_pipelines.conversion.formats import GENERATOR_FORMATS, UnknownGeneratorFormatError, detect_generator_format
from tron_pipelines.training import files_to_upload, read_manifest


# One thread per test process, and a fresh Accelerate state after each in-process build (a process-wide singleton).
pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Measured on the reference build: the mean Langevin energy of 4 images for "a red car" falls from 0.182 (first 3 of 15
# steps) to 0.136 (last 3), a drop of 0.046.
ENERGY_DROP = 0.02


def save_clip(folder: Path, tokenizer, seed: int) -> Path:
    tiny_clip(len(tokenizer), seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """A pytorch-pretrained-biggan folder (config.json + pytorch_model.bin), two CLIP folders, a 4-class classifier."""
    root = tmp_path_factory.mktemp("sources")
    biggan = root / "biggan-deep"
    biggan.mkdir()
    torch.save(random_package_biggan(TINY_DEEP).state_dict(), biggan / "pytorch_model.bin")
    (biggan / "config.json").write_text(TINY_DEEP.to_json_string())
    torch.manual_seed(0)
    ConvClassifier(
        num_classes=4, in_channels=3, image_size=16, image_mean=(0.5,) * 3, image_std=(0.5,) * 3, channels=(8, 16)
    ).save_pretrained(root / "classifier")
    return {
        "generator": biggan,
        "clip": save_clip(root / "clip", tokenizer, seed=0),
        "other_clip": save_clip(root / "other-clip", tokenizer, seed=1),
        "classifier": root / "classifier",
    }


def build_argv(sources, output, *extra, encoder="clip") -> list[str]:
    """A build small enough for seconds on a CPU; 24 training steps with checkpoints at 8, 16 and 24."""
    argv = [
        "build",
        "--generator",
        sources["generator"],
        "--encoder",
        sources[encoder],
        "--output",
        output,
        "--num_pairs",
        "64",
        "--pairs_per_shard",
        "32",
        "--generation_batch_size",
        "16",
        "--num_components",
        "3",
        "--hidden_dim",
        "32",
        "--train_batch_size",
        "16",
        "--max_train_steps",
        "24",
        "--learning_rate",
        "1e-3",
        "--checkpointing_steps",
        "8",
        "--validation_steps",
        "8",
        "--num_validation_pairs",
        "32",
        "--num_validation_conditions",
        "4",
        "--report_to",
        "none",
        "--sample_steps",
        "2",
        "--sample_augmentations",
        "2",
    ]
    if encoder != "classifier":
        argv += ["--sample_prompts", "a red car", "a cat"]
    return [str(word) for word in argv + list(extra)]


def stage_lines(text: str) -> dict[str, str]:
    """``{stage: "ran" | "resumed" | "skipped ..."}`` from the summary's stage table."""
    table = text.split("Stages:\n", 1)[1].splitlines()
    return {
        line.split()[0]: " ".join(line.split()[3:])
        for line in table
        if line.startswith("  ") and not line.split()[0] == "total"
    }


def files_state(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def translator_bytes(output: Path) -> bytes:
    return (output / "pipeline" / "translator" / "diffusion_pytorch_model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def reference(sources, tmp_path_factory) -> tuple[Path, str]:
    """One uninterrupted build, and what it printed."""
    output = tmp_path_factory.mktemp("reference") / "build"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(build_argv(sources, output)) == 0
    reset_accelerate_state()
    return output, printed.getvalue()


def test_one_command_builds_a_pipeline_that_loads_and_refines(reference):
    output, printed = reference
    assert stage_lines(printed) == dict.fromkeys(("convert", "assemble", "pairs", "train", "card"), "ran")
    pipeline_dir = output / "pipeline"
    assert (
        f'TronPipeline.from_pretrained("{pipeline_dir}")' in printed
        and "nats/dim" in printed
        and "fitted spread" in printed
    )

    # The final folder is the pipeline, its card and its samples; checkpoints and caches stay in stages/.
    assert sorted(p.name for p in output.iterdir()) == ["build.json", "pipeline", "stages"]
    assert sorted(p.name for p in (output / "stages").iterdir()) == ["assemble", "convert", "pairs", "train"]
    assert not list(pipeline_dir.rglob("checkpoint-*")) and not list(pipeline_dir.rglob("shard-*"))
    assert list((output / "stages" / "train").glob("checkpoint-*"))
    manifest = json.loads((output / "build.json").read_text())
    assert manifest["stages"]["convert"]["inputs"]["format"] == "pytorch-pretrained-biggan"
    assert manifest["stages"]["assemble"]["inputs"]["preset"]["name"] == "biggan"
    assert all(record["status"] == "complete" and record["seconds"] > 0 for record in manifest["stages"].values())

    # The card: base models, validation figures as measured, the sample grid and its manifest.
    card = (pipeline_dir / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    train = manifest["stages"]["train"]["outputs"]
    assert metadata["library_name"] == "tron_pipelines" and metadata["train_steps"] == 24 == train["global_step"]
    assert metadata["metrics"]["nll_per_dim"] == pytest.approx(train["metrics"]["nll_per_dim"], abs=1e-6)
    assert train["metrics"]["nll_per_dim"] < train["initial_metrics"]["nll_per_dim"]
    assert "| nll_per_dim" in card and "![samples](samples/grid.png)" in card and "tron build --generator" in card
    samples = json.loads((pipeline_dir / "samples" / "manifest.json").read_text())
    assert [image["prompt"] for image in samples["images"]] == ["a red car", "a red car", "a cat", "a cat"]
    assert (pipeline_dir / "samples" / "grid.png").is_file()

    # It loads, and Langevin lowers the CLIP energy of the translator's proposals.
    pipe = TronPipeline.from_pretrained(pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.generator).__name__ == "BigGANDeepGenerator" and pipe.scheduler.config.clamp_threshold == 2.0
    out = pipe(
        "a red car",
        num_images_per_prompt=4,
        num_inference_steps=15,
        num_augmentations=4,
        generator=[torch.Generator().manual_seed(s) for s in range(4)],
        return_energy_trace=True,
        output_type="np",
    )
    start, end = out.energy_trace[:3].mean().item(), out.energy_trace[-3:].mean().item()
    assert end < start - ENERGY_DROP, (start, end)


def test_rerunning_the_same_command_does_no_work(reference, sources, capsys):
    output, _ = reference
    before = files_state(output)
    assert main(build_argv(sources, output)) == 0
    assert set(stage_lines(capsys.readouterr().out).values()) == {"skipped (recorded time)"}
    assert files_state(output) == before  # not a byte and not a modification time changed, build.json included


def test_a_build_killed_in_training_finishes_from_its_last_checkpoint(sources, reference, tmp_path, capsys):
    output = tmp_path / "build"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)  # SIGKILL while writing the second checkpoint (step 16)
    run = subprocess.run(
        [sys.executable, str(script), *build_argv(sources, output)],
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
    assert json.loads((output / "build.json").read_text())["stages"]["train"]["status"] == "running"
    assert sorted(p.name for p in (output / "stages" / "train").glob("checkpoint-*")) == [
        "checkpoint-16.partial",
        "checkpoint-8",
    ]
    assert not (output / "pipeline").exists()

    main(build_argv(sources, output))
    printed = capsys.readouterr().out
    assert stage_lines(printed) == {
        "convert": "skipped (recorded time)",
        "assemble": "skipped (recorded time)",
        "pairs": "skipped (recorded time)",
        "train": "resumed",
        "card": "ran",
    }
    assert "Resuming from" in printed and "checkpoint-8" in printed
    assert translator_bytes(output) == translator_bytes(reference[0])


def test_another_encoder_rebuilds_from_the_assembly_on(reference, sources, tmp_path, capsys):
    output = tmp_path / "build"
    shutil.copytree(reference[0], output)
    converted = files_state(output / "stages" / "convert")
    main(build_argv(sources, output, encoder="other_clip"))
    assert stage_lines(capsys.readouterr().out) == {
        "convert": "skipped (recorded time)",
        "assemble": "ran",
        "pairs": "ran",
        "train": "ran",
        "card": "ran",
    }
    assert files_state(output / "stages" / "convert") == converted
    pairs = read_manifest(output / "stages" / "pairs")
    assert (
        pairs["complete"]
        and pairs["encoder"]["fingerprint"]
        != read_manifest(reference[0] / "stages" / "pairs")["encoder"]["fingerprint"]
    )
    assert translator_bytes(output) != translator_bytes(reference[0])


def test_two_processes_build_the_same_pairs_and_a_loadable_pipeline(reference, sources, tmp_path):
    output = tmp_path / "build"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--main_process_port",
        str(free_port()),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "tron_pipelines.cli",
        *build_argv(sources, output),
    ]
    # ACCELERATE_USE_CPU makes the torchrun-style launcher give CPU processes and gloo (see test_training.py).
    run = subprocess.run(
        command, env={**SUBPROCESS_ENV, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (
        run.stdout.count("Pipeline: ") == 1 and "with 2 process(es)" in run.stdout
    )  # one summary, pairs split in two
    manifest = json.loads((output / "build.json").read_text())
    assert {name: record["processes"] for name, record in manifest["stages"].items()} == dict.fromkeys(
        ("convert", "assemble", "pairs", "train", "card"), 2
    )
    # The main process converted what one process converts; the two processes wrote the one-process cache, shard for
    # shard (tensors and metadata: safetensors orders a header's metadata differently from process to process).
    assert (
        manifest["stages"]["convert"]["outputs"]
        == json.loads((reference[0] / "build.json").read_text())["stages"]["convert"]["outputs"]
    )
    for shard in read_manifest(reference[0] / "stages" / "pairs")["shards"]:
        (expected, expected_meta), (actual, actual_meta) = (
            shard_contents(root / "stages" / "pairs" / shard["file"]) for root in (reference[0], output)
        )
        assert actual_meta == expected_meta and all(torch.equal(actual[name], expected[name]) for name in expected), (
            shard["file"]
        )
    pipe = TronPipeline.from_pretrained(output / "pipeline")
    assert pipe.translator.config.num_components == 3


def test_push_uploads_the_pipeline_folder_once(reference, sources, tmp_path, monkeypatch, capsys):
    uploads = []
    # The Hub is out of reach in tests: record what would be sent, filtered as huggingface_hub filters it.
    monkeypatch.setattr(tron_build, "create_repo", lambda repo_id, **kwargs: type("Repo", (), {"repo_id": repo_id})())
    monkeypatch.setattr(
        tron_build,
        "upload_folder",
        lambda repo_id, folder_path, **kwargs: uploads.append((repo_id, files_to_upload(folder_path))),
    )
    output = tmp_path / "build"
    shutil.copytree(reference[0], output)
    argv = build_argv(sources, output, "--push_to_hub", "--hub_model_id", "org/tiny-tron")
    main(argv)
    # The card names the repo in its loading snippet, so it is written again; nothing before it runs.
    assert stage_lines(capsys.readouterr().out) == {
        **dict.fromkeys(("convert", "assemble", "pairs", "train"), "skipped (recorded time)"),
        "card": "ran",
        "push": "ran",
    }
    ((repo_id, files),) = uploads
    assert (
        repo_id == "org/tiny-tron"
        and "README.md" in files
        and "samples/grid.png" in files
        and "translator/config.json" in files
    )
    assert not [name for name in files if name.startswith(("stages", "checkpoint", "build.json"))]
    assert 'TronPipeline.from_pretrained("org/tiny-tron")' in (output / "pipeline" / "README.md").read_text()
    reset_accelerate_state()
    main(argv)
    assert len(uploads) == 1 and stage_lines(capsys.readouterr().out)["push"] == "skipped (recorded time)"


def test_a_classifier_encoder_builds_a_class_conditional_pipeline(sources, tmp_path, capsys):
    output = tmp_path / "build"
    assert (
        main(
            build_argv(
                sources, output, "--sample_class_labels", "0", "3", "--sample_images", "1", encoder="classifier"
            )
        )
        == 0
    )
    # The conditions are the classifier's class probabilities, so the translator takes 4-dim ones.
    cache = read_manifest(output / "stages" / "pairs")
    assert cache["encoder"]["kind"] == "classifier" and cache["condition"]["dim"] == 4
    conditions = torch.cat(
        [shard_contents(output / "stages" / "pairs" / shard["file"])[0]["conditions"] for shard in cache["shards"]]
    )
    torch.testing.assert_close(conditions.sum(dim=1), torch.ones(len(conditions)))
    pipe = TronPipeline.from_pretrained(output / "pipeline")
    assert pipe.translator.config.condition_dim == 4 and pipe.tokenizer is None
    samples = json.loads((output / "pipeline" / "samples" / "manifest.json").read_text())
    assert [image["class_label"] for image in samples["images"]] == [0, 3]
    assert "`0`, `3`" in (output / "pipeline" / "README.md").read_text()


def test_a_stylegan_xl_pickle_builds_a_pipeline_that_loads_and_samples(sources, tmp_path):
    """The StyleGAN-XL fixture (a dill network pickle, class-conditional) and a tiny CLIP: converted, paired, trained,
    assembled with the StyleGAN preset; the pipeline loads and samples the translator's w (one per image)."""
    output = tmp_path / "build"
    generator = FIXTURES / "stylegan-xl" / "network-snapshot-stylegan-xl-dev.pkl"
    # Fewer pairs and steps than the reference build: G is what is under test here, and it costs most of the time.
    shrink = ["--num_pairs", "32", "--pairs_per_shard", "16", "--num_validation_pairs", "16", "--max_train_steps", "4"]
    shrink += ["--checkpointing_steps", "4", "--validation_steps", "4", "--sample_prompts", "a red car"]
    assert main(build_argv({**sources, "generator": generator}, output, *shrink)) == 0
    manifest = json.loads((output / "build.json").read_text())
    assert manifest["stages"]["convert"]["inputs"]["format"] == "nvlabs"
    assert manifest["stages"]["assemble"]["inputs"]["preset"]["name"] == "stylegan"
    pipe = TronPipeline.from_pretrained(output / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.generator).__name__ == "StyleGANXLGenerator" and pipe.generator.num_ws == 8
    assert pipe.scheduler.config.step_size == 0.1 and pipe.translator.config.latent_dim == 32
    out = pipe(
        "a red car",
        num_images_per_prompt=2,
        num_inference_steps=3,
        num_augmentations=2,
        generator=[torch.Generator().manual_seed(s) for s in range(2)],
        output_type="np",
    )
    assert out.images.shape == (2, 64, 64, 3) and out.latents.shape == (2, 32) and torch.isfinite(out.latents).all()
    # The pipeline's images are the generator's broadcast-w render of the returned latents (TR0N's call).
    rendered = (pipe.generator.generate(out.latents.to(torch.float32)) + 1) / 2
    torch.testing.assert_close(torch.from_numpy(out.images).permute(0, 3, 1, 2), rendered, rtol=0, atol=1e-5)


# Formats ----------------------------------------------------------------------------------------------------------
def test_every_format_is_recognised_from_its_files(sources, tmp_path):
    generator = ConvGenerator(
        latent_dim=4, out_channels=3, base_channels=4, base_resolution=4, channel_multipliers=(1,)
    )
    generator.save_pretrained(tmp_path / "tron")
    for resolution in (256, 512):
        torch.save(biggan_pytorch_state_dict(resolution, channel_width=4), tmp_path / f"biggan-{resolution}.pth")
    cases = {
        tmp_path / "tron": ("tron_pipelines", None),
        sources["generator"]: ("pytorch-pretrained-biggan", "biggan"),
        tmp_path / "biggan-256.pth": ("biggan-pytorch", "biggan"),
        tmp_path / "biggan-512.pth": ("biggan-pytorch", "biggan"),
        FIXTURES / "stylegan2-rosinality" / "stylegan2-rosinality-dev.pt": ("rosinality", "stylegan"),
        FIXTURES / "stylegan2-nvlabs" / "network-snapshot-stylegan2-nvlabs-dev.pkl": ("nvlabs", "stylegan"),
        FIXTURES / "stylegan3-nvlabs" / "network-snapshot-stylegan3-nvlabs-dev.pkl": ("nvlabs", "stylegan"),
        FIXTURES / "stylegan-xl" / "network-snapshot-stylegan-xl-dev.pkl": ("nvlabs", "stylegan"),
    }
    for path, (name, preset) in cases.items():
        entry = detect_generator_format(path)
        assert (entry.name, entry.default_preset(str(path))) == (name, preset), path
    assert [entry.name for entry in GENERATOR_FORMATS] == [
        "tron_pipelines",
        "pytorch-pretrained-biggan",
        "biggan-pytorch",
        "rosinality",
        "nvlabs",
        "diffusers",
    ]
    # BigGAN-PyTorch's resolution comes from the number of blocks; settings reach the converter.
    assert (
        detect_generator_format(tmp_path / "biggan-512.pth").load(str(tmp_path / "biggan-512.pth")).resolution == 512
    )
    assert (
        detect_generator_format(sources["generator"])
        .load(str(sources["generator"]), default_truncation=0.5)
        .config.default_truncation
        == 0.5
    )
    # Files that are none of them: a translator checkpoint (a torch archive of another kind) and a text file.
    (tmp_path / "notes.txt").write_text("not a model")
    for path in (FIXTURES / "tr0n-translator" / "biggan" / "model_best.pth", tmp_path / "notes.txt", tmp_path):
        with pytest.raises(
            UnknownGeneratorFormatError, match="Known formats: tron_pipelines: .*; nvlabs: .*; diffusers: "
        ):
            detect_generator_format(path)


# Bad input: one line, before any stage ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "case, pattern",
    [
        (
            "unknown_format",
            r"--generator .*notes\.txt is in no known generator format\. Known formats: tron_pipelines: .*pytorch-pretrained-biggan: .*nvlabs: ",
        ),
        ("missing_generator", r"--generator .*nowhere does not exist"),
        (
            "classes_of_the_classifier",
            r"--sample_class_labels 4 7: the classifier --encoder .* has 4 classes \(0 to 3\)",
        ),
        ("prompts_for_a_classifier", r"--sample_prompts needs a CLIP --encoder"),
        ("classes_for_clip", r"--sample_class_labels needs a classifier --encoder"),
        ("output_under_a_file", r"--output .* cannot be created: .*notes\.txt is a file, not a folder"),
        ("output_is_a_file", r"--output .*notes\.txt is a file, not a folder"),
        ("output_not_a_build", r"--output .* is not empty and holds no build\.json"),
        ("push_without_repo", r"--push_to_hub needs --hub_model_id"),
        ("push_offline", r"--hub_model_id 'org/tiny': the Hub repo cannot be created \(.*(?i:offline)"),
        ("unknown_preset", r"--preset must be one of .*biggan.*; got 'nonsense'"),
        ("batch_over_pairs", r"needs 128 pairs per step, but --num_pairs is 64"),
        ("bad_training_option", r"`--num_components` must be >= 1, got 0"),
        ("unloadable_encoder", r"--encoder '.*no-such-encoder' could not be loaded: "),
    ],
)
def test_bad_input_is_one_line_before_any_stage(case, pattern, sources, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    output, extra, encoder = tmp_path / "build", [], "clip"
    if case == "unknown_format":
        sources = {**sources, "generator": notes}
    elif case == "missing_generator":
        sources = {**sources, "generator": tmp_path / "nowhere"}
    elif case == "classes_of_the_classifier":
        encoder, extra = "classifier", ["--sample_class_labels", "1", "4", "7"]
    elif case == "prompts_for_a_classifier":
        encoder, extra = "classifier", ["--sample_prompts", "a cat"]
    elif case == "classes_for_clip":
        extra = ["--sample_class_labels", "1"]
    elif case == "output_under_a_file":
        output = notes / "build"
    elif case == "output_is_a_file":
        output = notes
    elif case == "output_not_a_build":
        output = tmp_path
    elif case == "push_without_repo":
        extra = ["--push_to_hub"]
    elif case == "push_offline":
        extra = ["--push_to_hub", "--hub_model_id", "org/tiny"]
    elif case == "unknown_preset":
        extra = ["--preset", "nonsense"]
    elif case == "batch_over_pairs":
        extra = ["--train_batch_size", "128"]
    elif case == "bad_training_option":
        extra = ["--num_components", "0"]
    elif case == "unloadable_encoder":
        sources = {**sources, "clip": tmp_path / "no-such-encoder"}
    contents = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        main(build_argv(sources, output, *extra, encoder=encoder))
    message = str(exit_info.value.code)
    assert message.startswith("tron build: error: ") and "\n" not in message, message
    assert re.search(pattern, message), message
    assert sorted(tmp_path.rglob("*")) == contents  # nothing written, no output folder created
