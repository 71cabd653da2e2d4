"""The flagship configuration in miniature: BigGAN-deep (converted from pytorch-pretrained-biggan) + CLIP + translator."""

import numpy as np
import pytest
import torch
from pytorch_pretrained_biggan import BigGANConfig
from test_biggan import random_package_biggan

from tron_pipelines import TranslatorModel, TronPipeline
from tron_pipelines.conversion.biggan import convert_pytorch_pretrained_biggan
from tron_pipelines.conversion.tr0n import assemble_pipeline


TINY_DEEP = BigGANConfig(
    output_dim=32,
    z_dim=16,
    class_embed_dim=16,
    channel_width=4,
    num_classes=10,
    layers=[(True, 16, 8), (True, 8, 4), (True, 4, 2), (False, 2, 1)],
    attention_layer_position=1,
    eps=1e-4,
    n_stats=51,
)


@pytest.fixture
def biggan_pipe(clip_components):
    # The package leaves some tensors uninitialised (torch.empty): fill them as a released checkpoint would look.
    generator = convert_pytorch_pretrained_biggan(random_package_biggan(TINY_DEEP).state_dict(), TINY_DEEP.to_dict())
    torch.manual_seed(0)
    translator = TranslatorModel(
        condition_dim=16,
        latent_dim=generator.latent_dim,
        num_components=10,
        hidden_dim=32,
        latent_threshold=generator.main_latent.threshold,
        auxiliary_latent_dims={spec.name: spec.dim for spec in generator.auxiliary_latents},
    )
    pipe = assemble_pipeline(
        translator.eval(),
        generator,
        clip_components["encoder"],
        clip_components["tokenizer"],
        clip_components["image_processor"],
        preset="biggan",
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_assembled_with_the_method_settings(biggan_pipe):
    assert [spec.name for spec in biggan_pipe.generator.latent_specs] == ["z", "y"]
    config = biggan_pipe.scheduler.config
    assert (config.step_size, config.noise_std, config.momentum, config.clamp_threshold) == (5.0, 0.01, 0.99, 2.0)
    assert biggan_pipe.config.default_num_inference_steps == 100 and biggan_pipe.config.default_num_augmentations == 50


@pytest.mark.parametrize("initialization", ["translator", "translator_mean"])
def test_langevin_lowers_clip_energy_from_translator_init(biggan_pipe, initialization):
    out = biggan_pipe(
        "a red car",
        num_images_per_prompt=2,
        num_inference_steps=15,
        num_augmentations=4,
        initialization=initialization,
        generator=[torch.Generator().manual_seed(s) for s in range(2)],
        return_energy_trace=True,
        output_type="np",
    )
    assert out.images.shape == (2, 32, 32, 3)
    assert out.latents.shape == (2, 16 + 16)
    assert out.latents[:, :16].abs().max() <= 2.0  # the clamp of the method's BigGAN setting
    start, end = out.energy_trace[:3].mean(dim=0), out.energy_trace[-3:].mean(dim=0)
    # Measured: each image's energy falls by 0.036-0.087; require a third of the smallest drop.
    assert (start - end > 0.012).all(), out.energy_trace


def test_candidate_search_keeps_the_auxiliary_latents_of_the_chosen_draw(biggan_pipe):
    # BigGAN's class embedding y is an auxiliary latent: the best of 4 draws must keep its own y with its own z.
    # With one generator per image, candidate c of an image is that generator's c-th draw: reproduce them one by one.
    prompts, num_candidates = ["a red car", "a cat", "a dog"], 4
    kwargs = {"num_inference_steps": 0, "num_augmentations": 0, "output_type": "latent"}
    searched = biggan_pipe(
        prompts,
        num_candidates=num_candidates,
        generator=[torch.Generator().manual_seed(s) for s in range(3)],
        **kwargs,
    )
    conditions = biggan_pipe.encoder_adapter.encode_prompts(prompts, torch.device("cpu"))
    generators = [torch.Generator().manual_seed(s) for s in range(3)]
    draws, energies = [], []
    for _ in range(num_candidates):
        packed = biggan_pipe.prepare_latent_state(
            conditions, "translator", generators, None, torch.device("cpu")
        ).packed()
        draws.append(packed)
        energies.append(biggan_pipe(prompts, latents=packed, **kwargs).energies)
    draws, energies = torch.stack(draws, 1), torch.stack(energies, 1)
    best = energies.argmin(1)
    assert (best > 0).any(), "the test needs an image whose best draw is not the first"
    torch.testing.assert_close(searched.latents, draws[torch.arange(3), best])


@pytest.mark.parametrize("initialization", ["translator", "translator_mean"])
def test_callback_replaces_main_and_auxiliary_latents(biggan_pipe, initialization):
    replacement = torch.randn(2, 32, generator=torch.Generator().manual_seed(5)).clamp(-2, 2)

    def replace_last(pipe, step, timestep, tensors):
        return {"latents": replacement} if step == pipe.num_timesteps - 1 else {}

    out = biggan_pipe(
        ["a red car", "a cat"],
        num_inference_steps=2,
        num_augmentations=0,
        initialization=initialization,
        callback_on_step_end=replace_last,
        output_type="latent",
    )
    torch.testing.assert_close(out.latents, replacement)


def test_round_trip_and_text_sampling(biggan_pipe, tmp_path):
    kwargs = {
        "prompt": ["a photo of a red car", "a cat"],
        "num_inference_steps": 3,
        "num_augmentations": 2,
        "output_type": "np",
    }
    before = biggan_pipe(generator=torch.Generator().manual_seed(0), **kwargs)
    biggan_pipe.save_pretrained(tmp_path)
    reloaded = TronPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    after = reloaded(generator=torch.Generator().manual_seed(0), **kwargs)
    np.testing.assert_allclose(before.images, after.images, atol=5e-4)
    assert type(reloaded.generator).__name__ == "BigGANDeepGenerator"
