"""Condition routes: how the condition c of a synthetic pair (z, c) is computed from the generated image G(z).

* ``image`` (default): the encoder's vector for the image, ``adapter.encode_generated`` (CLIP image embedding, or
  classifier probabilities).
* ``caption``: the text encoder's embedding of a caption of the image, ``adapter.encode_prompts(captioner(G(z)))``:
  the method's BLIP route, where training and sampling conditions come from the same text encoder.
* ``mix``: per pair, the caption route with probability ``caption_ratio`` and the image route otherwise, decided by a
  seeded draw (so a cache shard is the same whoever writes it, and when it is written again on resuming).
* a custom function ``fn(images in [-1, 1], adapter) -> (B, condition_dim)`` (``"package.module:function"`` on the
  command line).

A route draws its randomness (the mix draw, the captioner's sampling) from a CPU generator the pair source seeds per
batch of pairs, separate from the latents' generator: the latents of a cache do not depend on its route.
"""

from dataclasses import dataclass
from typing import Callable

import torch

from ..encoders import EncoderAdapter
from .captioning import IMPORT_SPEC, Captioner, check_caption_settings, import_object, load_captioner


ROUTES = ("image", "caption", "mix")
DEFAULT_CAPTION_RATIO = 0.5


@dataclass
class RouteOutput:
    """Conditions ``(B, condition_dim)`` of a batch of images and, for routes that caption, each image's caption
    (``None`` for the image-route pairs of a mix)."""

    conditions: torch.Tensor
    captions: list[str | None] | None = None


class ConditionRoute:
    """Computes the conditions of generated images. Subclasses set `name` and implement `__call__`."""

    name: str = ""
    makes_captions: bool = False

    def __call__(self, images: torch.Tensor, adapter: EncoderAdapter, generator: torch.Generator) -> RouteOutput:
        """Conditions of ``images`` ``(B, C, H, W)`` in ``[-1, 1]``; ``generator`` (CPU) seeds any random choice."""
        raise NotImplementedError

    def identity(self) -> dict:
        """What tells pairs of this route apart from another's (recorded in cache manifests and model cards)."""
        return {"route": self.name}

    def check(self, adapter: EncoderAdapter) -> None:
        """Raise ``ValueError`` when the route cannot work with the pipeline's encoder."""

    def to(self, device) -> "ConditionRoute":
        return self


class ImageRoute(ConditionRoute):
    """c = f(G(z)): the encoder's embedding (or class probabilities) of the image."""

    name = "image"

    def __call__(self, images, adapter, generator):
        return RouteOutput(adapter.encode_generated(images))


class CaptionRoute(ConditionRoute):
    """c = text_encoder(caption(G(z))) for every pair (``caption_ratio`` 1), or for a seeded random fraction
    ``caption_ratio`` of the pairs and c = f(G(z)) for the others (a mix).

    Args:
        captioner: A `Captioner`, a callable ``fn(images, generator) -> list[str]``, or a spec for `load_captioner`.
        caption_ratio: Probability that a pair takes the caption route, in ``(0, 1]``.
    """

    makes_captions = True

    def __init__(self, captioner: "Captioner | Callable | str", caption_ratio: float = 1.0):
        if not 0 < caption_ratio <= 1:
            raise ValueError(f"`caption_ratio` must be in (0, 1] (0 is the image route), got {caption_ratio}.")
        self.captioner = load_captioner(captioner)
        self.caption_ratio = float(caption_ratio)
        self.name = "caption" if self.caption_ratio == 1 else "mix"

    def check(self, adapter):
        if adapter.kind != "clip" or adapter.tokenizer is None:
            raise ValueError(
                f"`--condition_route {self.name}` encodes captions with the pipeline's text encoder, but its encoder is a "
                f"{adapter.kind} {'without a tokenizer' if adapter.kind == 'clip' else ''}".rstrip()
                + "."
            )

    def __call__(self, images, adapter, generator):
        count = images.shape[0]
        if self.caption_ratio == 1:
            captioned = torch.ones(count, dtype=torch.bool)
        else:
            captioned = torch.rand(count, generator=generator) < self.caption_ratio
        captions: list[str | None] = [None] * count
        chosen = captioned.nonzero().flatten().tolist()
        if chosen:
            texts = self.captioner(images[chosen], generator)
            if len(texts) != len(chosen) or not all(isinstance(text, str) for text in texts):
                raise ValueError(
                    f"The captioner returned {len(texts)} captions for {len(chosen)} images; expected one string per image."
                )
            for index, text in zip(chosen, texts):
                captions[index] = text
        return RouteOutput(caption_conditions(adapter, captions, lambda rows: images[rows], images.device), captions)

    def identity(self):
        identity = {"route": self.name, "captioner": self.captioner.identity()}
        if self.name == "mix":
            identity["caption_ratio"] = self.caption_ratio
        return identity

    def to(self, device):
        self.captioner.to(device)
        return self


def caption_conditions(
    adapter: EncoderAdapter, captions: list[str | None], render: Callable[[list[int]], torch.Tensor], device
) -> torch.Tensor:
    """Float32 conditions ``(len(captions), condition_dim)`` on ``device``: the text encoder's embedding of each
    caption, and for the pairs without one (``None``, the image-route pairs of a mix) the encoder's embedding of their
    images, ``render(rows)`` ``(len(rows), C, H, W)`` in ``[-1, 1]`` (rendered only for those rows)."""
    conditions = torch.empty(len(captions), adapter.condition_dim, device=device)
    captioned = [row for row, caption in enumerate(captions) if caption is not None]
    others = [row for row, caption in enumerate(captions) if caption is None]
    if captioned:
        conditions[captioned] = adapter.encode_prompts([captions[row] for row in captioned], device).to(
            conditions.dtype
        )
    if others:
        conditions[others] = adapter.encode_generated(render(others)).to(conditions.dtype)
    return conditions


class FunctionRoute(ConditionRoute):
    """A custom route ``fn(images in [-1, 1], adapter) -> (B, condition_dim)``, named ``name`` in manifests."""

    def __init__(self, function: Callable[[torch.Tensor, EncoderAdapter], torch.Tensor], name: str | None = None):
        if not callable(function):
            raise ValueError(f"A condition route function must be callable, got {type(function).__name__}.")
        self.function = function
        self.name = name or f"{function.__module__}.{function.__qualname__}"

    def __call__(self, images, adapter, generator):
        return RouteOutput(self.function(images, adapter))


def check_route_arguments(
    route: str, captioner=None, caption_ratio: float | None = None, caption_settings: dict | None = None
) -> float | None:
    """Raise ``ValueError`` naming the argument when the command-line route values cannot go together; return the
    caption fraction of a caption (1) or mix route, ``None`` for the others. The caption decoding settings (keyword
    names, see `TransformersCaptioner`) are checked by `check_caption_settings`, named as ``--caption_*`` options.
    Checks values only: nothing is loaded."""
    if route not in ROUTES and not IMPORT_SPEC.match(route):
        raise ValueError(
            f"`--condition_route` must be 'image', 'caption', 'mix' or 'package.module:function', got {route!r}."
        )
    if route not in ("caption", "mix"):
        given = [
            name
            for name, value in (("--captioner", captioner), ("--caption_ratio", caption_ratio))
            if value is not None
        ]
        given += [f"caption settings ({', '.join(caption_settings)})"] if caption_settings else []
        if given:
            raise ValueError(f"{', '.join(given)} only apply to `--condition_route caption` or `mix`, not {route!r}.")
        return None
    if captioner is None:
        raise ValueError(
            f"`--condition_route {route}` needs `--captioner` (a captioning model, or 'package.module:name')."
        )
    check_caption_settings(caption_settings or {}, option_prefix="--caption_")
    if caption_ratio is not None and (route == "caption" or not 0 < caption_ratio < 1):
        raise ValueError(
            f"`--caption_ratio` is the caption fraction of `--condition_route mix`, strictly between 0 and 1; got "
            f"{caption_ratio} with route {route!r}."
        )
    return 1.0 if route == "caption" else (DEFAULT_CAPTION_RATIO if caption_ratio is None else caption_ratio)


def load_condition_route(
    route: str = "image",
    captioner: "str | Captioner | Callable | None" = None,
    caption_ratio: float | None = None,
    caption_settings: dict | None = None,
) -> ConditionRoute:
    """A route from command-line values (checked by `check_route_arguments`): ``route`` is ``"image"``,
    ``"caption"``, ``"mix"`` or a ``"package.module:function"`` condition function; ``captioner`` and
    ``caption_settings`` go to `load_captioner` (caption and mix only); ``caption_ratio`` is the caption fraction of a
    mix (default 0.5)."""
    ratio = check_route_arguments(route, captioner, caption_ratio, caption_settings)
    if ratio is not None:
        return CaptionRoute(load_captioner(captioner, **(caption_settings or {})), ratio)
    if route == "image":
        return ImageRoute()
    return FunctionRoute(import_object(route, "--condition_route"), route)


__all__ = [
    "ConditionRoute",
    "ImageRoute",
    "CaptionRoute",
    "FunctionRoute",
    "RouteOutput",
    "caption_conditions",
    "check_route_arguments",
    "load_condition_route",
    "ROUTES",
    "DEFAULT_CAPTION_RATIO",
]
