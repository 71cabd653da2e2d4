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
from test_nvae import malicious_checkpoint
from test_training import KILLER, SUBPROCESS_ENV, free_port, shard_contents
from test_tron_biggan import TINY_DEEP
from transformers import CLIPImageProcessor

from tron_pipelines import ConvClassifier, ConvGenerator, TronPipeline
from tron_pipelines import build as tron_build
from tron_pipelines.cli import main
from tron_pipelines.conversion.formats import GENERATOR_FORMATS, UnknownGeneratorFormatError, detect_generator_format
from tron_pipelines.conversion.tr0n import load_encoder
from tron_pipelines.pretrained import EMBEDDED_ROOT
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
    """A build small enough for seconds on a CPU; 24 training steps with checkpoints at 8, 16 and 24. ``encoder`` is
    a key of ``sources``, or ``"embedded"`` for the embedded tron-mnist-text."""
    argv = [
        "build",
        "--generator",
        sources["generator"],
        "--encoder",
        "tron-mnist-text" if encoder == "embedded" else sources[encoder],
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
    if encoder in ("clip", "other_clip"):
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


@pytest.fixture(scope="module")
def classifier_build(sources, tmp_path_factory) -> Path:
    """A build with the 4-class classifier as encoder."""
    output = tmp_path_factory.mktemp("classifier") / "build"
    argv = build_argv(sources, output, "--sample_class_labels", "0", "3", "--sample_images", "1", encoder="classifier")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    reset_accelerate_state()
    return output


def test_a_classifier_encoder_builds_a_class_conditional_pipeline(classifier_build):
    output = classifier_build
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


def test_an_nvae_checkpoint_builds_a_pipeline_that_loads_and_samples(sources, tmp_path, capsys):
    nvae = FIXTURES / "nvae" / "checkpoint-nvae-dev.pt"
    output = tmp_path / "build"
    argv = build_argv({**sources, "generator": nvae}, output, "--generator_config", "noise_seed=0")
    assert main(argv) == 0
    manifest = json.loads((output / "build.json").read_text())
    assert manifest["stages"]["convert"]["inputs"]["format"] == "nvae"
    assert manifest["stages"]["assemble"]["inputs"]["preset"]["name"] == "nvae"
    pipe = TronPipeline.from_pretrained(output / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.generator).__name__ == "NVAEGenerator" and pipe.generator.config.noise_seed == 0
    assert pipe.scheduler.config.step_size == 0.1 and pipe.scheduler.config.clamp_threshold is None
    assert pipe.translator.config.latent_dim == 256  # the top group, 4 x 8 x 8

    def sample():
        generators = [torch.Generator().manual_seed(seed) for seed in range(2)]
        return pipe(
            "a red car",
            num_images_per_prompt=2,
            num_inference_steps=3,
            num_augmentations=2,
            generator=generators,
            output_type="pt",
        )

    first, second = sample(), sample()
    assert first.images.shape == (2, 3, 32, 32) and torch.isfinite(first.energies).all()
    # With the noise seed, G is a fixed map: the same generators give the same images.
    torch.testing.assert_close(first.images, second.images, rtol=0, atol=0)


def run_card_snippet(card: Path, pipeline_dir: Path) -> tuple[dict, dict]:
    """Run the usage snippet of the model card ``card`` against ``pipeline_dir`` (standing in for the repo id or the
    placeholder folder the snippet loads): ``(the snippet's variables, the card's metadata)``."""
    text = card.read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    (loaded,) = re.findall(r'TronPipeline\.from_pretrained\("([^"]+)"\)', code)
    namespace = {}
    exec(code.replace(f'"{loaded}"', repr(str(pipeline_dir))), namespace)  # noqa: S102 - the card's own snippet
    return namespace, yaml.safe_load(text.split("---")[1])


@pytest.mark.parametrize("card", ["pipeline", "stages/train"])
def test_the_snippet_and_tags_of_every_card_follow_its_conditions(card, reference, classifier_build, tmp_path):
    # A CLIP pipeline takes prompts and images; a classifier pipeline class labels and images. Each card's snippet
    # runs as written against the pipeline it describes (the build card's and the training card's), on a copy whose
    # default sampling settings are lowered from the preset's 100 steps x 50 augmented copies, a minute on a CPU.
    expected = {
        reference[0]: ("text-to-image", {"text-to-image", "image-to-image"}, "class-conditional-image-generation", 1),
        classifier_build: (
            "unconditional-image-generation",
            {"class-conditional-image-generation", "image-to-image"},
            "text-to-image",
            3,
        ),
    }
    for output, (pipeline_tag, tags, wrong_tag, num_images) in expected.items():
        folder = shutil.copytree(
            output / card, tmp_path / output.parent.name, ignore=shutil.ignore_patterns("checkpoint-*")
        )
        model_index = json.loads((folder / "model_index.json").read_text())
        model_index.update(default_num_inference_steps=2, default_num_augmentations=2)
        (folder / "model_index.json").write_text(json.dumps(model_index))
        namespace, metadata = run_card_snippet(folder / "README.md", folder)
        assert metadata["pipeline_tag"] == pipeline_tag and tags <= set(metadata["tags"])
        assert wrong_tag not in metadata["tags"]
        assert len(namespace["images"]) == num_images and len(namespace["variations"]) == 2
        assert namespace["variations"][0].size == namespace["images"][0].size


# Encoders -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["name", "folder", "encoder_folder"])
@pytest.mark.parametrize("embedded", ["tron-mnist-text", "tron-mnist"])
def test_a_pipeline_is_an_encoder_source(embedded, spelling):
    # What the package ships is an encoder by its name, its folder or its encoder/ folder: the pipeline's encoder,
    # tokenizer and image processor, as the pipeline itself loads them.
    folder = EMBEDDED_ROOT / embedded
    encoder, tokenizer, image_processor = load_encoder(
        {"name": embedded, "folder": folder, "encoder_folder": folder / "encoder"}[spelling]
    )
    pipe = TronPipeline.from_pretrained(embedded)
    assert type(encoder) is type(pipe.encoder) and not encoder.training
    expected = pipe.encoder.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in encoder.state_dict().items())
    assert set(encoder.state_dict()) == set(expected)
    if pipe.tokenizer is None:
        assert tokenizer is None and image_processor is None
    else:
        assert tokenizer.get_vocab() == pipe.tokenizer.get_vocab()
        assert image_processor.to_dict() == pipe.image_processor.to_dict()


def test_a_build_takes_an_embedded_pipeline_as_its_encoder(sources, tmp_path):
    output = tmp_path / "build"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(build_argv(sources, output, "--no_samples", encoder="embedded")) == 0
    pipe = TronPipeline.from_pretrained(output / "pipeline")
    embedded = TronPipeline.from_pretrained("tron-mnist-text")
    assert all(
        torch.equal(tensor, embedded.encoder.state_dict()[name]) for name, tensor in pipe.encoder.state_dict().items()
    )
    assert pipe.tokenizer.get_vocab() == embedded.tokenizer.get_vocab()
    assert pipe.translator.config.condition_dim == embedded.translator.config.condition_dim
    # An embedded name is no Hub repo: the card names no base model for it.
    metadata = yaml.safe_load((output / "pipeline" / "README.md").read_text().split("---")[1])
    assert "tron-mnist-text" not in (metadata.get("base_model") or [])


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
        FIXTURES / "nvae" / "checkpoint-nvae-dev.pt": ("nvae", "nvae"),
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
        "nvae",
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


def test_a_checkpoint_with_a_planted_global_is_refused_before_any_stage(sources, tmp_path):
    path, sentinel = malicious_checkpoint(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(build_argv({**sources, "generator": path}, tmp_path / "build"))
    message = str(exit_info.value.code)
    assert re.fullmatch(
        r"tron build: error: --generator Refusing to load .*checkpoint\.pt: its pickle asks for `posix\.system`.*"
        r"Nothing from it was executed\.",
        message,
    ), message
    assert not sentinel.exists() and not (tmp_path / "build").exists()


# Bad input: one line, before any stage ----------------------------------------------------------------------------
def test_a_missing_generator_is_refused_before_torch_is_imported(tmp_path):
    code = (
        "import sys\n"
        "from tron_pipelines.cli import main\n"
        "try:\n"
        "    main(['build', '--generator', sys.argv[1], '--encoder', 'x', '--output', sys.argv[2]])\n"
        "except SystemExit as error:\n"
        "    print(error.code)\n"
        "print('torch' in sys.modules)\n"
    )
    missing = tmp_path / "nonexistent" / "stylegan.pkl"
    run = subprocess.run(
        [sys.executable, "-c", code, str(missing), str(tmp_path / "out")],
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"tron build: error: --generator {missing} does not exist.", "False"]
    assert not (tmp_path / "out").exists()


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
        (
            "unloadable_encoder",
            r"--encoder .*no-such-encoder \(a pipeline folder or embedded name, .*\) could not be loaded: ",
        ),
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
