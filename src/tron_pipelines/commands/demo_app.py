"""``tron demo``: a Gradio app for any `TronPipeline`, like the method's public Space, offline by default.

    tron demo                                   # every embedded pipeline, on 127.0.0.1:7860
    tron demo --pipeline my-pipeline --pipeline org/tron-biggan --max_steps 50

From Python or a notebook::

    from tron_pipelines.demo import build_demo, launch_demo
    launch_demo(build_demo(["tron-mnist-text"]))

The page has one tab per kind of condition the selected pipeline takes (text, image, class, interpolation), the
sampling controls, and shows the images with their final energies, the energy per Langevin step, the translator's
proposals beside the refined images ("show the method"), and a zip of PNGs + ``manifest.json`` in the format of
``tron generate``. The handlers of `TronDemo` are plain functions of the page's values: the Blocks only wire them up.
Bad values are caught before a request joins the queue (Gradio's event validators run the handlers' own checks), so
the page marks the field and keeps its results instead of turning every output into an error.

Requests never change the loaded pipelines: each call steps its own copy of the scheduler, a different step size or
noise gets its own `TronPipeline.from_pipe` view (the models are shared, not copied), every image has its own seeded
generator, and Stop interrupts only the requests of the browser tab that pressed it.
"""

import os


# Before gradio is imported: no usage statistics or version checks leave the machine.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import contextlib  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import weakref  # noqa: E402
import zipfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import NamedTuple  # noqa: E402

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402
from diffusers.utils import export_to_gif  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from ..pipelines.pipeline_tron import INITIALIZATIONS, TronPipeline  # noqa: E402
from ..pretrained import embedded_pipelines, resolve_pretrained_path  # noqa: E402
from ..utils.messages import first_line  # noqa: E402
from .common import CommandError, load_pipeline, rewards_per_image  # noqa: E402
from .samples import write_samples  # noqa: E402


def _takes_prompts(embedded_name: str) -> bool:
    """Whether an embedded pipeline has a tokenizer, from its ``model_index.json`` (nothing is loaded)."""
    index = json.loads((Path(resolve_pretrained_path(embedded_name)) / "model_index.json").read_text())
    return (index.get("tokenizer") or [None])[0] is not None


# Every pipeline embedded in the package, those that take prompts first: the page opens on the first.
DEFAULT_PIPELINES = tuple(sorted(embedded_pipelines(), key=lambda name: not _takes_prompts(name)))
# The condition of each tab, as error messages name it.
CONDITION_NAMES = {"text": "prompts", "image": "images", "class": "class labels"}
# Example prompts per pipeline name, with the accuracy measured for each (`benchmarks/demo_examples.py`).
EXAMPLES_FILE = Path(__file__).parent / "demo_examples.json"
# Uploads: checked before an image is decoded (Gradio also refuses larger files at upload time).
MAX_UPLOAD_BYTES = 10 * 2**20
MAX_UPLOAD_PIXELS = 4096 * 4096
# Per-request bounds beyond --max_images / --max_steps: each candidate costs a forward pass of G and f per image, each
# augmentation one more image through f per Langevin step.
MAX_CANDIDATES = 64
MAX_AUGMENTATIONS = 64
MAX_SEED = 2**31 - 1
# Requests sampling at once (more queue up and wait): on a CPU they only share its cores, on a GPU its memory.
SAMPLING_CONCURRENCY = 2
# Requests waiting for their turn, beyond those sampling; one more is refused at once with Gradio's busy answer (the
# page: "This application is currently busy. Please try again."; gradio_client: QueueError "Queue is full! Please try
# again.") instead of an unbounded wait. 16 waiting requests at the defaults are about 10-30 s of wait on 2 CPU cores.
MAX_QUEUE = 16
# A request's cost in units of one candidate (one image through G and f, forward): a Langevin step is about two (the
# backward pass) plus half a unit per augmented copy (only f sees the copies). Measured on the embedded pipelines, 4
# images: a step costs 1.4-2.2 units without copies, 2.9 with 4 and 5.6-11.7 with 16 (docs/demo.md).
STEP_UNITS = 2.0
AUGMENTATION_UNITS = 0.5
# Estimates longer than this are flagged before the request runs.
SLOW_REQUEST_S = 20.0
# Zips and GIFs of finished requests (Gradio serves its own copy) are deleted after this long.
OUTPUT_LIFETIME_S = 3600
GIF_FPS = 4
DEFAULT_FRAMES = 8
DEFAULT_IMAGES = 4
MAX_PROMPT_CHARS = 500
# Small generated images (28x28 digits) are shown enlarged with visible pixels, not blurred; two rows of 6 fit the
# gallery's height (more scroll).
DEMO_CSS = ".tron-images img { image-rendering: pixelated; }"
GALLERY_STYLE = {"columns": 6, "height": 250, "format": "png", "object_fit": "contain", "elem_classes": "tron-images"}
# Integer labels on the Langevin step axis: Vega's default ticks for a few steps are 0.5, 1.5, ...
ENERGY_PLOT_STYLE = {"x_axis_format": "d"}

METHOD_NOTE = (
    "**TR0N** turns an unconditional generator G into a conditional one: a *translator* proposes latents for your "
    "condition, and a few steps of *Langevin dynamics* on an energy E(z, c) (how badly the encoder f says G(z) fits "
    "c; lower is better) refine them. Tick *Show the method* to see the translator's proposals beside the refined "
    "images."
)


def examples_for(pipeline_name: str) -> list[str]:
    """Prompts measured to work well with ``pipeline_name`` (none for pipelines that were not measured)."""
    measured = json.loads(EXAMPLES_FILE.read_text()) if EXAMPLES_FILE.is_file() else {}
    return [example["prompt"] for example in measured.get(str(pipeline_name), {}).get("examples", [])]


@dataclass(frozen=True)
class PipelineInfo:
    """What the page shows for one pipeline: its conditions, classes and sampling defaults (its quick preview settings
    where it declares them, ``preview_num_inference_steps`` / ``preview_num_augmentations``, else its defaults)."""

    kind: str  # "clip" or "classifier"
    class_choices: list[tuple[str, int]]
    num_inference_steps: int
    num_candidates: int
    num_augmentations: int
    step_size: float
    noise_std: float | None
    has_noise: bool
    has_tokenizer: bool
    examples: list[str]

    @classmethod
    def of(cls, name: str, pipe: TronPipeline) -> "PipelineInfo":
        adapter = pipe.encoder_adapter
        # Class names from the encoder's config when it has them, else the indices; CLIP has no classes.
        names = (adapter.class_names or list(range(adapter.num_classes))) if adapter.kind == "classifier" else []
        scheduler, config = pipe.scheduler.config, pipe.config
        preview_steps, preview_augmentations = (
            config.get("preview_num_inference_steps"),
            config.get("preview_num_augmentations"),
        )
        return cls(
            kind=adapter.kind,
            class_choices=[(str(label), index) for index, label in enumerate(names)],
            num_inference_steps=config.default_num_inference_steps if preview_steps is None else preview_steps,
            num_candidates=config.default_num_candidates,
            num_augmentations=config.default_num_augmentations
            if preview_augmentations is None
            else preview_augmentations,
            step_size=scheduler[step_size_key(scheduler)],
            noise_std=scheduler.get("noise_std"),
            has_noise="noise_std" in scheduler,
            has_tokenizer=pipe.tokenizer is not None,
            examples=examples_for(name),
        )

    @property
    def tabs(self) -> dict[str, bool]:
        """Which condition tabs this pipeline supports."""
        clip = self.kind == "clip"
        return {"text": clip and self.has_tokenizer, "image": clip, "class": not clip, "interpolate": True}

    @property
    def interpolation_kinds(self) -> list[str]:
        """What the Interpolate tab can go between, as its "between" choices."""
        tabs = self.tabs
        return [kind for kind, tab in (("prompts", "text"), ("images", "image"), ("classes", "class")) if tabs[tab]]

    @property
    def first_tab(self) -> str:
        """The tab the page shows when this pipeline is chosen."""
        return next(name for name, shown in self.tabs.items() if shown)

    @property
    def conditions(self) -> str:
        """What this pipeline is conditioned on, in words ("prompts and images", "class labels")."""
        return " and ".join(
            CONDITION_NAMES[tab] for tab, shown in self.tabs.items() if shown and tab in CONDITION_NAMES
        )


def request_units(images: int, candidates: int, steps: int, augmentations: int, show_method: bool = False) -> float:
    """The cost of a request in units of one candidate (one image through G and f): per image, each candidate is one
    unit and each Langevin step ``STEP_UNITS + AUGMENTATION_UNITS * augmentations``; *Show the method* adds the
    translator's proposals (the candidates once more)."""
    per_image = candidates * (1 + show_method) + steps * (STEP_UNITS + AUGMENTATION_UNITS * augmentations)
    return images * per_image


class SamplingRequest(NamedTuple):
    """A checked request, ready to sample: what `TronDemo._sample` runs."""

    pipeline_name: str
    pipe: TronPipeline
    info: PipelineInfo
    call: dict  # the condition arguments of the pipeline call
    conditions: dict | list[dict]  # the manifest's condition of every image (one dict: the same for all)
    settings: dict  # `TronDemo.settings`, resolved
    prompts: dict[str, str | None]  # prompt fields to warn about ({field label: prompt})
    extra_settings: dict | None = None  # more manifest settings (the negative prompt)
    interpolation: bool = False


class DemoOutputs(NamedTuple):
    """What one request shows, in the order of the Blocks' outputs."""

    images: list[tuple[PIL.Image.Image, str]]  # (image, caption with seed and final energy)
    proposals: list[tuple[PIL.Image.Image, str]]  # translator proposals (0 steps); empty unless "show the method"
    energy_plot: pd.DataFrame  # columns "Langevin step", "energy", "image"
    download: str  # path of the zip: PNGs, grid.png, manifest.json
    animation: str | None  # path of the interpolation GIF
    seed: int  # seed of image 0 (the one drawn when "random seed" is ticked)
    status: str  # one line of Markdown


def image_upload(label: str, **kwargs) -> gr.Image:
    """A `gr.Image` input (passing a file path) whose unreadable uploads end in a ``gr.Error`` naming the field
    instead of a decoder traceback.

    The instance's ``preprocess`` is wrapped rather than subclassed: Gradio writes a ``.pyi`` stub beside the module
    of every Component subclass when it is defined, which an installed package must not do.
    """
    component = gr.Image(label=label, type="filepath", sources=["upload", "clipboard"], **kwargs)
    decode = component.preprocess

    def preprocess(payload):
        try:
            return decode(payload)
        except gr.Error:
            raise
        except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
            raise gr.Error(f"{label}: the upload is not a readable image ({type(error).__name__}).") from None

    component.preprocess = preprocess
    return component


def _whole_number(value, field: str, low: int, high: int, limit_note: str = "") -> int:
    """``value`` (int, or a float such as 4.0 from a number box) as an int in [low, high], else a gr.Error."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{field}: enter a whole number from {low} to {high}, got {value!r}.") from None
    if isinstance(value, bool) or not number.is_integer():
        raise gr.Error(f"{field}: enter a whole number from {low} to {high}, got {value!r}.")
    if not low <= number <= high:
        raise gr.Error(f"{field}: must be from {low} to {high}{limit_note}, got {int(number)}.")
    return int(number)


def _positive_float(value, field: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{field}: enter a number >= 0, got {value!r}.") from None
    if not number >= 0 or number == float("inf"):
        raise gr.Error(f"{field}: enter a finite number >= 0, got {value!r}.")
    return number


def _text(value, field: str, required: bool) -> str | None:
    text = (value or "").strip()
    if not text:
        if required:
            raise gr.Error(f"{field}: type what to draw, e.g. 'a bold seven leaning right'.")
        return None
    return text


def warn_about_prompts(pipe: TronPipeline, prompts: dict[str, str | None]) -> None:
    """Warnings in the page (``gr.Warning``) for each prompt field with words outside the pipeline's
    ``prompt_vocabulary`` (the words its text encoder was trained on; nothing when the pipeline has none) or with more
    tokens than the text encoder reads (the rest is dropped). The pipeline warns too, but only in the server's log."""
    for field, prompt in prompts.items():
        if not prompt:
            continue
        unknown = pipe.unknown_words(prompt)
        if unknown:
            gr.Warning(
                f"{field}: the text encoder never saw {', '.join(map(repr, unknown))} in training and follows "
                "only the words it knows; the examples show phrasings it was trained on."
            )
        truncation = pipe.encoder_adapter.truncation_note(prompt)
        if truncation:
            gr.Warning(f"{field} {truncation}")


def open_upload(path, field: str) -> PIL.Image.Image:
    """The uploaded image at ``path`` as RGB, after checking its file size and pixel count before decoding it."""
    if not path:
        raise gr.Error(f"{field}: upload an image first.")
    unreadable = f"{field}: the upload is not a readable image"
    try:
        size = os.path.getsize(path)
    except OSError as error:
        raise gr.Error(f"{unreadable} ({type(error).__name__}).") from None
    if size > MAX_UPLOAD_BYTES:
        raise gr.Error(
            f"{field}: the file has {size / 2**20:.1f} MB; this demo takes images up to {MAX_UPLOAD_BYTES // 2**20} MB."
        )
    try:
        image = PIL.Image.open(path)  # reads the header only
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise gr.Error(f"{unreadable} ({type(error).__name__}).") from None
    with image:
        width, height = image.size
        if width * height > MAX_UPLOAD_PIXELS:
            raise gr.Error(
                f"{field}: {width}x{height} pixels is too large; this demo takes up to {MAX_UPLOAD_PIXELS:,} pixels."
            )
        try:
            return image.convert("RGB")
        except (OSError, SyntaxError, ValueError) as error:
            raise gr.Error(f"{unreadable} ({type(error).__name__}).") from None


class TronDemo:
    """The demo's request handlers over a fixed set of pipelines.

    Args:
        pipelines: ``{name shown on the page: pipeline}``; the page can choose only among these.
        max_images: Most images (or interpolation frames) per request.
        max_steps: Most Langevin steps per request.

    Handlers take the page's values (and Gradio's ``request`` / ``progress``, both optional) and return
    `DemoOutputs`; bad values raise ``gr.Error`` naming the field, before any model runs. The checks of each handler
    are its ``*_request`` method, which the page also runs as the event's validator.
    """

    def __init__(self, pipelines: dict[str, TronPipeline], max_images: int = 16, max_steps: int = 200):
        if not pipelines:
            raise ValueError("`pipelines` is empty: give at least one pipeline to serve.")
        if max_images < 1 or max_steps < 0:
            raise ValueError(f"`max_images` must be >= 1 and `max_steps` >= 0, got {max_images} and {max_steps}.")
        self.pipelines = dict(pipelines)
        self.info = {name: PipelineInfo.of(name, pipe) for name, pipe in self.pipelines.items()}
        self.max_images = max_images
        self.max_steps = max_steps
        # {pipeline name: seconds per `request_units` of its last finished request}: the page's cost estimates.
        self.seconds_per_unit: dict[str, float] = {}
        self._stops: dict[str | None, set[threading.Event]] = {}
        self._stops_lock = threading.Lock()
        self.output_dir = Path(tempfile.mkdtemp(prefix="tron-demo-"))
        weakref.finalize(self, shutil.rmtree, self.output_dir, True)

    # Handlers --------------------------------------------------------------------------------------------------------
    def generate_text(
        self,
        pipeline_name,
        prompt,
        negative_prompt=None,
        request: gr.Request | None = None,
        progress=gr.Progress(),
        **settings,
    ) -> DemoOutputs:
        """Images for a prompt (and an optional negative prompt). ``settings``: see `TronDemo.settings`."""
        return self._sample(self.text_request(pipeline_name, prompt, negative_prompt, **settings), request, progress)

    def generate_image(
        self, pipeline_name, image, request: gr.Request | None = None, progress=gr.Progress(), **settings
    ) -> DemoOutputs:
        """Images semantically like an uploaded image (``image``: its file path)."""
        return self._sample(self.image_request(pipeline_name, image, **settings), request, progress)

    def generate_class(
        self, pipeline_name, class_label, request: gr.Request | None = None, progress=gr.Progress(), **settings
    ) -> DemoOutputs:
        """Images of a class (``class_label``: its index)."""
        return self._sample(self.class_request(pipeline_name, class_label, **settings), request, progress)

    def interpolate(
        self,
        pipeline_name,
        between,
        start_prompt=None,
        end_prompt=None,
        start_image=None,
        end_image=None,
        start_class=None,
        end_class=None,
        num_frames=None,
        request: gr.Request | None = None,
        progress=gr.Progress(),
        **settings,
    ) -> DemoOutputs:
        """Frames from one condition to another (``between``: "prompts", "images" or "classes") and their GIF.

        ``num_frames`` defaults to `DEFAULT_FRAMES` (at most ``max_images``). Every frame starts from the same draw
        (shared noise), so frames differ only through the condition; the ``num_candidates`` setting does not apply.
        """
        ends = (start_prompt, end_prompt, start_image, end_image, start_class, end_class)
        checked = self.interpolation_request(pipeline_name, between, *ends, num_frames, **settings)
        return self._sample(checked, request, progress)

    def stop(self, request: gr.Request | None = None) -> None:
        """Stop the running requests of the browser tab that sent ``request``: their Langevin loops end after the
        current step and return the images reached."""
        with self._stops_lock:
            for event in self._stops.get(_session(request), ()):
                event.set()

    def select_pipeline(self, pipeline_name) -> tuple:
        """Page updates for a newly selected pipeline: its tabs, classes, defaults and examples, and the previous
        pipeline's results cleared (in the order of the ``pipeline_outputs`` of `build`)."""
        _, info = self._pipeline(pipeline_name)
        return self._pipeline_updates(pipeline_name, info)

    def estimate(
        self,
        pipeline_name,
        tab="text",
        num_frames=DEFAULT_FRAMES,
        num_images=DEFAULT_IMAGES,
        num_inference_steps=None,
        num_candidates=None,
        num_augmentations=None,
        show_method=False,
    ) -> str:
        """The cost line above the sampling controls, before a request runs: its `request_units` and, once a request
        on this pipeline has finished, its time at that request's seconds per unit (flagged when it is over
        `SLOW_REQUEST_S`). Empty for values a request would refuse (the request says why)."""
        try:
            _, info = self._pipeline(pipeline_name)
            interpolation = tab == "interpolate"
            count = num_frames if interpolation else num_images
            settings = self.settings(
                info,
                num_images=count,
                num_inference_steps=num_inference_steps,
                num_candidates=1 if interpolation else num_candidates,
                num_augmentations=num_augmentations,
                show_method=show_method,
            )
        except gr.Error:
            return ""
        images, candidates = settings["num_images"], settings["num_candidates"]
        steps, augmentations = settings["num_inference_steps"], settings["num_augmentations"]
        units = request_units(images, candidates, steps, augmentations, settings["show_method"])
        line = (
            f"**Cost**: {_count(images, 'frame' if interpolation else 'image')} × ({_count(candidates, 'candidate')}"
            f"{' × 2 (Show the method)' * settings['show_method']} + {_count(steps, 'step')} × ({STEP_UNITS:g} + "
            f"{AUGMENTATION_UNITS:g} × {_count(augmentations, 'augmentation')})) = {units:,.0f} units"
        )
        rate = self.seconds_per_unit.get(pipeline_name)
        if rate is None:
            return line + " (no request on this pipeline has finished yet to time them)."
        seconds = units * rate
        per_unit = f"{rate * 1000:.3g} ms" if rate < 1 else f"{rate:.3g} s"
        line += f" × {per_unit} (the last request here) ≈ **{_duration(seconds)}**"
        if seconds > SLOW_REQUEST_S:
            line += " — a slow request: fewer Langevin steps or augmentations give a quicker first look"
        return line + "."

    def warm_up(self) -> dict[str, float]:
        """Run `warm_up_request` of every pipeline, so that first-call costs are paid before the first visitor's
        request and each pipeline's cost estimate has a rate from the start; returns ``{name: seconds}``."""
        seconds = {}
        for name in self.pipelines:
            handler, values = self.warm_up_request(name)
            started = time.perf_counter()
            getattr(self, handler)(**values)
            seconds[name] = time.perf_counter() - started
        return seconds

    def warm_up_request(self, pipeline_name: str) -> tuple[str, dict]:
        """A small request on the first tab of ``pipeline_name``: ``(handler name, its values)``, one Langevin step at
        the page's other defaults (a grey image for image-only pipelines)."""
        info = self.info[pipeline_name]
        values = {
            "pipeline_name": pipeline_name,
            "num_images": min(DEFAULT_IMAGES, self.max_images),
            "num_inference_steps": min(1, self.max_steps),
        }
        if info.tabs["text"]:
            return "generate_text", {**values, "prompt": (info.examples or ["a photo"])[0]}
        if info.tabs["image"]:
            path = self.output_dir / "warm-up.png"
            PIL.Image.new("RGB", (64, 64), "gray").save(path)
            return "generate_image", {**values, "image": str(path)}
        return "generate_class", {**values, "class_label": 0}

    # Checks ----------------------------------------------------------------------------------------------------------
    def text_request(self, pipeline_name, prompt, negative_prompt=None, **settings) -> SamplingRequest:
        """The checked request of `generate_text`; ``gr.Error`` naming the field for a bad value."""
        pipe, info = self._pipeline(pipeline_name)
        self._require(info, "text", "Prompt", pipeline_name)
        prompt = _text(prompt, "Prompt", required=True)
        negative_prompt = _text(negative_prompt, "Negative prompt", required=False)
        return SamplingRequest(
            pipeline_name,
            pipe,
            info,
            {"prompt": prompt, "negative_prompt": negative_prompt},
            {"prompt": prompt},
            self.settings(info, **settings),
            prompts={"Prompt": prompt, "Negative prompt": negative_prompt},
            extra_settings={"negative_prompt": negative_prompt},
        )

    def image_request(self, pipeline_name, image, **settings) -> SamplingRequest:
        """The checked request of `generate_image`."""
        pipe, info = self._pipeline(pipeline_name)
        self._require(info, "image", "Image", pipeline_name)
        condition = open_upload(image, "Image")
        return SamplingRequest(
            pipeline_name,
            pipe,
            info,
            {"image": condition},
            {"image": Path(image).name},
            self.settings(info, **settings),
            {},
        )

    def class_request(self, pipeline_name, class_label, **settings) -> SamplingRequest:
        """The checked request of `generate_class`."""
        pipe, info = self._pipeline(pipeline_name)
        self._require(info, "class", "Class", pipeline_name)
        label = _whole_number(class_label, "Class", 0, len(info.class_choices) - 1)
        return SamplingRequest(
            pipeline_name,
            pipe,
            info,
            {"class_labels": label},
            {"class_label": label},
            self.settings(info, **settings),
            {},
        )

    def interpolation_request(
        self,
        pipeline_name,
        between,
        start_prompt=None,
        end_prompt=None,
        start_image=None,
        end_image=None,
        start_class=None,
        end_class=None,
        num_frames=None,
        **settings,
    ) -> SamplingRequest:
        """The checked request of `interpolate`."""
        pipe, info = self._pipeline(pipeline_name)
        if between not in info.interpolation_kinds:
            raise gr.Error(
                f"Interpolate between: {pipeline_name!r} interpolates between {' or '.join(info.interpolation_kinds)}, "
                f"got {between!r}."
            )
        num_frames = min(DEFAULT_FRAMES, self.max_images) if num_frames is None else num_frames
        frames = _whole_number(num_frames, "Frames", 2, self.max_images, " (this demo's --max_images)")
        prompts = {}
        if between == "prompts":
            ends = [_text(start_prompt, "Start prompt", True), _text(end_prompt, "End prompt", True)]
            prompts = dict(zip(("Start prompt", "End prompt"), ends))
            call, names = {"prompt": ends}, ends
        elif between == "images":
            ends = [open_upload(start_image, "Start image"), open_upload(end_image, "End image")]
            call, names = {"image": ends}, [Path(start_image).name, Path(end_image).name]
        else:
            ends = [
                _whole_number(value, field, 0, len(info.class_choices) - 1)
                for value, field in ((start_class, "Start class"), (end_class, "End class"))
            ]
            call, names = {"class_labels": ends}, ends
        # Every frame starts from the same draw, so there are no candidates to choose from.
        settings = self.settings(info, **{**settings, "num_images": frames, "num_candidates": 1})
        weights = torch.linspace(0, 1, frames).tolist()
        conditions = [{"start": names[0], "end": names[1], "weight": round(weight, 4)} for weight in weights]
        return SamplingRequest(pipeline_name, pipe, info, call, conditions, settings, prompts, interpolation=True)

    # Settings --------------------------------------------------------------------------------------------------------
    SETTINGS = (
        "num_images",
        "num_inference_steps",
        "num_candidates",
        "initialization",
        "num_augmentations",
        "seed",
        "randomize_seed",
        "step_size",
        "noise_std",
        "show_method",
    )

    def settings(
        self,
        info: PipelineInfo,
        num_images=DEFAULT_IMAGES,
        num_inference_steps=None,
        num_candidates=None,
        initialization="translator",
        num_augmentations=None,
        seed=0,
        randomize_seed=False,
        step_size=None,
        noise_std=None,
        show_method=False,
    ) -> dict:
        """The sampling controls of a request, checked against this demo's limits (``None``: the pipeline's default).

        Args:
            num_images: Images per request, 1 .. ``max_images``.
            num_inference_steps: Langevin steps, 0 .. ``max_steps``.
            num_candidates: Initial draws per image (the lowest-energy one is refined), 1 .. `MAX_CANDIDATES`.
            initialization: ``"translator"``, ``"translator_mean"`` or ``"prior"``.
            num_augmentations: Augmented copies per image in the energy, 0 .. `MAX_AUGMENTATIONS`.
            seed: Seed of image 0 (image i uses seed + i); ``randomize_seed`` draws a new one.
            step_size / noise_std: Langevin step size and noise for this request only (the noise only for schedulers
                that have one).
            show_method: Also return the translator's proposals (the same seeds, 0 steps).
        """
        max_images_note, max_steps_note = " (this demo's --max_images)", " (this demo's --max_steps)"
        num_images = _whole_number(num_images, "Number of images", 1, self.max_images, max_images_note)
        steps = info.num_inference_steps if num_inference_steps is None else num_inference_steps
        candidates = info.num_candidates if num_candidates is None else num_candidates
        augmentations = info.num_augmentations if num_augmentations is None else num_augmentations
        resolved = {
            "num_images": num_images,
            "num_inference_steps": _whole_number(steps, "Langevin steps", 0, self.max_steps, max_steps_note),
            "num_candidates": _whole_number(candidates, "Candidates", 1, MAX_CANDIDATES),
            "num_augmentations": _whole_number(augmentations, "Augmentations", 0, MAX_AUGMENTATIONS),
            "show_method": bool(show_method),
        }
        if initialization not in INITIALIZATIONS:
            raise gr.Error(f"Initialization: choose one of {', '.join(INITIALIZATIONS)}, got {initialization!r}.")
        if initialization == "translator_mean" and resolved["num_candidates"] > 1:
            raise gr.Error(
                "Candidates: 'translator_mean' starts every draw from the same latents, so there is nothing "
                "to choose from; set Candidates to 1 or pick another Initialization."
            )
        resolved["initialization"] = initialization
        if randomize_seed:
            seed = random.randint(0, MAX_SEED - self.max_images)
        resolved["seed"] = _whole_number(seed, "Seed", 0, MAX_SEED - self.max_images)
        resolved["step_size"] = info.step_size if step_size is None else _positive_float(step_size, "Step size")
        resolved["noise_std"] = (
            info.noise_std if noise_std is None or not info.has_noise else _positive_float(noise_std, "Noise std")
        )
        return resolved

    # Sampling --------------------------------------------------------------------------------------------------------
    def _pipeline(self, name) -> tuple[TronPipeline, PipelineInfo]:
        if name not in self.pipelines:
            raise gr.Error(
                f"Pipeline: {name!r} is not served here; choose one of {', '.join(map(repr, self.pipelines))}."
            )
        return self.pipelines[name], self.info[name]

    @staticmethod
    def _require(info: PipelineInfo, tab: str, field: str, name: str) -> None:
        if not info.tabs[tab]:
            raise gr.Error(
                f"{field}: pipeline {name!r} is conditioned on {info.conditions}; use its tabs, or choose another "
                "pipeline."
            )

    def request_pipeline(self, pipe: TronPipeline, step_size: float, noise_std: float | None) -> TronPipeline:
        """``pipe`` itself, or a `TronPipeline.from_pipe` view with its own scheduler when this request's step size
        or noise differs from the pipeline's (the loaded pipeline is never changed)."""
        config = pipe.scheduler.config
        changes = {step_size_key(config): step_size}
        if "noise_std" in config:
            changes["noise_std"] = noise_std
        if all(config[key] == value for key, value in changes.items()):
            return pipe
        try:
            scheduler = type(pipe.scheduler).from_config(config, **changes)
        except ValueError as error:
            raise gr.Error(f"Step size / Noise std: {error}") from None
        view = TronPipeline.from_pipe(pipe, scheduler=scheduler)
        view.set_progress_bar_config(disable=True)
        return view

    def _sample(self, checked: SamplingRequest, request, progress) -> DemoOutputs:
        """Run a checked request: its images, proposals, energies, zip and status line; the pipeline's seconds per
        unit are updated for the page's cost estimates."""
        pipeline_name, pipe, info, call, conditions, settings, prompts, extra_settings, interpolation = checked
        warn_about_prompts(pipe, prompts)
        count = settings["num_images"]
        conditions = conditions if isinstance(conditions, list) else [conditions] * count
        seed = settings["seed"]
        seeds = [seed] * count if interpolation else [seed + index for index in range(count)]
        view = self.request_pipeline(pipe, settings["step_size"], settings["noise_std"])
        common = {"initialization": settings["initialization"], "num_augmentations": settings["num_augmentations"]}
        if interpolation:

            def run(steps, **kwargs):
                return view.interpolate(
                    **call,
                    num_frames=count,
                    generator=torch.Generator().manual_seed(seed),
                    num_inference_steps=steps,
                    **common,
                    **kwargs,
                )
        else:
            common["num_candidates"] = settings["num_candidates"]

            def run(steps, **kwargs):
                generators = [torch.Generator().manual_seed(s) for s in seeds]
                return view(
                    **call,
                    num_images_per_prompt=count,
                    generator=generators,
                    num_inference_steps=steps,
                    **common,
                    **kwargs,
                )

        total = settings["num_inference_steps"]
        steps_done = 0
        started = time.perf_counter()
        with self._stop_event(request) as stop:

            def on_step_end(pipeline, step, timestep, tensors):
                nonlocal steps_done
                steps_done = step + 1
                progress((steps_done, total), desc="Langevin step", unit="steps")
                if stop.is_set():
                    pipeline._interrupt = True  # this call only: the pipeline keeps it per thread
                return {}

            try:
                proposals = run(0) if settings["show_method"] else None
                out = run(total, return_energy_trace=True, callback_on_step_end=on_step_end)
            except (ValueError, TypeError) as error:
                raise gr.Error(first_line(error, with_type=False)) from None
        seconds = time.perf_counter() - started
        units = request_units(
            count, settings["num_candidates"], steps_done, settings["num_augmentations"], settings["show_method"]
        )
        self.seconds_per_unit[pipeline_name] = seconds / units

        energies = out.energies.tolist()
        manifest_settings = {
            "pipeline": pipeline_name,
            "num_inference_steps": total,
            "steps_done": steps_done,
            "initialization": settings["initialization"],
            "num_candidates": 1 if interpolation else view.num_candidates,
            "num_augmentations": settings["num_augmentations"],
            "step_size": settings["step_size"],
            "noise_std": settings["noise_std"],
            **{key: value for key, value in (extra_settings or {}).items() if value is not None},
        }
        # A pipeline with reward models reports each reward per image: in the zip's manifest as `tron generate`
        # records them, their means in the status line (the energy is minus their weighted sum).
        rewards_text = ""
        if out.rewards is not None:
            manifest_settings["reward_weights"] = view.reward_weights_for(None)
            rewards_text = " · mean " + ", ".join(
                f"{name} {values.mean().item():.3f}" for name, values in out.rewards.items()
            )
        folder = self._new_output_folder()
        download = self._zip_samples(
            folder, out.images, energies, conditions, seeds, manifest_settings, rewards_per_image(out)
        )
        animation = None
        if interpolation:
            animation = export_to_gif(enlarged(out.images), str(folder / "interpolation.gif"), fps=GIF_FPS)
        what = f"{count} frames" if interpolation else f"{count} image{'s' * (count > 1)}"
        seeds_text = f"seed {seed}" if seeds[-1] == seed else f"seeds {seed}-{seeds[-1]}"
        steps_text = (
            f"{total} Langevin steps"
            if steps_done == total
            else f"**stopped** after {steps_done} of {total} Langevin steps"
        )
        return DemoOutputs(
            images=captioned(out.images, energies),
            proposals=captioned(proposals.images, proposals.energies.tolist()) if proposals is not None else [],
            energy_plot=energy_table(out.energy_trace, out.energies),
            download=str(download),
            animation=animation,
            seed=seed,
            status=f"{what} · {steps_text} · {seeds_text} · mean final energy {sum(energies) / count:.3f}"
            f"{rewards_text} · {seconds:.1f} s",
        )

    @contextlib.contextmanager
    def _stop_event(self, request):
        """A `threading.Event` that `stop` sets for the requests of ``request``'s browser tab, while inside."""
        session, event = _session(request), threading.Event()
        with self._stops_lock:
            self._stops.setdefault(session, set()).add(event)
        try:
            yield event
        finally:
            with self._stops_lock:
                self._stops[session].discard(event)
                if not self._stops[session]:
                    del self._stops[session]

    # Files -----------------------------------------------------------------------------------------------------------
    def _new_output_folder(self) -> Path:
        """A fresh folder for one request's files; folders older than `OUTPUT_LIFETIME_S` are removed."""
        cutoff = time.time() - OUTPUT_LIFETIME_S
        for old in self.output_dir.iterdir():
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.output_dir))

    @staticmethod
    def _zip_samples(folder: Path, images, energies, conditions, seeds, settings, rewards=None) -> Path:
        """``folder/tron-samples.zip``: ``0.png ...``, ``grid.png`` and ``manifest.json`` as `write_samples` writes
        them (the format of ``tron generate``)."""
        with tempfile.TemporaryDirectory(dir=folder) as samples:
            write_samples(samples, images, energies, conditions, seeds, settings, rewards=rewards)
            path = folder / "tron-samples.zip"
            with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for file in sorted(Path(samples).iterdir()):
                    archive.write(file, arcname=file.name)
        return path

    # Page ------------------------------------------------------------------------------------------------------------
    def _pipeline_updates(self, name: str, info: PipelineInfo) -> tuple:
        """Updates, in the order of `build`'s ``pipeline_outputs``, that fit the page to ``info`` and clear the
        results of the previous pipeline."""
        classes = [value for _, value in info.class_choices] or [None]
        return (
            gr.Tabs(selected=info.first_tab),
            *(gr.Tab(visible=_tab_visibility(shown)) for shown in info.tabs.values()),
            info.first_tab,  # the tab state
            gr.Dropdown(choices=info.class_choices, value=classes[0]),
            gr.Dropdown(choices=info.class_choices, value=classes[0]),
            gr.Dropdown(choices=info.class_choices, value=classes[-1]),
            gr.Radio(choices=info.interpolation_kinds, value=info.interpolation_kinds[0]),
            gr.Slider(visible=True),  # number of images (hidden on the Interpolate tab)
            gr.Slider(value=min(info.num_inference_steps, self.max_steps)),
            gr.Slider(value=min(info.num_candidates, MAX_CANDIDATES), visible=True),
            gr.Slider(value=min(info.num_augmentations, MAX_AUGMENTATIONS)),
            gr.Number(value=info.step_size),
            gr.Number(value=info.noise_std, visible=info.has_noise),
            gr.Dataset(samples=[[prompt] for prompt in info.examples], visible=bool(info.examples)),
            # The previous pipeline's results are not this one's.
            None,  # images
            None,  # proposals
            None,  # energy plot
            None,  # download
            None,  # animation
            f"Pipeline **{name}**, conditioned on {info.conditions}: choose a condition and press **Generate**.",
        )

    def _tab_updates(self, tab: str) -> tuple:
        """The tab state, and the controls that do not apply to interpolation hidden on its tab: the number of images
        (Frames replaces it) and candidates (every frame starts from the same draw)."""
        applies = tab != "interpolate"
        return tab, gr.Slider(visible=applies), gr.Slider(visible=applies)

    def build(self) -> gr.Blocks:
        """The page: pipeline choice, one tab per condition, the cost of a request, sampling controls, and the
        outputs, wired to the handlers. Components are made for the first pipeline; choosing another updates them."""
        first_name = next(iter(self.pipelines))
        first = self.info[first_name]
        with gr.Blocks(
            title="TR0N demo", analytics_enabled=False, delete_cache=(OUTPUT_LIFETIME_S, OUTPUT_LIFETIME_S)
        ) as blocks:
            gr.Markdown("# TR0N: conditional generation from any generator\n" + METHOD_NOTE)
            with gr.Row(equal_height=False):
                with gr.Column(scale=2):
                    pipeline = gr.Dropdown(list(self.pipelines), value=first_name, label="Pipeline")
                    tab = gr.State(first.first_tab)
                    page = self._condition_tabs(first)
                    cost = gr.Markdown(self.estimate(first_name, first.first_tab), elem_id="cost")
                    settings = self._sampling_controls(first)
                with gr.Column(scale=3):
                    status = gr.Markdown("Type a prompt (or pick a class) and press **Generate**.", elem_id="status")
                    gallery = gr.Gallery(label="Images (after Langevin)", elem_id="images", **GALLERY_STYLE)
                    proposals = gr.Gallery(
                        label="Translator proposals (0 steps): the same seeds before Langevin",
                        visible=False,
                        elem_id="proposals",
                        **GALLERY_STYLE,
                    )
                    energy_plot = gr.LinePlot(
                        x="Langevin step",
                        y="energy",
                        color="image",
                        label="Energy per Langevin step",
                        title="E(z, c) per image (lower is better)",
                        elem_id="energy-plot",
                        **ENERGY_PLOT_STYLE,
                    )
                    download = gr.File(label="Download: PNGs + manifest.json (zip)", interactive=False)

            # The arguments of `estimate`, and the controls whose changes update it.
            costs = ("num_images", "num_inference_steps", "num_candidates", "num_augmentations", "show_method")
            estimate_inputs = [pipeline, tab, page.num_frames, *(settings[name] for name in costs)]
            quick = {"queue": False, "api_name": False}  # page updates: never wait behind sampling requests
            outputs = [gallery, proposals, energy_plot, download, page.animation, settings["seed"], status]
            events = {
                "text": (self.generate_text, self.text_request, [pipeline, page.prompt, page.negative_prompt]),
                "image": (self.generate_image, self.image_request, [pipeline, page.image]),
                "class": (self.generate_class, self.class_request, [pipeline, page.class_label]),
                "interpolate": (
                    self.interpolate,
                    self.interpolation_request,
                    [pipeline, page.between, *page.ends, page.num_frames],
                ),
            }
            triggers = {name: [buttons[0].click] for name, buttons in page.buttons.items()}
            triggers["text"].append(page.prompt.submit)
            for name, (handler, check, inputs) in events.items():
                gr.on(
                    triggers[name],
                    handler,
                    inputs,
                    outputs,
                    inputs_kwargs=settings,
                    api_name=handler.__name__,
                    concurrency_id="sampling",
                    concurrency_limit=SAMPLING_CONCURRENCY,
                    validator=event_validator(check, [*inputs, *settings.values()]),
                ).then(self.estimate, estimate_inputs, cost, **quick)
            # Stop ends the Langevin loop through `stop` rather than Gradio's `cancels`, which would drop the request
            # and show nothing; this way the images reached are shown. Outside the queue, it works under load.
            gr.on(
                [stop.click for _, stop in page.buttons.values()],
                self.stop,
                queue=False,
                api_name="stop",
                api_visibility="undocumented",
            )
            settings["show_method"].change(
                lambda shown: gr.Gallery(visible=shown), settings["show_method"], proposals, **quick
            )
            page.between.change(
                lambda kind: tuple(gr.Row(visible=kind == shown) for shown in page.end_rows),
                page.between,
                list(page.end_rows.values()),
                **quick,
            )
            not_for_interpolation = [settings["num_images"], settings["num_candidates"]]
            for name, tab_block in page.tab.items():
                tab_block.select(
                    functools.partial(self._tab_updates, name), None, [tab, *not_for_interpolation], **quick
                ).then(self.estimate, estimate_inputs, cost, **quick)
            start_class, end_class = page.ends[4:]
            pipeline_outputs = [
                page.tabs,
                *page.tab.values(),
                tab,
                page.class_label,
                start_class,
                end_class,
                page.between,
                settings["num_images"],
                settings["num_inference_steps"],
                settings["num_candidates"],
                settings["num_augmentations"],
                settings["step_size"],
                settings["noise_std"],
                page.examples.dataset,
                *outputs[:5],
                status,
            ]
            pipeline.change(self.select_pipeline, pipeline, pipeline_outputs, **quick).then(
                self.estimate, estimate_inputs, cost, **quick
            )
            gr.on(
                [page.num_frames.change, *(settings[name].change for name in costs)],
                self.estimate,
                estimate_inputs,
                cost,
                **quick,
            )
            # The cost line as the page opens: at the rate of the warm-up or of the last request.
            blocks.load(self.estimate, estimate_inputs, cost, **quick)
        return blocks

    def _condition_tabs(self, first: PipelineInfo) -> SimpleNamespace:
        """One tab per condition, each with its inputs and a Generate and a Stop button."""
        page = SimpleNamespace(tab={}, buttons={})
        classes = [value for _, value in first.class_choices] or [None]
        with gr.Tabs(selected=first.first_tab) as page.tabs:
            with gr.Tab("Text", id="text", visible=first.tabs["text"]) as page.tab["text"]:
                page.prompt = gr.Textbox(
                    label="Prompt", placeholder="a bold seven leaning right", max_length=MAX_PROMPT_CHARS
                )
                page.negative_prompt = gr.Textbox(
                    label="Negative prompt", placeholder="optional", max_length=MAX_PROMPT_CHARS
                )
                page.buttons["text"] = _action_buttons()
                page.examples = gr.Examples(
                    [[prompt] for prompt in first.examples] or [[""]],
                    inputs=[page.prompt],
                    label="Examples (measured to work well, see docs/demo.md)",
                    visible=bool(first.examples),
                )
            with gr.Tab("Image", id="image", visible=first.tabs["image"]) as page.tab["image"]:
                page.image = image_upload("Image", height=240)
                page.buttons["image"] = _action_buttons()
            with gr.Tab("Class", id="class", visible=first.tabs["class"]) as page.tab["class"]:
                page.class_label = gr.Dropdown(first.class_choices, value=classes[0], label="Class")
                page.buttons["class"] = _action_buttons()
            with gr.Tab("Interpolate", id="interpolate") as page.tab["interpolate"]:
                kinds = first.interpolation_kinds
                page.between = gr.Radio(kinds, value=kinds[0], label="Interpolate between")
                page.end_rows = {}
                with gr.Row(visible=kinds[0] == "prompts") as page.end_rows["prompts"]:
                    ends = [
                        gr.Textbox(label=f"{end} prompt", placeholder=example, max_length=MAX_PROMPT_CHARS)
                        for end, example in (("Start", "a one"), ("End", "a seven"))
                    ]
                with gr.Row(visible=kinds[0] == "images") as page.end_rows["images"]:
                    ends += [image_upload(f"{end} image", height=160) for end in ("Start", "End")]
                with gr.Row(visible=kinds[0] == "classes") as page.end_rows["classes"]:
                    ends += [
                        gr.Dropdown(first.class_choices, value=value, label=f"{end} class")
                        for end, value in (("Start", classes[0]), ("End", classes[-1]))
                    ]
                page.ends = ends  # start/end prompt, image, class: the `interpolate` handler's arguments
                page.num_frames = gr.Slider(
                    2, self.max_images, value=min(DEFAULT_FRAMES, self.max_images), step=1, label="Frames"
                )
                page.buttons["interpolate"] = _action_buttons()
                page.animation = gr.Image(
                    label="Interpolation (animated GIF)", type="filepath", interactive=False, height=200
                )
        return page

    def _sampling_controls(self, first: PipelineInfo) -> dict:
        """The controls of `settings`, by its argument names."""
        with gr.Accordion("Sampling", open=True):
            with gr.Row():
                num_images = gr.Slider(
                    1, self.max_images, value=min(DEFAULT_IMAGES, self.max_images), step=1, label="Number of images"
                )
                steps = gr.Slider(
                    0,
                    self.max_steps,
                    value=min(first.num_inference_steps, self.max_steps),
                    step=1,
                    label="Langevin steps",
                    info="0 = translator proposals only",
                )
            with gr.Row():
                candidates = gr.Slider(
                    1,
                    MAX_CANDIDATES,
                    value=min(first.num_candidates, MAX_CANDIDATES),
                    step=1,
                    label="Candidates",
                    info="initial draws per image; the lowest-energy one is refined",
                )
                augmentations = gr.Slider(
                    0,
                    MAX_AUGMENTATIONS,
                    value=min(first.num_augmentations, MAX_AUGMENTATIONS),
                    step=1,
                    label="Augmentations",
                    info="augmented copies per image in the energy",
                )
            initialization = gr.Radio(
                list(INITIALIZATIONS),
                value="translator",
                label="Initialization",
                info="translator: a draw from q(z|c) · translator_mean: the paper's mixed means · prior: no translator",
            )
            with gr.Row(equal_height=True):
                seed = gr.Number(
                    0,
                    label="Seed",
                    precision=0,
                    minimum=0,
                    maximum=MAX_SEED - self.max_images,
                    info="image i uses seed + i",
                )
                randomize_seed = gr.Checkbox(False, label="Random seed")
            show_method = gr.Checkbox(
                False, label="Show the method: the translator's proposals (0 steps) beside the refined images"
            )
        with gr.Accordion("Advanced: Langevin dynamics of this request", open=False):
            step_size = gr.Number(first.step_size, label="Step size", minimum=0)
            noise_std = gr.Number(first.noise_std, label="Noise std", minimum=0, visible=first.has_noise)
        return dict(
            zip(
                self.SETTINGS,
                (
                    num_images,
                    steps,
                    candidates,
                    initialization,
                    augmentations,
                    seed,
                    randomize_seed,
                    step_size,
                    noise_std,
                    show_method,
                ),
            )
        )


def _action_buttons() -> tuple[gr.Button, gr.Button]:
    with gr.Row():
        return gr.Button("Generate", variant="primary", scale=3), gr.Button("Stop", variant="stop", scale=1)


def _tab_visibility(shown: bool) -> bool | str:
    """A tab's visibility in an update: Gradio 6 hides a tab that was built visible only with "hidden" (an update to
    False leaves it shown). Rows and components are the other way round: "hidden" shows a row built invisible, so
    their updates use plain booleans."""
    return True if shown else "hidden"


def event_validator(check, inputs: list):
    """A Gradio event validator running ``check`` (a ``TronDemo.*_request`` method) on the event's values, so that a
    bad value is caught before the request joins the queue: the page marks the field the message names (by its
    label; the first input when none has it) and keeps its results, where a ``gr.Error`` raised by the handler would
    turn every output into an error badge. ``inputs``: the event's input components, in Gradio's order."""
    labels = [getattr(component, "label", None) for component in inputs]

    def validate(*args, **kwargs):
        try:
            check(*args, **kwargs)
        except gr.Error as error:
            field = str(error.message).split(":", 1)[0]
            marked = labels.index(field) if field in labels else 0
            return [gr.validate(index != marked, str(error.message)) for index in range(len(labels))]
        return [gr.validate(True, "") for _ in labels]

    return validate


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' * (number != 1)}"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 100 else f"{seconds / 60:.0f} min"


def _session(request: gr.Request | None) -> str | None:
    """The browser tab a request came from (``None`` outside a server, e.g. in a notebook or a test)."""
    return getattr(request, "session_hash", None)


def energy_table(trace: torch.Tensor | None, final: torch.Tensor) -> pd.DataFrame:
    """Long table of each image's energy before every Langevin step (``trace`` ``(steps, B)``) and after the last
    one (``final`` ``(B,)``): columns ``"Langevin step"``, ``"energy"`` and ``"image"`` (the image's index: a number,
    so the plot colours by a gradient; Gradio's plot keeps the first request's categories and would not draw new
    ones)."""
    rows = torch.cat([trace, final[None]]) if trace is not None else final[None]
    steps, count = rows.shape
    return pd.DataFrame(
        {
            "Langevin step": [step for step in range(steps) for _ in range(count)],
            "energy": rows.flatten().tolist(),
            "image": [index for _ in range(steps) for index in range(count)],
        }
    )


def step_size_key(scheduler_config) -> str:
    """The setting the page's "Step size" slider sets: Langevin's and gradient descent's ``step_size``, or the
    ``learning_rate`` of `NoiseOptimizationScheduler` (ReNO's SGD)."""
    return "step_size" if "step_size" in scheduler_config else "learning_rate"


def captioned(images: list, energies: list[float]) -> list[tuple]:
    """Gallery items: each image with its final energy, the only caption (a longer one is cut at the thumbnail's
    width; seeds are in the status line and the zip's manifest)."""
    return [(image, f"E = {energy:.3f}") for image, energy in zip(images, energies)]


def enlarged(images: list, min_side: int = 128) -> list:
    """``images`` scaled by a whole factor with nearest-neighbour pixels until the shorter side is at least
    ``min_side`` (a 28x28 GIF is too small to watch)."""
    factor = max(1, -(-min_side // min(images[0].size)))
    return [image.resize((image.width * factor, image.height * factor), PIL.Image.NEAREST) for image in images]


def load_pipelines(names, device: str = "cpu") -> dict[str, TronPipeline]:
    """``{name: pipeline}`` for folders, embedded names or Hub ids, on ``device``, progress bars off."""
    pipelines = {}
    for name in names:
        pipe = TronPipeline.from_pretrained(name).to(device)
        pipe.set_progress_bar_config(disable=True)
        pipelines[str(name)] = pipe
    return pipelines


def build_demo(
    pipelines: dict[str, TronPipeline] | list[str] | tuple[str, ...] = DEFAULT_PIPELINES,
    max_images: int = 16,
    max_steps: int = 200,
) -> gr.Blocks:
    """The demo page for ``pipelines``: ``{name: TronPipeline}``, or names / folders / Hub ids to load (on CPU).

    Args:
        pipelines: What the page may sample from, the first selected; nothing else can be named from the page.
        max_images: Most images (or frames) per request.
        max_steps: Most Langevin steps per request.

    Returns:
        A `gradio.Blocks`; start it with `launch_demo` (or its own ``launch``). Its handlers are
        ``blocks.tron_demo`` (a `TronDemo`).
    """
    if not isinstance(pipelines, dict):
        pipelines = load_pipelines(pipelines)
    handlers = TronDemo(pipelines, max_images=max_images, max_steps=max_steps)
    blocks = handlers.build()
    blocks.tron_demo = handlers
    return blocks


def launch_demo(blocks: gr.Blocks, max_queue: int | None = MAX_QUEUE, warm_up: bool = True, **launch_kwargs):
    """``blocks.launch`` with the demo's upload limit, style and request queue; ``launch_kwargs`` as in Gradio
    (``server_name``, ``server_port``, ``share``, ``prevent_thread_lock``, ...). Binds 127.0.0.1 unless told
    otherwise (or ``GRADIO_SERVER_NAME`` says so, as on Hugging Face Spaces); no share link unless ``share=True``.

    Args:
        max_queue: Most requests waiting for their turn beyond the `SAMPLING_CONCURRENCY` sampling; one more is
            answered at once that the server is busy (Gradio's queue ``max_size``). ``None``: no limit.
        warm_up: First run `TronDemo.warm_up` on a `build_demo` page, so that its first visitor does not wait for
            first-call costs.
    """
    warm_up = warm_up and hasattr(blocks, "tron_demo")
    if warm_up:
        blocks.tron_demo.warm_up()
    launch_kwargs.setdefault("server_name", os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    launch_kwargs.setdefault("share", False)
    launch_kwargs.setdefault("max_file_size", MAX_UPLOAD_BYTES)
    launch_kwargs.setdefault("css", DEMO_CSS)
    launch_kwargs.setdefault("footer_links", ["gradio"])
    # Gradio blocks in `launch` unless told not to; the server's warm-up request goes between the two.
    block = not launch_kwargs.pop("prevent_thread_lock", False) and not getattr(sys, "ps1", sys.flags.interactive)
    queue = blocks.queue(default_concurrency_limit=SAMPLING_CONCURRENCY, max_size=max_queue)
    launched = queue.launch(prevent_thread_lock=True, **launch_kwargs)
    if warm_up:
        warm_up_server(blocks)
    if block:
        blocks.block_thread()
    return launched


def warm_up_server(blocks: gr.Blocks) -> float:
    """Send the first pipeline's `TronDemo.warm_up_request` through the running server (``blocks.local_url``) with
    ``gradio_client``, as a visitor would: Gradio's first request has one-time costs of its own (2 s beyond sampling
    on 2 busy CPU cores, docs/demo.md), which the in-process warm-up does not reach. Returns its seconds."""
    demo = blocks.tron_demo
    handler, values = demo.warm_up_request(next(iter(demo.pipelines)))
    if "image" in values:
        values["image"] = handle_file(values["image"])
    started = time.perf_counter()
    client = Client(blocks.local_url, verbose=False, download_files=False)
    client.predict(**values, api_name=f"/{handler}")
    return time.perf_counter() - started


def run_demo_command(args) -> None:
    """``tron demo``: load the pipelines (one-line errors, as ``tron generate``), warm them up, then serve the page
    until Ctrl+C."""
    names = list(dict.fromkeys(args.pipeline or DEFAULT_PIPELINES))
    try:
        pipelines = {name: load_pipeline(name, args.device) for name in names}
    except CommandError as error:
        raise SystemExit(f"tron demo: error: {error}") from None
    for pipe in pipelines.values():
        pipe.set_progress_bar_config(disable=True)
    blocks = build_demo(pipelines, max_images=args.max_images, max_steps=args.max_steps)
    if not args.no_warm_up:
        print("Warming up: one small request per pipeline, then one through the server...", flush=True)
        warm = blocks.tron_demo.warm_up()
        print(f"Warm: {', '.join(f'{name} {seconds:.1f} s' for name, seconds in warm.items())}", flush=True)
    try:
        # Quiet: Gradio's own lines would tell a command-line user to "set `share=True` in `launch()`".
        launch_demo(
            blocks,
            max_queue=args.max_queue,
            warm_up=False,
            server_name=args.host,
            server_port=args.port,
            share=args.share,
            quiet=True,
            prevent_thread_lock=True,
        )
    except OSError as error:
        raise SystemExit(f"tron demo: error: --host {args.host} --port {args.port}: {error}") from None
    if not args.no_warm_up:
        print(f"Warm: a request through the server {warm_up_server(blocks):.1f} s", flush=True)
    print(f"* Serving {', '.join(names)} on {blocks.local_url} (Ctrl+C stops it)", flush=True)
    if not args.share:
        print("* A public link: `tron demo --share` (through Gradio's gradio.live).", flush=True)
    blocks.block_thread()


__all__ = [
    "DEFAULT_PIPELINES",
    "DemoOutputs",
    "MAX_QUEUE",
    "PipelineInfo",
    "SamplingRequest",
    "TronDemo",
    "build_demo",
    "energy_table",
    "event_validator",
    "examples_for",
    "image_upload",
    "launch_demo",
    "load_pipelines",
    "open_upload",
    "request_units",
    "run_demo_command",
    "warm_up_server",
    "warn_about_prompts",
]
