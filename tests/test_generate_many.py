"""`tron generate --prompts_file / --class_labels`: batches split over Accelerate processes, seeds, resuming after a
kill, and one-line errors before any sampling.

Subprocesses run with one thread each (several threads per process on a shared 2-core machine stall in OpenMP
barriers), as in test_training.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import reset_accelerate_state, tiny_clip, tiny_generator
from PIL import Image
from transformers import CLIPImageProcessor

from tron_pipelines import LangevinScheduler, TranslatorModel, TronPipeline
from tron_pipelines.cli import main


SUBPROCESS_ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
    "DIFFUSERS_VERBOSITY": "error",
    "TRANSFORMERS_VERBOSITY": "error",
}
# 6 conditions x 2 images = 12 images in 4 batches of 3: with 2 processes, batches 0 and 2 on process 0, 1 and 3 on 1.
RUN_OPTIONS = ["--num_images", "2", "--batch_size", "3", "--steps", "2", "--seed", "10"]
pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")


@pytest.fixture(scope="module")
def text_pipeline_dir(tmp_path_factory, tokenizer) -> Path:
    torch.manual_seed(1)
    pipe = TronPipeline(
        translator=TranslatorModel(condition_dim=16, latent_dim=8, num_components=3, hidden_dim=32).eval(),
        generator=tiny_generator(),
        encoder=tiny_clip(len(tokenizer)),
        scheduler=LangevinScheduler(step_size=0.5, noise_std=0.01, momentum=0.5),
        tokenizer=tokenizer,
        image_processor=CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        default_num_candidates=2,
    )
    folder = tmp_path_factory.mktemp("pipelines") / "text"
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    """Prompts, an image condition and a line with its own seed; a blank line and an extra field (copied through)."""
    folder = tmp_path_factory.mktemp("prompts")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / "cat.png")
    lines = [
        {"prompt": "a bold seven"},
        {"prompt": "a thin three", "image_id": 42},
        {"image": "cat.png"},
        {},
        {"prompt": "a red car", "seed": 7},
        {"prompt": "a dog"},
        {"prompt": "a cat"},
    ]
    path = folder / "conditions.jsonl"
    path.write_text("\n".join(json.dumps(line) if line else "" for line in lines) + "\n")
    return path


@pytest.fixture(scope="module")
def reference_run(text_pipeline_dir, prompts_file, tmp_path_factory) -> Path:
    """The one-process run every other run is compared with."""
    out = tmp_path_factory.mktemp("runs") / "one-process"
    assert (
        main(
            [
                "generate",
                "--pipeline",
                str(text_pipeline_dir),
                "--prompts_file",
                str(prompts_file),
                *RUN_OPTIONS,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    reset_accelerate_state()
    return out


def manifest(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def pixels(path: Path) -> bytes:
    return Image.open(path).tobytes()


def assert_same_images(run: Path, reference: Path) -> None:
    """The same files, pixel for pixel, and the same manifest lines but for the process; energies agree to float
    rounding (a CPU kernel may round differently in another process, e.g. for other memory alignment)."""
    entries, expected = manifest(run), manifest(reference)
    assert [{k: v for k, v in e.items() if k not in ("process", "energy")} for e in entries] == [
        {k: v for k, v in e.items() if k not in ("process", "energy")} for e in expected
    ]
    np.testing.assert_allclose([e["energy"] for e in entries], [e["energy"] for e in expected], rtol=1e-5, atol=1e-7)
    for entry in entries:
        assert pixels(run / entry["file"]) == pixels(reference / entry["file"]), entry["file"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_images_are_seeded_by_index_and_batched_in_order(reference_run, text_pipeline_dir, prompts_file):
    entries = manifest(reference_run)
    assert [entry["index"] for entry in entries] == list(range(12))
    assert [entry["file"] for entry in entries] == [f"{k:06d}.png" for k in range(12)]
    # Image k is image j of condition i = k // 2; seed 10 + k, or the line's own seed + j.
    assert [entry["seed"] for entry in entries] == [10, 11, 12, 13, 14, 15, 7, 8, 18, 19, 20, 21]
    assert [entry["line"] for entry in entries] == [1, 1, 2, 2, 3, 3, 5, 5, 6, 6, 7, 7]
    assert entries[2]["prompt"] == "a thin three" and entries[2]["image_id"] == 42 and entries[4]["image"] == "cat.png"
    assert not [p for p in os.listdir(reference_run) if p.startswith(".") or p.startswith("manifest.part")]

    # Batch 1 (images 3, 4, 5) is one call per run of a condition kind: a prompt, then an image condition.
    pipe = TronPipeline.from_pretrained(text_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    settings = {"num_inference_steps": 2, "num_candidates": 2, "initialization": "translator"}
    prompt_images = pipe(prompt=["a thin three"], generator=[torch.Generator().manual_seed(13)], **settings).images
    image_condition = Image.open(prompts_file.parent / "cat.png").convert("RGB")
    image_images = pipe(
        image=[image_condition] * 2, generator=[torch.Generator().manual_seed(s) for s in (14, 15)], **settings
    ).images
    for index, image in zip((3, 4, 5), prompt_images + image_images):
        assert pixels(reference_run / f"{index:06d}.png") == image.tobytes()


def test_two_processes_write_the_same_images_as_one(reference_run, text_pipeline_dir, prompts_file, tmp_path):
    out = tmp_path / "two-processes"
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
        "generate",
        "--pipeline",
        str(text_pipeline_dir),
        "--prompts_file",
        str(prompts_file),
        *RUN_OPTIONS,
        "--out",
        str(out),
    ]
    run = subprocess.run(
        command, env={**SUBPROCESS_ENV, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Sampled 12 images" in run.stdout and "with 2 process(es)" in run.stdout and "images/s" in run.stdout
    assert [entry["process"] for entry in manifest(out)] == [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1]
    assert_same_images(out, reference_run)


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from tron_pipelines import generate_many

    append_lines, calls = generate_many.append_lines, []

    def append_then_die(path, entries):
        calls.append(path)
        if len(calls) == 3:  # killed in the middle of recording the third batch: half of its lines written
            data = "".join(generate_many.json.dumps(entry) + "\\n" for entry in entries).encode()
            with open(path, "ab") as file:
                file.write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        append_lines(path, entries)

    generate_many.append_lines = append_then_die
    from tron_pipelines.cli import main
    main(sys.argv[1:])
    """
)


def test_killed_run_finishes_on_rerun_with_every_image_once(reference_run, text_pipeline_dir, prompts_file, tmp_path):
    out = tmp_path / "killed"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    argv = [
        "generate",
        "--pipeline",
        str(text_pipeline_dir),
        "--prompts_file",
        str(prompts_file),
        *RUN_OPTIONS,
        "--out",
        str(out),
    ]
    run = subprocess.run(
        [sys.executable, str(script), *argv], env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
    part = out / "manifest.part-00000.jsonl"
    recorded = part.read_text()
    assert recorded.count("\n") == 6 + 1 and not recorded.endswith("\n")  # two batches, then a cut line
    assert not (out / "manifest.jsonl").exists()
    assert (out / "000008.png").exists()  # the third batch's images were in place before its lines
    (out / ".000011.png.12345.tmp").write_bytes(b"half a png")  # as a kill during a PNG write leaves it

    assert main(argv) == 0
    assert sorted(os.listdir(out)) == sorted(["manifest.jsonl", "run.json"] + [f"{k:06d}.png" for k in range(12)])
    assert_same_images(out, reference_run)


def test_rerun_skips_finished_work_and_refuses_other_settings(reference_run, text_pipeline_dir, prompts_file, capsys):
    argv = [
        "generate",
        "--pipeline",
        str(text_pipeline_dir),
        "--prompts_file",
        str(prompts_file),
        *RUN_OPTIONS,
        "--out",
        str(reference_run),
    ]
    before = {
        name: os.stat(reference_run / name).st_mtime_ns for name in os.listdir(reference_run) if name.endswith(".png")
    }
    assert main(argv) == 0
    assert "Nothing to do: all 12 images are already in" in capsys.readouterr().out
    assert {name: os.stat(reference_run / name).st_mtime_ns for name in before} == before
    reset_accelerate_state()
    with pytest.raises(SystemExit) as exit_info:
        main([*argv[:-2], "--steps", "3", "--out", str(reference_run)])
    assert "holds 12 images of a run with other settings (num_inference_steps 2 -> 3)" in str(exit_info.value.code)


def run_error(*args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", *args])
    error = str(exit_info.value.code)
    assert "\n" not in error
    return error


@pytest.mark.parametrize(
    "content,suffix,message",
    [
        ("", ".txt", "holds no conditions (it is empty or has only blank lines)"),
        ("\n  \n", ".txt", "holds no conditions"),
        (
            '{"prompt": "a cat"}\n\n{"prompt": "a dog",}\n',
            ".jsonl",
            "line 3 is not valid JSON (Expecting property name",
        ),
        ("a cat\n\xff\xfe\n", ".txt", "line 2 is not UTF-8 text"),
        ('{"prompt": "a cat"}\n{"image": "missing.png"}\n', ".jsonl", "line 2: image 'missing.png' does not exist"),
        ('{"prompt": "a cat", "class_label": 1}\n', ".jsonl", "line 1: give exactly one of"),
        ('{"class_label": -1}\n', ".jsonl", 'line 1: "class_label" must be an integer >= 0, got -1'),
        ('{"prompt": "a cat", "seed": "x"}\n', ".jsonl", 'line 1: "seed" must be an integer >= 0'),
        ('{"prompt": "a cat", "file": "x"}\n', ".jsonl", "line 1: ['file'] are fields of the manifest"),
    ],
)
def test_bad_prompts_files_fail_before_loading(tmp_path, content, suffix, message):
    path = tmp_path / f"prompts{suffix}"
    path.write_bytes(content.encode("latin-1") if "\xff" in content else content.encode())
    # The pipeline does not exist: had it been loaded first, the error would be about it.
    error = run_error("--pipeline", "no-such-pipeline", "--prompts_file", str(path), "--out", str(tmp_path / "out"))
    assert error.startswith(f"tron generate: error: --prompts_file {path}") and message in error, error


def test_class_labels_are_checked_against_the_pipeline_before_sampling(tmp_path):
    out = tmp_path / "out"
    assert "--class_labels: class label 10 out of range: the pipeline has classes 0..9" in run_error(
        "--pipeline", "tron-mnist", "--class_labels", "8-10", "--out", str(out)
    )
    reset_accelerate_state()
    path = tmp_path / "labels.jsonl"
    path.write_text('{"class_label": 3}\n{"class_label": 12}\n')
    assert f"--prompts_file {path} line 2: class label 12 out of range" in run_error(
        "--pipeline", "tron-mnist", "--prompts_file", str(path), "--out", str(out)
    )
    reset_accelerate_state()
    text = tmp_path / "prompts.txt"
    text.write_text("a seven\n")
    assert "line 1: prompts need a text (CLIP) pipeline" in run_error(
        "--pipeline", "tron-mnist", "--prompts_file", str(text), "--out", str(out)
    )
    assert not list(out.glob("*.png"))


def test_class_label_lists_parse_ranges_and_refuse_nonsense(tmp_path, capsys):
    from tron_pipelines.commands.generate import class_label_list

    assert class_label_list("0-3,7,5-5") == [0, 1, 2, 3, 7, 5]
    for bad in ("5-2", "a", "1,,2", "-3"):
        with pytest.raises(SystemExit):
            main(["generate", "--class_labels", bad, "--out", str(tmp_path)])
        assert "argument --class_labels: must be class labels like 0-9 or 0,3,5-7" in capsys.readouterr().err
    assert (
        "give either a prompt or --class_label, or many conditions with --prompts_file or --class_labels (got a prompt and --class_labels)"
        in run_error("a cat", "--class_labels", "1", "--out", str(tmp_path))
    )
