"""Captioners for the caption route of translator training: c = text_encoder(caption(G(z))).

The method's strongest text translators are trained on the caption route rather than on image embeddings: each
generated image is captioned (BLIP), and the caption is encoded with the same CLIP *text* encoder that encodes prompts
at sampling time, so training and sampling conditions come from one encoder (no image/text modality gap).

A captioner is called as ``captioner(images, generator)`` with G's output ``(B, C, H, W)`` in ``[-1, 1]`` and a CPU
``torch.Generator`` for its random choices (nucleus sampling, phrasing variants), and returns ``B`` strings. Its
``identity()`` (a JSON-able dict: model, weights, decoding settings) is recorded in a pair cache's manifest, so that a
cache captioned otherwise is refused. Two kinds:

* `TransformersCaptioner`: any transformers image-to-text model with its processor (`BlipForConditionalGeneration`,
  `Blip2ForConditionalGeneration`, ...), batched, with beam search, greedy decoding or nucleus sampling;
* `CallableCaptioner`: a plain function ``fn(images, generator) -> list[str]``, e.g. a rule-based captioner. A
  `Captioner` subclass can also be used directly.

    >>> captioner = TransformersCaptioner.from_pretrained("Salesforce/blip-image-captioning-base")  # the method's
    >>> captioner(pipe.generator.generate(latents), torch.Generator().manual_seed(0))
    ['a close up of a dog', ...]
"""

import importlib
import re
from typing import Callable

import torch

from ..utils.fingerprints import module_fingerprint


# The method's BLIP settings (TR0N's caption pairs): beam search with 3 beams, or nucleus sampling with top_p 0.9;
# 5 to 20 tokens counting the "a picture of" prompt and the begin token; repetition penalty 1.1; prompt stripped.
DECODINGS = ("beam", "greedy", "nucleus")
METHOD_SETTINGS = {
    "decoding": "beam",
    "num_beams": 3,
    "top_p": 0.9,
    "min_length": 5,
    "max_length": 20,
    "repetition_penalty": 1.1,
}
# BLIP captions better when prompted with this prefix (the method's and BLIP's own captioning prompt).
BLIP_PROMPT = "a picture of "
IMPORT_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def check_caption_settings(settings: dict, option_prefix: str = "") -> None:
    """Raise ``ValueError`` for impossible caption decoding settings, the one check of both the command line's
    ``--caption_*`` options (``option_prefix="--caption_"``) and `TransformersCaptioner`'s arguments.

    ``settings`` holds any of `TransformersCaptioner`'s keyword arguments (``decoding``, ``num_beams``, ``top_p``,
    ``min_length``, ``max_length``, ``repetition_penalty``, ``prompt``); ``None`` values are not given. The lengths'
    bound by the prompt's token count needs the model's tokenizer, so `TransformersCaptioner` checks it once loaded.
    """
    rules = {
        "decoding": (lambda value: value in DECODINGS, f"one of {DECODINGS}"),
        "num_beams": (lambda value: value >= 1, ">= 1"),
        "top_p": (lambda value: 0 < value <= 1, "in (0, 1]"),
        "min_length": (lambda value: value >= 0, ">= 0"),
        "max_length": (lambda value: value >= 1, ">= 1"),
        "repetition_penalty": (lambda value: value > 0, "> 0"),
    }
    for name, value in settings.items():
        if name in rules and value is not None and not rules[name][0](value):
            raise ValueError(f"`{option_prefix}{name}` must be {rules[name][1]}, got {value!r}.")


class Captioner:
    """What the caption route calls. Subclasses implement `__call__` and `identity`."""

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> list[str]:
        """One caption per image of ``images`` ``(B, C, H, W)`` in ``[-1, 1]``; ``generator`` (CPU) seeds any random
        choice, so that the same generator state gives the same captions."""
        raise NotImplementedError

    def identity(self) -> dict:
        """JSON-able description that tells this captioner (model, weights, settings) apart from others."""
        raise NotImplementedError

    def to(self, device: torch.device | str) -> "Captioner":
        """Move any model the captioner runs to ``device`` (no-op by default)."""
        return self


def seed_from(generator: torch.Generator | None) -> int:
    """A seed for another random number generator (numpy, the global torch RNG) drawn from ``generator`` (CPU)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def images_to_unit_range(images: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """G's output ``(B, C, H, W)`` in ``[-1, 1]`` as float32 in ``[0, 1]`` with ``channels`` channels (grey images
    are replicated), what an image processor takes with ``do_rescale=False``."""
    if images.ndim != 4:
        raise ValueError(f"Captioners take images (B, C, H, W) in [-1, 1], got shape {tuple(images.shape)}.")
    pixels = ((images.detach().float() + 1.0) / 2.0).clamp(0.0, 1.0)
    if pixels.shape[1] != channels:
        if pixels.shape[1] != 1:
            raise ValueError(
                f"The captioner takes {channels}-channel images; the generator makes {pixels.shape[1]}-channel ones."
            )
        pixels = pixels.expand(-1, channels, -1, -1)
    return pixels


class TransformersCaptioner(Captioner):
    """A transformers image-to-text model and its processor as a captioner.

    Args:
        model: e.g. `BlipForConditionalGeneration`, `Blip2ForConditionalGeneration` (anything with ``generate``
            taking the processor's outputs).
        processor: Its processor (image processor + tokenizer), e.g. `BlipProcessor`.
        decoding: ``"beam"`` (``num_beams`` beams), ``"greedy"`` or ``"nucleus"`` (sampling with ``top_p``, seeded by
            the generator given to each call).
        num_beams: Beams of beam search.
        top_p: Nucleus mass of nucleus sampling.
        min_length / max_length: Tokens of prompt and caption together, the prompt counted with the begin token (as
            BLIP's ``generate`` counts them; the method's 5 and 20 with the 4-token "a picture of" prompt).
        repetition_penalty: transformers' repetition penalty (the method's 1.1).
        prompt: Text the caption continues, stripped from the output. ``None``: "a picture of " for BLIP (as the
            method), none for other models.
        batch_size: Images captioned at once.
    """

    def __init__(
        self,
        model,
        processor,
        decoding: str = METHOD_SETTINGS["decoding"],
        num_beams: int = METHOD_SETTINGS["num_beams"],
        top_p: float = METHOD_SETTINGS["top_p"],
        min_length: int = METHOD_SETTINGS["min_length"],
        max_length: int = METHOD_SETTINGS["max_length"],
        repetition_penalty: float = METHOD_SETTINGS["repetition_penalty"],
        prompt: str | None = None,
        batch_size: int = 64,
    ):
        check_caption_settings(
            {
                "decoding": decoding,
                "num_beams": num_beams,
                "top_p": top_p,
                "min_length": min_length,
                "max_length": max_length,
                "repetition_penalty": repetition_penalty,
            }
        )
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.decoding = decoding
        self.num_beams = num_beams
        self.top_p = top_p
        self.repetition_penalty = repetition_penalty
        if prompt is None:
            prompt = BLIP_PROMPT if getattr(model.config, "model_type", None) == "blip" else ""
        self.prompt = prompt
        self.batch_size = batch_size
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(
                f"The captioner's processor ({type(processor).__name__}) has no tokenizer to decode captions with."
            )
        # The begin token plus the prompt's own tokens.
        self.prompt_length = (
            1 + len(tokenizer(prompt.strip(), add_special_tokens=False).input_ids) if prompt.strip() else 1
        )
        if not 0 <= min_length <= max_length or max_length <= self.prompt_length:
            raise ValueError(
                f"`min_length` {min_length} and `max_length` {max_length} (tokens of prompt and caption) must satisfy "
                f"0 <= min_length <= max_length and max_length > {self.prompt_length}, the prompt's length."
            )
        self.min_length = min_length
        self.max_length = max_length
        self._identity = None

    @classmethod
    def from_pretrained(cls, name_or_path: str, **settings) -> "TransformersCaptioner":
        """Load a captioning model and its processor (a folder or a Hub id, e.g.
        ``"Salesforce/blip-image-captioning-base"``) with `AutoModelForImageTextToText` and `AutoProcessor`;
        ``settings`` are the constructor's keyword arguments."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(name_or_path)
            model = AutoModelForImageTextToText.from_pretrained(name_or_path)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"`--captioner` {name_or_path!r} is not a captioning model folder or a reachable Hub repo, nor a "
                f"'package.module:name' callable ({type(error).__name__}: {error})."
            ) from error
        return cls(model, processor, **settings)

    def to(self, device):
        self.model.to(device)
        return self

    def generate_kwargs(self) -> dict:
        """Keyword arguments of ``model.generate`` for the decoding settings."""
        kwargs = {
            "min_new_tokens": max(self.min_length - self.prompt_length, 0),
            "max_new_tokens": self.max_length - self.prompt_length,
            "repetition_penalty": self.repetition_penalty,
            "do_sample": self.decoding == "nucleus",
            "num_beams": self.num_beams if self.decoding == "beam" else 1,
        }
        if self.decoding == "nucleus":
            kwargs["top_p"] = self.top_p
        return kwargs

    def strip_prompt(self, text: str) -> str:
        text = text.strip()
        prompt = self.prompt.strip()
        if prompt and text.lower().startswith(prompt.lower()):
            text = text[len(prompt) :].strip()
        return text

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> list[str]:
        pixels = images_to_unit_range(images)
        device = self.model.device
        captions = []
        for chunk in pixels.split(self.batch_size):
            text = [self.prompt] * len(chunk) if self.prompt.strip() else None
            inputs = self.processor(images=list(chunk.cpu()), text=text, return_tensors="pt", do_rescale=False)
            inputs = {name: value.to(device) for name, value in inputs.items()}
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            if self.decoding == "nucleus":
                # transformers samples from the global RNG: fork it and seed it from the caller's generator.
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    torch.manual_seed(seed_from(generator))
                    ids = self.model.generate(**inputs, **self.generate_kwargs())
            else:
                ids = self.model.generate(**inputs, **self.generate_kwargs())
            captions += [
                self.strip_prompt(text) for text in self.processor.batch_decode(ids, skip_special_tokens=True)
            ]
        return captions

    def identity(self) -> dict:
        if self._identity is None:
            self._identity = {
                "class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
                "name_or_path": getattr(self.model.config, "_name_or_path", "") or "",
                "fingerprint": module_fingerprint(self.model),
                "decoding": self.decoding,
                **({"num_beams": self.num_beams} if self.decoding == "beam" else {}),
                **({"top_p": self.top_p} if self.decoding == "nucleus" else {}),
                "min_length": self.min_length,
                "max_length": self.max_length,
                "repetition_penalty": self.repetition_penalty,
                "prompt": self.prompt,
            }
        return self._identity


class CallableCaptioner(Captioner):
    """A plain function ``fn(images (B, C, H, W) in [-1, 1], generator) -> list[str]`` as a captioner.

    Args:
        function: The captioning function; it must draw any randomness from ``generator``.
        name: Its name in cache manifests (default: the function's qualified name).
    """

    def __init__(self, function: Callable[[torch.Tensor, torch.Generator | None], list[str]], name: str | None = None):
        if not callable(function):
            raise ValueError(f"A captioner must be callable, got {type(function).__name__}.")
        self.function = function
        self.name = name or f"{function.__module__}.{getattr(function, '__qualname__', type(function).__qualname__)}"

    def __call__(self, images, generator=None):
        return list(self.function(images, generator))

    def identity(self) -> dict:
        return {"callable": self.name}


def import_object(spec: str, argument: str):
    """The object named by ``"package.module:attribute"``; ``ValueError`` naming ``argument`` when it cannot be
    imported."""
    module_name, _, attribute = spec.partition(":")
    try:
        found = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"`{argument}` {spec!r} could not be imported: {error}") from error
    return found


def load_captioner(spec: "str | Captioner | Callable", **settings) -> Captioner:
    """A captioner from ``spec``.

    ``spec`` is a `Captioner`; a plain callable ``fn(images, generator) -> list[str]``; ``"package.module:name"``
    naming either of them, or a `Captioner` class built with no arguments; or a transformers captioning model (folder
    or Hub id), loaded by `TransformersCaptioner.from_pretrained` with ``settings`` (decoding, beams, lengths, ...).
    Settings apply only to transformers models: given with anything else, they raise ``ValueError``.
    """
    if isinstance(spec, str) and IMPORT_SPEC.match(spec):
        found = import_object(spec, "--captioner")
        if isinstance(found, type) and issubclass(found, Captioner):
            found = found()
        spec = found if isinstance(found, Captioner) else CallableCaptioner(found, spec)
    if isinstance(spec, str):
        return TransformersCaptioner.from_pretrained(spec, **settings)
    if settings:
        raise ValueError(
            f"Caption decoding settings {sorted(settings)} apply to transformers captioning models only, not to {spec!r}."
        )
    return spec if isinstance(spec, Captioner) else CallableCaptioner(spec)


__all__ = [
    "Captioner",
    "TransformersCaptioner",
    "CallableCaptioner",
    "load_captioner",
    "images_to_unit_range",
    "import_object",
    "seed_from",
    "METHOD_SETTINGS",
    "DECODINGS",
    "BLIP_PROMPT",
]
