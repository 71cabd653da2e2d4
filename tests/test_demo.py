"""`tron demo`: each tab's handler against the pipeline called directly, bad inputs, Stop, concurrent requests, the
command line, and the page in a real browser (headless Chromium)."""

import importlib.util
import io
import json
import runpy
import shutil
import socket
import threading
import time
import warnings
import zipfile
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import psutil
import pytest
import torch
from conftest import tiny_clip
from gradio.data_classes import FileData
from gradio_client import Client
from gradio_client.exceptions import ValidationError
from gradio_client.utils import QueueError
from PIL import Image

from tron_pipelines import (
    LangevinScheduler,
    NoiseOptimizationScheduler,
    PickScoreReward,
    RewardModels,
    TronPipeline,
)
from tron_pipelines.cli import main
from tron_pipelines.commands.demo_app import (
    DEFAULT_PIPELINES,
    EXAMPLES_FILE,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_PIXELS,
    SLOW_REQUEST_S,
    TronDemo,
    examples_for,
    image_upload,
    launch_demo,
)
from tron_pipelines.pretrained import embedded_pipelines, resolve_pretrained_path


MAX_IMAGES, MAX_STEPS = 6, 20
REPO = Path(__file__).resolve().parent.parent
SPACE = REPO / "examples" / "space"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def demo(clip_pipe, classifier_pipe):
    return TronDemo(
        {"tiny-clip": clip_pipe, "tiny-classes": classifier_pipe}, max_images=MAX_IMAGES, max_steps=MAX_STEPS
    )


def seeded(seeds):
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(image) for image in images])


def zip_contents(path) -> tuple[dict, dict]:
    """(manifest, {file name: PIL image}) of a demo download."""
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        images = {
            name: Image.open(io.BytesIO(archive.read(name))) for name in archive.namelist() if name.endswith(".png")
        }
    return manifest, images


# Each tab ------------------------------------------------------------------------------------------------------------
def test_text_request_gives_the_pipeline_images_energies_plot_and_zip(demo, clip_pipe):
    out = demo.generate_text("tiny-clip", " a red car ", "a cat", num_images=3, num_inference_steps=3, seed=5)
    reference = clip_pipe(
        "a red car",
        negative_prompt="a cat",
        num_images_per_prompt=3,
        num_inference_steps=3,
        generator=seeded([5, 6, 7]),
        return_energy_trace=True,
    )
    assert np.array_equal(pixels(image for image, _ in out.images), pixels(reference.images))
    # Only the energy: a longer caption is cut at the thumbnail's width (the seeds are in the status line).
    assert [caption for _, caption in out.images] == [f"E = {e:.3f}" for e in reference.energies.tolist()]

    # The plot: every image's energy before each of the 3 steps, then after the last one.
    plot = out.energy_plot
    assert len(plot) == 4 * 3 and sorted(set(plot["Langevin step"])) == [0, 1, 2, 3]
    before_steps = (
        plot[plot["Langevin step"] < 3].sort_values(["Langevin step", "image"])["energy"].to_numpy().reshape(3, 3)
    )
    np.testing.assert_allclose(before_steps, reference.energy_trace.numpy(), rtol=1e-5)
    np.testing.assert_allclose(plot[plot["Langevin step"] == 3]["energy"], reference.energies.numpy(), rtol=1e-5)

    manifest, files = zip_contents(out.download)
    assert sorted(files) == ["0.png", "1.png", "2.png", "grid.png"]
    assert [entry["seed"] for entry in manifest["images"]] == [5, 6, 7]
    assert all(entry["prompt"] == "a red car" for entry in manifest["images"])
    np.testing.assert_allclose(
        [entry["energy"] for entry in manifest["images"]], reference.energies.numpy(), rtol=1e-6
    )
    assert (
        manifest["pipeline"],
        manifest["negative_prompt"],
        manifest["num_inference_steps"],
        manifest["steps_done"],
    ) == ("tiny-clip", "a cat", 3, 3)
    assert np.array_equal(np.asarray(files["2.png"]), np.asarray(reference.images[2]))
    assert out.seed == 5 and out.proposals == [] and out.animation is None
    assert out.status.startswith("3 images · 3 Langevin steps · seeds 5-7")


def test_image_request_conditions_on_the_upload(demo, clip_pipe, tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(
        tmp_path / "photo.png"
    )
    out = demo.generate_image("tiny-clip", str(tmp_path / "photo.png"), num_images=2, num_inference_steps=2, seed=1)
    reference = clip_pipe(
        image=Image.open(tmp_path / "photo.png").convert("RGB"),
        num_images_per_prompt=2,
        num_inference_steps=2,
        generator=seeded([1, 2]),
    )
    assert np.array_equal(pixels(image for image, _ in out.images), pixels(reference.images))
    manifest, _ = zip_contents(out.download)
    assert [entry["image"] for entry in manifest["images"]] == ["photo.png", "photo.png"]


def test_class_request_and_class_names(demo, classifier_pipe):
    assert demo.info["tiny-classes"].class_choices == [("0", 0), ("1", 1), ("2", 2), ("3", 3)]
    out = demo.generate_class("tiny-classes", 2, num_images=2, num_inference_steps=2, num_candidates=3, seed=4)
    reference = classifier_pipe(
        class_labels=2, num_images_per_prompt=2, num_inference_steps=2, num_candidates=3, generator=seeded([4, 5])
    )
    assert np.array_equal(pixels(image for image, _ in out.images), pixels(reference.images))
    manifest, _ = zip_contents(out.download)
    assert [entry["class_label"] for entry in manifest["images"]] == [2, 2] and manifest["num_candidates"] == 3


def test_interpolation_gives_frames_gif_and_zip(demo, clip_pipe, classifier_pipe):
    out = demo.interpolate("tiny-clip", "prompts", "a red car", "a cat", num_frames=3, num_inference_steps=2, seed=1)
    reference = clip_pipe.interpolate(
        prompt=["a red car", "a cat"], num_frames=3, num_inference_steps=2, generator=torch.Generator().manual_seed(1)
    )
    assert np.array_equal(pixels(image for image, _ in out.images), pixels(reference.images))
    gif = Image.open(out.animation)
    assert gif.n_frames == 3 and gif.size == (128, 128)  # 16x16 frames enlarged 8x for watching
    manifest, files = zip_contents(out.download)
    assert [entry["weight"] for entry in manifest["images"]] == [0.0, 0.5, 1.0]
    assert manifest["images"][0]["start"] == "a red car" and len(files) == 4

    classes = demo.interpolate(
        "tiny-classes", "classes", start_class=0, end_class=3, num_frames=2, num_inference_steps=1
    )
    reference = classifier_pipe.interpolate(
        class_labels=[0, 3], num_frames=2, num_inference_steps=1, generator=torch.Generator().manual_seed(0)
    )
    assert np.array_equal(pixels(image for image, _ in classes.images), pixels(reference.images))


def test_show_the_method_gives_the_translator_proposals_of_the_same_seeds(demo, clip_pipe):
    out = demo.generate_text("tiny-clip", "a red car", num_images=3, num_inference_steps=4, seed=2, show_method=True)
    proposals = clip_pipe("a red car", num_images_per_prompt=3, num_inference_steps=0, generator=seeded([2, 3, 4]))
    assert np.array_equal(pixels(image for image, _ in out.proposals), pixels(proposals.images))
    assert not np.array_equal(pixels(image for image, _ in out.proposals), pixels(image for image, _ in out.images))


def test_words_the_text_encoder_never_saw_are_named_in_the_page(clip_components):
    pipe = TronPipeline(**clip_components, prompt_vocabulary="a red car cat")
    pipe.set_progress_bar_config(disable=True)
    demo = TronDemo({"known-words": pipe})
    with pytest.warns(
        UserWarning, match=r"Prompt: the text encoder never saw 'photo', 'of', 'dog' in training"
    ) as warned:
        demo.generate_text("known-words", "a photo of a red dog", num_images=1, num_inference_steps=1)
    assert not [w for w in warned if "Negative prompt:" in str(w.message)]  # no negative prompt, no warning for it
    with pytest.warns(UserWarning, match=r"End prompt: the text encoder never saw 'thin'"):
        demo.interpolate("known-words", "prompts", "a red car", "a thin cat", num_frames=2, num_inference_steps=1)


def test_prompts_longer_than_the_text_encoder_reads_are_named_in_the_page(demo, clip_pipe):
    long_prompt = "a photo of the number seven " * 4  # 24 words: past the tiny CLIP's 16 tokens
    dropped = len(clip_pipe.tokenizer(long_prompt).input_ids) - clip_pipe.tokenizer.model_max_length
    with pytest.warns(UserWarning) as warned:
        out = demo.generate_text("tiny-clip", long_prompt, long_prompt, num_images=1, num_inference_steps=1)
    page = [str(w.message) for w in warned if str(w.message).startswith(("Prompt is", "Negative prompt is"))]
    assert page == [
        f"{field} is longer than the 16 tokens the text encoder reads: {dropped} tokens ({dropped} words) were "
        "dropped, starting with 'of the number seven a photo ...'."
        for field in ("Prompt", "Negative prompt")
    ]
    assert out.images  # a warning, not an error: the request runs on what the encoder reads
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a prompt that fits: no warning at all
        demo.generate_text("tiny-clip", "a red car", num_images=1, num_inference_steps=1)


def test_step_size_and_noise_apply_to_the_request_only(demo, clip_pipe):
    scheduler, config = clip_pipe.scheduler, dict(clip_pipe.scheduler.config)
    out = demo.generate_text(
        "tiny-clip", "a red car", num_images=2, num_inference_steps=3, step_size=0.05, noise_std=0.2
    )
    slow = TronPipeline.from_pipe(
        clip_pipe, scheduler=LangevinScheduler.from_config(config, step_size=0.05, noise_std=0.2)
    )
    reference = slow("a red car", num_images_per_prompt=2, num_inference_steps=3, generator=seeded([0, 1]))
    assert np.array_equal(pixels(image for image, _ in out.images), pixels(reference.images))
    assert clip_pipe.scheduler is scheduler and dict(clip_pipe.scheduler.config) == config
    default = demo.generate_text("tiny-clip", "a red car", num_images=2, num_inference_steps=3)
    assert not np.array_equal(pixels(image for image, _ in default.images), pixels(reference.images))


def test_a_pipeline_with_rewards_reports_them_and_noise_optimisation_takes_the_step_size(clip_components, tokenizer):
    # The energy of a reward pipeline is minus the weighted rewards; the page gives each reward's mean in the status
    # line and every image's rewards in the zip. With NoiseOptimizationScheduler the "Step size" is its learning rate.
    rewards = RewardModels({"pickscore": PickScoreReward.from_clip(tiny_clip(len(tokenizer), seed=3), tokenizer)})
    pipe = TronPipeline(
        **{**clip_components, "scheduler": NoiseOptimizationScheduler()},
        rewards=rewards,
        reward_weights={"pickscore": 2.0},
    )
    pipe.set_progress_bar_config(disable=True)
    demo = TronDemo({"rewards": pipe}, max_images=MAX_IMAGES, max_steps=MAX_STEPS)
    assert demo.info["rewards"].step_size == 5.0  # ReNO's learning rate
    settings = {"num_inference_steps": 3, "num_augmentations": 0}  # ReNO's setting: the energy is -2 pickscore exactly
    out = demo.generate_text("rewards", "a red car", num_images=2, step_size=0.5, seed=3, **settings)
    slower = TronPipeline.from_pipe(pipe, scheduler=NoiseOptimizationScheduler(learning_rate=0.5))
    reference = slower("a red car", num_images_per_prompt=2, generator=seeded([3, 4]), **settings)
    assert np.array_equal(pixels(image for image, _ in out.images), pixels(reference.images))
    assert f"mean pickscore {reference.rewards['pickscore'].mean().item():.3f}" in out.status
    manifest, _ = zip_contents(out.download)
    assert manifest["reward_weights"] == {"pickscore": 2.0}
    np.testing.assert_allclose(
        [entry["rewards"]["pickscore"] for entry in manifest["images"]],
        reference.rewards["pickscore"].numpy(),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        [entry["energy"] for entry in manifest["images"]], -2.0 * reference.rewards["pickscore"].numpy(), rtol=1e-5
    )


def event_of(blocks: gr.Blocks, fn):
    """The page's event that runs ``fn`` (a bound method of its `TronDemo`)."""
    (event,) = [event for event in blocks.fns.values() if event.fn == fn]
    return event


def test_pipeline_choice_shows_only_its_tabs_and_clears_the_previous_results(demo):
    updates = demo.select_pipeline("tiny-classes")
    text_tab, image_tab, class_tab, interpolate_tab = updates[1:5]
    assert [tab.visible for tab in (text_tab, image_tab, class_tab, interpolate_tab)] == [
        "hidden",
        "hidden",
        True,
        True,
    ]
    blocks = demo.build()
    (dropdown,) = [block for block in blocks.blocks.values() if getattr(block, "label", None) == "Pipeline"]
    assert [value for _, value in dropdown.choices] == ["tiny-clip", "tiny-classes"]
    # The images, proposals, plot, zip and GIF of the previous pipeline are emptied, and the status says which
    # pipeline is now selected: the page's event sends these values to those very outputs.
    outputs = event_of(blocks, demo.select_pipeline).outputs
    cleared = {output.label or output.elem_id: value for output, value in zip(outputs, updates) if value is None}
    assert sorted(cleared) == [
        "Download: PNGs + manifest.json (zip)",
        "Energy per Langevin step",
        "Images (after Langevin)",
        "Interpolation (animated GIF)",
        "Translator proposals (0 steps): the same seeds before Langevin",
    ]
    status = dict(zip(outputs, updates))[next(output for output in outputs if output.elem_id == "status")]
    assert status.startswith("Pipeline **tiny-classes**, conditioned on class labels")


def test_the_interpolate_tab_hides_the_controls_it_does_not_use(demo):
    blocks = demo.build()
    for tab, shown in (("interpolate", False), ("text", True)):
        (event,) = [
            event
            for event in blocks.fns.values()
            if getattr(event.fn, "func", None) == demo._tab_updates and event.fn.args == (tab,)
        ]
        updates = dict(zip((output.label for output in event.outputs[1:]), event.fn()[1:]))
        assert {label: update.visible for label, update in updates.items()} == {
            "Number of images": shown,
            "Candidates": shown,
        }


def test_the_page_opens_at_the_sampling_settings_the_pipeline_declares(clip_components, tmp_path):
    # A pipeline built with `tron build --sample_steps 2 --sample_augmentations 1` on a preset of 30 x 6.
    built = TronPipeline(
        **clip_components,
        default_num_inference_steps=30,
        default_num_augmentations=6,
        preview_num_inference_steps=2,
        preview_num_augmentations=1,
    )
    built.save_pretrained(tmp_path / "built")
    built = TronPipeline.from_pretrained(tmp_path / "built")
    built.set_progress_bar_config(disable=True)
    demo = TronDemo({"built": built})
    sliders = {block.label: block.value for block in demo.build().blocks.values() if isinstance(block, gr.Slider)}
    assert (sliders["Langevin steps"], sliders["Augmentations"]) == (2, 1)
    out = demo.generate_text("built", "a red car", num_images=2, seed=3)
    reference = built(
        "a red car", num_images_per_prompt=2, num_inference_steps=2, num_augmentations=1, generator=seeded([3, 4])
    )
    assert np.array_equal(pixels(image for image, _ in out.images), pixels(reference.images))
    # Calls that name no value keep the defaults.
    default = built("a red car", num_images_per_prompt=1, generator=seeded([3]), return_energy_trace=True)
    assert default.energy_trace.shape[0] == 30


def test_the_cost_line_counts_units_and_times_them_at_the_last_requests_rate(demo):
    settings = {"num_images": 3, "num_inference_steps": 5, "num_candidates": 4, "num_augmentations": 2}
    # 3 images x (4 candidates + 5 steps x (2 + 0.5 x 2 augmentations)) = 3 x 19
    line = demo.estimate("tiny-clip", "text", **settings)
    assert "= 57 units" in line and "no request on this pipeline has finished yet" in line
    # Show the method runs the candidates once more; interpolation frames have one candidate.
    assert "= 69 units" in demo.estimate("tiny-clip", "text", **settings, show_method=True)
    assert "5 frames" in demo.estimate("tiny-clip", "interpolate", **settings, num_frames=5)
    assert "= 80 units" in demo.estimate("tiny-clip", "interpolate", **settings, num_frames=5)
    assert demo.estimate("tiny-clip", "text", **{**settings, "num_inference_steps": MAX_STEPS + 1}) == ""

    out = demo.generate_text(
        "tiny-clip", "a cat", num_images=2, num_inference_steps=3, num_candidates=2, num_augmentations=4
    )
    seconds = float(out.status.rsplit("· ", 1)[1].removesuffix(" s"))  # the status line's time, to 0.1 s
    units = 2 * (2 + 3 * (2 + 0.5 * 4))
    assert demo.seconds_per_unit["tiny-clip"] * units == pytest.approx(seconds, abs=0.051)
    demo.seconds_per_unit["tiny-clip"] = SLOW_REQUEST_S / 50  # as if the last request had been slow
    slow = demo.estimate("tiny-clip", "text", **settings)
    assert "≈ **22.8 s**" in slow and "a slow request" in slow
    assert "a slow request" not in demo.estimate("tiny-clip", "text", **{**settings, "num_inference_steps": 1})


def test_warm_up_runs_a_small_request_on_each_pipelines_first_tab(demo, clip_components):
    assert demo.warm_up_request("tiny-clip")[0] == "generate_text"
    assert demo.warm_up_request("tiny-classes")[0] == "generate_class"
    assert set(demo.warm_up()) == set(demo.seconds_per_unit) == {"tiny-clip", "tiny-classes"}
    images_only = TronPipeline(**{**clip_components, "tokenizer": None})
    images_only.set_progress_bar_config(disable=True)
    demo = TronDemo({"images-only": images_only})
    assert demo.warm_up_request("images-only")[0] == "generate_image"
    assert set(demo.warm_up()) == {"images-only"}


def test_the_default_pipelines_are_every_embedded_one_those_taking_prompts_first():
    assert sorted(DEFAULT_PIPELINES) == embedded_pipelines()
    takes_prompts = [(Path(resolve_pretrained_path(name)) / "tokenizer").is_dir() for name in DEFAULT_PIPELINES]
    assert takes_prompts == sorted(takes_prompts, reverse=True) and takes_prompts[0]


# Bad inputs ----------------------------------------------------------------------------------------------------------
def png_bytes(size, mode="1") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "handler,args,settings,message",
    [
        ("generate_text", ("tiny-clip", "   "), {}, "Prompt: type what to draw"),
        (
            "generate_text",
            ("tiny-classes", "a seven"),
            {},
            "Prompt: pipeline 'tiny-classes' is conditioned on class labels",
        ),
        (
            "generate_text",
            ("../../etc/passwd", "a seven"),
            {},
            "Pipeline: '../../etc/passwd' is not served here; choose one of 'tiny-clip', 'tiny-classes'",
        ),
        (
            "generate_text",
            ("tiny-clip", "a cat"),
            {"num_images": MAX_IMAGES + 1},
            "Number of images: must be from 1 to 6 (this demo's --max_images), got 7",
        ),
        (
            "generate_text",
            ("tiny-clip", "a cat"),
            {"num_inference_steps": MAX_STEPS + 1},
            "Langevin steps: must be from 0 to 20 (this demo's --max_steps), got 21",
        ),
        ("generate_text", ("tiny-clip", "a cat"), {"num_images": 2.5}, "Number of images: enter a whole number"),
        ("generate_text", ("tiny-clip", "a cat"), {"num_candidates": 0}, "Candidates: must be from 1 to 64"),
        (
            "generate_text",
            ("tiny-clip", "a cat"),
            {"initialization": "bogus"},
            "Initialization: choose one of translator, translator_mean, prior",
        ),
        (
            "generate_text",
            ("tiny-clip", "a cat"),
            {"initialization": "translator_mean", "num_candidates": 2},
            "Candidates: 'translator_mean' starts every draw",
        ),
        ("generate_text", ("tiny-clip", "a cat"), {"step_size": -1}, "Step size: enter a finite number >= 0"),
        ("generate_text", ("tiny-clip", "a cat"), {"seed": -3}, "Seed: must be from 0"),
        ("generate_class", ("tiny-classes", 4), {}, "Class: must be from 0 to 3, got 4"),
        ("generate_class", ("tiny-clip", 1), {}, "Class: pipeline 'tiny-clip' is conditioned on prompts and images"),
        (
            "generate_image",
            ("tiny-classes", None),
            {},
            "Image: pipeline 'tiny-classes' is conditioned on class labels",
        ),
        ("generate_image", ("tiny-clip", None), {}, "Image: upload an image first"),
        (
            "generate_image",
            ("tiny-clip", "/no/such/upload.png"),
            {},
            "Image: the upload is not a readable image (FileNotFoundError)",
        ),
        (
            "interpolate",
            ("tiny-classes", "prompts", "a one", "a two"),
            {},
            "Interpolate between: 'tiny-classes' interpolates between classes",
        ),
        ("interpolate", ("tiny-clip", "prompts", "a one", ""), {}, "End prompt: type what to draw"),
        ("interpolate", ("tiny-clip", "prompts", "a one", "a two"), {"num_frames": 1}, "Frames: must be from 2 to 6"),
    ],
)
def test_bad_inputs_say_which_field_and_change_nothing(demo, handler, args, settings, message):
    with pytest.raises(gr.Error) as error:
        getattr(demo, handler)(*args, **settings)
    assert message in error.value.message
    assert demo._stops == {}


@pytest.mark.parametrize(
    "values,settings,field",
    [
        (("tiny-clip", "   ", None), {}, "Prompt"),
        (("tiny-clip", "a cat", None), {"seed": -3}, "Seed"),
        (("tiny-clip", "a cat", None), {"num_candidates": 0}, "Candidates"),
        (("no-such-pipeline", "a cat", None), {}, "Pipeline"),
    ],
)
def test_the_page_checks_values_before_they_queue_and_marks_the_field(demo, values, settings, field):
    # The page runs each handler's checks as the event's validator: Gradio then marks the field with the message and
    # keeps every output as it was, where a handler's gr.Error would turn them all into error badges.
    blocks = demo.build()
    event = event_of(blocks, demo.generate_text)
    marks = event.validator(*values, **settings)
    labels = [component.label for component in event.inputs]
    assert len(marks) == len(labels) and labels[:3] == ["Pipeline", "Prompt", "Negative prompt"]
    invalid = {label: mark["message"] for label, mark in zip(labels, marks) if not mark["is_valid"]}
    with pytest.raises(gr.Error) as error:
        demo.text_request(*values, **settings)
    assert invalid == {field: error.value.message}
    assert all(mark["is_valid"] for mark in event.validator("tiny-clip", "a cat", None))


@pytest.mark.parametrize(
    "content,message",
    [
        (b"not an image at all", "Image: the upload is not a readable image"),
        (
            png_bytes((4100, 4100)),
            f"Image: 4100x4100 pixels is too large; this demo takes up to {MAX_UPLOAD_PIXELS:,} pixels",
        ),
        (b"\0" * (MAX_UPLOAD_BYTES + 2**20), "Image: the file has 11.0 MB; this demo takes images up to 10 MB"),
    ],
)
def test_unreadable_or_huge_uploads_are_refused_before_decoding(demo, tmp_path, content, message):
    (tmp_path / "upload.png").write_bytes(content)
    with pytest.raises(gr.Error, match="Image: ") as error:
        demo.generate_image("tiny-clip", str(tmp_path / "upload.png"))
    assert message in error.value.message


def test_the_page_upload_component_reports_unreadable_images(tmp_path):
    # Gradio decodes the upload's header before the handler runs; that error must name the field too.
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(gr.Error, match="Image: the upload is not a readable image"):
        image_upload("Image").preprocess(FileData(path=str(tmp_path / "broken.png"), orig_name="broken.png"))


# Stop and concurrency ------------------------------------------------------------------------------------------------
class StepProgress:
    """A stand-in for `gr.Progress` (the handler's own parameter) that runs ``on_step(step)`` at every step."""

    def __init__(self, on_step):
        self.on_step = on_step

    def __call__(self, progress, desc=None, unit=None):
        self.on_step(progress[0])


def in_thread(fn, **kwargs) -> tuple[threading.Thread, dict]:
    result = {}

    def run():
        try:
            result["out"] = fn(**kwargs)
        except Exception as error:  # reported by the test's assertion
            result["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_stop_ends_only_its_own_tabs_request_and_shows_the_images_reached(demo, clip_pipe):
    both_waiting, stop_pressed = threading.Barrier(3, timeout=60), threading.Event()

    def stopped_tab(step):
        if step == 2:
            both_waiting.wait()
            stop_pressed.wait(60)

    def other_tab(step):
        if step == 1:
            both_waiting.wait()
            stop_pressed.wait(60)

    request = {"pipeline_name": "tiny-clip", "prompt": "a red car", "num_images": 2, "num_inference_steps": MAX_STEPS}
    stopped, stopped_result = in_thread(
        demo.generate_text, **request, request=gr.Request(session_hash="tab-a"), progress=StepProgress(stopped_tab)
    )
    other, other_result = in_thread(
        demo.generate_text, **request, request=gr.Request(session_hash="tab-b"), progress=StepProgress(other_tab)
    )
    both_waiting.wait()
    demo.stop(gr.Request(session_hash="tab-a"))
    stop_pressed.set()
    stopped.join(60), other.join(60)
    assert "error" not in stopped_result and "error" not in other_result, (stopped_result, other_result)

    out = stopped_result["out"]
    assert f"**stopped** after 2 of {MAX_STEPS} Langevin steps" in out.status
    assert len(out.images) == 2 and sorted(set(out.energy_plot["Langevin step"])) == [0, 1, 2]
    two_steps = clip_pipe("a red car", num_images_per_prompt=2, num_inference_steps=2, generator=seeded([0, 1]))
    assert np.array_equal(pixels(image for image, _ in out.images), pixels(two_steps.images))
    assert zip_contents(out.download)[0]["steps_done"] == 2
    assert other_result["out"].status.startswith(f"2 images · {MAX_STEPS} Langevin steps")
    assert demo._stops == {}


def test_concurrent_requests_give_the_images_of_sequential_ones(demo, clip_pipe):
    scheduler, config = clip_pipe.scheduler, dict(clip_pipe.scheduler.config)
    requests = [
        {
            "pipeline_name": "tiny-clip",
            "prompt": "a red car",
            "num_images": 2,
            "num_inference_steps": 4,
            "seed": 0,
            "step_size": 0.05,
        },
        {
            "pipeline_name": "tiny-clip",
            "prompt": "a cat",
            "num_images": 3,
            "num_inference_steps": 4,
            "seed": 7,
            "show_method": True,
        },
    ]
    sequential = [demo.generate_text(**request) for request in requests]

    # Both requests wait for each other after every step, so their Langevin loops really interleave.
    lockstep = threading.Barrier(2, timeout=60)
    runs = [
        in_thread(demo.generate_text, **request, progress=StepProgress(lambda step: lockstep.wait()))
        for request in requests
    ]
    for thread, _ in runs:
        thread.join(120)
    # Threads computing at once differ from one thread alone by float rounding (latents ~1e-7, as the pipeline's own
    # concurrent calls do); state shared between requests would differ by far more: the first request's step size is
    # a tenth of the second's.
    for (_, result), alone, request_shows_method in zip(runs, sequential, (False, True)):
        assert "error" not in result, result
        together = result["out"]
        assert len(together.proposals) == len(alone.proposals) == 3 * request_shows_method
        for concurrent, single in ((together.images, alone.images), (together.proposals, alone.proposals)):
            if single:
                difference = pixels(image for image, _ in concurrent).astype(int) - pixels(
                    image for image, _ in single
                )
                assert np.abs(difference).max() <= 1  # grey levels
        assert together.energy_plot[["Langevin step", "image"]].equals(alone.energy_plot[["Langevin step", "image"]])
        np.testing.assert_allclose(together.energy_plot["energy"], alone.energy_plot["energy"], rtol=1e-5, atol=1e-6)
    assert clip_pipe.scheduler is scheduler and dict(clip_pipe.scheduler.config) == config


# Examples ------------------------------------------------------------------------------------------------------------
def test_shipped_examples_are_the_measured_prompts_that_pass_the_bars(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # the benchmark section's own imports
    spec = importlib.util.spec_from_file_location("demo_examples", REPO / "benchmarks" / "demo_examples.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    measured = json.loads(EXAMPLES_FILE.read_text())["tron-mnist-text"]
    bars = measured["settings"]["min_accuracy"], measured["settings"]["min_attribute"]
    assert measured["examples"] == script.choose_examples(measured["all_prompts"], *bars)
    assert sorted(example["digit"] for example in measured["examples"]) == list(range(10))
    assert all(
        e["digit_accuracy"] >= bars[0] and (e["attribute_obeyed"] or 1.0) >= bars[1] for e in measured["examples"]
    )
    assert examples_for("tron-mnist-text") == [example["prompt"] for example in measured["examples"]]
    assert examples_for("a-pipeline-nobody-measured") == []

    rows = [
        {"prompt": "a thin one", "digit": 1, "digit_accuracy": 1.0, "attribute_obeyed": 0.5},
        {"prompt": "a one", "digit": 1, "digit_accuracy": 0.97, "attribute_obeyed": None},
        {"prompt": "a two", "digit": 2, "digit_accuracy": 0.9, "attribute_obeyed": None},
    ]
    assert [row["prompt"] for row in script.choose_examples(rows, *bars)] == ["a one"]


# Command line --------------------------------------------------------------------------------------------------------
def test_demo_command_rejects_bad_options_before_loading(capsys):
    for args, message in (
        (["--port", "0"], "must be an integer >= 1"),
        (["--port", "65536"], "must be a port number from 1 to 65535"),
        (["--max-images", "0"], "must be an integer >= 1"),
        (["--max_steps", "-1"], "must be an integer >= 0"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["demo", *args])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--pipeline", "no-such-pipeline"])
    assert str(exit_info.value).startswith("tron demo: error: --pipeline 'no-such-pipeline' is neither a local folder")


# A real browser ------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_space_files_deploy_the_demo_unchanged():
    front_matter = (SPACE / "README.md").read_text().split("---")[1]
    assert "sdk: gradio" in front_matter and "app_file: app.py" in front_matter
    assert "tron-pipelines[demo]" in (SPACE / "requirements.txt").read_text().splitlines()


def test_the_command_prints_its_address_and_points_to_share(clip_pipe, tmp_path, capsys, monkeypatch):
    clip_pipe.save_pretrained(tmp_path / "pipe")
    # Serve in the background and return, instead of until Ctrl+C.
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda blocks: None)
    port = free_port()
    try:
        main(["demo", "--pipeline", str(tmp_path / "pipe"), "--port", str(port), "--no_warm_up"])
    finally:
        gr.close_all()
    printed = capsys.readouterr().out
    assert f"* Serving {tmp_path / 'pipe'} on http://127.0.0.1:{port}/" in printed
    assert "`tron demo --share`" in printed and "share=True" not in printed and "launch()" not in printed


# The server under load ------------------------------------------------------------------------------------------------
@pytest.fixture
def served(demo):
    """``(url, demo)``: the page of `demo` served on 127.0.0.1 with a queue of 2 waiting requests."""
    blocks = demo.build()
    blocks.tron_demo = demo
    port = free_port()
    launch_demo(blocks, max_queue=2, server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}", demo
    blocks.close()


def resident_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def test_clients_at_once_get_the_images_of_sequential_calls_in_bounded_memory(served):
    url, demo = served  # warmed up: one request per pipeline, and one through the server
    requests = [{"prompt": prompt, "seed": seed} for prompt in ("a red car", "a cat") for seed in (0, 7, 21)]
    settings = {"num_images": 2, "num_inference_steps": 3}
    expected = [demo.generate_text("tiny-clip", **request, **settings) for request in requests]
    clients = [Client(url, verbose=False) for _ in range(3)]

    def wave() -> list:
        """Each client sends two of the requests, the three clients at once."""
        answers = [None] * len(requests)

        def client_requests(index):
            for number in (index, index + 3):
                answers[number] = clients[index].predict(
                    "tiny-clip", **requests[number], **settings, api_name="/generate_text"
                )

        threads = [threading.Thread(target=client_requests, args=(index,)) for index in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        return answers

    first_wave = wave()
    memory_after_first = resident_mib()
    answers = wave()
    growth = resident_mib() - memory_after_first
    for answer, alone in zip(first_wave + answers, expected + expected):
        assert answer is not None  # every request answered, none failed
        images = pixels(Image.open(item["image"]) for item in answer[0])
        # Two requests sample at once: float rounding, at most one grey level (as in-process concurrency).
        assert np.abs(images.astype(int) - pixels(image for image, _ in alone.images)).max() <= 1
        assert answer[-1].startswith(alone.status.rsplit(" · ", 1)[0])
    # 6 more requests served: no memory kept per request (a PNG of 16x16 images is ~1 kB; a leak of the outputs or
    # the pipelines' activations would be megabytes).
    assert growth < 30, growth


def test_a_full_queue_answers_busy_at_once_and_stop_still_works(demo, monkeypatch):
    demo.max_steps = 100_000  # requests that run until stopped
    blocks = demo.build()
    blocks.tron_demo = demo
    port = free_port()
    launch_demo(blocks, max_queue=1, warm_up=False, server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}"
    try:
        clients = [Client(url, verbose=False, download_files=False) for _ in range(4)]
        # Bad values are refused before they join the queue, with the field's message.
        with pytest.raises(ValidationError, match="Prompt: type what to draw"):
            clients[3].predict("tiny-clip", "  ", api_name="/generate_text")
        long_request = {"num_images": 1, "num_inference_steps": 100_000, "api_name": "/generate_text"}

        def wait_until(job, states: set[str]) -> None:
            deadline = time.monotonic() + 60
            while job.status().code.name not in states and time.monotonic() < deadline:
                time.sleep(0.05)
            assert job.status().code.name in states

        running = {"PROCESSING", "PROGRESS"}  # a request reporting its Langevin steps is in PROGRESS
        # Two sample (the concurrency limit), the third waits: the queue of one is full.
        jobs = [
            client.submit("tiny-clip", f"a cat {index}", **long_request) for index, client in enumerate(clients[:2])
        ]
        for job in jobs:
            wait_until(job, running)
        jobs.append(clients[2].submit("tiny-clip", "a cat 2", **long_request))
        wait_until(jobs[2], {"IN_QUEUE"})

        # One more is refused at once with the busy answer, instead of waiting.
        started = time.monotonic()
        with pytest.raises(QueueError, match="Queue is full! Please try again."):
            clients[3].submit("tiny-clip", "a dog", **long_request).result(timeout=10)
        assert time.monotonic() - started < 10

        # Stop, outside the queue, ends each tab's running request: the images reached come back at once.
        for client, job in zip(clients, jobs):
            wait_until(job, running)  # the third starts when the first is stopped
            pressed = time.monotonic()
            answer = httpx.post(f"{url}/gradio_api/run/stop", json={"data": [], "session_hash": client.session_hash})
            assert answer.status_code == 200
            status = job.result(timeout=60)[-1]
            assert "**stopped** after" in status and "of 100000 Langevin steps" in status
            assert time.monotonic() - pressed < 10
    finally:
        blocks.close()


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary: `apt-get install -y chromium` (.ci/run does) to run the browser test"
)
def test_page_in_a_real_browser(tmp_path):
    """The Space's app (the embedded pipelines) in headless Chromium: the cost line, a prompt -> 4 digits, their
    proposals and the energy plot; an empty prompt's message that keeps the results; the Interpolate tab's controls;
    the class pipeline's tabs with the results cleared; nothing fetched from another host."""
    from playwright.sync_api import expect, sync_playwright

    blocks = runpy.run_path(str(SPACE / "app.py"))["demo"]
    port = free_port()
    launch_demo(blocks, server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}"
    outside_requests = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            # Offline by default: anything the page asks from another host is recorded (and refused).
            page.route(
                "**/*",
                lambda route: (
                    route.continue_()
                    if route.request.url.startswith(url)
                    else (outside_requests.append(route.request.url), route.abort())
                ),
            )
            page.goto(url)
            # The cost of a request at the defaults, timed by the warm-up, before anything runs.
            expect(page.locator("#cost")).to_contain_text("units", timeout=30_000)
            expect(page.locator("#cost")).to_contain_text("≈", timeout=30_000)
            page.get_by_label("Prompt", exact=True).fill("a bold seven leaning right")
            page.get_by_label("Show the method", exact=False).check()
            page.get_by_role("button", name="Generate").click()

            page.wait_for_function("document.querySelectorAll('#images img').length == 4", timeout=120_000)
            page.wait_for_function(
                "[...document.querySelectorAll('#images img')].every(img => img.complete && img.naturalWidth)"
            )
            sizes = page.locator("#images img").evaluate_all(
                "imgs => imgs.map(img => [img.naturalWidth, img.naturalHeight])"
            )
            assert sizes == [[28, 28]] * 4
            # The other outputs of the same event render on their own schedule: wait for each (30 s at most).
            expect(page.locator("#proposals img")).to_have_count(4, timeout=30_000)
            expect(page.locator("#energy-plot canvas, #energy-plot svg").first).to_be_visible(timeout=30_000)
            expect(page.locator("#status")).to_contain_text("4 images · 10 Langevin steps", timeout=30_000)
            page.wait_for_timeout(500)  # let the plot finish drawing for the screenshot
            page.screenshot(path=tmp_path / "demo.png", full_page=True)

            # An empty prompt: the message at the field, the results of the last request kept, no error badges.
            page.get_by_label("Prompt", exact=True).fill("")
            page.get_by_role("button", name="Generate").click()
            # At the field (Gradio also announces it once to screen readers, in an invisible live region).
            page.locator(".validation-error", has_text="Prompt: type what to draw").wait_for(timeout=30_000)
            page.wait_for_timeout(500)
            expect(page.locator("#images img")).to_have_count(4)
            expect(page.locator("#status")).to_contain_text("4 images · 10 Langevin steps")
            expect(page.get_by_text("Error", exact=True)).to_have_count(0)

            # Interpolation has frames instead of images, and no candidates.
            page.get_by_role("tab", name="Interpolate").click()
            expect(page.get_by_role("slider", name="range slider for Frames")).to_be_visible(timeout=30_000)
            expect(page.get_by_role("slider", name="range slider for Number of images")).to_be_hidden(timeout=30_000)
            expect(page.get_by_role("slider", name="range slider for Candidates")).to_be_hidden(timeout=30_000)
            expect(page.locator("#cost")).to_contain_text("8 frames", timeout=30_000)

            page.get_by_label("Pipeline").click()
            page.get_by_role("option", name="tron-mnist", exact=True).click()
            # The tabs' visibility changes arrive one component at a time: wait for the final set, not the first change.
            expect(page.get_by_role("tab")).to_have_text(["Class", "Interpolate"], timeout=30_000)
            # The text pipeline's results are gone; the status says which pipeline is selected.
            expect(page.locator("#images img")).to_have_count(0, timeout=30_000)
            expect(page.locator("#status")).to_contain_text("Pipeline tron-mnist, conditioned on class labels")
            expect(page.get_by_role("slider", name="range slider for Number of images")).to_be_visible(timeout=30_000)
            browser.close()
    finally:
        blocks.close()
    assert outside_requests == []
    assert Image.open(tmp_path / "demo.png").width == 1280
    print(f"screenshot: {tmp_path / 'demo.png'}")
