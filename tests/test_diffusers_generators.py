"""Diffusers models as G: equal to diffusers' own pipelines from the same noise, differentiable, checkpointable,
saved and loaded as pipeline components, and chained into a diffusers image-to-image pipeline."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import tiny_clip
from diffusers import (
    AutoencoderKL,
    CMStochasticIterativeScheduler,
    ConsistencyModelPipeline,
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    LDMPipeline,
    StableDiffusionImg2ImgPipeline,
    UNet2DConditionModel,
    UNet2DModel,
    VQModel,
)
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextConfig, CLIPTextModel

from tron_pipelines import LangevinScheduler, TranslatorModel, TronPipeline
from tron_pipelines.conversion.tr0n import SAMPLING_PRESETS, load_generator
from tron_pipelines.models import (
    ConsistencyModelGenerator,
    DiffusionSamplerGenerator,
    VAEDecoderGenerator,
    load_diffusers_generator,
)


SIDE = 8


def tiny_unet(channels: int = 3, side: int = SIDE, seed: int = 0, **kwargs) -> UNet2DModel:
    torch.manual_seed(seed)
    config = {
        "sample_size": side,
        "in_channels": channels,
        "out_channels": channels,
        "block_out_channels": (8, 16),
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": 4,
    }
    config.update(kwargs)
    return UNet2DModel(**config).eval()


def tiny_autoencoder(kind: str, latent_channels: int = 3, seed: int = 1):
    torch.manual_seed(seed)
    common = {
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (8, 16),
        "latent_channels": latent_channels,
        "norm_num_groups": 4,
        "down_block_types": ("DownEncoderBlock2D",) * 2,
        "up_block_types": ("UpDecoderBlock2D",) * 2,
        "sample_size": 2 * SIDE,
    }
    if kind == "VQModel":
        return VQModel(**common, num_vq_embeddings=16, vq_embed_dim=latent_channels).eval()
    return AutoencoderKL(**common).eval()


def consistency_scheduler() -> CMStochasticIterativeScheduler:
    return CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002, sigma_max=80.0)


def initial_noise(batch: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """What diffusers' pipelines draw from a list of generators seeded ``seed + i``."""
    return randn_tensor((batch, *shape), generator=[torch.Generator().manual_seed(seed + i) for i in range(batch)])


def seeds(batch: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(batch)]


@pytest.fixture(scope="module")
def ddpm_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddpm")
    DDPMPipeline(
        unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=100, clip_sample=False)
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ldm_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ldm")
    # LDMPipeline runs the scheduler it holds; the released LDM pipelines hold DDIM.
    pipe = LDMPipeline(
        vqvae=tiny_autoencoder("VQModel"), unet=tiny_unet(), scheduler=DDIMScheduler(num_train_timesteps=100)
    )
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def consistency_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cm")
    ConsistencyModelPipeline(unet=tiny_unet(), scheduler=consistency_scheduler()).save_pretrained(folder)
    return folder


# Equal to diffusers' pipelines ------------------------------------------------------------------------------
def test_ddim_sampler_equals_ddim_pipeline(ddpm_folder):
    generator = DiffusionSamplerGenerator.from_diffusers(ddpm_folder, num_sampler_steps=4)
    reference = DDIMPipeline.from_pretrained(ddpm_folder)
    expected = (
        reference(batch_size=3, num_inference_steps=4, eta=0.0, generator=seeds(3), output_type="pt").images * 2 - 1
    )
    images = generator.generate(initial_noise(3, (3, SIDE, SIDE)).flatten(1))
    assert images.shape == (3, 3, SIDE, SIDE)
    assert (images - expected).abs().max() <= 1e-5
    # DDPMPipeline's own (ancestral) scheduler was replaced, as DDIMPipeline replaces it.
    assert type(generator.scheduler).__name__ == "DDIMScheduler" and generator.latent_dim == 3 * SIDE * SIDE


def test_dpm_solver_sampler_equals_a_diffusers_pipeline_running_it(ddpm_folder):
    generator = DiffusionSamplerGenerator.from_diffusers(
        ddpm_folder, num_sampler_steps=3, scheduler_class="DPMSolverMultistepScheduler"
    )
    # DDPMPipeline runs whatever scheduler it holds (DDIMPipeline would convert it to DDIM).
    reference = DDPMPipeline.from_pretrained(ddpm_folder)
    reference.scheduler = DPMSolverMultistepScheduler.from_config(reference.scheduler.config)
    expected = reference(batch_size=2, num_inference_steps=3, generator=seeds(2), output_type="np").images
    images = generator.generate(initial_noise(2, (3, SIDE, SIDE)).flatten(1))
    expected = torch.from_numpy(expected).permute(0, 3, 1, 2) * 2 - 1
    assert (images - expected).abs().max() <= 1e-5


def test_latent_diffusion_equals_ldm_pipeline(ldm_folder):
    generator = load_diffusers_generator(ldm_folder, num_sampler_steps=3)
    assert isinstance(generator, DiffusionSamplerGenerator) and generator.config.decoder_class == "VQModel"
    assert generator.decoder.encoder is None  # only the decoder half is kept
    reference = LDMPipeline.from_pretrained(ldm_folder)
    expected = reference(batch_size=2, num_inference_steps=3, generator=seeds(2), output_type="np").images
    images = generator.generate(initial_noise(2, (3, SIDE, SIDE)).flatten(1))
    expected = torch.from_numpy(expected).permute(0, 3, 1, 2) * 2 - 1
    assert images.shape == (2, 3, 2 * SIDE, 2 * SIDE)
    assert (images - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("steps", [{"num_sampler_steps": 1}, {"num_sampler_steps": 3}, {"timesteps": [30, 12, 0]}])
def test_consistency_model_equals_consistency_pipeline(consistency_folder, steps):
    generator = ConsistencyModelGenerator.from_diffusers(consistency_folder, noise_seed=7, **steps)
    reference = ConsistencyModelPipeline.from_pretrained(consistency_folder)
    noise = initial_noise(2, (3, SIDE, SIDE))
    # The noise between steps: what the pipeline adds when every image's generator is seeded with `noise_seed`.
    call = (
        {"num_inference_steps": steps.get("num_sampler_steps")}
        if "num_sampler_steps" in steps
        else {"num_inference_steps": None, **steps}
    )
    expected = (
        reference(
            batch_size=2,
            latents=noise,
            generator=[torch.Generator().manual_seed(7) for _ in range(2)],
            output_type="pt",
            **call,
        ).images
        * 2
        - 1
    )
    images = generator.generate(noise.flatten(1))
    assert (images - expected).abs().max() <= 1e-5
    # The same function of z whatever the batch: the fixed noise is per image, not per batch.
    assert (generator.generate(noise[1:].flatten(1)) - images[1:]).abs().max() <= 1e-6


@pytest.mark.parametrize("kind", ["AutoencoderKL", "VQModel"])
def test_vae_decoder_equals_decode(kind, tmp_path):
    autoencoder = tiny_autoencoder(kind, latent_channels=4)
    autoencoder.save_pretrained(tmp_path)
    generator = load_diffusers_generator(tmp_path)
    assert isinstance(generator, VAEDecoderGenerator) and generator.latent_shape == (4, SIDE, SIDE)
    latents = initial_noise(2, (4, SIDE, SIDE))
    expected = autoencoder.decode(latents / autoencoder.config.scaling_factor).sample.clamp(-1, 1)
    assert (generator.generate(latents.flatten(1)) - expected).abs().max() <= 1e-5


# Gradients --------------------------------------------------------------------------------------------------
def gradient_generators(tmp_path_factory=None) -> dict:
    """One generator of every kind, small enough for float64 finite differences."""
    unet_config = dict(tiny_unet().config)
    scheduler = dict(DDPMScheduler(num_train_timesteps=100, clip_sample=False).config)
    kl = tiny_autoencoder("AutoencoderKL")
    return {
        "ddim": DiffusionSamplerGenerator(unet_config, "DDIMScheduler", scheduler, num_sampler_steps=3),
        "dpm-solver": DiffusionSamplerGenerator(
            unet_config, "DPMSolverMultistepScheduler", scheduler, num_sampler_steps=3
        ),
        "latent diffusion": DiffusionSamplerGenerator(
            unet_config, "DDIMScheduler", scheduler, 2, "AutoencoderKL", dict(kl.config)
        ),
        "consistency, 2 steps": ConsistencyModelGenerator(
            unet_config, dict(consistency_scheduler().config), num_sampler_steps=2
        ),
        "vae decoder": VAEDecoderGenerator("AutoencoderKL", dict(kl.config)),
    }


GRADIENT_KINDS = ["ddim", "dpm-solver", "latent diffusion", "consistency, 2 steps", "vae decoder"]


def energy_of(generator, latents: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A smooth energy of the images, per sample: ``sum(w * x) + 0.5 * sum(x^2)``."""
    images = generator.generate(latents)
    return (weights * images + 0.5 * images.square()).flatten(1).sum(1)


@pytest.mark.parametrize("kind", GRADIENT_KINDS)
def test_gradients_match_finite_differences(kind):
    torch.manual_seed(3)
    generator = gradient_generators()[kind].to(torch.float64)
    # Small latents keep the images inside (-1, 1), away from the clamp's kinks.
    latents = 0.3 * generator.sample_latents(2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weights = torch.randn(generator.generate(latents).shape, dtype=torch.float64)
    leaf = latents.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(energy_of(generator, leaf, weights).sum(), leaf)
    assert gradient.abs().sum() > 0
    # DPM-Solver computes its update in float32 whatever the input dtype: a larger step (still small next to the
    # clamp's kinks) and tolerance for its rounding.
    step, rtol = (1e-4, 2e-3) if kind == "dpm-solver" else (1e-6, 1e-5)
    with torch.no_grad():
        for direction in torch.randn((3, *latents.shape), dtype=torch.float64):
            numeric = (
                energy_of(generator, latents + step * direction, weights)
                - energy_of(generator, latents - step * direction, weights)
            ) / (2 * step)
            analytic = (gradient * direction).sum(1)
            assert torch.allclose(numeric, analytic, rtol=rtol, atol=1e-7), (kind, numeric, analytic)


@pytest.mark.parametrize("kind", ["ddim", "latent diffusion", "consistency, 2 steps"])
def test_checkpointed_gradients_equal_stored_ones(kind):
    torch.manual_seed(4)
    generator = gradient_generators()[kind]
    latents = generator.sample_latents(2, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(generator.generate(latents).shape)

    def gradient():
        leaf = latents.clone().requires_grad_(True)
        return torch.autograd.grad(energy_of(generator, leaf, weights).sum(), leaf)[0]

    calls = []
    # A pre-hook: the recomputation stops once it has what the backward pass needs, before the UNet's end.
    hook = generator.unet.register_forward_pre_hook(lambda *args: calls.append(1))
    stored = gradient()
    stored_calls = len(calls)
    generator.enable_gradient_checkpointing()
    calls.clear()
    checkpointed = gradient()
    assert torch.allclose(checkpointed, stored, atol=1e-6, rtol=1e-5)
    # Every sampler step ran again in the backward pass (2 steps here or 3), and only whole steps were checkpointed:
    # the UNet's own blocks were left alone.
    assert stored_calls == len(generator.prepared_scheduler().timesteps) and len(calls) == 2 * stored_calls
    assert not any(getattr(m, "gradient_checkpointing", False) for m in generator.unet.modules())
    calls.clear()
    with torch.no_grad():  # nothing is recomputed without gradients
        generator.generate(latents)
    hook.remove()
    assert len(calls) == stored_calls


# Saving, loading, pipelines ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dpm-solver", "latent diffusion", "consistency, 2 steps", "vae decoder"])
def test_generator_save_and_reload(kind, tmp_path):
    generator = gradient_generators()[kind].eval()
    generator.save_pretrained(tmp_path)
    reloaded = load_generator(tmp_path)
    assert type(reloaded) is type(generator)
    latents = generator.sample_latents(2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(reloaded.generate(latents), generator.generate(latents))


def classifier_tron_pipeline(generator) -> TronPipeline:
    from tron_pipelines import ConvClassifier

    torch.manual_seed(5)
    classifier = ConvClassifier(
        num_classes=4, in_channels=3, image_size=SIDE, channels=(8, 16), image_mean=(0.5,) * 3, image_std=(0.5,) * 3
    ).eval()
    translator = TranslatorModel(
        condition_dim=4, latent_dim=generator.latent_dim, num_components=2, hidden_dim=16
    ).eval()
    pipe = TronPipeline(translator, generator, classifier, LangevinScheduler(step_size=0.5, noise_std=0.01))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_whole_pipeline_reloads_in_a_fresh_process(ddpm_folder, tmp_path):
    pipe = classifier_tron_pipeline(load_generator(f"diffusers:{ddpm_folder}", num_sampler_steps=2))
    pipe.generator.enable_gradient_checkpointing()
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["generator"] == ["tron_pipelines.models.diffusers_generators", "DiffusionSamplerGenerator"]
    expected = pipe(
        class_labels=[1, 2], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="latent"
    ).latents
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import torch, tron_pipelines
        pipe = tron_pipelines.TronPipeline.from_pretrained({str(tmp_path)!r})
        pipe.set_progress_bar_config(disable=True)
        assert type(pipe.generator).__name__ == "DiffusionSamplerGenerator" and pipe.generator.config.num_sampler_steps == 2
        out = pipe(class_labels=[1, 2], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="latent")
        expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
        assert torch.allclose(out.latents, expected, atol=1e-5), (out.latents - expected).abs().max()
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_pipeline_in_bfloat16_and_under_autocast(ddpm_folder):
    pipe = classifier_tron_pipeline(DiffusionSamplerGenerator.from_diffusers(ddpm_folder, num_sampler_steps=2))
    reference = pipe(
        class_labels=[0, 3], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt"
    )
    autocast = pipe(
        class_labels=[0, 3],
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        autocast_dtype=torch.bfloat16,
    )
    assert autocast.latents.dtype == torch.float32 and (autocast.images - reference.images).abs().max() < 0.1
    pipe.to(dtype=torch.bfloat16)
    assert pipe.generator.dtype == torch.bfloat16 and pipe.generator.unet.dtype == torch.bfloat16
    lowered = pipe(
        class_labels=[0, 3], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt"
    )
    assert lowered.latents.dtype == torch.float32 and torch.isfinite(lowered.energies).all()
    assert (lowered.images.float() - reference.images).abs().max() < 0.1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the GPU-less behaviour")
def test_model_cpu_offload_needs_an_accelerator_and_leaves_the_pipeline_usable(ddpm_folder):
    pipe = classifier_tron_pipeline(DiffusionSamplerGenerator.from_diffusers(ddpm_folder, num_sampler_steps=2))
    with pytest.raises(RuntimeError, match="accelerator"):
        pipe.enable_model_cpu_offload()
    out = pipe(class_labels=[1], num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (1, SIDE, SIDE, 3)


def tiny_img2img(tokenizer) -> StableDiffusionImg2ImgPipeline:
    torch.manual_seed(6)
    unet = UNet2DConditionModel(
        sample_size=SIDE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    pipe = StableDiffusionImg2ImgPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=DDPMScheduler(num_train_timesteps=100),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_tron_images_chain_into_image_to_image(ddpm_folder, tokenizer):
    # A 16 px RGB TR0N pipeline (text conditions from a tiny CLIP) feeding Stable Diffusion's img2img.
    torch.manual_seed(7)
    generator = DiffusionSamplerGenerator(
        dict(tiny_unet(side=16).config), "DDIMScheduler", dict(DDPMScheduler(num_train_timesteps=100).config), 2
    )
    translator = TranslatorModel(
        condition_dim=16, latent_dim=generator.latent_dim, num_components=2, hidden_dim=16
    ).eval()
    tron = TronPipeline(
        translator,
        generator,
        tiny_clip(len(tokenizer)),
        LangevinScheduler(step_size=0.5, noise_std=0.01),
        tokenizer=tokenizer,
    )
    tron.set_progress_bar_config(disable=True)
    img2img = tiny_img2img(tokenizer)

    def refine(image):
        return img2img(
            prompt=["a red car"] * 2,
            image=image,
            strength=0.5,
            num_inference_steps=4,
            guidance_scale=1.0,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images

    call = {
        "prompt": "a red car",
        "num_images_per_prompt": 2,
        "num_inference_steps": 2,
        "generator": torch.Generator().manual_seed(0),
    }
    as_pil = tron(**call, output_type="pil").images
    call["generator"] = torch.Generator().manual_seed(0)
    as_tensor = tron(**call, output_type="pt").images
    assert len(as_pil) == 2 and as_pil[0].size == (16, 16) and as_tensor.shape == (2, 3, 16, 16)
    from_pil, from_tensor = refine(as_pil), refine(as_tensor)
    assert from_pil.shape == from_tensor.shape == (2, 3, 16, 16)
    # The same images, once through 8-bit PIL: img2img sees the same picture either way.
    assert (from_pil - from_tensor).abs().max() < 0.05
    assert (refine(torch.zeros_like(as_tensor)) - from_tensor).abs().max() > 0.05  # and it does look at the image


# Bad input --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: DiffusionSamplerGenerator(dict(tiny_unet(num_class_embeds=10).config)), "class-conditional"),
        (lambda: DiffusionSamplerGenerator(dict(tiny_unet(out_channels=6).config)), "out_channels"),
        (
            lambda: DiffusionSamplerGenerator(dict(tiny_unet().config), "EulerAncestralDiscreteScheduler"),
            "scheduler_class",
        ),
        (
            lambda: DiffusionSamplerGenerator(
                dict(tiny_unet().config), "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}
            ),
            "stochastic",
        ),
        (lambda: DiffusionSamplerGenerator(dict(tiny_unet().config), num_sampler_steps=0), "num_sampler_steps"),
        (
            lambda: DiffusionSamplerGenerator(
                dict(tiny_unet().config),
                decoder_class="AutoencoderKL",
                decoder_config=dict(tiny_autoencoder("AutoencoderKL", 4).config),
            ),
            "latents",
        ),
        (lambda: VAEDecoderGenerator("UNet2DModel", {}), "decoder_class"),
    ],
)
def test_bad_configurations_are_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_unsupported_pipelines_are_refused_with_the_supported_kinds(ddpm_folder, consistency_folder, tmp_path):
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"]})
    )
    with pytest.raises(
        ValueError,
        match="DDPMPipeline, DDIMPipeline, LDMPipeline, ConsistencyModelPipeline, StableDiffusionPipeline, "
        "LatentConsistencyModelPipeline, StableDiffusionXLPipeline pipelines, pixel-space",
    ):
        load_diffusers_generator(tmp_path)
    with pytest.raises(ValueError, match="ConsistencyModelPipeline"):
        DiffusionSamplerGenerator.from_diffusers(consistency_folder)
    with pytest.raises(ValueError, match="DDPMPipeline"):
        ConsistencyModelGenerator.from_diffusers(ddpm_folder)


# `tron build` options for a build of seconds: a few pairs, two training steps, one sample without augmentations.
TINY_BUILD_OPTIONS = [
    "--num_pairs",
    "32",
    "--pairs_per_shard",
    "32",
    "--generation_batch_size",
    "16",
    "--num_components",
    "2",
    "--hidden_dim",
    "16",
    "--train_batch_size",
    "16",
    "--max_train_steps",
    "2",
    "--validation_steps",
    "100",
    "--num_validation_pairs",
    "16",
    "--num_validation_conditions",
    "2",
    "--report_to",
    "none",
    "--sample_images",
    "1",
    "--sample_steps",
    "1",
    "--sample_augmentations",
    "0",
]


def test_tron_build_turns_a_diffusers_pipeline_into_a_trained_one(ddpm_folder, tmp_path, fresh_accelerate_state):
    from tron_pipelines.cli import main
    from tron_pipelines.conversion.formats import detect_generator_format

    classifier_tron_pipeline(DiffusionSamplerGenerator.from_diffusers(ddpm_folder)).encoder.save_pretrained(
        tmp_path / "classifier"
    )
    source = f"diffusers:{ddpm_folder}"
    assert (detect_generator_format(source).name, detect_generator_format(source).default_preset(source)) == (
        "diffusers",
        "diffusion",
    )
    output = tmp_path / "build"
    assert (
        main(
            [
                "build",
                "--generator",
                source,
                "--generator_config",
                "num_sampler_steps=2",
                "--encoder",
                str(tmp_path / "classifier"),
                "--output",
                str(output),
                *TINY_BUILD_OPTIONS,
                "--sample_class_labels",
                "3",
            ]
        )
        == 0
    )
    trained = TronPipeline.from_pretrained(output / "pipeline")
    trained.set_progress_bar_config(disable=True)
    assert isinstance(trained.generator, DiffusionSamplerGenerator) and trained.generator.config.num_sampler_steps == 2
    assert trained.translator.config.num_components == 2
    assert trained.config.default_num_inference_steps == SAMPLING_PRESETS["diffusion"]["default_num_inference_steps"]
    out = trained(
        class_labels=[3], num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="np"
    )
    assert out.images.shape == (1, SIDE, SIDE, 3)
