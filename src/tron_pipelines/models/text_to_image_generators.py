"""Text-conditional diffusers models as TR0N generators: Stable Diffusion 1.x / 2.x / Turbo / LCM, SDXL, and
pixel-space text-to-image UNets.

A text-to-image diffusion model sampled deterministically from ``x_T = z`` for a fixed prompt is a pushforward of
N(0, I), the kind of G TR0N needs:

* `TextToImageGenerator`: a `UNet2DConditionModel` on the hidden states of one CLIP text encoder, with an
  `AutoencoderKL` (or `AutoencoderTiny`) decoder after the sampler (Stable Diffusion 1.x / 2.x, SD-Turbo, LCM
  distillations: what `StableDiffusionPipeline` returns for the same initial noise, prompt, steps and guidance), or
  without one (a pixel-space text-to-image UNet: the sampler's output is the image).
* `StableDiffusionXLGenerator`: SDXL's two text encoders, pooled text embeddings and size conditioning (SDXL,
  SDXL-Turbo: what `StableDiffusionXLPipeline` returns).

The prompt G renders is ``generator_prompt`` (a config value, ``""`` by default: G is then an unconditional
pushforward, TR0N's setting), or a call's own prompt through `conditioned_on` (the per-call view `TronPipeline` uses
with ``condition_generator_on_prompt=True``: reward-based noise optimisation of a text-to-image model, ReNO's setting).
The latent is the flattened initial noise, prior N(0, I): 4 x 64 x 64 = 16,384 values for a 512 px Stable Diffusion.

Deterministic sampling: DDIM (eta 0) and the ODE variants of DPM-Solver draw no noise; Euler draws noise it never
adds (``s_churn = 0``); Euler-ancestral adds fresh noise between steps (none at its last step, so one step is
deterministic), and so does LCM; for those the noise between steps is a fixed draw, the same for every image and call
(``noise_seed``), as for `ConsistencyModelGenerator`. Classifier-free guidance runs when ``guidance_scale > 1``
(off by default: the Turbo and LCM models are sampled without it); a UNet with a guidance embedding
(``time_cond_proj_dim``, LCM distillations) receives ``guidance_scale`` through it instead.
"""

import inspect
import os
from dataclasses import dataclass, replace

import diffusers
import torch
import transformers
from diffusers import ModelMixin  # noqa: F401  (diffusers' loader looks the base class up in this module)
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .diffusers_generators import (
    UNetSamplerGenerator,
    assemble_with_modules,
    build_scheduler,
    fixed_noise_generators,
    keep_decoder_only,
    public_config,
    read_pipeline_index,
)


# Schedulers whose sampling is a function of x_T: DDIM (eta 0) and DPM-Solver's ODE variants draw no noise, Euler
# (s_churn 0) draws noise it never adds, and Euler-ancestral and LCM get a fixed noise draw per step (`noise_seed`).
TEXT_TO_IMAGE_SCHEDULERS = (
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "LCMScheduler",
)
TEXT_TO_IMAGE_DECODERS = ("AutoencoderKL", "AutoencoderTiny")
TEXT_ENCODER_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")
# `model_index.json` kinds of the pipelines each generator reads (and equals).
STABLE_DIFFUSION_KINDS = ("StableDiffusionPipeline", "LatentConsistencyModelPipeline")
STABLE_DIFFUSION_XL_KINDS = ("StableDiffusionXLPipeline",)


@dataclass
class PromptConditioning:
    """What a text-conditional UNet receives for a batch of prompts (one row per prompt or per image).

    Args:
        hidden_states: ``(B, L, D)`` text-encoder hidden states (cross-attention context).
        pooled: ``(B, P)`` pooled text embeddings (SDXL), else ``None``.
        negative_hidden_states / negative_pooled: The same for the unconditional branch of classifier-free guidance
            (``None`` without guidance).
    """

    hidden_states: torch.Tensor
    pooled: torch.Tensor | None = None
    negative_hidden_states: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None

    def _map(self, function) -> "PromptConditioning":
        return PromptConditioning(
            *(
                None if value is None else function(value)
                for value in (self.hidden_states, self.pooled, self.negative_hidden_states, self.negative_pooled)
            )
        )

    def repeat_interleave(self, repeats: int) -> "PromptConditioning":
        """Every row ``repeats`` times in a row (the images of one prompt)."""
        return self._map(lambda tensor: tensor.repeat_interleave(repeats, dim=0))

    def for_batch(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> "PromptConditioning":
        """Rows for a batch of ``batch_size`` images on ``device`` in ``dtype``: one row is broadcast to all."""
        rows = self.hidden_states.shape[0]
        if rows not in (1, batch_size):
            raise ValueError(f"The generator is conditioned on {rows} prompts (rows), but the batch has {batch_size}.")
        return self._map(lambda tensor: tensor.to(device=device, dtype=dtype).expand(batch_size, *tensor.shape[1:]))


class PromptConditionedGenerator:
    """A text-to-image generator conditioned on the prompts of one call: ``generate`` renders with them, every other
    attribute is the generator's own (latents, priors, dtype, device...). Nothing of the generator is changed, so
    calls with different prompts may run at once on one generator."""

    def __init__(self, generator: "TextToImageGenerator", conditioning: PromptConditioning):
        self.generator = generator
        self.conditioning = conditioning

    def __getattr__(self, name: str):
        # Called only for names the view lacks; `generator` itself is missing only while copying or unpickling.
        if name == "generator":
            raise AttributeError(name)
        return getattr(self.generator, name)

    def generate(self, latents: torch.Tensor) -> torch.Tensor:
        """Packed latents ``(B, latent_dim)`` -> images ``(B, C, H, W)`` in ``[-1, 1]``, row ``i`` for prompt row
        ``i``. Through the generator's ``__call__``, so that hooks on it (model CPU offload) see the call."""
        return self.generator(latents, conditioning=self.conditioning)


def guidance_scale_embedding(guidance_scale: float, batch_size: int, embedding_dim: int) -> torch.Tensor:
    """``(batch_size, embedding_dim)`` sinusoidal embedding of ``w = guidance_scale - 1`` (scaled by 1000), the
    timestep condition of UNets distilled with a guidance input (LCM), computed as diffusers' pipelines compute it."""
    w = torch.tensor(guidance_scale - 1.0).repeat(batch_size) * 1000.0
    half_dim = embedding_dim // 2
    # The frequency step in float32, as diffusers computes it (its rounding moves the sines by up to 1e-3 at w = 7).
    step = torch.log(torch.tensor(10000.0)) / (half_dim - 1)
    frequencies = torch.exp(torch.arange(half_dim, dtype=torch.float32) * -step)
    angles = w[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return torch.nn.functional.pad(embedding, (0, embedding_dim % 2))


def text_tower(text_encoder) -> transformers.PreTrainedModel:
    """A transformers CLIP text encoder as it conditions a UNet: a `CLIPTextModel` / `CLIPTextModelWithProjection`
    as is, the text tower of a `CLIPModel` (a `CLIPTextModel` since transformers 5) itself, shared, not copied."""
    if isinstance(text_encoder, transformers.CLIPModel):
        text_encoder = text_encoder.text_model
    if type(text_encoder).__name__ not in TEXT_ENCODER_CLASSES:
        raise ValueError(
            f"The text encoder must be one of {TEXT_ENCODER_CLASSES} or a `CLIPModel`, got {type(text_encoder).__name__}."
        )
    return text_encoder


def build_text_encoder(text_encoder_class: str, text_encoder_config: dict) -> transformers.PreTrainedModel:
    """A CLIP text encoder of class ``text_encoder_class`` from its config dict (random weights)."""
    if text_encoder_class not in TEXT_ENCODER_CLASSES:
        raise ValueError(f"`text_encoder_class` must be one of {TEXT_ENCODER_CLASSES}, got {text_encoder_class!r}.")
    config = transformers.CLIPTextConfig.from_dict(text_encoder_config)
    return getattr(transformers, text_encoder_class)(config).eval()


def tokenize(tokenizer, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask ``(B, model_max_length)`` of ``prompts``, padded and truncated as diffusers'
    Stable Diffusion pipelines do."""
    tokens = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    return tokens.input_ids.to(device), tokens.attention_mask.to(device)


class TextConditionalSamplerGenerator(UNetSamplerGenerator):
    """The parts shared by `TextToImageGenerator` and `StableDiffusionXLGenerator`: a `UNet2DConditionModel` sampled
    deterministically from ``x_T = z`` on the conditioning of ``generator_prompt`` or of a call's prompts, an optional
    decoder, CLIP text encoder(s) with their tokenizers (saved beside ``config.json``).

    Subclasses list their text encoders in `text_encoder_names` and implement `check_text_conditioning`.
    """

    allowed_schedulers = TEXT_TO_IMAGE_SCHEDULERS
    allowed_decoders = TEXT_TO_IMAGE_DECODERS
    unet_class = "UNet2DConditionModel"
    accepts_prompts = True
    # (text encoder attribute, its tokenizer's attribute) pairs; the config names each encoder's class and config
    # `<attribute>_class` and `<attribute>_config`.
    text_encoder_names: tuple[tuple[str, str], ...] = ()

    def __init__(
        self,
        unet_config: dict,
        text_encoders: list[tuple[str, dict]],
        scheduler_class: str,
        scheduler_config: dict | None,
        num_sampler_steps: int,
        timesteps: list[int] | None,
        decoder_class: str | None,
        decoder_config: dict | None,
        generator_prompt: str,
    ):
        super().__init__(
            unet_config,
            scheduler_class,
            scheduler_config,
            len(timesteps) if timesteps else num_sampler_steps,
            decoder_class,
            decoder_config,
        )
        if not isinstance(generator_prompt, str):
            raise ValueError(f"`generator_prompt` must be a string, got {type(generator_prompt).__name__}.")
        if timesteps and "timesteps" not in inspect.signature(self.scheduler.set_timesteps).parameters:
            raise ValueError(
                f"`timesteps` are given, but {scheduler_class}.set_timesteps takes no explicit timesteps."
            )
        for (encoder_name, tokenizer_name), (encoder_class, encoder_config) in zip(
            self.text_encoder_names, text_encoders
        ):
            setattr(self, encoder_name, build_text_encoder(encoder_class, encoder_config))
            # Not part of the config: set by the constructors that load one, saved in its own folder.
            setattr(self, tokenizer_name, None)
        self.check_text_conditioning()

    # Construction ------------------------------------------------------------------------------------------------
    @staticmethod
    def check_unet_config(unet_config: dict) -> None:
        in_channels, out_channels = unet_config.get("in_channels", 4), unet_config.get("out_channels", 4)
        if in_channels != out_channels:
            raise ValueError(
                f"`unet_config` predicts {out_channels} channels for {in_channels}-channel samples (an inpainting or "
                "learned-variance UNet?); the samplers need out_channels == in_channels."
            )
        if unet_config.get("num_class_embeds") is not None or unet_config.get("class_embed_type") is not None:
            raise ValueError(
                "`unet_config` describes a UNet with a class input (an upscaler's noise level?); G cannot supply it."
            )

    @property
    def text_condition_dim(self) -> int:
        """Width of the cross-attention context the text encoder(s) make."""
        return self.text_encoder.config.hidden_size

    def check_text_conditioning(self) -> None:
        """Raise ``ValueError`` when the UNet's conditioning inputs do not fit the text encoder(s)."""
        raise NotImplementedError

    @classmethod
    def from_components(
        cls,
        unet,
        text_encoder,
        tokenizer,
        scheduler,
        vae=None,
        num_sampler_steps: int = 1,
        **settings,
    ) -> "TextToImageGenerator":
        """G from loaded diffusers / transformers parts, sharing their weights.

        Args:
            unet: The `UNet2DConditionModel`.
            text_encoder: A `CLIPTextModel` (or `CLIPTextModelWithProjection`), or a `CLIPModel` whose text tower
                conditions the UNet (a pixel-space model trained on a CLIP's text embeddings).
            tokenizer: Its tokenizer.
            scheduler: Any diffusers scheduler: an allowed one is kept, another (DDPM's ancestral sampler, PNDM) is
                replaced by DDIM on the same training schedule (as `DDIMPipeline` does).
            vae: An `AutoencoderKL` / `AutoencoderTiny` (only its decoder is kept), or ``None`` for pixel space.
            num_sampler_steps / **settings: Config values (``generator_prompt``, ``guidance_scale``, ``timesteps``,
                ``noise_seed``, ``scheduler_class`` to choose another sampler).
        """
        return cls._assemble(
            unet, scheduler, vae, num_sampler_steps, settings, text_encoder=text_encoder, tokenizer=tokenizer
        )

    @classmethod
    def _assemble(cls, unet, scheduler, vae, num_sampler_steps, settings, **text_parts):
        scheduler_class = settings.pop("scheduler_class", None)
        if scheduler_class is None:
            source_class = type(scheduler).__name__
            scheduler_class = source_class if source_class in cls.allowed_schedulers else "DDIMScheduler"
        scheduler_overrides = settings.pop("scheduler_overrides", None) or {}
        sampler = build_scheduler(
            scheduler_class, {**public_config(scheduler.config), **scheduler_overrides}, cls.allowed_schedulers
        )
        modules = {"unet": unet}
        config = {
            "unet_config": public_config(unet.config),
            "scheduler_class": scheduler_class,
            "scheduler_config": public_config(sampler.config),
            "num_sampler_steps": num_sampler_steps,
            **settings,
        }
        for encoder_name, tokenizer_name in cls.text_encoder_names:
            encoder = text_tower(text_parts[encoder_name])
            modules[encoder_name], modules[tokenizer_name] = encoder, text_parts[tokenizer_name]
            config[f"{encoder_name}_config"] = encoder.config.to_dict()
            config[f"{encoder_name}_class"] = type(encoder).__name__
        if vae is not None:
            modules["decoder"] = keep_decoder_only(vae)
            config.update(decoder_class=type(vae).__name__, decoder_config=public_config(vae.config))
        return assemble_with_modules(cls, config, **modules)

    @classmethod
    def from_diffusers(
        cls,
        name_or_path: str | os.PathLike,
        num_sampler_steps: int = 1,
        generator_prompt: str = "",
        guidance_scale: float = 1.0,
        scheduler_class: str | None = None,
        scheduler_overrides: dict | None = None,
        timesteps: list[int] | None = None,
        noise_seed: int = 0,
        decoder: str | os.PathLike | ModelMixin | None = None,
        **loading_kwargs,
    ):
        """G from a diffusers text-to-image pipeline (Hub repo id or folder), with diffusers' and transformers'
        loaders. `TextToImageGenerator` reads `StableDiffusionPipeline` (SD 1.x / 2.x, ``stabilityai/sd-turbo``),
        `LatentConsistencyModelPipeline` and pixel-space folders (``unet``, ``text_encoder``, ``tokenizer``,
        ``scheduler``, no ``vae``); `StableDiffusionXLGenerator` reads `StableDiffusionXLPipeline`
        (``stabilityai/sdxl-turbo``).

        Args:
            name_or_path: The pipeline.
            num_sampler_steps / generator_prompt / guidance_scale / timesteps / noise_seed: Config values (see the
                class).
            scheduler_class: The sampler (default: the pipeline's own scheduler when it is one of
                `TEXT_TO_IMAGE_SCHEDULERS`, else DDIM built from its config, as `DDIMPipeline` converts any scheduler).
            scheduler_overrides: Scheduler config values to change (e.g. ``{"timestep_spacing": "trailing"}``).
            decoder: An `AutoencoderTiny` (or its repo / folder, e.g. ``"madebyollin/taesd"``) to decode with instead
                of the pipeline's VAE.
            **loading_kwargs: Passed to the loaders (``revision``, ``cache_dir``, ``local_files_only``, ``token``,
                ``variant``...).
        """
        index = read_pipeline_index(name_or_path, **loading_kwargs)
        if pipeline_generator_class(index) is not cls:
            raise ValueError(
                f"{name_or_path} is a {index.get('_class_name')}; `{cls.__name__}` reads {cls.describe_kinds()}."
            )
        unet = diffusers.UNet2DConditionModel.from_pretrained(name_or_path, subfolder="unet", **loading_kwargs)
        scheduler = getattr(diffusers, index["scheduler"][1]).from_pretrained(
            name_or_path, subfolder="scheduler", **loading_kwargs
        )
        text_parts = {}
        for encoder_name, tokenizer_name in cls.text_encoder_names:
            text_parts[encoder_name] = getattr(transformers, index[encoder_name][1]).from_pretrained(
                name_or_path, subfolder=encoder_name, **loading_kwargs
            )
            text_parts[tokenizer_name] = transformers.AutoTokenizer.from_pretrained(
                name_or_path, subfolder=tokenizer_name, **loading_kwargs
            )
        if decoder is not None:
            vae = load_decoder(decoder, **loading_kwargs)
        elif index.get("vae", [None])[0] is not None:
            vae = getattr(diffusers, index["vae"][1]).from_pretrained(name_or_path, subfolder="vae", **loading_kwargs)
        else:
            vae = None
        settings = {
            "generator_prompt": generator_prompt,
            "guidance_scale": guidance_scale,
            "timesteps": timesteps,
            "noise_seed": noise_seed,
            "scheduler_class": scheduler_class,
            "scheduler_overrides": scheduler_overrides,
            **cls.settings_from_index(index),
        }
        return cls._assemble(unet, scheduler, vae, num_sampler_steps, settings, **text_parts)

    @classmethod
    def settings_from_index(cls, index: dict) -> dict:
        """Config values read from a pipeline's ``model_index.json`` (none for Stable Diffusion)."""
        return {}

    @classmethod
    def describe_kinds(cls) -> str:
        """The pipeline kinds `from_diffusers` reads, for error messages."""
        raise NotImplementedError

    def shared_components(self) -> dict:
        parts = super().shared_components()
        for encoder_name, tokenizer_name in self.text_encoder_names:
            parts[encoder_name], parts[tokenizer_name] = getattr(self, encoder_name), getattr(self, tokenizer_name)
        return parts

    def with_decoder(self, decoder: ModelMixin) -> "TextConditionalSamplerGenerator":
        """The same G decoding with ``decoder``, sharing every other part: e.g.
        ``AutoencoderTiny.from_pretrained("madebyollin/taesd")`` (``taesdxl`` for SDXL), a 2.4 M-parameter decoder
        that costs a small fraction of the VAE's time and activation memory at 512 px, with softer detail."""
        if type(decoder).__name__ not in self.allowed_decoders:
            raise ValueError(f"`decoder` must be one of {self.allowed_decoders}, got {type(decoder).__name__}.")
        if decoder.config.latent_channels != self.unet.config.in_channels:
            raise ValueError(
                f"`decoder` reads {decoder.config.latent_channels}-channel latents; the UNet makes "
                f"{self.unet.config.in_channels}."
            )
        generator = self.with_config(
            decoder_class=type(decoder).__name__, decoder_config=public_config(decoder.config)
        )
        generator.decoder = keep_decoder_only(decoder)
        return generator

    # Saving and loading (the tokenizers live beside config.json) ---------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """`ModelMixin.save_pretrained`, plus the tokenizer(s) in their own folders (written first, so that a
        ``push_to_hub=True`` upload includes them)."""
        for _, tokenizer_name in self.text_encoder_names:
            tokenizer = getattr(self, tokenizer_name)
            if tokenizer is None:
                raise ValueError(f"This generator has no `{tokenizer_name}`; set one before saving.")
            tokenizer.save_pretrained(os.path.join(save_directory, tokenizer_name))
        super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args, **kwargs):
        """`ModelMixin.from_pretrained`, plus the tokenizer(s) saved beside the config."""
        generator = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        subfolder = kwargs.get("subfolder")
        hub_kwargs = {
            key: kwargs[key]
            for key in ("cache_dir", "force_download", "local_files_only", "token", "revision")
            if key in kwargs
        }
        for _, tokenizer_name in cls.text_encoder_names:
            setattr(
                generator,
                tokenizer_name,
                transformers.AutoTokenizer.from_pretrained(
                    pretrained_model_name_or_path,
                    subfolder=f"{subfolder}/{tokenizer_name}" if subfolder else tokenizer_name,
                    **hub_kwargs,
                ),
            )
        return generator

    # Prompts -----------------------------------------------------------------------------------------------------
    @property
    def classifier_free_guidance(self) -> bool:
        """Whether the UNet runs twice per step (unconditional and text branch), as diffusers decides it."""
        return self.config.guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None

    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states ``(B, L, D)`` of ``prompts`` (and pooled embeddings ``(B, P)``, or ``None``), on the text
        encoder's device, without gradients."""
        if self.tokenizer is None:
            raise ValueError(
                "This generator has no tokenizer: load it with `from_pretrained` / `from_diffusers`, or set "
                "`generator.tokenizer`."
            )
        input_ids, attention_mask = tokenize(self.tokenizer, prompts, self.text_encoder.device)
        use_mask = getattr(self.text_encoder.config, "use_attention_mask", False)
        with torch.no_grad():
            output = self.text_encoder(input_ids, attention_mask=attention_mask if use_mask else None)
        return output[0], None

    def encode_prompts(self, prompts: list[str]) -> PromptConditioning:
        """The UNet's conditioning for ``prompts`` (one row each), with the empty prompt's as the unconditional branch
        when classifier-free guidance is on."""
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"`prompts` must be a non-empty list of strings, got {prompts!r}.")
        hidden_states, pooled = self.encode_text(prompts)
        conditioning = PromptConditioning(hidden_states, pooled)
        if self.classifier_free_guidance:
            negative_hidden_states, negative_pooled = self.encode_negative(len(prompts), hidden_states, pooled)
            conditioning = replace(
                conditioning, negative_hidden_states=negative_hidden_states, negative_pooled=negative_pooled
            )
        return conditioning

    def encode_negative(self, batch_size: int, hidden_states, pooled):
        """The unconditional branch of classifier-free guidance: the empty prompt's conditioning."""
        return self.encode_text([""] * batch_size)

    def conditioned_on(self, prompts: list[str], num_images_per_prompt: int = 1) -> PromptConditionedGenerator:
        """A per-call view of G rendering prompt ``prompts[i // num_images_per_prompt]`` for image ``i``; the prompts
        are encoded once, here."""
        return PromptConditionedGenerator(
            self, self.encode_prompts(list(prompts)).repeat_interleave(num_images_per_prompt)
        )

    # Sampling ----------------------------------------------------------------------------------------------------
    def timestep_kwargs(self) -> dict:
        return {"timesteps": list(self.config.timesteps)} if self.config.timesteps else super().timestep_kwargs()

    def prepared_scheduler(self):
        scheduler = super().prepared_scheduler()
        # A full schedule from its first timestep, as SDXL's pipeline sets it (Euler's step index then starts at 0).
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        return scheduler

    def step_kwargs(self, batch_size: int, device: torch.device) -> dict:
        # Every scheduler whose step takes a generator gets the fixed per-image ones: Euler-ancestral and LCM add
        # their draws between steps, the others draw nothing or discard the draw, so the global RNG is left alone.
        if "generator" not in inspect.signature(self.scheduler.step).parameters:
            return {}
        return {"generator": fixed_noise_generators(batch_size, self.config.noise_seed)}

    def added_conditions(self, conditioning: PromptConditioning) -> dict | None:
        """The UNet's ``added_cond_kwargs`` for a batch (``None``: Stable Diffusion 1.x / 2.x take none)."""
        return None

    def denoiser(self, conditioning: PromptConditioning):
        """``denoise(model_input, timestep)``: one network evaluation for this conditioning (both branches and their
        guided combination under classifier-free guidance)."""
        guided = self.classifier_free_guidance
        batch_size = conditioning.hidden_states.shape[0]
        context = conditioning.hidden_states
        if guided:
            context = torch.cat([conditioning.negative_hidden_states, context])
        added = self.added_conditions(conditioning)
        timestep_cond = None
        if self.unet.config.time_cond_proj_dim is not None:
            timestep_cond = guidance_scale_embedding(
                self.config.guidance_scale, batch_size, self.unet.config.time_cond_proj_dim
            ).to(device=context.device, dtype=self.unet.dtype)
        guidance_scale = self.config.guidance_scale

        def denoise(model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            if guided:
                model_input = torch.cat([model_input] * 2)
            output = self.unet(
                model_input,
                timestep,
                encoder_hidden_states=context,
                timestep_cond=timestep_cond,
                added_cond_kwargs=added,
            ).sample
            if guided:
                unconditional, text = output.chunk(2)
                output = unconditional + guidance_scale * (text - unconditional)
            return output

        return denoise

    def render(self, latents: torch.Tensor, conditioning: PromptConditioning | None = None) -> torch.Tensor:
        """Latents ``(B, C, H, W)`` -> the sampler's output for ``conditioning`` (default: ``generator_prompt``,
        encoded for this call)."""
        if conditioning is None:
            conditioning = self.encode_prompts([self.config.generator_prompt])
        conditioning = conditioning.for_batch(latents.shape[0], latents.device, self.unet.dtype)
        return self.run_sampler(latents, self.denoiser(conditioning))


class TextToImageGenerator(TextConditionalSamplerGenerator, ConfigMixin):
    r"""A text-conditional diffusion model sampled deterministically from ``x_T = z`` as G: Stable Diffusion 1.x /
    2.x / Turbo / LCM (with a decoder), or a pixel-space text-to-image UNet (without one).

    ``G(z) = clamp(decode(sampler(z, prompt)), -1, 1)``: ``num_sampler_steps`` steps (or the given ``timesteps``) of
    the scheduler from ``x_T = z * init_noise_sigma``, the `UNet2DConditionModel` attending to the CLIP text
    encoder's last hidden states of the prompt, then the decoder applied to ``x_0 / scaling_factor``. The same images
    as `StableDiffusionPipeline` (``output_type="pt"`` mapped to [-1, 1]) given the same ``latents``, prompt, steps
    and guidance. The prompt is ``generator_prompt``, or a call's own through `conditioned_on`.

    Args:
        unet_config: Config of the `UNet2DConditionModel` (``out_channels == in_channels``, ``cross_attention_dim``
            equal to the text encoder's hidden size).
        text_encoder_config: Config (``to_dict()``) of the CLIP text encoder.
        scheduler_class: One of `TEXT_TO_IMAGE_SCHEDULERS` (``"EulerDiscreteScheduler"`` for SD-Turbo,
            ``"LCMScheduler"`` for LCM distillations, ``"DDIMScheduler"`` for a DDPM-trained model).
        scheduler_config: Its config (training noise schedule, prediction type, ``timestep_spacing``...).
        num_sampler_steps: UNet evaluations per image (1 for the Turbo models); ignored when ``timesteps`` is given.
        timesteps: Explicit descending training timesteps (e.g. ``[999, 749, 499, 249]`` for a 4-step DMD2 model),
            for schedulers whose ``set_timesteps`` takes them, or ``None``.
        decoder_class: ``"AutoencoderKL"`` or ``"AutoencoderTiny"`` (TAESD: a much cheaper decoder, see
            `with_decoder`), or ``None`` for a pixel-space model.
        decoder_config: Config of the decoder (only its decoder half is kept).
        generator_prompt: The prompt of G when a call gives none of its own (``""``: unconditional, TR0N's setting).
        guidance_scale: Classifier-free guidance when > 1 (doubles the UNet batch; the negative prompt is ``""``);
            for a UNet with a guidance embedding (``time_cond_proj_dim``, LCM distillations), the embedded guidance
            instead.
        noise_seed: Seed of the fixed noise that Euler-ancestral and LCM add between steps.
        text_encoder_class: ``"CLIPTextModel"`` or ``"CLIPTextModelWithProjection"``.

    The tokenizer is not part of the config: it is saved in a ``tokenizer`` folder beside ``config.json`` and loaded
    back by `from_pretrained`.

    Latent: ``z`` of ``C * H * W`` values (the UNet's sample shape), prior N(0, I).

    Example:
        ```py
        >>> G = load_diffusers_generator("stabilityai/sd-turbo", num_sampler_steps=1)  # generator_prompt=""
        >>> images = G.sample(2, generator=torch.Generator().manual_seed(0))  # (2, 3, 512, 512) in [-1, 1]
        >>> cats = G.conditioned_on(["a photo of a cat"], 2).generate(G.sample_latents(2))
        ```
    """

    text_encoder_names = (("text_encoder", "tokenizer"),)

    @register_to_config
    def __init__(
        self,
        unet_config: dict,
        text_encoder_config: dict,
        scheduler_class: str = "DDIMScheduler",
        scheduler_config: dict | None = None,
        num_sampler_steps: int = 1,
        timesteps: list[int] | None = None,
        decoder_class: str | None = None,
        decoder_config: dict | None = None,
        generator_prompt: str = "",
        guidance_scale: float = 1.0,
        noise_seed: int = 0,
        text_encoder_class: str = "CLIPTextModel",
    ):
        super().__init__(
            unet_config,
            [(text_encoder_class, text_encoder_config)],
            scheduler_class,
            scheduler_config,
            num_sampler_steps,
            timesteps,
            decoder_class,
            decoder_config,
            generator_prompt,
        )

    def check_text_conditioning(self) -> None:
        config = self.unet.config
        if config.cross_attention_dim != self.text_condition_dim:
            raise ValueError(
                f"The UNet attends to {config.cross_attention_dim}-dim context; the text encoder makes "
                f"{self.text_condition_dim}-dim hidden states."
            )
        if config.addition_embed_type is not None:
            raise ValueError(
                f"The UNet takes added conditions ({config.addition_embed_type!r}): use `StableDiffusionXLGenerator` "
                "for SDXL UNets."
            )

    @classmethod
    def describe_kinds(cls) -> str:
        return ", ".join(STABLE_DIFFUSION_KINDS) + " and pixel-space (unet + text_encoder + tokenizer, no vae) folders"


class StableDiffusionXLGenerator(TextConditionalSamplerGenerator, ConfigMixin):
    r"""SDXL as G: two CLIP text encoders (penultimate hidden states, concatenated), the second one's pooled
    projection and the size conditioning (``add_time_ids`` = image size, crop (0, 0), image size) as the UNet's added
    conditions. The same images as `StableDiffusionXLPipeline` (default sizes, ``output_type="pt"`` mapped to
    [-1, 1]) given the same ``latents``, prompt, steps and guidance.

    Args: those of `TextToImageGenerator`, and
        text_encoder_2_config: Config of the second text encoder (a `CLIPTextModelWithProjection`).
        text_encoder_2_class: Its class.
        force_zeros_for_empty_prompt: Under classifier-free guidance, the unconditional branch is all zeros rather
            than the empty prompt's embeddings (SDXL's own setting, read from its ``model_index.json``).

    The tokenizers are saved in ``tokenizer`` and ``tokenizer_2`` beside ``config.json``.
    """

    text_encoder_names = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))

    @register_to_config
    def __init__(
        self,
        unet_config: dict,
        text_encoder_config: dict,
        text_encoder_2_config: dict,
        scheduler_class: str = "EulerDiscreteScheduler",
        scheduler_config: dict | None = None,
        num_sampler_steps: int = 1,
        timesteps: list[int] | None = None,
        decoder_class: str | None = None,
        decoder_config: dict | None = None,
        generator_prompt: str = "",
        guidance_scale: float = 1.0,
        noise_seed: int = 0,
        text_encoder_class: str = "CLIPTextModel",
        text_encoder_2_class: str = "CLIPTextModelWithProjection",
        force_zeros_for_empty_prompt: bool = True,
    ):
        super().__init__(
            unet_config,
            [(text_encoder_class, text_encoder_config), (text_encoder_2_class, text_encoder_2_config)],
            scheduler_class,
            scheduler_config,
            num_sampler_steps,
            timesteps,
            decoder_class,
            decoder_config,
            generator_prompt,
        )

    @property
    def text_condition_dim(self) -> int:
        return self.text_encoder.config.hidden_size + self.text_encoder_2.config.hidden_size

    def check_text_conditioning(self) -> None:
        config = self.unet.config
        if config.cross_attention_dim != self.text_condition_dim:
            raise ValueError(
                f"The UNet attends to {config.cross_attention_dim}-dim context; the two text encoders make "
                f"{self.text_condition_dim}-dim hidden states together."
            )
        if type(self.text_encoder_2).__name__ != "CLIPTextModelWithProjection":
            raise ValueError(
                "`text_encoder_2_class` must be 'CLIPTextModelWithProjection': SDXL's pooled condition is its projection."
            )
        if config.addition_embed_type != "text_time":
            raise ValueError(
                f"An SDXL UNet takes 'text_time' added conditions; this one takes {config.addition_embed_type!r}."
            )
        expected = config.projection_class_embeddings_input_dim
        given = config.addition_time_embed_dim * 6 + self.text_encoder_2.config.projection_dim
        if expected != given:
            raise ValueError(
                f"The UNet's added embedding takes {expected} values; 6 size values x {config.addition_time_embed_dim} "
                f"+ the pooled projection ({self.text_encoder_2.config.projection_dim}) make {given}."
            )

    @classmethod
    def settings_from_index(cls, index: dict) -> dict:
        return {"force_zeros_for_empty_prompt": index.get("force_zeros_for_empty_prompt", True)}

    @classmethod
    def describe_kinds(cls) -> str:
        return ", ".join(STABLE_DIFFUSION_XL_KINDS)

    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.tokenizer is None or self.tokenizer_2 is None:
            raise ValueError("This generator lacks a tokenizer: load it with `from_pretrained` / `from_diffusers`.")
        hidden_states, pooled = [], None
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            input_ids, _ = tokenize(tokenizer, prompts, encoder.device)
            with torch.no_grad():
                output = encoder(input_ids, output_hidden_states=True)
            # The first encoder output that is a vector per prompt is the pooled embedding (the projection's).
            if pooled is None and output[0].ndim == 2:
                pooled = output[0]
            hidden_states.append(output.hidden_states[-2].to(self.text_encoder_2.device))
        return torch.cat(hidden_states, dim=-1), pooled

    def encode_negative(self, batch_size: int, hidden_states, pooled):
        if self.config.force_zeros_for_empty_prompt:
            return torch.zeros_like(hidden_states), torch.zeros_like(pooled)
        return super().encode_negative(batch_size, hidden_states, pooled)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of G's images: the latent's side times the decoder's upsampling (as diffusers' SDXL
        pipeline computes its default size; `AutoencoderTiny` records its decoder's channels as ``block_out_channels``
        for this)."""
        _, height, width = self.latent_shape
        scale = 2 ** (len(self.decoder.config.block_out_channels) - 1)
        return height * scale, width * scale

    def added_conditions(self, conditioning: PromptConditioning) -> dict:
        pooled = conditioning.pooled
        if self.classifier_free_guidance:
            pooled = torch.cat([conditioning.negative_pooled, pooled])
        height, width = self.image_size
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], device=pooled.device, dtype=pooled.dtype)
        return {"text_embeds": pooled, "time_ids": time_ids.expand(pooled.shape[0], -1)}


def load_decoder(decoder, **loading_kwargs) -> ModelMixin:
    """An autoencoder for `TextToImageGenerator.with_decoder`: a model as is, or a repo id / folder whose
    ``config.json`` names `AutoencoderKL` or `AutoencoderTiny`."""
    if isinstance(decoder, ModelMixin):
        return decoder
    class_name = diffusers.AutoencoderTiny.load_config(decoder, **loading_kwargs).get("_class_name")
    if class_name not in TEXT_TO_IMAGE_DECODERS:
        raise ValueError(f"`decoder` {decoder} holds a {class_name}; expected one of {TEXT_TO_IMAGE_DECODERS}.")
    return getattr(diffusers, class_name).from_pretrained(decoder, **loading_kwargs)


def pipeline_generator_class(index: dict) -> type | None:
    """The text-to-image generator class for a pipeline's ``model_index.json``, or ``None``: SDXL kinds ->
    `StableDiffusionXLGenerator`; Stable Diffusion kinds, and folders with a conditional UNet, a text encoder and a
    tokenizer but no VAE (pixel space) -> `TextToImageGenerator`."""
    kind = index.get("_class_name")
    if kind in STABLE_DIFFUSION_XL_KINDS:
        return StableDiffusionXLGenerator
    if kind in STABLE_DIFFUSION_KINDS:
        return TextToImageGenerator
    parts = {name: entry[1] for name, entry in index.items() if isinstance(entry, list) and len(entry) == 2}
    if parts.get("unet") == "UNet2DConditionModel" and {"text_encoder", "tokenizer", "scheduler"} <= parts.keys():
        if "vae" not in parts and "text_encoder_2" not in parts:
            return TextToImageGenerator
    return None


__all__ = [
    "PromptConditionedGenerator",
    "PromptConditioning",
    "StableDiffusionXLGenerator",
    "TEXT_TO_IMAGE_SCHEDULERS",
    "TextConditionalSamplerGenerator",
    "TextToImageGenerator",
    "guidance_scale_embedding",
    "pipeline_generator_class",
]
