"""Text-to-image diffusers models as G: equal to `StableDiffusionPipeline` / `StableDiffusionXLPipeline` (and to a
plain DDIM loop for a pixel-space model) from the same noise, prompt, steps and guidance; differentiable, checkpointable,
saved and loaded with their tokenizers; conditioned per call by `TronPipeline(condition_generator_on_prompt=True)`."""

import json
import threading
from pathlib import Path

import diffusers
import pytest
import torch
from conftest import tiny_clip
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from test_diffusers_generators import TINY_BUILD_OPTIONS, classifier_tron_pipeline, energy_of, tiny_unet
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from tron_pipelines import (
    ClipScoreReward,
    GradientDescentScheduler,
    LangevinScheduler,
    NoiseOptimizationScheduler,
    PickScoreReward,
    RewardModels,
    TranslatorModel,
    TronPipeline,
)
from tron_pipelines.models import (
    DiffusionSamplerGenerator,
    StableDiffusionXLGenerator,
    TextToImageGenerator,
    load_diffusers_generator,
)


pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = 8  # latent side; images are 2 * SIDE (one upsampling in the tiny VAE)
TEXT_WIDTH = 16


def tiny_conditional_unet(seed: int = 0, **kwargs) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    config = {
        "sample_size": SIDE,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (8, 16),
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": TEXT_WIDTH,
        "attention_head_dim": 4,
    }
    config.update(kwargs)
    return UNet2DConditionModel(**config).eval()


def tiny_vae(seed: int = 1) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=2 * SIDE,
    ).eval()


def tiny_taesd(seed: int = 2) -> AutoencoderTiny:
    torch.manual_seed(seed)
    return AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    ).eval()


def tiny_text_encoder(tokenizer, seed: int = 3, projection_dim: int | None = None):
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        projection_dim=projection_dim or TEXT_WIDTH,
    )
    return (CLIPTextModelWithProjection if projection_dim else CLIPTextModel)(config).eval()


def scheduler(name: str, **overrides):
    """A Stable-Diffusion-style schedule (scaled linear betas) on 100 training steps."""
    config = {
        "num_train_timesteps": 100,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "steps_offset": 1,
    }
    return getattr(diffusers, name)(**{**config, **overrides})


def sd_pipeline(tokenizer, sampler, unet=None, vae=None) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline(
        vae=vae or tiny_vae(),
        text_encoder=tiny_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=unet or tiny_conditional_unet(),
        scheduler=sampler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sdxl_pipeline(tokenizer, sampler, force_zeros_for_empty_prompt=True) -> StableDiffusionXLPipeline:
    unet = tiny_conditional_unet(
        cross_attention_dim=2 * TEXT_WIDTH,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=6 * 4 + 8,
        use_linear_projection=True,
    )
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(tokenizer, seed=3),
        text_encoder_2=tiny_text_encoder(tokenizer, seed=4, projection_dim=8),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=sampler,
        force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def noise(batch: int, seed: int = 0, channels: int = 4, side: int = SIDE) -> torch.Tensor:
    return torch.randn((batch, channels, side, side), generator=torch.Generator().manual_seed(seed))


def pipeline_images(pipe, prompt, latents, noise_seed=0, **call) -> torch.Tensor:
    """The diffusers pipeline's images in [-1, 1] for given initial ``latents``, without guidance unless the call
    says (the pipelines' default is 7.5, G's is none); each image's generator is seeded with ``noise_seed`` (the noise
    Euler-ancestral and LCM add between steps)."""
    call.setdefault("guidance_scale", 1.0)
    generators = [torch.Generator().manual_seed(noise_seed) for _ in range(latents.shape[0])]
    images = pipe(prompt=prompt, latents=latents, generator=generators, output_type="pt", **call).images
    return images * 2 - 1


def generator_from(pipe, **settings):
    """G from the diffusers pipeline's parts (shared weights)."""
    if isinstance(pipe, StableDiffusionXLPipeline):
        return StableDiffusionXLGenerator._assemble(
            pipe.unet,
            pipe.scheduler,
            pipe.vae,
            settings.pop("num_sampler_steps", 1),
            {"force_zeros_for_empty_prompt": pipe.config.force_zeros_for_empty_prompt, **settings},
            text_encoder=pipe.text_encoder,
            tokenizer=pipe.tokenizer,
            text_encoder_2=pipe.text_encoder_2,
            tokenizer_2=pipe.tokenizer_2,
        )
    return TextToImageGenerator.from_components(
        pipe.unet, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, pipe.vae, **settings
    )


# Equal to diffusers' pipelines ------------------------------------------------------------------------------
SD_SAMPLERS = [
    # (scheduler, its overrides, G's settings): SD-Turbo, SDXL-Turbo, LCM, DDIM and DPM-Solver samplers.
    pytest.param("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}, {"num_sampler_steps": 1}, id="euler-1"),
    pytest.param("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}, {"num_sampler_steps": 3}, id="euler-3"),
    pytest.param("EulerDiscreteScheduler", {}, {"timesteps": [99, 60, 20]}, id="euler-timesteps"),
    pytest.param(
        "EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"}, {"num_sampler_steps": 1}, id="ancestral-1"
    ),
    pytest.param(
        "EulerAncestralDiscreteScheduler",
        {"timestep_spacing": "trailing"},
        {"num_sampler_steps": 3, "noise_seed": 5},
        id="ancestral-3",
    ),
    pytest.param("LCMScheduler", {}, {"num_sampler_steps": 1}, id="lcm-1"),
    pytest.param("LCMScheduler", {}, {"num_sampler_steps": 4, "noise_seed": 5}, id="lcm-4"),
    pytest.param("DDIMScheduler", {"timestep_spacing": "trailing"}, {"num_sampler_steps": 1}, id="ddim-1"),
    pytest.param("DDIMScheduler", {}, {"num_sampler_steps": 3}, id="ddim-3"),
    pytest.param("DPMSolverMultistepScheduler", {}, {"num_sampler_steps": 3}, id="dpm-solver-3"),
    pytest.param(
        "EulerDiscreteScheduler",
        {"timestep_spacing": "trailing"},
        {"num_sampler_steps": 2, "guidance_scale": 4.0},
        id="euler-2-guided",
    ),
]


def reference_call(settings: dict) -> dict:
    """The diffusers call matching G's settings."""
    call = {"guidance_scale": settings.get("guidance_scale", 1.0)}
    if "timesteps" in settings:
        call["timesteps"] = settings["timesteps"]
    else:
        call["num_inference_steps"] = settings["num_sampler_steps"]
    return call


@pytest.mark.parametrize("name,overrides,settings", SD_SAMPLERS)
def test_stable_diffusion_equals_its_pipeline(tokenizer, name, overrides, settings):
    pipe = sd_pipeline(tokenizer, scheduler(name, **overrides))
    generator = generator_from(pipe, generator_prompt="a red car", **settings)
    assert type(generator.scheduler).__name__ == name and generator.latent_dim == 4 * SIDE * SIDE
    latents = noise(3)
    expected = pipeline_images(
        pipe, "a red car", latents, settings.get("noise_seed", 0), num_images_per_prompt=3, **reference_call(settings)
    )
    images = generator.generate(latents.flatten(1))
    assert images.shape == (3, 3, 2 * SIDE, 2 * SIDE)
    assert (images - expected).abs().max() <= 1e-5
    # A function of z alone: an image does not depend on the batch it is in (the fixed noise is per image).
    assert (generator.generate(latents[2:].flatten(1)) - images[2:]).abs().max() <= 1e-5


def test_the_call_prompt_and_the_generator_prompt(tokenizer):
    pipe = sd_pipeline(tokenizer, scheduler("EulerDiscreteScheduler", timestep_spacing="trailing"))
    generator = generator_from(pipe)  # generator_prompt "": the unconditional pushforward
    latents = noise(4)
    unconditional = pipeline_images(pipe, "", latents, num_images_per_prompt=4, num_inference_steps=1)
    assert (generator.generate(latents.flatten(1)) - unconditional).abs().max() <= 1e-5
    # A per-call view: two prompts, two images each, without touching the generator.
    view = generator.conditioned_on(["a red car", "a cat"], num_images_per_prompt=2)
    conditional = pipeline_images(
        pipe, ["a red car", "a cat"], latents, num_images_per_prompt=2, num_inference_steps=1
    )
    assert (view.generate(latents.flatten(1)) - conditional).abs().max() <= 1e-5
    assert (conditional - unconditional).abs().max() > 1e-3  # the prompt matters
    assert view.latent_dim == generator.latent_dim and view.dtype == generator.dtype
    assert generator.config.generator_prompt == ""
    with pytest.raises(ValueError, match="conditioned on 4 prompts"):
        view.generate(latents[:3].flatten(1))


def test_a_guidance_embedding_unet_equals_its_pipeline(tokenizer):
    # LCM distillations embed the guidance scale (time_cond_proj_dim) instead of running the UNet twice.
    pipe = sd_pipeline(tokenizer, scheduler("LCMScheduler"), unet=tiny_conditional_unet(time_cond_proj_dim=8))
    generator = generator_from(pipe, num_sampler_steps=2, guidance_scale=6.5, generator_prompt="a cat")
    assert not generator.classifier_free_guidance
    latents = noise(2)
    expected = pipeline_images(
        pipe, "a cat", latents, num_images_per_prompt=2, num_inference_steps=2, guidance_scale=6.5
    )
    assert (generator.generate(latents.flatten(1)) - expected).abs().max() <= 1e-5
    # The embedded guidance is used: another scale gives other images.
    other = generator.with_config(guidance_scale=2.0)
    assert (other.generate(latents.flatten(1)) - expected).abs().max() > 1e-4


def test_tiny_decoder_equals_the_pipeline_with_it(tokenizer):
    pipe = sd_pipeline(tokenizer, scheduler("EulerDiscreteScheduler", timestep_spacing="trailing"))
    taesd = tiny_taesd()
    generator = generator_from(pipe).with_decoder(taesd)
    assert generator.config.decoder_class == "AutoencoderTiny" and generator.unet is pipe.unet
    pipe.vae = taesd
    latents = noise(2)
    expected = pipeline_images(pipe, "", latents, num_images_per_prompt=2, num_inference_steps=1)
    assert (generator.generate(latents.flatten(1)) - expected).abs().max() <= 1e-5


SDXL_SAMPLERS = [
    pytest.param("EulerDiscreteScheduler", {"num_sampler_steps": 1}, True, id="euler-1"),
    pytest.param("EulerAncestralDiscreteScheduler", {"num_sampler_steps": 2, "noise_seed": 3}, True, id="ancestral-2"),
    pytest.param("EulerDiscreteScheduler", {"num_sampler_steps": 2, "guidance_scale": 3.0}, True, id="guided-zeros"),
    pytest.param("EulerDiscreteScheduler", {"num_sampler_steps": 2, "guidance_scale": 3.0}, False, id="guided-empty"),
]


@pytest.mark.parametrize("name,settings,zeros", SDXL_SAMPLERS)
def test_sdxl_equals_its_pipeline(tokenizer, name, settings, zeros):
    pipe = sdxl_pipeline(tokenizer, scheduler(name, timestep_spacing="trailing"), force_zeros_for_empty_prompt=zeros)
    generator = generator_from(pipe, generator_prompt="a red car", **settings)
    assert generator.image_size == (2 * SIDE, 2 * SIDE)
    latents = noise(2)
    expected = pipeline_images(
        pipe, "a red car", latents, settings.get("noise_seed", 0), num_images_per_prompt=2, **reference_call(settings)
    )
    assert (generator.generate(latents.flatten(1)) - expected).abs().max() <= 1e-5
    view = generator.conditioned_on(["a cat", "a dog"])
    expected = pipeline_images(
        pipe, ["a cat", "a dog"], latents, settings.get("noise_seed", 0), **reference_call(settings)
    )
    assert (view.generate(latents.flatten(1)) - expected).abs().max() <= 1e-5


# Pixel space: a UNet on a CLIP's text tower, no decoder (issue 26's MNIST text-to-image shape) -------------------
def pixel_parts(tokenizer, steps: int = 4):
    torch.manual_seed(7)
    clip = tiny_clip(len(tokenizer))
    unet = tiny_conditional_unet(
        in_channels=1, out_channels=1, sample_size=16, cross_attention_dim=clip.config.text_config.hidden_size
    )
    sampler = DDIMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    return clip, unet, sampler


@pytest.mark.parametrize("steps", [1, 4])
def test_pixel_space_generator_equals_a_plain_ddim_loop(tokenizer, steps):
    clip, unet, sampler = pixel_parts(tokenizer)
    generator = TextToImageGenerator.from_components(
        unet, clip, tokenizer, sampler, num_sampler_steps=steps, generator_prompt="a bold seven"
    )
    assert generator.decoder is None and generator.latent_shape == (1, 16, 16)
    # The CLIP's text tower is shared, not copied.
    assert generator.text_encoder is clip.text_model
    latents = noise(2, channels=1, side=16)

    ids = tokenizer(["a bold seven"] * 2, padding="max_length", max_length=16, return_tensors="pt").input_ids
    context = clip.text_model(input_ids=ids).last_hidden_state
    ddim = DDIMScheduler.from_config(sampler.config)
    ddim.set_timesteps(steps)
    sample = latents
    with torch.no_grad():
        for t in ddim.timesteps:
            sample = ddim.step(unet(sample, t, encoder_hidden_states=context).sample, t, sample).prev_sample
    expected = sample.clamp(-1, 1)
    with torch.no_grad():
        assert (generator.generate(latents.flatten(1)) - expected).abs().max() <= 1e-5


def test_pixel_space_folder_loads_and_reloads(tokenizer, tmp_path):
    clip, unet, sampler = pixel_parts(tokenizer)
    folder = tmp_path / "pixel"
    unet.save_pretrained(folder / "unet")
    sampler.save_pretrained(folder / "scheduler")
    TextToImageGenerator.from_components(unet, clip, tokenizer, sampler).text_encoder.save_pretrained(
        folder / "text_encoder"
    )
    tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "TextToImagePipeline",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "scheduler": ["diffusers", "DDIMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
            }
        )
    )
    generator = load_diffusers_generator(folder, num_sampler_steps=2, generator_prompt="a thin three")
    assert isinstance(generator, TextToImageGenerator) and generator.decoder is None
    generator.save_pretrained(tmp_path / "saved")
    reloaded = TextToImageGenerator.from_pretrained(tmp_path / "saved")
    latents = generator.sample_latents(2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(reloaded.generate(latents), generator.generate(latents))
    assert reloaded.tokenizer("a cat").input_ids == tokenizer("a cat").input_ids


# Loading from diffusers folders --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd_turbo_folder(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("sd-turbo")
    sd_pipeline(tokenizer, scheduler("EulerDiscreteScheduler", timestep_spacing="trailing")).save_pretrained(folder)
    return folder


def test_load_diffusers_generator_reads_stable_diffusion_folders(sd_turbo_folder, tokenizer, tmp_path):
    generator = load_diffusers_generator(sd_turbo_folder, num_sampler_steps=1, generator_prompt="a cat")
    assert isinstance(generator, TextToImageGenerator)
    # The pipeline's own (Turbo) sampler is kept, and only the VAE's decoder.
    assert type(generator.scheduler).__name__ == "EulerDiscreteScheduler" and generator.decoder.encoder is None
    reference = StableDiffusionPipeline.from_pretrained(sd_turbo_folder)
    reference.set_progress_bar_config(disable=True)
    latents = noise(2)
    expected = pipeline_images(reference, "a cat", latents, num_images_per_prompt=2, num_inference_steps=1)
    assert (generator.generate(latents.flatten(1)) - expected).abs().max() <= 1e-5
    # An ancestral scheduler of a DDPM-style pipeline is replaced by DDIM; another sampler can be named.
    assert type(load_diffusers_generator(sd_turbo_folder, scheduler_class="DDIMScheduler").scheduler) is DDIMScheduler
    tiny_taesd().save_pretrained(tmp_path / "taesd")
    with_taesd = load_diffusers_generator(sd_turbo_folder, decoder=str(tmp_path / "taesd"))
    assert type(with_taesd.decoder).__name__ == "AutoencoderTiny"


def test_sdxl_folder_loads_and_reloads_with_both_tokenizers(tokenizer, tmp_path):
    pipe = sdxl_pipeline(tokenizer, scheduler("EulerAncestralDiscreteScheduler", timestep_spacing="trailing"))
    pipe.save_pretrained(tmp_path / "sdxl")
    generator = load_diffusers_generator(tmp_path / "sdxl", generator_prompt="a dog")
    assert isinstance(generator, StableDiffusionXLGenerator) and generator.config.force_zeros_for_empty_prompt
    latents = noise(1)
    expected = pipeline_images(pipe, "a dog", latents, num_inference_steps=1)
    assert (generator.generate(latents.flatten(1)) - expected).abs().max() <= 1e-5
    generator.save_pretrained(tmp_path / "saved")
    assert {"tokenizer", "tokenizer_2", "config.json"} <= {p.name for p in (tmp_path / "saved").iterdir()}
    reloaded = StableDiffusionXLGenerator.from_pretrained(tmp_path / "saved")
    with torch.no_grad():
        # Equal weights; the reloaded projection rounds differently (2e-7 in the pooled embedding).
        assert (reloaded.generate(latents.flatten(1)) - generator.generate(latents.flatten(1))).abs().max() <= 1e-5


# Gradients and memory options ---------------------------------------------------------------------------------
def gradient_generators(tokenizer) -> dict:
    euler = scheduler("EulerDiscreteScheduler", timestep_spacing="trailing")
    clip, unet, _ = pixel_parts(tokenizer)
    return {
        "sd, 2 Euler steps": generator_from(sd_pipeline(tokenizer, euler), num_sampler_steps=2),
        "sd, guided LCM": generator_from(
            sd_pipeline(tokenizer, scheduler("LCMScheduler")), num_sampler_steps=2, guidance_scale=3.0
        ),
        "sdxl": generator_from(sdxl_pipeline(tokenizer, euler), generator_prompt="a cat"),
        "pixel": TextToImageGenerator.from_components(
            unet, clip, tokenizer, DDIMScheduler(num_train_timesteps=100, clip_sample=False), num_sampler_steps=2
        ),
    }


def linear_energy(generator, latents: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(w * G(z))`` per sample."""
    return (weights * generator.generate(latents)).flatten(1).sum(1)


@pytest.mark.parametrize("kind", ["sd, 2 Euler steps", "sd, guided LCM", "sdxl", "pixel"])
def test_gradients_match_finite_differences(tokenizer, kind):
    generator = gradient_generators(tokenizer)[kind].to(torch.float64)
    latents = 0.3 * generator.sample_latents(2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    images = generator.generate(latents)
    # No weight on pixels near the clamp at +-1, whose kinks a finite difference may cross.
    weights = torch.randn(images.shape, generator=torch.Generator().manual_seed(1)).double() * (images.abs() < 0.9)
    leaf = latents.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(linear_energy(generator, leaf, weights).sum(), leaf)
    assert gradient.abs().sum() > 0
    # Euler's step computes in float32 whatever the input dtype (as DPM-Solver's does), which limits finite
    # differences to about 2e-4 here (a fourth-order stencil at h = 3e-3); the other samplers run in float64.
    step, atol = (3e-3, 1e-3) if type(generator.scheduler).__name__ == "EulerDiscreteScheduler" else (1e-4, 1e-7)
    with torch.no_grad():
        for direction in torch.randn((3, *latents.shape), generator=torch.Generator().manual_seed(2)).double():

            def energy_at(k):
                return linear_energy(generator, latents + k * step * direction, weights)

            numeric = (-energy_at(2) + 8 * energy_at(1) - 8 * energy_at(-1) + energy_at(-2)) / (12 * step)
            analytic = (gradient * direction).sum(1)
            assert torch.allclose(numeric, analytic, rtol=1e-5, atol=atol), (kind, numeric, analytic)


@pytest.mark.parametrize("level", ["sampler steps", "unet blocks", "decoder blocks", "all"])
def test_checkpointed_gradients_equal_stored_ones(tokenizer, level):
    generator = gradient_generators(tokenizer)["sd, 2 Euler steps"]
    latents = generator.sample_latents(2, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(generator.generate(latents).shape, generator=torch.Generator().manual_seed(1))

    def gradient():
        leaf = latents.clone().requires_grad_(True)
        return torch.autograd.grad(energy_of(generator, leaf, weights).sum(), leaf)[0]

    unet_calls, decoder_calls = [], []
    generator.unet.register_forward_pre_hook(lambda *args: unet_calls.append(1))
    generator.decoder.decoder.mid_block.register_forward_pre_hook(lambda *args: decoder_calls.append(1))
    stored = gradient()
    assert (len(unet_calls), len(decoder_calls)) == (2, 1)
    if level in ("sampler steps", "all"):
        generator.enable_gradient_checkpointing()  # each UNet evaluation and the decoder, recomputed as a whole
    if level in ("unet blocks", "all"):
        generator.unet.enable_gradient_checkpointing()  # diffusers' per-block checkpointing inside the UNet
    if level in ("decoder blocks", "all"):
        generator.decoder.enable_gradient_checkpointing()  # and inside the VAE decoder
    unet_calls.clear()
    decoder_calls.clear()
    checkpointed = gradient()
    assert torch.allclose(checkpointed, stored, atol=1e-6, rtol=1e-5)
    # What ran again: (UNet passes, decoder mid-block passes) with the forward's (2, 1). Stage level recomputes each
    # UNet pass and the decoder; block level recomputes blocks only (the UNet's forward is not called again); both
    # together run the decoder's blocks a third time, in the backward pass of the recomputed decoder.
    expected = {"sampler steps": (4, 2), "unet blocks": (2, 1), "decoder blocks": (2, 2), "all": (4, 3)}[level]
    assert (len(unet_calls), len(decoder_calls)) == expected


def test_bfloat16_generator_stays_close_to_float32(tokenizer):
    generator = gradient_generators(tokenizer)["sd, 2 Euler steps"]
    latents = generator.sample_latents(2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = generator.generate(latents)
        generator.to(torch.bfloat16)
        lowered = generator.generate(latents.to(torch.bfloat16))
    assert lowered.dtype == torch.bfloat16 and (lowered.float() - reference).abs().max() < 0.1


# TronPipeline: the call's prompt for G (ReNO's setting), re-entrant ---------------------------------------------------
def text_to_image_tron_pipeline(tokenizer) -> TronPipeline:
    sd = sd_pipeline(tokenizer, scheduler("EulerDiscreteScheduler", timestep_spacing="trailing"))
    generator = generator_from(sd)
    torch.manual_seed(8)
    translator = TranslatorModel(condition_dim=16, latent_dim=generator.latent_dim, num_components=2, hidden_dim=16)
    pipe = TronPipeline(
        translator.eval(),
        generator,
        tiny_clip(len(tokenizer)),
        LangevinScheduler(step_size=0.5, noise_std=0.01),
        tokenizer=tokenizer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call(pipe, prompt, **kwargs):
    kwargs.setdefault("generator", torch.Generator().manual_seed(0))
    return pipe(prompt, num_inference_steps=2, num_augmentations=2, output_type="pt", **kwargs)


def test_the_call_prompt_conditions_the_generator(tokenizer):
    pipe = text_to_image_tron_pipeline(tokenizer)
    prompts = ["a red car", "a cat"]
    out = call(pipe, prompts, num_images_per_prompt=2, condition_generator_on_prompt=True)
    # The images are G(z | the image's prompt) of the returned latents...
    with torch.no_grad():
        rendered = pipe.generator.conditioned_on(prompts, 2).generate(out.latents)
    assert (out.images * 2 - 1 - rendered).abs().max() < 1e-5
    # ...not G(z | generator_prompt), which a call without the option optimises.
    with torch.no_grad():
        unconditional = pipe.generator.generate(out.latents)
    assert (out.images * 2 - 1 - unconditional).abs().max() > 1e-3
    plain = call(pipe, prompts, num_images_per_prompt=2)
    assert (plain.images * 2 - 1 - pipe.generator.generate(plain.latents)).abs().max() < 1e-5


def test_concurrent_calls_with_different_prompts_for_the_generator(tokenizer):
    pipe = text_to_image_tron_pipeline(tokenizer)
    alone = {prompt: call(pipe, prompt, condition_generator_on_prompt=True).images for prompt in ("a cat", "a dog")}
    results, barrier = {}, threading.Barrier(2)

    def run(prompt):
        barrier.wait()
        results[prompt] = call(pipe, prompt, condition_generator_on_prompt=True).images

    threads = [threading.Thread(target=run, args=(prompt,)) for prompt in alone]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for prompt, images in alone.items():
        assert torch.allclose(results[prompt], images, atol=1e-6)


def test_generator_prompt_option_is_checked_before_any_work(tokenizer, tmp_path):
    pipe = text_to_image_tron_pipeline(tokenizer)
    with pytest.raises(ValueError, match="gives the call's `prompt` to G"):
        pipe(condition_embeds=torch.randn(1, 16), condition_generator_on_prompt=True)
    ddpm = DiffusionSamplerGenerator(
        dict(tiny_unet().config), "DDIMScheduler", dict(DDPMScheduler(num_train_timesteps=100).config), 1
    )
    unconditional = classifier_tron_pipeline(ddpm)
    with pytest.raises(ValueError, match="takes none"):
        unconditional(class_labels=[1], condition_generator_on_prompt=True)


# Bad configurations ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes,match",
    [
        ({"scheduler_class": "DDPMScheduler"}, "scheduler_class"),
        (
            {
                "scheduler_class": "DPMSolverMultistepScheduler",
                "scheduler_overrides": {"algorithm_type": "sde-dpmsolver++"},
            },
            "stochastic",
        ),
        ({"scheduler_class": "DDIMScheduler", "timesteps": [99, 50]}, "explicit timesteps"),
        ({"generator_prompt": None}, "generator_prompt"),
        ({"num_sampler_steps": 0}, "num_sampler_steps"),
    ],
)
def test_bad_settings_are_refused(tokenizer, changes, match):
    pipe = sd_pipeline(tokenizer, scheduler("EulerDiscreteScheduler"))
    with pytest.raises(ValueError, match=match):
        generator_from(pipe, **changes)


@pytest.mark.parametrize(
    "unet,match",
    [
        (lambda: tiny_conditional_unet(in_channels=9), "out_channels"),
        (lambda: tiny_conditional_unet(cross_attention_dim=24), "24-dim context"),
        (lambda: tiny_conditional_unet(class_embed_type="timestep"), "class input"),
        (
            lambda: tiny_conditional_unet(
                addition_embed_type="text_time", addition_time_embed_dim=4, projection_class_embeddings_input_dim=40
            ),
            "StableDiffusionXLGenerator",
        ),
    ],
)
def test_unets_that_do_not_fit_are_refused(tokenizer, unet, match):
    with pytest.raises(ValueError, match=match):
        TextToImageGenerator.from_components(
            unet(), tiny_text_encoder(tokenizer), tokenizer, scheduler("EulerDiscreteScheduler"), tiny_vae()
        )


# tron build ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd_turbo_build(sd_turbo_folder, tokenizer, tmp_path_factory) -> Path:
    """`tron build --generator diffusers:<tiny SD-Turbo folder> --encoder <tiny CLIP>`: the build's output folder."""
    from conftest import reset_accelerate_state
    from test_build import save_clip

    from tron_pipelines.cli import main

    root = tmp_path_factory.mktemp("sd-turbo-build")
    argv = [
        "build",
        "--generator",
        f"diffusers:{sd_turbo_folder}",
        "--generator_config",
        "num_sampler_steps=1",
        "generator_prompt=",
        "--encoder",
        save_clip(root / "clip", tokenizer, seed=0),
        "--output",
        root / "build",
        "--mean_rank",
        "4",
        "--sample_prompts",
        "a cat",
        *TINY_BUILD_OPTIONS,
    ]
    try:
        assert main([str(word) for word in argv]) == 0
    finally:
        reset_accelerate_state()
    return root / "build"


def loaded(folder: Path) -> TronPipeline:
    pipe = TronPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def rendered_by_generator(pipe, out, prompts: list[str], on_prompt: bool) -> torch.Tensor:
    """G(returned latents), G given the images' prompts (ReNO's mode) or its own generator prompt (TR0N's)."""
    generator = pipe.generator.conditioned_on(prompts, 1) if on_prompt else pipe.generator
    with torch.no_grad():
        return generator.generate(out.latents)


def test_tron_build_turns_a_stable_diffusion_folder_into_a_pipeline(sd_turbo_build, sd_turbo_folder):
    pipe = loaded(sd_turbo_build / "pipeline")
    assert isinstance(pipe.generator, TextToImageGenerator) and pipe.generator.tokenizer is not None
    assert type(pipe.generator.scheduler).__name__ == "EulerDiscreteScheduler"
    assert pipe.translator.config.latent_dim == 4 * SIDE * SIDE and isinstance(pipe.scheduler, LangevinScheduler)
    assert pipe.translator.config.mean_rank == 4 and pipe.translator.mean_basis.weight.shape == (4 * SIDE * SIDE, 4)
    # G is the folder's model: the same images as diffusers' pipeline from the same noise.
    reference = StableDiffusionPipeline.from_pretrained(sd_turbo_folder)
    reference.set_progress_bar_config(disable=True)
    latents = noise(1)
    with torch.no_grad():
        rendered = pipe.generator.generate(latents.flatten(1))
    assert (rendered - pipeline_images(reference, "", latents, num_inference_steps=1)).abs().max() <= 1e-5
    # Sampling with Langevin (the preset), ReNO's noise optimisation and plain gradient descent, each swapped in with
    # `from_config`, in TR0N's mode (G renders its generator prompt "") and with the call's prompt for G (ReNO's).
    for scheduler_class in (LangevinScheduler, NoiseOptimizationScheduler, GradientDescentScheduler):
        swapped = TronPipeline.from_pipe(pipe, scheduler=scheduler_class.from_config(pipe.scheduler.config))
        assert type(swapped.scheduler) is scheduler_class
        for on_prompt in (False, True):
            out = call(swapped, "a red car", condition_generator_on_prompt=on_prompt, return_energy_trace=True)
            assert out.images.shape == (1, 3, 2 * SIDE, 2 * SIDE) and torch.isfinite(out.energies).all()
            # The images are G of the returned latents, in the mode asked for (the modes render differently).
            rendered = rendered_by_generator(pipe, out, ["a red car"], on_prompt)
            assert (out.images * 2 - 1 - rendered).abs().max() < 1e-5
            assert (
                out.images * 2 - 1 - rendered_by_generator(pipe, out, ["a red car"], not on_prompt)
            ).abs().max() > 1e-3
            if scheduler_class is NoiseOptimizationScheduler:
                # ReNO's defaults, not Langevin's, after the swap; and its best iterate is the one returned.
                assert swapped.scheduler.config.learning_rate == 5.0 and swapped.scheduler.config.grad_clip_norm == 0.1
                assert bool((out.energies <= out.energy_trace.min(dim=0).values + 1e-6).all())


def test_the_built_pipeline_with_rewards_optimises_their_weighted_sum(sd_turbo_build, tokenizer, tmp_path):
    """ReNO's setting on the built pipeline: reward models as f (a `rewards` component, weights in the config), the
    call's prompt for G, noise optimisation from the prior; each reward reported per image, the energy minus their
    weighted sum; saved and loaded with the rewards."""
    rewards = RewardModels(
        {
            "pickscore": PickScoreReward.from_clip(tiny_clip(len(tokenizer), seed=3), tokenizer),
            "clip_score": ClipScoreReward.from_clip(tiny_clip(len(tokenizer), seed=5), tokenizer),
        }
    )
    weights = {"pickscore": 2.0, "clip_score": 0.5}
    built = loaded(sd_turbo_build / "pipeline")
    TronPipeline.from_pipe(
        built,
        rewards=rewards,
        reward_weights=weights,
        scheduler=NoiseOptimizationScheduler.from_config(built.scheduler.config),
    ).save_pretrained(tmp_path / "reno")
    pipe = loaded(tmp_path / "reno")  # the built pipeline plus rewards, as a user would load it
    assert isinstance(pipe.rewards, RewardModels) and isinstance(pipe.scheduler, NoiseOptimizationScheduler)
    assert pipe.config.reward_weights == weights
    prompts = ["a red car", "a cat"]
    options = {"initialization": "prior", "condition_generator_on_prompt": True, "num_augmentations": 0}
    out = pipe(prompts, num_inference_steps=3, output_type="pt", generator=torch.Generator().manual_seed(0), **options)
    assert (out.images * 2 - 1 - rendered_by_generator(pipe, out, prompts, on_prompt=True)).abs().max() < 1e-5
    scored = {name: model.score(out.images * 2 - 1, prompts) for name, model in rewards.models.items()}
    assert set(out.rewards) == set(weights)
    for name, values in out.rewards.items():
        torch.testing.assert_close(values, scored[name], rtol=0, atol=2e-5)
    torch.testing.assert_close(
        out.energies, -sum(w * out.rewards[name] for name, w in weights.items()), rtol=0, atol=1e-5
    )
    # A call's weights replace the saved ones; weight 0 reports a reward without optimising it.
    only_pick = pipe(
        prompts,
        num_inference_steps=0,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
        reward_weights={"clip_score": 0.0},
        **options,
    )
    torch.testing.assert_close(only_pick.energies, -2.0 * only_pick.rewards["pickscore"], rtol=0, atol=1e-5)
