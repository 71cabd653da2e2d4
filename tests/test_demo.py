"""`tron demo`: each tab's handler against the pipeline called directly, bad inputs, Stop, concurrent requests, the
command line, and the page in a real browser (headless Chromium)."""

import importlib.util
import io
import json
import runpy
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from gradio.data_classes import FileData
from PIL import Image

from tron_pipelines import LangevinScheduler, TronPipeline
from tron_pipelines.cli import main
from tron_pipelines.commands.demo_app import (
    EXAMPLES_FILE,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_PIXELS,
    TronDemo,
    examples_for,
    image_upload,
    launch_demo,
)


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
    assert [caption.split(" · ")[0] for _, caption in out.images] == [
        f"E = {e:.3f}" for e in reference.energies.tolist()
    ]

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
    assert out.status.startswith("3 images · 3 Langevin steps · seed 5")


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


def test_pipeline_choice_shows_only_its_tabs(demo):
    text_tab, image_tab, class_tab, interpolate_tab = demo.select_pipeline("tiny-classes")[1:5]
    assert [tab.visible for tab in (text_tab, image_tab, class_tab, interpolate_tab)] == [
        "hidden",
        "hidden",
        True,
        True,
    ]
    blocks = demo.build()
    (dropdown,) = [block for block in blocks.blocks.values() if getattr(block, "label", None) == "Pipeline"]
    assert [value for _, value in dropdown.choices] == ["tiny-clip", "tiny-classes"]


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


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary: `apt-get install -y chromium` (.ci/run does) to run the browser test"
)
def test_page_in_a_real_browser(tmp_path):
    """The Space's app (the embedded pipelines) in headless Chromium: a prompt -> 4 digits, their proposals and the
    energy plot; the class pipeline's tabs; an empty prompt's message; nothing fetched from another host."""
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

            page.get_by_label("Prompt", exact=True).fill("")
            page.get_by_role("button", name="Generate").click()
            page.get_by_text("Prompt: type what to draw").wait_for(timeout=30_000)

            page.get_by_label("Pipeline").click()
            page.get_by_role("option", name="tron-mnist", exact=True).click()
            # The tabs' visibility changes arrive one component at a time: wait for the final set, not the first change.
            expect(page.get_by_role("tab")).to_have_text(["Class", "Interpolate"], timeout=30_000)
            browser.close()
    finally:
        blocks.close()
    assert outside_requests == []
    assert Image.open(tmp_path / "demo.png").width == 1280
    print(f"screenshot: {tmp_path / 'demo.png'}")
