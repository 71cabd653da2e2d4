"""`tron evaluate`: the benchmarks' MNIST scores reproduced exactly, CLIP score and FD_CLIP against an independent
computation, a ConvClassifier's accuracy, saved reference statistics, and one-line errors (Inception unavailable
included: no weights can be downloaded here)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import reset_accelerate_state
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

from tron_pipelines.cli import main
from tron_pipelines.evaluation import frechet_sample_size_warning


ROOT = Path(__file__).resolve().parent.parent
EVAL_CLASSIFIER = ROOT / "benchmarks" / "assets" / "mnist-eval-classifier"
pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")


def generate(*args):
    assert main(["generate", *map(str, args)]) == 0
    reset_accelerate_state()


def evaluate(*args) -> dict:
    assert main(["evaluate", *map(str, args)]) == 0
    output = (
        Path(args[list(args).index("--output") + 1])
        if "--output" in args
        else Path(args[list(args).index("--images") + 1]) / "metrics.json"
    )
    return json.loads(output.read_text())


def evaluate_error(*args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", *map(str, args)])
    error = str(exit_info.value.code)
    assert error.startswith("tron evaluate: error: ") and "\n" not in error, error
    return error


def load_images(folder: Path) -> tuple[list[Image.Image], list[dict]]:
    entries = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    return [Image.open(folder / entry["file"]) for entry in entries], entries


def test_mnist_scores_equal_the_benchmarks_on_the_same_images(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "examples" / "mnist"))
    import export_held_out
    from metrics import MnistEvaluator

    digits, held_out = tmp_path / "digits", tmp_path / "held-out"
    generate("--pipeline", "tron-mnist", "--class_labels", "0-9", "--num_images", "3", "--steps", "2", "--out", digits)
    monkeypatch.setattr(sys, "argv", ["export_held_out.py", "--out", str(held_out)])
    export_held_out.main()
    metrics = evaluate(
        "--images",
        digits,
        "--reference",
        held_out,
        "--features",
        "classifier",
        "--classifier",
        EVAL_CLASSIFIER,
        "--save_reference",
        tmp_path / "held-out.npz",
    )
    printed = capsys.readouterr()
    assert "Fréchet distance (classifier features)" in printed.out and "accuracy" in printed.out
    # 30 images in the classifier's 128-dim features: too few for a covariance, said once, also in metrics.json.
    (warning,) = [line for line in printed.err.splitlines() if line.startswith("tron evaluate: warning: ")]
    assert "30 images against 1000 reference images in 128-dim features" in warning
    assert "Use at least 128 images on each side" in warning and warning.endswith(metrics["frechet_distance_warning"])

    # The benchmark's own scoring of the same files: pixels / 255, as the pipeline's output_type="np" gives them.
    evaluator = MnistEvaluator(EVAL_CLASSIFIER)
    images, entries = load_images(digits)
    expected = evaluator.score(
        np.stack([np.asarray(image, dtype=np.float64) / 255 for image in images]),
        [entry["class_label"] for entry in entries],
    )
    assert metrics["num_images"] == metrics["num_labelled_images"] == expected["num_images"] == 30
    assert metrics["num_reference_images"] == 1000
    for key in ("frechet_distance", "frechet_distance_std", "accuracy"):
        assert metrics[key] == expected[key], key

    # Saved statistics give the same numbers; the held-out PNGs score as the held-out arrays do.
    assert (
        evaluate(
            "--images",
            digits,
            "--reference",
            tmp_path / "held-out.npz",
            "--features",
            "classifier",
            "--classifier",
            EVAL_CLASSIFIER,
            "--output",
            tmp_path / "again.json",
        )["frechet_distance"]
        == expected["frechet_distance"]
    )
    real = evaluate("--images", held_out, "--classifier", EVAL_CLASSIFIER)
    assert real["accuracy"] == evaluator.real_accuracy and "frechet_distance" not in real

    assert "holds statistics of other features (classifier:" in evaluate_error(
        "--images", digits, "--reference", tmp_path / "held-out.npz", "--features", "clip", "--clip", "tron-mnist-text"
    )


@pytest.mark.parametrize(
    "num_images, num_reference, dim, rank",
    [(32, 10_000, 256, 31), (500, 100, 256, 99), (256, 50_000, 256, None), (100, 100, 64, None)],
)
def test_a_frechet_distance_on_too_few_images_is_warned_about(num_images, num_reference, dim, rank):
    # The covariance of N images has rank N - 1 (numpy says so), under the dimension when N <= D.
    features = np.random.default_rng(0).normal(size=(min(num_images, num_reference), dim))
    assert np.linalg.matrix_rank(np.cov(features, rowvar=False)) == min(len(features) - 1, dim)
    warning = frechet_sample_size_warning(num_images, num_reference, dim)
    if rank is None:
        assert warning is None
    else:
        assert f"rank {rank} of {dim} at most" in warning and f"at least {dim} images" in warning


def test_clip_score_and_fd_clip_match_an_independent_computation(clip_pipe, tmp_path):
    pipeline_dir, samples, reference = tmp_path / "pipe", tmp_path / "samples", tmp_path / "reference"
    clip_pipe.save_pretrained(pipeline_dir)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a bold seven\na red car\n\na cat leaning left\n")
    generate(
        "--pipeline", pipeline_dir, "--prompts_file", prompts, "--num_images", "8", "--steps", "1", "--out", samples
    )
    generate(
        "--pipeline",
        pipeline_dir,
        "--prompts_file",
        prompts,
        "--num_images",
        "8",
        "--steps",
        "0",
        "--seed",
        "1000",
        "--out",
        reference,
    )
    (reference / "manifest.jsonl").unlink()  # a plain folder of images
    metrics = evaluate(
        "--images",
        samples,
        "--reference",
        reference,
        "--features",
        "clip",
        "--clip",
        pipeline_dir,
        "--batch_size",
        "5",
    )

    images, entries = load_images(samples)
    model, processor = (
        CLIPModel.from_pretrained(pipeline_dir / "encoder"),
        CLIPImageProcessor.from_pretrained(pipeline_dir / "image_processor"),
    )
    tokenizer = CLIPTokenizer.from_pretrained(pipeline_dir / "tokenizer")

    def image_embeds(pils):
        with torch.no_grad():
            return (
                model.get_image_features(
                    pixel_values=processor(images=[p.convert("RGB") for p in pils], return_tensors="pt").pixel_values
                )
                .pooler_output.double()
                .numpy()
            )

    with torch.no_grad():
        tokens = tokenizer(
            [entry["prompt"] for entry in entries],
            padding="max_length",
            max_length=16,
            truncation=True,
            return_tensors="pt",
        )
        text = model.get_text_features(**tokens).pooler_output.double().numpy()
    generated = image_embeds(images)
    cosines = (generated * text).sum(1) / np.linalg.norm(generated, axis=1) / np.linalg.norm(text, axis=1)
    assert metrics["clip_score"] == pytest.approx(100 * cosines.mean(), abs=1e-5)
    assert metrics["num_prompted_images"] == 24

    real = image_embeds([Image.open(path) for path in sorted(reference.glob("*.png"))])
    covariance_root = scipy.linalg.sqrtm(np.cov(generated, rowvar=False) @ np.cov(real, rowvar=False)).real
    expected = (
        ((generated.mean(0) - real.mean(0)) ** 2).sum()
        + np.trace(np.cov(generated, rowvar=False))
        + np.trace(np.cov(real, rowvar=False))
        - 2 * np.trace(covariance_root)
    )
    assert metrics["frechet_distance"] == pytest.approx(expected, rel=1e-4)
    assert metrics["num_reference_images"] == 24 and 0 < metrics["frechet_distance_std"]


def test_conv_classifier_accuracy(classifier_pipe, tmp_path):
    pipeline_dir, samples = tmp_path / "pipe", tmp_path / "samples"
    classifier_pipe.save_pretrained(pipeline_dir)
    generate(
        "--pipeline", pipeline_dir, "--class_labels", "0-3", "--num_images", "3", "--steps", "1", "--out", samples
    )
    metrics = evaluate("--images", samples, "--classifier", pipeline_dir / "encoder")
    images, entries = load_images(samples)
    pixels = torch.from_numpy(np.stack([np.asarray(image, dtype=np.float32) / 255 for image in images]))[:, None]
    with torch.no_grad():
        predicted = classifier_pipe.encoder((pixels - 0.5) / 0.5).logits.argmax(1).numpy()
    assert metrics["accuracy"] == pytest.approx(np.mean(predicted == [entry["class_label"] for entry in entries]))
    assert metrics["num_labelled_images"] == 12


def test_inception_unavailable_is_one_clear_line(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(2):
        Image.new("RGB", (8, 8), (index, 0, 0)).save(folder / f"{index}.png")
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # not installed
    error = evaluate_error("--images", folder, "--reference", folder)
    assert "--features inception needs torch-fidelity (pip install 'tron-pipelines[evaluate]'" in error


STUB_TORCHVISION = {  # what torch-fidelity imports from torchvision at import time; its Inception uses none of it
    "torchvision/__init__.py": "",
    "torchvision/datasets.py": "class CIFAR10: pass\nclass CIFAR100: pass\nclass STL10: pass\n",
    "torchvision/transforms/__init__.py": "",
    "torchvision/transforms/functional.py": "",
}


@pytest.mark.skipif(
    importlib.util.find_spec("torch_fidelity") is None, reason="torch-fidelity (extra [evaluate]) is not installed"
)
def test_inception_weights_that_cannot_be_downloaded_are_one_clear_line(tmp_path):
    # Only torch-fidelity itself is needed: a stand-in torchvision in its own process (transformers would try the
    # stand-in too), and no network, as on this machine.
    for name, text in STUB_TORCHVISION.items():
        (tmp_path / "stub" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "stub" / name).write_text(text)
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(2):
        Image.new("RGB", (8, 8), (index, 0, 0)).save(folder / f"{index}.png")
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path / "stub"),
        "TORCH_HOME": str(tmp_path / "torch-home"),
        "OMP_NUM_THREADS": "1",
    }
    run = subprocess.run(
        [sys.executable, "-m", "tron_pipelines.cli", "evaluate", "--images", str(folder), "--reference", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert last.startswith(
        "tron evaluate: error: --features inception: torch-fidelity could not download the Inception-v3 weights"
    )
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints") in last


def test_bad_input_is_one_line(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    assert "--images " + str(tmp_path / "none") + ": no such folder" in evaluate_error(
        "--images", tmp_path / "none", "--reference", images
    )
    assert "holds no images" in evaluate_error("--images", images, "--reference", images)
    Image.new("L", (8, 8)).save(images / "0.png")
    assert "nothing to compute" in evaluate_error("--images", images)
    assert "--reference " + str(tmp_path / "ref.npz") + ": no such file" in evaluate_error(
        "--images", images, "--reference", tmp_path / "ref.npz"
    )
    assert "--clip: the images in" in evaluate_error("--images", images, "--clip", "tron-mnist-text")
    assert "at least 2 images" in evaluate_error("--images", images, "--reference", images)
    (images / "manifest.part-00000.jsonl").write_text("")
    assert "unfinished tron generate run" in evaluate_error("--images", images, "--reference", images)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    Image.new("L", (8, 8)).save(images / "1.png")
    (images / "manifest.part-00000.jsonl").unlink()
    assert "could not be read as reference statistics" in evaluate_error(
        "--images",
        images,
        "--reference",
        tmp_path / "bad.npz",
        "--features",
        "classifier",
        "--classifier",
        EVAL_CLASSIFIER,
    )
    assert "not a classifier folder" in evaluate_error(
        "--images", images, "--reference", images, "--features", "classifier", "--classifier", images
    )
