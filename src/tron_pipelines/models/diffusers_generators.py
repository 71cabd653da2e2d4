"""Diffusers models as TR0N generators: deterministic diffusion samplers, latent diffusion, consistency models and VAE
decoders.

TR0N needs a *pushforward* generator: a deterministic, differentiable map ``x = G(z)`` from latents with a known prior.
A diffusion model sampled with a deterministic sampler from ``x_T = z`` is one:

* `DiffusionSamplerGenerator`: a `UNet2DModel` run for ``num_sampler_steps`` steps of DDIM with eta = 0 (as
  `DDIMPipeline` does) or of `DPMSolverMultistepScheduler` (an ODE solver), from ``x_T = z``. With a `VQModel` or
  `AutoencoderKL` decoder after the sampler it is unconditional latent diffusion, as `LDMPipeline` does it.
* `ConsistencyModelGenerator`: a `UNet2DModel` consistency model with `CMStochasticIterativeScheduler`, one step by
  default (as `ConsistencyModelPipeline` does it).
* `VAEDecoderGenerator`: the decoder of an `AutoencoderKL` or `VQModel` with a standard normal prior over its latent.

The latent is the flattened initial noise (for the VAE: the flattened latent), one vector of ``C * H * W`` values per
image with prior N(0, I): 3,072 for a 32 px RGB model, 196,608 for 256 px, 12,288 for a 64 x 64 x 3 latent. The
translator's mean head grows with it (``hidden_dim * num_components * latent_dim`` weights).

Gradients flow through every sampler step. ``enable_gradient_checkpointing()`` recomputes each step's network
evaluation (and the decoder) in the backward pass instead of storing its activations, so the activation memory of
a Langevin step is about one UNet pass whatever the number of sampler steps, for about one more forward pass per
sampler step.
"""

import copy
import math
import os

import diffusers
import torch
from diffusers import ModelMixin  # noqa: F401  (diffusers' loader looks the base class up in this module)
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .generator import LatentSpec, TronGenerator


# Schedulers whose `step` draws no random numbers (DDIM is run with its default eta = 0, the DPM-Solver's ODE
# variants are deterministic): G(z) is then a function of x_T alone.
DETERMINISTIC_SAMPLER_SCHEDULERS = ("DDIMScheduler", "DPMSolverMultistepScheduler")
CONSISTENCY_SCHEDULERS = ("CMStochasticIterativeScheduler",)
DECODER_CLASSES = ("AutoencoderKL", "VQModel")
STOCHASTIC_DPM_SOLVER_ALGORITHMS = ("sde-dpmsolver", "sde-dpmsolver++")


def public_config(config) -> dict:
    """A diffusers config without its private entries (``_class_name``, ``_diffusers_version``, ...)."""
    return {key: value for key, value in dict(config).items() if not key.startswith("_")}


def build_scheduler(scheduler_class: str, scheduler_config: dict | None, allowed: tuple[str, ...]):
    """A diffusers scheduler of class ``scheduler_class`` from ``scheduler_config``, refusing classes outside
    ``allowed`` and DPM-Solver's stochastic (SDE) variants."""
    if scheduler_class not in allowed:
        raise ValueError(f"`scheduler_class` must be one of {allowed}, got {scheduler_class!r}.")
    scheduler = getattr(diffusers, scheduler_class).from_config(scheduler_config or {})
    algorithm = scheduler.config.get("algorithm_type")
    if algorithm in STOCHASTIC_DPM_SOLVER_ALGORITHMS:
        raise ValueError(
            f"`scheduler_config` has algorithm_type={algorithm!r}, a stochastic sampler: G would not be a function of "
            "x_T. Use an ODE variant such as 'dpmsolver++'."
        )
    return scheduler


def build_decoder(decoder_class: str, decoder_config: dict, allowed: tuple[str, ...] = DECODER_CLASSES) -> ModelMixin:
    """The decoder half of an autoencoder of a class in ``allowed`` built from its config (the encoder half is
    dropped)."""
    if decoder_class not in allowed:
        raise ValueError(f"`decoder_class` must be one of {allowed}, got {decoder_class!r}.")
    return keep_decoder_only(getattr(diffusers, decoder_class).from_config(decoder_config))


def keep_decoder_only(autoencoder: ModelMixin) -> ModelMixin:
    """Drop the encoder half of an autoencoder (G only decodes), keeping ``decode`` intact."""
    autoencoder.encoder = None
    if hasattr(autoencoder, "quant_conv"):  # `AutoencoderTiny` has none
        autoencoder.quant_conv = None
    return autoencoder


def fixed_noise_generators(batch_size: int, seed: int) -> list[torch.Generator]:
    """One CPU generator per image, all seeded with ``seed``: a scheduler that draws noise between steps then adds
    the same sequence to every image whatever the batch it is in (diffusers draws each image's noise from its own
    generator when given a list), so the sampler stays a function of its initial noise."""
    return [torch.Generator().manual_seed(seed) for _ in range(batch_size)]


def check_unconditional_unet(unet_config: dict) -> None:
    """Refuse UNets that need a condition or predict more channels than they denoise."""
    if unet_config.get("num_class_embeds") is not None or unet_config.get("class_embed_type") is not None:
        raise ValueError(
            "`unet_config` describes a class-conditional UNet (num_class_embeds / class_embed_type is set). TR0N needs "
            "an unconditional generator; a conditional UNet without a null class has no unconditional distribution."
        )
    in_channels, out_channels = unet_config.get("in_channels", 3), unet_config.get("out_channels", 3)
    if in_channels != out_channels:
        raise ValueError(
            f"`unet_config` predicts {out_channels} channels for {in_channels}-channel samples (a learned variance?); "
            "the deterministic samplers need out_channels == in_channels."
        )


def sample_shape(unet_config: dict) -> tuple[int, int, int]:
    """``(C, H, W)`` of the samples a `UNet2DModel` config denoises."""
    size = unet_config.get("sample_size")
    if size is None:
        raise ValueError("`unet_config` has no `sample_size`; the latent shape of G is unknown.")
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return unet_config.get("in_channels", 3), height, width


def read_pipeline_index(name_or_path: str | os.PathLike, **loading_kwargs) -> dict:
    """``model_index.json`` of a diffusers pipeline repo id or folder."""
    return diffusers.DiffusionPipeline.load_config(name_or_path, **loading_kwargs)


class DiffusersGenerator(TronGenerator):
    """Shared parts of the generators of this module: a single latent ``z`` of shape `latent_shape` flattened, prior
    N(0, I); an optional decoder; per-stage gradient checkpointing; images clamped to ``[-1, 1]`` as diffusers'
    pipelines clamp them.

    Subclasses set ``self.decoder`` (or ``None``) and implement `latent_shape` and `render`.
    """

    _supports_gradient_checkpointing = True

    def __init__(self):
        super().__init__()
        self.gradient_checkpointing = False

    def _set_gradient_checkpointing(
        self, enable: bool = True, gradient_checkpointing_func=torch.utils.checkpoint.checkpoint
    ):
        # Only this generator's stages (each network evaluation of the sampler, the decoder). diffusers' default sets
        # the flag on every submodule that has one, which would also checkpoint every block of the UNet inside a
        # stage that is already recomputed as a whole: a third forward pass for little less memory.
        self._gradient_checkpointing_func = gradient_checkpointing_func
        self.gradient_checkpointing = enable

    def checkpointed(self, function, *args):
        """``function(*args)``, recomputed in the backward pass instead of storing its activations when gradient
        checkpointing is enabled and gradients are being recorded."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(function, *args)
        return function(*args)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the latent before flattening."""
        raise NotImplementedError

    @property
    def latent_specs(self) -> list[LatentSpec]:
        return [LatentSpec("z", math.prod(self.latent_shape))]

    def render(self, latents: torch.Tensor, **render_kwargs) -> torch.Tensor:
        """Latents ``(B, C, H, W)`` -> images (or decoder latents) ``(B, C', H', W')`` before decoding and clamping."""
        raise NotImplementedError

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        # The scaling of diffusers' latent pipelines: the decoder's latents are scaled by `scaling_factor` (and, for
        # an autoencoder that records per-channel latent statistics, normalised by them, as SDXL's pipeline undoes);
        # the decoder runs in its own dtype.
        config = self.decoder.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, -1, 1, 1)
            mean = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(shape)
            std = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(shape)
            latents = latents * std / config.scaling_factor + mean
        else:
            latents = latents / config.scaling_factor
        return self.decoder.decode(latents.to(self.decoder.dtype)).sample

    def forward(self, latents: torch.Tensor, **render_kwargs) -> torch.Tensor:
        """Flat latents ``(B, latent_dim)`` -> images ``(B, C, H, W)`` in ``[-1, 1]``. Keyword arguments go to
        `render` (a text-to-image G's per-call prompt conditioning)."""
        output = self.render(latents.view(latents.shape[0], *self.latent_shape), **render_kwargs)
        if self.decoder is not None:
            output = self.checkpointed(self._decode, output)
        return output.clamp(-1, 1)

    def generate(self, latents: torch.Tensor) -> torch.Tensor:
        # Through `__call__`, so that hooks on the module (model CPU offload) see the call.
        return self(latents)


class UNetSamplerGenerator(DiffusersGenerator):
    """The sampler loop shared by `DiffusionSamplerGenerator` and `ConsistencyModelGenerator`.

    From ``x_T = z * init_noise_sigma``, for every timestep: ``scale_model_input``, the UNet, ``scheduler.step`` (as
    diffusers' pipelines do). The UNet runs in the weights' dtype (or under autocast), and its output is cast to the
    sample's dtype, so that the sampler state stays in the dtype of the latents (float32 in `TronPipeline`). A fresh
    copy of the scheduler serves every call: G keeps no state between calls.
    """

    allowed_schedulers: tuple[str, ...] = ()
    allowed_decoders: tuple[str, ...] = DECODER_CLASSES
    # The diffusers class of ``self.unet``.
    unet_class: str = "UNet2DModel"

    def __init__(
        self,
        unet_config: dict,
        scheduler_class: str,
        scheduler_config: dict | None,
        num_sampler_steps: int,
        decoder_class: str | None = None,
        decoder_config: dict | None = None,
    ):
        super().__init__()
        if not isinstance(num_sampler_steps, int) or num_sampler_steps < 1:
            raise ValueError(f"`num_sampler_steps` must be a positive integer, got {num_sampler_steps!r}.")
        self.check_unet_config(unet_config)
        self.scheduler = build_scheduler(scheduler_class, scheduler_config, self.allowed_schedulers)
        self.unet = getattr(diffusers, self.unet_class).from_config(unet_config)
        self.decoder = None
        if decoder_class is not None:
            self.decoder = build_decoder(decoder_class, decoder_config, self.allowed_decoders)
            latent_channels = self.decoder.config.latent_channels
            if latent_channels != self.unet.config.in_channels:
                raise ValueError(
                    f"The decoder reads {latent_channels}-channel latents; the UNet makes {self.unet.config.in_channels}."
                )

    @staticmethod
    def check_unet_config(unet_config: dict) -> None:
        """Raise ``ValueError`` for a UNet this generator cannot sample."""
        check_unconditional_unet(unet_config)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return sample_shape(self.unet.config)

    def timestep_kwargs(self) -> dict:
        """Arguments of ``scheduler.set_timesteps`` (the timesteps stay on the CPU, as diffusers' pipelines leave them)."""
        return {"num_inference_steps": self.config.num_sampler_steps}

    def prepared_scheduler(self):
        """A fresh copy of the scheduler with this generator's timesteps set."""
        scheduler = copy.deepcopy(self.scheduler)
        scheduler.set_timesteps(**self.timestep_kwargs())
        return scheduler

    def step_kwargs(self, batch_size: int, device: torch.device) -> dict:
        """Extra keyword arguments of ``scheduler.step`` for one call (none: the deterministic samplers draw nothing)."""
        return {}

    def shared_components(self) -> dict:
        """The loaded parts that `with_config` hands to the new generator instead of building them again."""
        return {"unet": self.unet, "decoder": self.decoder}

    def with_config(self, **changes) -> "UNetSamplerGenerator":
        """The same G with some config values changed, sharing this one's networks (no copy of the weights) and its
        gradient checkpointing setting."""
        config = {**public_config(self.config), **changes}
        generator = assemble_with_modules(type(self), config, **self.shared_components())
        if self.gradient_checkpointing:
            generator.enable_gradient_checkpointing()
        return generator.train(self.training)

    def with_num_sampler_steps(self, num_sampler_steps: int) -> "UNetSamplerGenerator":
        """The same G with another number of sampler steps (see `with_config`)."""
        return self.with_config(num_sampler_steps=num_sampler_steps)

    @classmethod
    def _from_pipeline_components(
        cls,
        name_or_path,
        index: dict,
        num_sampler_steps: int,
        scheduler_class: str,
        scheduler_overrides: dict | None,
        decoder_component: str | None,
        loading_kwargs: dict,
        **generator_kwargs,
    ):
        """Load the UNet, the scheduler config and the decoder with diffusers' loaders, and assemble G around them
        (no second random initialisation: the loaded modules are put in place)."""
        unet = getattr(diffusers, cls.unet_class).from_pretrained(name_or_path, subfolder="unet", **loading_kwargs)
        source_class = index["scheduler"][1]
        source_config = public_config(
            getattr(diffusers, source_class).load_config(name_or_path, subfolder="scheduler", **loading_kwargs)
        )
        # The pipeline's scheduler (DDPM's, say) only gives the training noise schedule and prediction type; the
        # sampler is rebuilt from it with `from_config`, as `DDIMPipeline` rebuilds any scheduler it is given, and
        # its own config (without the source's other entries) is what G stores.
        scheduler = build_scheduler(
            scheduler_class, {**source_config, **(scheduler_overrides or {})}, cls.allowed_schedulers
        )
        scheduler_config = public_config(scheduler.config)
        decoder = None
        config = dict(
            unet_config=public_config(unet.config),
            scheduler_class=scheduler_class,
            scheduler_config=scheduler_config,
            num_sampler_steps=num_sampler_steps,
            **generator_kwargs,
        )
        if decoder_component is not None:
            decoder_class = index[decoder_component][1]
            decoder = keep_decoder_only(
                getattr(diffusers, decoder_class).from_pretrained(
                    name_or_path, subfolder=decoder_component, **loading_kwargs
                )
            )
            config.update(decoder_class=decoder_class, decoder_config=public_config(decoder.config))
        return assemble_with_modules(cls, config, unet=unet, decoder=decoder)

    def _denoise(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep).sample

    def render(self, latents: torch.Tensor) -> torch.Tensor:
        return self.run_sampler(latents, self._denoise)

    def run_sampler(self, latents: torch.Tensor, denoise) -> torch.Tensor:
        """The sampler loop from ``x_T = latents * init_noise_sigma`` ``(B, C, H, W)``, with ``denoise(model_input,
        timestep)`` as the network evaluation of every step (checkpointed as a whole when enabled)."""
        scheduler = self.prepared_scheduler()
        sample = latents * scheduler.init_noise_sigma
        step_kwargs = self.step_kwargs(latents.shape[0], latents.device)
        for timestep in scheduler.timesteps:
            model_input = scheduler.scale_model_input(sample, timestep).to(self.unet.dtype)
            model_output = self.checkpointed(denoise, model_input, timestep)
            sample = scheduler.step(model_output.to(sample.dtype), timestep, sample, **step_kwargs).prev_sample
        return sample


class DiffusionSamplerGenerator(UNetSamplerGenerator, ConfigMixin):
    r"""A diffusion model sampled deterministically from ``x_T = z`` as G; with a decoder, latent diffusion.

    ``G(z) = clamp(decode(sampler(z)), -1, 1)``: DDIM with eta = 0 (or an ODE DPM-Solver) for ``num_sampler_steps``
    steps from ``x_T = z`` reshaped to the UNet's sample shape, then, for latent diffusion, the decoder applied to
    ``x_0 / scaling_factor``. The same images as `DDIMPipeline` (eta 0) or `LDMPipeline` from the same initial noise.

    Args:
        unet_config: Config of the `UNet2DModel` (unconditional, ``out_channels == in_channels``).
        scheduler_class: ``"DDIMScheduler"`` (default) or ``"DPMSolverMultistepScheduler"``.
        scheduler_config: Its config (the training noise schedule, prediction type, timestep spacing, clipping...).
            Clipping of the predicted sample (``clip_sample``) stops gradients through the clipped pixels.
        num_sampler_steps: Sampler steps per image (each costs a UNet forward, and a backward in Langevin).
        decoder_class: ``"VQModel"`` or ``"AutoencoderKL"`` for latent diffusion, else ``None``. Only the decoder
            half is kept. A `VQModel` quantises before decoding, so gradients through it are straight-through.
        decoder_config: Config of the decoder.

    Latent: ``z`` of ``C * H * W`` values (the UNet's sample shape), prior N(0, I).

    Example:
        ```py
        >>> G = DiffusionSamplerGenerator.from_diffusers("google/ddpm-cifar10-32", num_sampler_steps=10)
        >>> images = G.sample(4, generator=torch.Generator().manual_seed(0))  # (4, 3, 32, 32) in [-1, 1]
        ```
    """

    allowed_schedulers = DETERMINISTIC_SAMPLER_SCHEDULERS

    @register_to_config
    def __init__(
        self,
        unet_config: dict,
        scheduler_class: str = "DDIMScheduler",
        scheduler_config: dict | None = None,
        num_sampler_steps: int = 10,
        decoder_class: str | None = None,
        decoder_config: dict | None = None,
    ):
        super().__init__(
            unet_config, scheduler_class, scheduler_config, num_sampler_steps, decoder_class, decoder_config
        )

    @classmethod
    def from_diffusers(
        cls,
        name_or_path: str | os.PathLike,
        num_sampler_steps: int = 10,
        scheduler_class: str = "DDIMScheduler",
        scheduler_overrides: dict | None = None,
        **loading_kwargs,
    ) -> "DiffusionSamplerGenerator":
        """G from a diffusers `DDPMPipeline`, `DDIMPipeline` or `LDMPipeline` (Hub repo id or folder).

        Args:
            name_or_path: The pipeline.
            num_sampler_steps: Sampler steps of G.
            scheduler_class: The deterministic sampler, built from the pipeline's scheduler config with
                ``from_config`` (DDPM's ancestral sampling is not deterministic, so it is never kept).
            scheduler_overrides: Scheduler config values to change, e.g. ``{"clip_sample": False}`` to keep
                gradients through every pixel, or ``{"timestep_spacing": "trailing"}`` for few steps.
            **loading_kwargs: Passed to diffusers' ``from_pretrained`` / ``load_config`` (``revision``,
                ``cache_dir``, ``local_files_only``, ``token``...).
        """
        index = read_pipeline_index(name_or_path, **loading_kwargs)
        kind = index.get("_class_name")
        if PIPELINE_KINDS.get(kind) is not DiffusionSamplerGenerator:  # the table below, read at call time
            raise ValueError(f"{name_or_path} is a {kind}; `DiffusionSamplerGenerator` reads {PIPELINE_KINDS_TEXT}.")
        decoder_component = "vqvae" if kind == "LDMPipeline" else None
        return cls._from_pipeline_components(
            name_or_path,
            index,
            num_sampler_steps,
            scheduler_class,
            scheduler_overrides,
            decoder_component,
            loading_kwargs,
        )


class ConsistencyModelGenerator(UNetSamplerGenerator, ConfigMixin):
    r"""A consistency model as G: `UNet2DModel` + `CMStochasticIterativeScheduler`, one step by default.

    One step maps ``x_T = sigma_max * z`` straight to an image, a deterministic function of ``z``. Between several
    steps the scheduler adds fresh noise; here that noise is a fixed draw, the same for every image and every call, so
    G stays a function of ``z``: step ``k`` (0-based, ``k < num_sampler_steps - 1``) adds the ``(k + 1)``-th
    ``(1, C, H, W)`` standard normal draw of a CPU ``torch.Generator`` seeded with ``noise_seed`` (what
    `ConsistencyModelPipeline` adds to an image when it is given a generator with that seed for that image).

    Args:
        unet_config: Config of the (unconditional) consistency `UNet2DModel`.
        scheduler_config: Config of the `CMStochasticIterativeScheduler`.
        num_sampler_steps: Consistency steps (1 = single-step generation); ignored when ``timesteps`` is given.
        timesteps: Explicit descending training timesteps, e.g. ``[22, 0]`` for the two-step samples of the
            `openai/diffusers-cd_*` models, or ``None``.
        noise_seed: Seed of the fixed noise added between steps.
        scheduler_class: ``"CMStochasticIterativeScheduler"`` (the only choice; stored for symmetry with the other
            generators).

    Latent: ``z`` of ``C * H * W`` values, prior N(0, I).
    """

    allowed_schedulers = CONSISTENCY_SCHEDULERS

    @register_to_config
    def __init__(
        self,
        unet_config: dict,
        scheduler_config: dict | None = None,
        num_sampler_steps: int = 1,
        timesteps: list[int] | None = None,
        noise_seed: int = 0,
        scheduler_class: str = "CMStochasticIterativeScheduler",
    ):
        super().__init__(
            unet_config, scheduler_class, scheduler_config, len(timesteps) if timesteps else num_sampler_steps
        )

    def timestep_kwargs(self) -> dict:
        return {"timesteps": list(self.config.timesteps)} if self.config.timesteps else super().timestep_kwargs()

    def step_kwargs(self, batch_size: int, device: torch.device) -> dict:
        if (len(self.config.timesteps) if self.config.timesteps else self.config.num_sampler_steps) == 1:
            return {}
        return {"generator": fixed_noise_generators(batch_size, self.config.noise_seed)}

    @classmethod
    def from_diffusers(
        cls,
        name_or_path: str | os.PathLike,
        num_sampler_steps: int = 1,
        timesteps: list[int] | None = None,
        noise_seed: int = 0,
        scheduler_overrides: dict | None = None,
        **loading_kwargs,
    ) -> "ConsistencyModelGenerator":
        """G from a diffusers `ConsistencyModelPipeline` (Hub repo id or folder), e.g.
        ``"openai/diffusers-cd_bedroom256_lpips"``; arguments as in the class and `DiffusionSamplerGenerator.from_diffusers`."""
        index = read_pipeline_index(name_or_path, **loading_kwargs)
        kind = index.get("_class_name")
        if PIPELINE_KINDS.get(kind) is not ConsistencyModelGenerator:
            raise ValueError(
                f"{name_or_path} is a {kind}; `ConsistencyModelGenerator` reads ConsistencyModelPipeline folders."
            )
        return cls._from_pipeline_components(
            name_or_path,
            index,
            num_sampler_steps,
            "CMStochasticIterativeScheduler",
            scheduler_overrides,
            None,
            loading_kwargs,
            timesteps=timesteps,
            noise_seed=noise_seed,
        )


class VAEDecoderGenerator(DiffusersGenerator, ConfigMixin):
    r"""The decoder of an `AutoencoderKL` or `VQModel` as G, with a standard normal prior over its latent.

    ``G(z) = clamp(decode(z / scaling_factor), -1, 1)`` with ``z`` reshaped to ``(latent_channels, s, s)``: the
    latent in the units diffusers' latent pipelines use. A VAE trained with a real KL term to N(0, I) (set
    ``scaling_factor`` to 1 in its config if its raw latents are the N(0, I) ones) draws images from this prior; an
    autoencoder whose latents are far from N(0, I) (Stable Diffusion's VAE: KL weight 1e-6) draws textures, not
    images. A `VQModel` quantises the latent first (gradients are straight-through).

    Args:
        decoder_class: ``"AutoencoderKL"`` or ``"VQModel"``.
        decoder_config: Its config; only the decoder half is kept.
        latent_size: Side ``s`` of the latent; ``None`` reads it from the config (``sample_size`` halved at every
            down block after the first).

    Latent: ``z`` of ``latent_channels * s * s`` values, prior N(0, I).
    """

    @register_to_config
    def __init__(
        self, decoder_class: str = "AutoencoderKL", decoder_config: dict | None = None, latent_size: int | None = None
    ):
        super().__init__()
        self.decoder = build_decoder(decoder_class, decoder_config or {})
        if latent_size is None:
            config = self.decoder.config
            size = config.sample_size if isinstance(config.sample_size, int) else config.sample_size[0]
            latent_size = size // 2 ** (len(config.block_out_channels) - 1)
        self.latent_side = latent_size

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.decoder.config.latent_channels, self.latent_side, self.latent_side

    def render(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.to(self.decoder.dtype)

    @classmethod
    def from_diffusers(
        cls,
        name_or_path: str | os.PathLike,
        subfolder: str | None = None,
        latent_size: int | None = None,
        **loading_kwargs,
    ) -> "VAEDecoderGenerator":
        """G from an autoencoder: a model repo / folder (``config.json`` names `AutoencoderKL` or `VQModel`), or the
        ``vae`` / ``vqvae`` component of a pipeline (found automatically, or named by ``subfolder``)."""
        if subfolder is None:
            try:
                index = read_pipeline_index(name_or_path, **loading_kwargs)
            except EnvironmentError:
                index = {}
            found = [name for name in ("vae", "vqvae") if name in index]
            subfolder = found[0] if found else None
        config = diffusers.AutoencoderKL.load_config(name_or_path, subfolder=subfolder, **loading_kwargs)
        decoder_class = config.get("_class_name")
        if decoder_class not in DECODER_CLASSES:
            raise ValueError(
                f"{name_or_path} ({subfolder or 'root'}) holds a {decoder_class}; expected one of {DECODER_CLASSES}."
            )
        decoder = keep_decoder_only(
            getattr(diffusers, decoder_class).from_pretrained(name_or_path, subfolder=subfolder, **loading_kwargs)
        )
        return assemble_with_modules(
            cls,
            {
                "decoder_class": decoder_class,
                "decoder_config": public_config(decoder.config),
                "latent_size": latent_size,
            },
            decoder=decoder,
        )


def assemble_with_modules(generator_class, config: dict, **modules):
    """``generator_class(**config)`` built without allocating weights, then given the already loaded ``modules``."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        generator = generator_class(**config)
    for name, module in modules.items():
        if module is not None:
            setattr(generator, name, module)
    return generator.eval()


# Pipeline kind (`model_index.json` `_class_name`) -> the generator reading it.
PIPELINE_KINDS = {
    "DDPMPipeline": DiffusionSamplerGenerator,
    "DDIMPipeline": DiffusionSamplerGenerator,
    "LDMPipeline": DiffusionSamplerGenerator,
    "ConsistencyModelPipeline": ConsistencyModelGenerator,
}
PIPELINE_KINDS_TEXT = (
    ", ".join(PIPELINE_KINDS) + f" (and {' / '.join(DECODER_CLASSES)} folders for `VAEDecoderGenerator`)"
)


__all__ = [
    "ConsistencyModelGenerator",
    "DiffusersGenerator",
    "DiffusionSamplerGenerator",
    "UNetSamplerGenerator",
    "VAEDecoderGenerator",
    "PIPELINE_KINDS",
]
