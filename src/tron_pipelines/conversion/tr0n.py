"""Official TR0N translator checkpoints -> `TranslatorModel`, and assembly of complete `TronPipeline` folders.

The official checkpoints (``model_best.pth`` / ``checkpoint-epoch{N}.pth``) hold ``{"translator_state_dict": ...}``
with keys ``{p}_log_stds (1, 1, D)``, ``shared1``, ``shared2``, ``{p}_layer (K*D, h)`` (component-major rows),
``{p}_mixture_logits (K, h)`` and, for BigGAN, ``y_layer (128, h)``; ``p`` is ``z`` (BigGAN, NVAE) or ``w``
(StyleGAN). They store no hyperparameters: K, D, the condition and hidden sizes are read from the shapes, and the mean
bound tau (2 for BigGAN, none otherwise) must be given.
"""

import copy
import json
import os
from pathlib import Path

import torch

from .. import models
from ..models.translator import TranslatorModel
from ..pipelines.loading import load_components
from ..pipelines.usage import DEFAULT_PROMPT, pipeline_tags, usage_snippet
from ..pretrained import resolve_pretrained_path
from ..schedulers import LangevinScheduler
from ..utils.constants import DIFFUSERS_PREFIX
from .checkpoints import CheckpointMismatchError, TargetTensor, convert_state_dict


# Sampling settings of the method's scripts (tr0n-method.md, section 7); `LangevinScheduler` arguments plus the
# pipeline defaults. Our default initialisation draws from the mixture instead of mixing the means.
SAMPLING_PRESETS = {
    "biggan": {
        "scheduler": {
            "step_size": 5.0,
            "noise_std": 0.01,
            "momentum": 0.99,
            "max_grad_norm": 1.0,
            "clamp_threshold": 2.0,
            "auxiliary_learning_rate": 5e-3,
        },
        "default_num_inference_steps": 100,
        "default_num_augmentations": 50,
    },
    "stylegan": {
        "scheduler": {
            "step_size": 0.1,
            "noise_std": 0.01,
            "momentum": 0.99,
            "max_grad_norm": 1.0,
            "auxiliary_learning_rate": 5e-3,
        },
        "default_num_inference_steps": 100,
        "default_num_augmentations": 50,
    },
    # Diffusion generators (`DiffusionSamplerGenerator`, `ConsistencyModelGenerator`): every Langevin step runs the
    # whole sampler forward and backward, so fewer steps than for a GAN; the latent is the flattened initial noise,
    # thousands of N(0, I) values, which a mild momentum and an unclamped step of about one clipped gradient keep near
    # its typical set. Chosen on `tron-mnist-ddim` (see its model card).
    "diffusion": {
        "scheduler": {"step_size": 1.0, "noise_std": 0.01, "momentum": 0.5, "max_grad_norm": 1.0},
        "default_num_inference_steps": 10,
        "default_num_augmentations": 8,
    },
}
# The method samples NVAE (FFHQ-256) with its StyleGAN settings: step size 0.1, noise 0.01, momentum 0.99, no clamp.
SAMPLING_PRESETS["nvae"] = copy.deepcopy(SAMPLING_PRESETS["stylegan"])


def _latent_prefix(state_dict: dict[str, torch.Tensor]) -> str:
    prefixes = [p for p in ("z", "w") if f"{p}_layer.weight" in state_dict]
    if len(prefixes) != 1:
        raise CheckpointMismatchError(
            "The checkpoint has no (or more than one) latent head: expected exactly one of `z_layer.weight` and "
            f"`w_layer.weight`; found keys {sorted(state_dict)}."
        )
    return prefixes[0]


def translator_config_from_tr0n(state_dict: dict[str, torch.Tensor], latent_threshold: float | None) -> dict:
    """`TranslatorModel` config read from the shapes of an official (GMM) translator state dict."""
    prefix = _latent_prefix(state_dict)
    required = ("shared1.weight", f"{prefix}_log_stds", f"{prefix}_mixture_logits.bias")
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise CheckpointMismatchError(
            f"Not a TR0N mixture translator: missing {missing}. (The non-mixture variant is not supported.)"
        )
    hidden_dim, condition_dim = state_dict["shared1.weight"].shape
    config = {
        "condition_dim": int(condition_dim),
        "hidden_dim": int(hidden_dim),
        "latent_dim": int(state_dict[f"{prefix}_log_stds"].shape[-1]),
        "num_components": int(state_dict[f"{prefix}_mixture_logits.bias"].shape[0]),
        "latent_threshold": latent_threshold,
    }
    if "y_layer.weight" in state_dict:
        config["auxiliary_latent_dims"] = {"y": int(state_dict["y_layer.weight"].shape[0])}
    return config


def convert_tr0n_translator(state_dict: dict[str, torch.Tensor], latent_threshold: float | None) -> TranslatorModel:
    """Map an official translator state dict onto a `TranslatorModel`, checking every key and shape.

    Args:
        state_dict: The checkpoint's ``translator_state_dict``.
        latent_threshold: tau of ``tau * tanh`` on the means: 2.0 for BigGAN translators, ``None`` for StyleGAN/NVAE.
    """
    config = translator_config_from_tr0n(state_dict, latent_threshold)
    prefix = _latent_prefix(state_dict)
    c, h, d, k = config["condition_dim"], config["hidden_dim"], config["latent_dim"], config["num_components"]
    linear = lambda target, source, n_out, n_in: [  # noqa: E731
        TargetTensor(f"{target}.weight", {f"{source}.weight": (n_out, n_in)}),
        TargetTensor(f"{target}.bias", {f"{source}.bias": (n_out,)}),
    ]
    layout = [
        # The original std is exp(log_std) + 1e-6 with log_std of shape (1, 1, D); ours adds the same 1e-6.
        TargetTensor("log_stds", {f"{prefix}_log_stds": (1, 1, d)}, lambda t: t.reshape(d)),
        *linear("trunk_in", "shared1", h, c),
        *linear("trunk_hidden", "shared2", h, h),
        # Rows are component-major (k * D + j), exactly the order of our `view(B, K, D)`.
        *linear("mean_head", f"{prefix}_layer", k * d, h),
        *linear("logit_head", f"{prefix}_mixture_logits", k, h),
    ]
    if "auxiliary_latent_dims" in config:
        layout += linear("auxiliary_heads.y", "y_layer", config["auxiliary_latent_dims"]["y"], h)
    with torch.device("meta"):
        model = TranslatorModel(**config)
    return convert_state_dict(state_dict, layout, model, "a TR0N translator")


def load_tr0n_translator(checkpoint_path: str | os.PathLike, latent_threshold: float | None) -> TranslatorModel:
    """Read an official ``.pth`` (safely, ``weights_only=True``) and convert its translator."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "translator_state_dict" not in checkpoint:
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointMismatchError(f"{checkpoint_path} has no `translator_state_dict` (found {found}).")
    return convert_tr0n_translator(checkpoint["translator_state_dict"], latent_threshold)


# --------------------------------------------------------------------------------------------------------------------
# Assembly


def tron_generator_class(folder: str | os.PathLike) -> type | None:
    """The `TronGenerator` subclass that ``folder/config.json`` names in ``_class_name`` (looked up among
    `tron_pipelines.models`), or ``None`` when the folder has no such config."""
    try:
        class_name = json.loads((Path(folder) / "config.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):  # no file, not JSON, not a JSON object
        return None
    generator_class = getattr(models, class_name, None) if isinstance(class_name, str) else None
    if isinstance(generator_class, type) and issubclass(generator_class, models.TronGenerator):
        return generator_class
    return None


def load_generator(path: str | os.PathLike, **diffusers_kwargs):
    """Load any `TronGenerator` folder, its class named by its ``config.json`` (`tron_generator_class`); or, for
    ``"diffusers:<repo id or folder>"``, turn a diffusers pipeline into G (`load_diffusers_generator`: DDPM / DDIM /
    LDM / consistency-model pipelines, Stable Diffusion / SDXL / pixel-space text-to-image pipelines, or an
    autoencoder), passing ``diffusers_kwargs`` on (e.g. ``num_sampler_steps``, ``generator_prompt``)."""
    if str(path).startswith(DIFFUSERS_PREFIX):
        return models.load_diffusers_generator(str(path)[len(DIFFUSERS_PREFIX) :], **diffusers_kwargs)
    if diffusers_kwargs:
        raise ValueError(
            f"{sorted(diffusers_kwargs)} only apply to `diffusers:` generators, not to the folder {path}."
        )
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"`--generator` {path} is not a generator folder (no config.json); prefix a diffusers pipeline with {DIFFUSERS_PREFIX!r}."
        )
    generator_class = tron_generator_class(path)
    if generator_class is None:
        raise ValueError(f"{config_file} does not name a tron_pipelines generator class in `_class_name`.")
    return generator_class.from_pretrained(path).eval()


ENCODER_COMPONENTS = ("encoder", "tokenizer", "image_processor")
# What a card's usage snippet loads when the pipeline has no Hub id yet.
LOCAL_FOLDER = "path/to/this/folder"
# What `load_encoder` reads, for error messages.
ENCODER_SOURCES = "a pipeline folder or embedded name, a CLIP Hub id or folder, an OpenCLIP or a classifier folder"


def encoder_pipeline_folder(name_or_path: str | os.PathLike) -> Path | None:
    """The saved pipeline whose encoder ``name_or_path`` names, or ``None``: a pipeline folder, an embedded pipeline's
    name, or the ``encoder/`` folder of a pipeline (whose tokenizer and image processor are beside it)."""
    path = Path(resolve_pretrained_path(name_or_path))
    for folder in (path, path.parent) if path.name == "encoder" else (path,):
        if (folder / "model_index.json").is_file():
            return folder
    return None


def load_encoder(name_or_path: str | os.PathLike):
    """Load f with its tokenizer and image processor: those of a saved TronPipeline (a folder, an embedded name such
    as ``"tron-mnist-text"``, or its ``encoder/`` folder), a transformers CLIP (Hub id or folder), an `OpenCLIPEncoder`
    folder, or a `ConvClassifier` folder. Returns ``(encoder, tokenizer or None, image_processor or None)``."""
    from transformers import AutoModel, AutoTokenizer, CLIPImageProcessor

    pipeline_folder = encoder_pipeline_folder(name_or_path)
    if pipeline_folder is not None:
        encoder, tokenizer, image_processor = load_components(pipeline_folder, ENCODER_COMPONENTS)
        if encoder is None:
            raise ValueError(f"the pipeline {pipeline_folder} has no encoder.")
        return encoder, tokenizer, image_processor
    config_file = Path(name_or_path) / "config.json"
    if config_file.is_file():
        class_name = json.loads(config_file.read_text()).get("_class_name")
        if class_name is not None:  # a diffusers-style model of this package
            encoder = getattr(models, class_name).from_pretrained(name_or_path).eval()
            tokenizer = (
                AutoTokenizer.from_pretrained(name_or_path)
                if (Path(name_or_path) / "tokenizer_config.json").is_file()
                else None
            )
            return encoder, tokenizer, None
    encoder = AutoModel.from_pretrained(name_or_path).eval()
    if hasattr(encoder, "get_text_features"):
        return encoder, AutoTokenizer.from_pretrained(name_or_path), CLIPImageProcessor.from_pretrained(name_or_path)
    return encoder, None, None


def assemble_pipeline(
    translator: TranslatorModel,
    generator,
    encoder,
    tokenizer=None,
    image_processor=None,
    preset: str = "biggan",
):
    """A `TronPipeline` of the given parts with a sampling preset's scheduler and defaults (see `SAMPLING_PRESETS`).

    Raises ``ValueError`` when the parts do not fit together (checked before anything is written)."""
    from ..pipelines import TronPipeline

    if preset not in SAMPLING_PRESETS:
        raise ValueError(f"`preset` must be one of {sorted(SAMPLING_PRESETS)}, got {preset!r}.")
    settings = SAMPLING_PRESETS[preset]
    pipe = TronPipeline(
        translator=translator,
        generator=generator,
        encoder=encoder,
        scheduler=LangevinScheduler(**settings["scheduler"]),
        tokenizer=tokenizer,
        image_processor=image_processor,
        default_num_inference_steps=settings["default_num_inference_steps"],
        default_num_augmentations=settings["default_num_augmentations"],
    )
    pipe.check_components(pipe.encoder_adapter)
    return pipe


def pipeline_model_card(
    pipe,
    repo_id: str | None,
    base_models: dict[str, str],
    licenses: dict[str, str],
    translator_notes: str,
    example_prompt: str = DEFAULT_PROMPT,
):
    """A Hub model card (README.md with YAML metadata) for an assembled pipeline.

    Args:
        pipe: The assembled `TronPipeline`.
        repo_id: Hub id the card is for (used in the loading snippet), or ``None``.
        base_models: ``{"generator": id, "encoder": id}`` of the frozen parts.
        licenses: ``{component: license}`` of the base models (their terms carry over to this pipeline).
        translator_notes: How the translator was trained or converted.
        example_prompt: The prompt of the usage snippet, for a text encoder.
    """
    from huggingface_hub import ModelCard, ModelCardData

    scheduler = {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}
    pipeline_tag, condition_tags = pipeline_tags(pipe.encoder_adapter)
    card_data = ModelCardData(
        library_name="tron_pipelines",
        base_model=[m for m in base_models.values() if m],
        tags=["tron", "tr0n", *condition_tags, "langevin", "zero-shot"],
        pipeline_tag=pipeline_tag,
    )
    licence_lines = "\n".join(f"- {name}: {licence}" for name, licence in licenses.items()) or "- see the base models"
    content = f"""---
{card_data.to_yaml()}
---

# TR0N pipeline{f" `{repo_id}`" if repo_id else ""}

A [TR0N](https://arxiv.org/abs/2304.13742) pipeline: the frozen generator `{type(pipe.generator).__name__}`
(`{base_models.get("generator") or "local"}`) made conditional on `{type(pipe.encoder).__name__}`
(`{base_models.get("encoder") or "local"}`) by a translator and Langevin refinement.

{usage_snippet(repo_id or LOCAL_FOLDER, pipe.encoder_adapter, example_prompt)}

## Base models and licences

{licence_lines}

## Translator

{translator_notes}

Mixture components: {pipe.translator.config.num_components}; condition dim {pipe.translator.config.condition_dim};
latent dim {pipe.translator.config.latent_dim}; auxiliary latents {pipe.translator.config.auxiliary_latent_dims or "none"}.

## Default sampling settings

- Langevin steps: {pipe.config.default_num_inference_steps}; augmented copies per image: {pipe.config.default_num_augmentations}
- Scheduler `{type(pipe.scheduler).__name__}`: {json.dumps(scheduler, sort_keys=True)}
"""
    return ModelCard(content)


__all__ = [
    "ENCODER_SOURCES",
    "SAMPLING_PRESETS",
    "assemble_pipeline",
    "convert_tr0n_translator",
    "encoder_pipeline_folder",
    "load_encoder",
    "load_generator",
    "load_tr0n_translator",
    "pipeline_model_card",
    "translator_config_from_tr0n",
]
