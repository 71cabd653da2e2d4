"""`load_diffusers_generator`: the TR0N generator for any supported diffusers pipeline or autoencoder, chosen from
its ``model_index.json`` (or ``config.json``)."""

import json
import os
from pathlib import Path

from .diffusers_generators import (
    DECODER_CLASSES,
    PIPELINE_KINDS,
    DiffusersGenerator,
    VAEDecoderGenerator,
    read_pipeline_index,
)
from .text_to_image_generators import STABLE_DIFFUSION_KINDS, STABLE_DIFFUSION_XL_KINDS, pipeline_generator_class


SUPPORTED_KINDS_TEXT = (
    ", ".join((*PIPELINE_KINDS, *STABLE_DIFFUSION_KINDS, *STABLE_DIFFUSION_XL_KINDS))
    + " pipelines, pixel-space text-to-image folders (unet = UNet2DConditionModel, text_encoder, tokenizer, "
    f"scheduler, no vae) and {' / '.join(DECODER_CLASSES)} folders"
)


def load_diffusers_generator(name_or_path: str | os.PathLike, **kwargs) -> DiffusersGenerator:
    """The generator for a diffusers pipeline or autoencoder (Hub repo id or folder), chosen by its kind:

    * `DDPMPipeline` / `DDIMPipeline` / `LDMPipeline` -> `DiffusionSamplerGenerator`;
    * `ConsistencyModelPipeline` -> `ConsistencyModelGenerator`;
    * `StableDiffusionPipeline` / `LatentConsistencyModelPipeline`, and pixel-space text-to-image folders ->
      `TextToImageGenerator`; `StableDiffusionXLPipeline` -> `StableDiffusionXLGenerator`;
    * an `AutoencoderKL` / `VQModel` folder -> `VAEDecoderGenerator`.

    Keyword arguments go to that class's ``from_diffusers`` (e.g. ``num_sampler_steps``, and for the text-to-image
    kinds ``generator_prompt``, ``guidance_scale``, ``decoder``). Anything else raises ``ValueError`` listing the
    supported kinds.

    Example:
        ```py
        >>> G = load_diffusers_generator("stabilityai/sd-turbo", num_sampler_steps=1, generator_prompt="")
        >>> images = G.generate(G.sample_latents(1))  # (1, 3, 512, 512) in [-1, 1]
        ```
    """
    folder = Path(name_or_path)
    if folder.is_dir() and not (folder / "model_index.json").is_file() and (folder / "config.json").is_file():
        class_name = json.loads((folder / "config.json").read_text()).get("_class_name")
        if class_name in DECODER_CLASSES:
            return VAEDecoderGenerator.from_diffusers(name_or_path, **kwargs)
    index = read_pipeline_index(name_or_path)
    generator_class = PIPELINE_KINDS.get(index.get("_class_name")) or pipeline_generator_class(index)
    if generator_class is None:
        raise ValueError(
            f"{name_or_path} is a {index.get('_class_name')}; diffusers generators read {SUPPORTED_KINDS_TEXT}."
        )
    return generator_class.from_diffusers(name_or_path, **kwargs)


__all__ = ["SUPPORTED_KINDS_TEXT", "load_diffusers_generator"]
