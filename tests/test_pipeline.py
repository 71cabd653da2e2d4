import inspect
import math
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.utils import make_image_grid

import tron_pipelines
from tron_pipelines import (
    ConvGenerator,
    EncoderAdapter,
    GradientDescentScheduler,
    LangevinScheduler,
    LatentSpec,
    TranslatorModel,
    TronPipeline,
    TronPipelineOutput,
)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def call(pipe, **kwargs):
    defaults = {"num_inference_steps": 3, "num_augmentations": 2, "generator": seeded(0), "output_type": "np"}
    defaults.update(kwargs)
    return pipe(**defaults)


# OpenAI CLIP's published pixel statistics, which the tiny CLIP of the tests keeps.
OPENAI_CLIP_MEAN, OPENAI_CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def clip_image_features_by_hand(pipe, latents):
    """f(G(z)) for the 16 x 16 test CLIP, straight from the models: [-1, 1] -> [0, 1] -> CLIP normalisation."""
    images = pipe.generator.generate(latents)
    mean, std = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    features = pipe.encoder.get_image_features(pixel_values=((images + 1) / 2 - mean) / std)
    return features if isinstance(features, torch.Tensor) else features.pooler_output


# Signature and outputs --------------------------------------------------------------------------------------
def test_call_signature_follows_diffusers():
    parameters = inspect.signature(TronPipeline.__call__).parameters
    assert list(parameters)[1] == "prompt"
    for name in ("num_inference_steps", "num_images_per_prompt", "generator", "latents", "output_type", "return_dict"):
        assert parameters[name].default is not inspect.Parameter.empty
    assert parameters["initialization"].default == "translator"
    assert parameters["callback_on_step_end_tensor_inputs"].default == ["latents"]


def test_components_match_constructor(clip_pipe):
    settings = {
        "default_num_inference_steps",
        "default_num_augmentations",
        "default_num_candidates",
        "augmentation_policy",
        "prompt_vocabulary",
        "reward_weights",
    }
    init_names = set(inspect.signature(TronPipeline.__init__).parameters) - {"self"} - settings
    assert set(clip_pipe.components) == init_names


def test_output_shapes_and_ranges(clip_pipe):
    out = call(clip_pipe, prompt=["a bold seven", "a red car"], num_images_per_prompt=2)
    assert isinstance(out, TronPipelineOutput)
    assert out.images.shape == (4, 16, 16, 3)
    assert out.images.min() >= 0 and out.images.max() <= 1
    assert out.latents.shape == (4, 8) and out.latents.dtype == torch.float32
    assert out.energies.shape == (4,) and torch.isfinite(out.energies).all()


@pytest.mark.parametrize("num_prompts,per_prompt", [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_batch_size_is_prompts_times_images(clip_pipe, num_prompts, per_prompt):
    out = call(clip_pipe, prompt=["a cat"] * num_prompts, num_images_per_prompt=per_prompt, num_inference_steps=1)
    assert len(out.images) == num_prompts * per_prompt


def test_output_types_agree(clip_pipe):
    np_out = call(clip_pipe, prompt="a cat", output_type="np").images
    pt_out = call(clip_pipe, prompt="a cat", output_type="pt").images
    pil_out = call(clip_pipe, prompt="a cat", output_type="pil").images
    latent_out = call(clip_pipe, prompt="a cat", output_type="latent")
    np.testing.assert_allclose(pt_out.permute(0, 2, 3, 1).numpy(), np_out, atol=1e-6)
    assert isinstance(pil_out[0], PIL.Image.Image)
    assert np.abs(np.asarray(pil_out[0], dtype=np.float32) - np.round(np_out[0] * 255)).max() <= 2
    torch.testing.assert_close(latent_out.images, latent_out.latents)


def test_grey_generator_gives_grey_pil(classifier_pipe):
    out = classifier_pipe(class_labels=[0, 3], num_inference_steps=1, generator=seeded(0))
    assert out.images[0].mode == "L"
    grid = make_image_grid(out.images, rows=1, cols=2)
    assert grid.size == (32, 16)


def test_dict_and_tuple_agree(clip_pipe):
    as_dict = call(clip_pipe, prompt="a cat", return_energy_trace=True)
    as_tuple = call(clip_pipe, prompt="a cat", return_dict=False, return_energy_trace=True)
    np.testing.assert_array_equal(as_dict.images, as_tuple[0])
    np.testing.assert_array_equal(as_dict[0], as_tuple[0])
    torch.testing.assert_close(as_dict.latents, as_tuple[1])
    torch.testing.assert_close(as_dict.energies, as_tuple[2])
    torch.testing.assert_close(as_dict.energy_trace, as_tuple[3])
    assert as_dict.energy_trace.shape == (3, 1)


# Determinism and batching -------------------------------------------------------------------------------------
@pytest.mark.parametrize("initialization", ["translator", "translator_mean", "prior"])
def test_same_seed_same_images(clip_pipe, initialization):
    first = call(clip_pipe, prompt="a cat", initialization=initialization)
    second = call(clip_pipe, prompt="a cat", initialization=initialization)
    np.testing.assert_array_equal(first.images, second.images)
    different = call(clip_pipe, prompt="a cat", initialization=initialization, generator=seeded(1))
    assert not np.array_equal(first.images, different.images)


def test_truncation_warning_is_short(clip_pipe):
    long_prompt = "a photo of the number three leaning right " * 50  # 400 tokens
    with pytest.warns(UserWarning) as warned:
        call(clip_pipe, prompt=["a cat", long_prompt], num_inference_steps=0)
    (message,) = [str(w.message) for w in warned]
    dropped_tokens = len(clip_pipe.tokenizer(long_prompt).input_ids) - clip_pipe.tokenizer.model_max_length
    assert f"Prompt 1 is longer than the 16 tokens the text encoder reads: {dropped_tokens} tokens" in message
    assert message.endswith("starting with 'leaning right a photo of the ...'.") and len(message) < 250


@pytest.mark.parametrize("initialization", ["translator", "translator_mean", "prior"])
def test_batch_equals_single_runs(clip_pipe, initialization):
    prompts = ["a bold seven", "a photo of the number three leaning right " * 6, "dog"]
    with pytest.warns(UserWarning, match="Prompt 1 is longer than the 16 tokens"):
        batch = call(clip_pipe, prompt=prompts, initialization=initialization, generator=[seeded(s) for s in range(3)])
    for index, prompt in enumerate(prompts):
        single = call(clip_pipe, prompt=prompt, initialization=initialization, generator=seeded(index))
        np.testing.assert_allclose(batch.images[index], single.images[0], atol=1e-4)
        torch.testing.assert_close(batch.energies[index], single.energies[0], atol=1e-4, rtol=1e-4)


def test_translator_mode_differs_within_prompt_mean_mode_does_not(clip_pipe):
    drawn = call(clip_pipe, prompt="a cat", num_images_per_prompt=3, num_inference_steps=0)
    mixed = call(
        clip_pipe, prompt="a cat", num_images_per_prompt=3, num_inference_steps=0, initialization="translator_mean"
    )
    assert not torch.allclose(drawn.latents[0], drawn.latents[1])
    torch.testing.assert_close(mixed.latents[0], mixed.latents[1])


@pytest.mark.parametrize("initialization", ["translator", "prior"])
def test_candidate_search_keeps_the_lowest_energy_draw(classifier_pipe, initialization):
    # With one generator per image, candidate c of an image is that generator's c-th draw: reproduce them one by one.
    labels, num_candidates = [0, 1, 2, 3], 4
    searched = classifier_pipe(
        class_labels=labels,
        num_candidates=num_candidates,
        num_inference_steps=0,
        num_augmentations=0,
        initialization=initialization,
        generator=[seeded(s) for s in range(4)],
        output_type="latent",
    )
    adapter = classifier_pipe.encoder_adapter
    conditions = adapter.encode_class_labels(labels, torch.device("cpu"))
    generators = [seeded(s) for s in range(4)]
    draws, energies = [], []
    for _ in range(num_candidates):
        state = classifier_pipe.prepare_latent_state(conditions, initialization, generators, None, torch.device("cpu"))
        draws.append(state.packed())
        out = classifier_pipe(
            class_labels=labels,
            latents=state.packed(),
            num_inference_steps=0,
            num_augmentations=0,
            output_type="latent",
        )
        energies.append(out.energies)
    draws, energies = torch.stack(draws, 1), torch.stack(energies, 1)
    best = energies.argmin(1)
    assert (best > 0).any(), "the test needs an image whose best draw is not the first"
    torch.testing.assert_close(searched.latents, draws[torch.arange(4), best])
    torch.testing.assert_close(searched.energies, energies.min(1).values)


def test_candidate_search_batch_equals_single_runs(classifier_pipe):
    batch = call(classifier_pipe, class_labels=[0, 1, 2], num_candidates=3, generator=[seeded(s) for s in range(3)])
    for index in range(3):
        single = call(classifier_pipe, class_labels=[index], num_candidates=3, generator=seeded(index))
        np.testing.assert_allclose(batch.images[index], single.images[0], atol=1e-4)


def test_default_num_candidates_is_a_saved_setting(classifier_components, tmp_path):
    TronPipeline(**classifier_components, default_num_candidates=3).save_pretrained(tmp_path)
    reloaded = TronPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert reloaded.config.default_num_candidates == 3
    by_default = call(reloaded, class_labels=[1], num_inference_steps=0)
    explicit = call(reloaded, class_labels=[1], num_inference_steps=0, num_candidates=3)
    single = call(reloaded, class_labels=[1], num_inference_steps=0, num_candidates=1)
    torch.testing.assert_close(by_default.latents, explicit.latents)
    assert not torch.equal(by_default.latents, single.latents)
    # Nothing to search: given latents and the deterministic mean mixing run with the default, without an error.
    given = call(reloaded, class_labels=[1], num_inference_steps=0, latents=single.latents)
    torch.testing.assert_close(given.latents, single.latents)
    call(reloaded, class_labels=[1], num_inference_steps=0, initialization="translator_mean")


def test_langevin_state_packs_its_variables():
    from tron_pipelines.pipelines.pipeline_tron import LangevinState

    main, one_column = torch.randn(2, 3, generator=seeded(0)), torch.randn(2, 1, generator=seeded(1))
    torch.testing.assert_close(LangevinState(main, one_column).packed(), torch.cat([main, one_column], dim=1))
    assert LangevinState(main, None).packed() is main and LangevinState(main, torch.zeros(2, 0)).packed() is main
    # Mean mixing: K = 2 means per sample, mixed per dimension by a softmax over their logits, then G's own latents.
    means = torch.randn(2, 2, 3, generator=seeded(2))
    logits, own = torch.randn(2, 2, 3, generator=seeded(3)), torch.randn(2, 4, generator=seeded(4))
    state = LangevinState(means, torch.cat([logits.flatten(1), own], dim=1), num_components=2)
    weights = logits.exp() / logits.exp().sum(dim=1, keepdim=True)
    torch.testing.assert_close(state.packed(), torch.cat([(weights * means).sum(dim=1), own], dim=1))
    # with_packed keeps the logits and makes every mean the given latent, so the mixture is that latent.
    target = torch.randn(2, 7, generator=seeded(5))
    torch.testing.assert_close(state.with_packed(target, 3).packed(), target)


def test_zero_steps_returns_translator_output(clip_pipe):
    out = call(clip_pipe, prompt="a cat", num_inference_steps=0, initialization="translator_mean")
    condition = clip_pipe.encoder_adapter.encode_prompts(["a cat"], torch.device("cpu"))
    mixture = clip_pipe.translator(condition)
    expected = (mixture.mixture_logits.softmax(-1).unsqueeze(-1) * mixture.means).sum(1)
    torch.testing.assert_close(out.latents, expected)


# Langevin behaviour ------------------------------------------------------------------------------------------
def test_energy_decreases_over_langevin(clip_pipe):
    # Targets G can reach: embeddings of generated images. A random tiny CLIP maps all images to within ~0.98 cosine
    # of each other, hence the small absolute margin.
    target_latents = torch.randn(2, 8, generator=seeded(9))
    targets = clip_pipe.encoder_adapter.encode_generated(clip_pipe.generator.generate(target_latents))
    clip_pipe.scheduler = LangevinScheduler.from_config(
        clip_pipe.scheduler.config, step_size=3.0, noise_std=0.0, momentum=0.0, max_grad_norm=None
    )
    out = call(
        clip_pipe, condition_embeds=targets, num_inference_steps=25, num_augmentations=0, return_energy_trace=True
    )
    assert (out.energies < out.energy_trace[0] - 0.003).all(), (out.energy_trace[0], out.energies)
    assert (out.energy_trace[1:] <= out.energy_trace[:-1] + 1e-5).float().mean() > 0.9


def test_classifier_energy_decreases(classifier_pipe):
    classifier_pipe.scheduler = LangevinScheduler.from_config(
        classifier_pipe.scheduler.config, step_size=1.0, noise_std=0.0, max_grad_norm=None
    )
    out = call(
        classifier_pipe,
        class_labels=[0, 1, 2, 3],
        num_inference_steps=20,
        num_augmentations=0,
        return_energy_trace=True,
    )
    assert (out.energies < out.energy_trace[0] - 0.01).all(), (out.energy_trace[0], out.energies)


def test_gradient_descent_scheduler_swaps_in(clip_pipe):
    clip_pipe.scheduler = GradientDescentScheduler.from_config(clip_pipe.scheduler.config)
    assert clip_pipe.scheduler.config.step_size == 0.5
    first = call(clip_pipe, prompt="a cat", num_augmentations=0, initialization="translator_mean")
    second = call(
        clip_pipe, prompt="a cat", num_augmentations=0, initialization="translator_mean", generator=seeded(5)
    )
    np.testing.assert_array_equal(first.images, second.images)  # no noise anywhere


def test_no_parameter_gradients_and_grad_mode_restored(clip_pipe):
    call(clip_pipe, prompt="a cat")
    for module in (clip_pipe.translator, clip_pipe.generator, clip_pipe.encoder):
        assert all(p.grad is None for p in module.parameters())
    assert torch.is_grad_enabled()


def test_inference_mode_is_refused(clip_pipe):
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        call(clip_pipe, prompt="a cat")


def test_nonfinite_gradient_is_reported_or_skipped(clip_pipe):
    def poison(pipe, step, timestep, tensors):
        latents = tensors["latents"].clone()
        if step == 1:
            latents[1] = float("nan")
        return {"latents": latents}

    with pytest.raises(FloatingPointError, match="step 2 for sample 1"):
        call(clip_pipe, prompt=["a cat", "a dog"], callback_on_step_end=poison, num_inference_steps=4)
    clip_pipe.scheduler = LangevinScheduler.from_config(clip_pipe.scheduler.config, skip_nonfinite=True)
    with pytest.raises(FloatingPointError, match="non-finite images"):
        call(clip_pipe, prompt=["a cat", "a dog"], callback_on_step_end=poison, num_inference_steps=4)


def test_negative_prompt_and_prior_weight_change_the_energy(clip_pipe):
    plain = call(clip_pipe, prompt="a cat", num_inference_steps=0)
    negative = call(clip_pipe, prompt="a cat", negative_prompt="a dog", num_inference_steps=0)
    prior = call(clip_pipe, prompt="a cat", prior_weight=0.1, num_inference_steps=0)
    torch.testing.assert_close(negative.latents, plain.latents)
    assert not torch.allclose(negative.energies, plain.energies)
    expected = plain.energies + 0.1 * 0.5 * plain.latents.pow(2).sum(1)
    torch.testing.assert_close(prior.energies, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("weight", [1.0, 2.5])
def test_negative_prompt_energy_by_hand(clip_pipe, weight):
    # E = -cos(f(G(z)), c) + w * cos(f(G(z)), c_neg): the negative term counts against the energy it is near.
    latents = torch.randn(4, 8, generator=seeded(3))
    prompts, negatives = ["a cat", "a red car"], ["a dog", "a bold seven"]
    out = call(
        clip_pipe,
        prompt=prompts,
        negative_prompt=negatives,
        negative_prompt_weight=weight,
        num_images_per_prompt=2,
        latents=latents,
        num_inference_steps=0,
        num_augmentations=0,
        output_type="latent",
    )
    adapter = clip_pipe.encoder_adapter
    conditions = adapter.encode_prompts(prompts, torch.device("cpu")).repeat_interleave(2, dim=0)
    negative_conditions = adapter.encode_prompts(negatives, torch.device("cpu")).repeat_interleave(2, dim=0)
    features = clip_image_features_by_hand(clip_pipe, latents)
    expected = -torch.cosine_similarity(features, conditions) + weight * torch.cosine_similarity(
        features, negative_conditions
    )
    torch.testing.assert_close(out.energies, expected, atol=1e-5, rtol=1e-5)
    # One negative prompt applies to every condition.
    shared = call(
        clip_pipe,
        prompt=prompts,
        negative_prompt="a dog",
        negative_prompt_weight=weight,
        num_images_per_prompt=2,
        latents=latents,
        num_inference_steps=0,
        num_augmentations=0,
        output_type="latent",
    )
    dog = adapter.encode_prompts(["a dog"], torch.device("cpu"))
    expected = -torch.cosine_similarity(features, conditions) + weight * torch.cosine_similarity(features, dog)
    torch.testing.assert_close(shared.energies, expected, atol=1e-5, rtol=1e-5)


def test_negative_prompt_moves_images_away_from_it(clip_pipe):
    # Same draws, same noise-free dynamics, with and without "a dog" as negative prompt: with it, the images end
    # further from the negative embedding (measured: cosine lower by 0.025-0.057 after 10 steps).
    clip_pipe.scheduler = LangevinScheduler(step_size=3.0, noise_std=0.0, momentum=0.0, max_grad_norm=None)
    kwargs = {
        "prompt": "a cat",
        "num_images_per_prompt": 4,
        "num_inference_steps": 10,
        "num_augmentations": 0,
        "output_type": "latent",
    }
    plain = call(clip_pipe, generator=[seeded(s) for s in range(4)], **kwargs)
    pushed = call(clip_pipe, negative_prompt="a dog", generator=[seeded(s) for s in range(4)], **kwargs)
    dog = clip_pipe.encoder_adapter.encode_prompts(["a dog"], torch.device("cpu"))
    plain_cosine = torch.cosine_similarity(clip_image_features_by_hand(clip_pipe, plain.latents), dog)
    pushed_cosine = torch.cosine_similarity(clip_image_features_by_hand(clip_pipe, pushed.latents), dog)
    assert (pushed_cosine < plain_cosine - 0.01).all(), (plain_cosine, pushed_cosine)


def test_image_condition(clip_pipe):
    # The condition of an image is CLIP's embedding of the processor's pixels (resize and centre crop of 20 x 24 to
    # 16 x 16); two copies of it with the same seed give the same image and energy, as that embedding does.
    picture = PIL.Image.fromarray((np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8))
    out = call(clip_pipe, image=[picture, picture], generator=[seeded(0), seeded(0)])
    pixel_values = clip_pipe.image_processor(images=picture, return_tensors="pt").pixel_values
    embedding = clip_pipe.encoder.get_image_features(pixel_values=pixel_values)
    embedding = embedding if isinstance(embedding, torch.Tensor) else embedding.pooler_output
    direct = call(clip_pipe, condition_embeds=embedding, generator=seeded(0))
    np.testing.assert_allclose(out.images, np.concatenate([direct.images] * 2), atol=1e-5)
    torch.testing.assert_close(out.energies, direct.energies.repeat(2), atol=1e-5, rtol=1e-5)


def test_condition_embeds_bypass_the_encoder(clip_pipe):
    embeds = clip_pipe.encoder_adapter.encode_prompts(["a cat"], torch.device("cpu"))
    np.testing.assert_array_equal(
        call(clip_pipe, condition_embeds=embeds).images, call(clip_pipe, prompt="a cat").images
    )


def test_latents_argument_skips_initialisation(clip_pipe):
    latents = torch.randn(2, 8, generator=seeded(3))
    out = call(
        clip_pipe, prompt=["a cat", "a dog"], latents=latents, num_inference_steps=0, initialization="translator_mean"
    )
    torch.testing.assert_close(out.latents, latents)


def test_bfloat16_autocast_runs_the_models_in_bfloat16_and_keeps_float32_latents(clip_pipe):
    seen = {}

    def record(name):
        return lambda module, inputs, output: seen.setdefault(name, set()).add(output.dtype)

    hooks = [
        next(m for m in clip_pipe.generator.modules() if isinstance(m, torch.nn.Conv2d)).register_forward_hook(
            record("G")
        ),
        clip_pipe.encoder.visual_projection.register_forward_hook(record("f")),
    ]
    latents = torch.randn(4, 8, generator=seeded(3))
    fixed = {
        "prompt": "a cat",
        "num_images_per_prompt": 4,
        "latents": latents,
        "num_inference_steps": 0,
        "num_augmentations": 0,
    }
    try:
        low = call(clip_pipe, autocast_dtype=torch.bfloat16, output_type="latent", **fixed)
        assert seen == {"G": {torch.bfloat16}, "f": {torch.bfloat16}}
        seen.clear()
        call(
            clip_pipe, autocast_dtype=torch.float16, output_type="latent", **fixed
        )  # the dtype asked for, not CPU's default
        assert seen == {"G": {torch.float16}, "f": {torch.float16}}
        seen.clear()
        full = call(clip_pipe, output_type="latent", **fixed)
        assert seen == {"G": {torch.float32}, "f": {torch.float32}}
    finally:
        for hook in hooks:
            hook.remove()
    assert low.latents.dtype == torch.float32 and low.energies.dtype == torch.float32
    # bf16's 8-bit mantissa moves these energies by 3e-4 to 2e-3 (measured); float32 rounding by about 1e-7.
    difference = (low.energies - full.energies).abs()
    assert (difference > 1e-4).all() and (difference < 1e-2).all(), difference
    # Over a few Langevin steps the trajectory moves by a few thousandths (measured 3e-3), latents stay float32.
    low = call(clip_pipe, prompt="a cat", autocast_dtype=torch.bfloat16, output_type="latent")
    full = call(clip_pipe, prompt="a cat", output_type="latent")
    assert low.latents.dtype == torch.float32
    assert 1e-5 < (low.latents - full.latents).abs().max() < 0.03


def test_pipeline_to_bfloat16(clip_pipe):
    clip_pipe.to(dtype=torch.bfloat16)
    assert clip_pipe.generator.dtype == torch.bfloat16 and clip_pipe.encoder.dtype == torch.bfloat16
    out = call(clip_pipe, prompt="a cat")
    assert out.latents.dtype == torch.float32 and torch.isfinite(out.energies).all()


def test_sequential_offload_is_refused(clip_pipe):
    with pytest.raises(NotImplementedError, match="backward"):
        clip_pipe.enable_sequential_cpu_offload()


# Callbacks ---------------------------------------------------------------------------------------------------
def test_callback_receives_requested_tensors(clip_pipe):
    seen = []

    def callback(pipe, step, timestep, tensors):
        seen.append(sorted(tensors))
        return tensors

    call(
        clip_pipe,
        prompt="a cat",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents", "energies"],
    )
    assert seen == [["energies", "latents"]] * 3
    seen.clear()
    call(
        clip_pipe,
        prompt="a cat",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=clip_pipe._callback_tensor_inputs,
    )
    assert seen[0] == sorted(clip_pipe._callback_tensor_inputs)


@pytest.mark.parametrize("initialization", ["translator", "translator_mean"])
def test_callback_can_replace_latents(clip_pipe, initialization):
    def zero_last(pipe, step, timestep, tensors):
        if step == pipe.num_timesteps - 1:
            tensors["latents"] = torch.zeros_like(tensors["latents"])
        return tensors

    out = call(
        clip_pipe,
        prompt=["a cat", "a dog"],
        initialization=initialization,
        callback_on_step_end=zero_last,
        output_type="latent",
    )
    assert out.images.shape == (2, 8) and out.images.abs().sum() == 0


def test_interrupt_stops_updates(clip_pipe):
    def interrupt(pipe, step, timestep, tensors):
        pipe._interrupt = True
        return tensors

    out = call(
        clip_pipe, prompt="a cat", num_inference_steps=5, callback_on_step_end=interrupt, return_energy_trace=True
    )
    assert out.energy_trace.shape[0] == 1


# Bad input ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({}, ValueError, "Give one condition"),
        ({"prompt": "a cat", "condition_embeds": torch.zeros(1, 16)}, ValueError, "`prompt` and `condition_embeds`"),
        ({"class_labels": 1}, ValueError, "classifier encoder"),
        ({"prompt": 3}, TypeError, "`prompt`"),
        ({"prompt": ["a", "b"], "negative_prompt": ["x", "y", "z"]}, ValueError, "negative_prompt"),
        ({"prompt": "a cat", "generator": [torch.Generator()] * 2}, ValueError, "list of 2 generators"),
        (
            {"prompt": "a cat", "num_inference_steps": -1},
            ValueError,
            r"`num_inference_steps` must be an integer >= 0 \(0 = translator only\)",
        ),
        ({"prompt": "a cat", "num_images_per_prompt": 0}, ValueError, "num_images_per_prompt"),
        ({"prompt": "a cat", "latents": torch.zeros(1, 7)}, ValueError, r"`latents` must have shape \(1, 8\)"),
        ({"prompt": "a cat", "latents": torch.zeros(1, 8, dtype=torch.long)}, ValueError, "floating-point"),
        ({"prompt": "a cat", "initialization": "zeros"}, ValueError, "initialization"),
        ({"prompt": "a cat", "output_type": "jpeg"}, ValueError, "output_type"),
        ({"prompt": "a cat", "num_augmentations": -2}, ValueError, "num_augmentations"),
        ({"prompt": "a cat", "num_candidates": 0}, ValueError, "num_candidates"),
        ({"prompt": "a cat", "num_candidates": 2, "latents": torch.zeros(1, 8)}, ValueError, "given `latents`"),
        (
            {"prompt": "a cat", "num_candidates": 2, "initialization": "translator_mean"},
            ValueError,
            "random initialisation",
        ),
        (
            {"condition_embeds": torch.zeros(2, 5)},
            ValueError,
            r"`condition_embeds` must be a tensor of shape \(batch, 16\)",
        ),
        (
            {"condition_embeds": torch.zeros(2, 16, 1)},
            ValueError,
            r"`condition_embeds` must be a tensor of shape \(batch, 16\)",
        ),
        ({"image": torch.zeros(3, 16, 16), "class_labels": 1}, ValueError, "got `image` and `class_labels`"),
        ({"prompt": "a cat", "callback_on_step_end_tensor_inputs": ["secret"]}, ValueError, "secret"),
    ],
)
def test_bad_input_to_clip_pipeline(clip_pipe, kwargs, error, match, monkeypatch):
    # Every check must fire before any model runs.
    monkeypatch.setattr(clip_pipe.generator, "forward", lambda *a, **k: pytest.fail("generator ran"))
    monkeypatch.setattr(clip_pipe.encoder, "forward", lambda *a, **k: pytest.fail("encoder ran"))
    with pytest.raises(error, match=match):
        clip_pipe(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"prompt": "a cat"}, "needs a text encoder"),
        ({"class_labels": [1, 4]}, r"\[4\] out of range"),
        ({"class_labels": [-1]}, "out of range"),
    ],
)
def test_bad_input_to_classifier_pipeline(classifier_pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        classifier_pipe(**kwargs)


@pytest.mark.parametrize("class_labels", [[], [1.5], "3"])
def test_class_labels_that_are_not_ints_are_refused(classifier_pipe, class_labels):
    # 1.5 would otherwise become class 1 without a word.
    with pytest.raises(TypeError, match="`class_labels` must be an int or a non-empty list of ints"):
        classifier_pipe(class_labels=class_labels)


def test_class_labels_may_be_a_tensor(classifier_pipe):
    as_list = call(classifier_pipe, class_labels=[1, 3], num_inference_steps=0, output_type="latent")
    as_tensor = call(classifier_pipe, class_labels=torch.tensor([1, 3]), num_inference_steps=0, output_type="latent")
    torch.testing.assert_close(as_tensor.images, as_list.images, rtol=0, atol=0)


def test_negative_prompt_needs_the_tokenizer(clip_pipe):
    without_tokenizer = TronPipeline.from_pipe(clip_pipe, tokenizer=None)
    with pytest.raises(ValueError, match="`negative_prompt` needs a CLIP encoder and a tokenizer"):
        without_tokenizer(condition_embeds=torch.zeros(1, 16), negative_prompt="a dog")


def test_one_negative_prompt_serves_every_prompt(clip_pipe):
    one = call(clip_pipe, prompt=["a cat", "a dog"], negative_prompt=["a car"], num_inference_steps=0)
    repeated = call(clip_pipe, prompt=["a cat", "a dog"], negative_prompt=["a car", "a car"], num_inference_steps=0)
    # Encoding one negative text or a batch of two rounds differently (3e-8 seen); a negative prompt missing for the
    # second prompt moves its energy by its weight x cosine, orders of magnitude more.
    torch.testing.assert_close(one.energies, repeated.energies, rtol=0, atol=1e-6)


def test_image_conditions_count_one_image_or_a_batch(clip_pipe):
    # One image (PIL, or a 3-D array or tensor) is one condition; a 4-D tensor or a list is one per entry: the
    # generator list must then have conditions x images per prompt entries.
    picture = torch.rand(3, 16, 16, generator=seeded(4))
    pil = PIL.Image.fromarray((picture.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    for image, conditions in (
        (pil, 1),
        (picture, 1),
        (picture.numpy(), 1),
        (torch.stack([picture, picture]), 2),
        ([pil] * 3, 3),
    ):
        generators = [seeded(i) for i in range(2 * conditions)]
        out = call(
            clip_pipe,
            image=image,
            num_images_per_prompt=2,
            generator=generators,
            num_inference_steps=0,
            output_type="latent",
        )
        assert out.images.shape == (2 * conditions, 8)


def test_settings_not_given_take_the_documented_defaults(clip_pipe):
    # 10 steps, 8 augmented copies, 1 candidate (the class docstring): a call without them is a call with them.
    assert (clip_pipe.config.default_num_inference_steps, clip_pipe.config.default_num_augmentations) == (10, 8)
    assert clip_pipe.config.default_num_candidates == 1
    plain = clip_pipe(prompt="a cat", generator=seeded(0), output_type="latent", return_energy_trace=True)
    spelled_out = clip_pipe(
        prompt="a cat",
        generator=seeded(0),
        output_type="latent",
        return_energy_trace=True,
        num_inference_steps=10,
        num_augmentations=8,
        num_candidates=1,
    )
    torch.testing.assert_close(plain.energy_trace, spelled_out.energy_trace, rtol=0, atol=0)


class TwoAuxiliaryLatents(ConvGenerator):
    """The test generator with two auxiliary latents after z, which shift its input."""

    @property
    def latent_specs(self):
        return super().latent_specs + [LatentSpec("a", 2), LatentSpec("b", 3)]

    def generate(self, latents):
        main, a, b = latents.split([8, 2, 3], dim=1)
        return super().generate(main + a.sum(1, keepdim=True) - b.mean(1, keepdim=True))


def test_auxiliary_latents_are_packed_in_the_generators_order(clip_components):
    plain = clip_components["generator"]
    generator = TwoAuxiliaryLatents(**{key: value for key, value in plain.config.items() if not key.startswith("_")})
    generator.load_state_dict(plain.state_dict())
    torch.manual_seed(3)
    # The translator lists them the other way round: the packing follows the generator.
    translator = TranslatorModel(
        condition_dim=16, latent_dim=8, num_components=3, hidden_dim=32, auxiliary_latent_dims={"b": 3, "a": 2}
    )
    pipe = TronPipeline(**{**clip_components, "generator": generator.eval(), "translator": translator.eval()})
    conditions = torch.randn(2, 16, generator=seeded(5))
    out = pipe(condition_embeds=conditions, generator=seeded(0), num_inference_steps=0, output_type="latent")
    with torch.no_grad():
        main, auxiliary = translator.sample(conditions, generator=seeded(0))
    torch.testing.assert_close(out.latents, torch.cat([main, auxiliary["a"], auxiliary["b"]], dim=1), rtol=0, atol=0)


def test_mismatched_components_are_rejected(clip_components):
    clip_components["translator"] = TranslatorModel(condition_dim=10, latent_dim=8, num_components=2, hidden_dim=8)
    with pytest.raises(ValueError, match="10-dim conditions"):
        TronPipeline(**clip_components)("a cat")


# Interpolation ------------------------------------------------------------------------------------------------
def test_interpolation_frames(clip_pipe):
    frames = clip_pipe.interpolate(prompt=["a cat", "a dog"], num_frames=4, generator=seeded(0), num_inference_steps=1)
    assert len(frames.images) == 4 and isinstance(frames.images[0], PIL.Image.Image)
    ends = clip_pipe.encoder_adapter.encode_prompts(["a cat", "a dog"], torch.device("cpu"))
    start = clip_pipe(condition_embeds=ends[:1], num_inference_steps=0, generator=None, output_type="latent")
    assert start.latents.shape == (1, 8)
    make_image_grid(frames.images, rows=1, cols=4)
    with pytest.raises(ValueError, match="exactly two"):
        clip_pipe.interpolate(prompt=["a cat"])


def test_slerp_follows_the_great_circle():
    from tron_pipelines.pipelines.pipeline_tron import slerp

    # Orthogonal unit vectors: the weight w point is at angle w * 90 degrees from the start, on the unit circle.
    start, end = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    for weight in (0.0, 0.25, 0.5, 0.9, 1.0):
        point = slerp(weight, start, end)
        torch.testing.assert_close(
            point, torch.tensor([math.cos(weight * math.pi / 2), math.sin(weight * math.pi / 2), 0.0])
        )
    midpoint = slerp(0.5, start, end)
    assert torch.dot(midpoint, start).item() == pytest.approx(
        math.cos(math.pi / 4)
    ) and midpoint.norm().item() == pytest.approx(1.0)
    # Raw vectors: the angle comes from their directions (here 60 degrees), the weights apply to the raw vectors, and
    # the ends are returned as they are.
    start, end = torch.tensor([3.0, 0.0]), torch.tensor([2.0, 2.0 * math.sqrt(3.0)])
    torch.testing.assert_close(slerp(0.0, start, end), start)
    torch.testing.assert_close(slerp(1.0, start, end), end)
    angle = math.pi / 3
    for weight in (0.3, 0.5):
        expected = (math.sin((1 - weight) * angle) * start + math.sin(weight * angle) * end) / math.sin(angle)
        torch.testing.assert_close(slerp(weight, start, end), expected)
    # A small angle (30 degrees) is a great-circle arc too, not a straight line.
    start, end = torch.tensor([1.0, 0.0]), torch.tensor([2.0 * math.cos(math.pi / 6), 2.0 * math.sin(math.pi / 6)])
    expected = (math.sin(0.5 * math.pi / 6) * start + math.sin(0.5 * math.pi / 6) * end) / math.sin(math.pi / 6)
    torch.testing.assert_close(slerp(0.5, start, end), expected)
    # Parallel vectors have no great circle: a straight line between them.
    torch.testing.assert_close(
        slerp(0.25, torch.tensor([1.0, 0.0]), torch.tensor([3.0, 0.0])), torch.tensor([1.5, 0.0])
    )
    # Where rounding puts the cosine of (anti)parallel directions just outside [-1, 1] (as for these draws here), the
    # result is still defined: a straight line, and the ends themselves.
    direction = torch.randn(16, generator=seeded(0))
    torch.testing.assert_close(slerp(0.5, direction, 3 * direction), 2 * direction)
    opposite = torch.randn(16, generator=seeded(3))
    torch.testing.assert_close(slerp(0.0, opposite, -opposite), opposite)
    torch.testing.assert_close(slerp(1.0, opposite, -opposite), -opposite)


def test_interpolation_frames_go_from_one_condition_to_the_other(clip_pipe):
    from tron_pipelines.pipelines.pipeline_tron import slerp

    ends = clip_pipe.encoder_adapter.encode_prompts(["a cat", "a red car"], torch.device("cpu"))
    kwargs = {"num_inference_steps": 0, "initialization": "translator_mean", "output_type": "latent"}
    frames = clip_pipe.interpolate(condition_embeds=ends, num_frames=4, generator=seeded(0), **kwargs).latents
    conditions = torch.stack([slerp(weight, ends[0], ends[1]) for weight in (0.0, 1 / 3, 2 / 3, 1.0)])
    torch.testing.assert_close(frames, clip_pipe(condition_embeds=conditions, **kwargs).latents)
    torch.testing.assert_close(frames[0], clip_pipe(condition_embeds=ends[:1], **kwargs).latents[0])
    torch.testing.assert_close(frames[-1], clip_pipe(condition_embeds=ends[1:], **kwargs).latents[0])
    steps = (frames[1:] - frames[:-1]).norm(dim=1)
    assert (steps > 0.05 * (frames[-1] - frames[0]).norm()).all(), steps  # every frame moves on


def test_interpolation_shares_noise(clip_pipe):
    embeds = clip_pipe.encoder_adapter.encode_prompts(["a cat"], torch.device("cpu")).repeat(2, 1)
    frames = clip_pipe.interpolate(
        condition_embeds=embeds, num_frames=3, generator=seeded(0), output_type="np", num_inference_steps=2
    )
    np.testing.assert_allclose(frames.images[0], frames.images[2], atol=1e-6)


# Save / load --------------------------------------------------------------------------------------------------
def test_save_and_reload_gives_same_images(clip_pipe, tmp_path):
    before = call(clip_pipe, prompt=["a cat", "a bold seven"])
    clip_pipe.save_pretrained(tmp_path)
    reloaded = TronPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    after = call(reloaded, prompt=["a cat", "a bold seven"])
    np.testing.assert_allclose(before.images, after.images, atol=5e-4)
    assert type(reloaded.scheduler) is LangevinScheduler
    assert reloaded.scheduler.config.momentum == 0.5


def test_optional_components_stay_none(classifier_pipe, tmp_path):
    classifier_pipe.save_pretrained(tmp_path)
    reloaded = TronPipeline.from_pretrained(tmp_path, default_num_inference_steps=3)
    assert reloaded.tokenizer is None and reloaded.image_processor is None
    assert reloaded.config.default_num_inference_steps == 3
    np.testing.assert_allclose(
        call(classifier_pipe, class_labels=[1]).images, call(reloaded, class_labels=[1]).images, atol=5e-4
    )


def test_from_pretrained_dtype(clip_pipe, tmp_path):
    clip_pipe.save_pretrained(tmp_path)
    reloaded = TronPipeline.from_pretrained(tmp_path, dtype={"generator": torch.bfloat16, "default": torch.float32})
    assert reloaded.generator.dtype == torch.bfloat16 and reloaded.translator.dtype == torch.float32


def test_fresh_process_loads_saved_pipeline(classifier_pipe, tmp_path):
    classifier_pipe.save_pretrained(tmp_path)
    expected = call(classifier_pipe, class_labels=[2], output_type="latent").latents
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import torch, tron_pipelines
        print(tron_pipelines.__file__)
        pipe = tron_pipelines.TronPipeline.from_pretrained({str(tmp_path)!r})
        pipe.set_progress_bar_config(disable=True)
        out = pipe(class_labels=[2], num_inference_steps=3, num_augmentations=2,
                   generator=torch.Generator().manual_seed(0), output_type="latent")
        expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
        assert torch.allclose(out.latents, expected, atol=1e-5), (out.latents, expected)
        print("ok")
        """
    )
    # An otherwise empty environment, with the package under test first on the path: never an installed copy.
    package_root = str(Path(tron_pipelines.__file__).parents[1])
    environment = {"HF_HUB_OFFLINE": "1", "PATH": "", "PYTHONPATH": package_root}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [tron_pipelines.__file__, "ok"]


def test_augmentation_policy_is_a_saved_setting(clip_components, tmp_path):
    with pytest.raises(ValueError, match="blur"):
        TronPipeline(**clip_components, augmentation_policy="translation,blur")
    pipe = TronPipeline(**clip_components, augmentation_policy="translation")
    pipe.save_pretrained(tmp_path)
    reloaded = TronPipeline.from_pretrained(tmp_path)
    assert reloaded.config.augmentation_policy == "translation"
    pipe.set_progress_bar_config(disable=True)
    translated = call(pipe, prompt="a cat")
    default = call(TronPipeline(**clip_components), prompt="a cat")
    assert not np.allclose(translated.images, default.images)


def test_image_conditions_without_an_image_processor(classifier_pipe):
    # A classifier pipeline has no image_processor: images in [0, 1] are resized bilinearly to the classifier's 16 x 16,
    # normalised with its (x - 0.5) / 0.5, and the condition is the softmax of its logits.
    pixels = np.random.default_rng(1).random((2, 16, 16)).astype(np.float32)
    classifier = classifier_pipe.encoder

    def by_hand(batch):
        with torch.no_grad():
            return classifier((batch - 0.5) / 0.5).logits.softmax(dim=-1)

    expected = by_hand(torch.from_numpy(pixels).unsqueeze(1))
    adapter, cpu = classifier_pipe.encoder_adapter, torch.device("cpu")
    as_tensor = torch.from_numpy(pixels)
    for given in (pixels[:, None], pixels[..., None], as_tensor.unsqueeze(1), as_tensor.unsqueeze(-1)):
        torch.testing.assert_close(adapter.encode_images(given, cpu), expected, atol=1e-6, rtol=1e-5)
    grey = [PIL.Image.fromarray((p * 255).round().astype(np.uint8)) for p in pixels]
    rounded = torch.from_numpy(np.stack([np.asarray(g, dtype=np.float32) / 255 for g in grey])).unsqueeze(1)
    torch.testing.assert_close(adapter.encode_images(grey, cpu), by_hand(rounded), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(adapter.encode_images(grey[0], cpu), by_hand(rounded[:1]), atol=1e-6, rtol=1e-5)
    large = np.random.default_rng(2).random((1, 1, 24, 24)).astype(np.float32)
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(large), size=(16, 16), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(adapter.encode_images(large, cpu), by_hand(resized), atol=1e-6, rtol=1e-5)
    out = call(classifier_pipe, image=pixels[:, None], num_inference_steps=0, output_type="latent")
    direct = call(classifier_pipe, condition_embeds=expected, num_inference_steps=0, output_type="latent")
    torch.testing.assert_close(out.latents, direct.latents)
    torch.testing.assert_close(out.energies, direct.energies)


def test_array_and_pil_image_conditions_agree(clip_pipe):
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    adapter = clip_pipe.encoder_adapter
    from_pil = adapter.encode_images(PIL.Image.fromarray(pixels), torch.device("cpu"))
    from_array = adapter.encode_images(pixels.astype(np.float32) / 255.0, torch.device("cpu"))
    torch.testing.assert_close(from_pil, from_array, atol=1e-4, rtol=1e-4)


# Prompt vocabulary ---------------------------------------------------------------------------------------------------
def test_prompts_outside_the_vocabulary_warn(clip_components, tmp_path):
    pipe = TronPipeline(**clip_components, prompt_vocabulary="a bold thin seven three leaning left right")
    pipe.set_progress_bar_config(disable=True)
    with pytest.warns(
        UserWarning,
        match=r"`prompt` 1 has words this pipeline's text encoder never saw in training: \['photo', 'of', 'cat'\]",
    ):
        call(pipe, prompt=["a bold seven", "A photo of a cat, leaning left"], num_inference_steps=0)
    with pytest.warns(UserWarning, match=r"`negative_prompt` 0 has words .*\['dog'\]"):
        call(pipe, prompt="a bold seven", negative_prompt="dog", num_inference_steps=0)
    with pytest.warns(UserWarning, match=r"\['car'\]"):
        pipe.interpolate(prompt=["a seven", "a car"], num_frames=2, num_inference_steps=0, output_type="latent")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        call(pipe, prompt="A Bold seven, leaning RIGHT.", num_inference_steps=0)  # case and punctuation do not count
        call(
            TronPipeline(**clip_components), prompt="a photo of a cat", num_inference_steps=0
        )  # no vocabulary: no check
    pipe.save_pretrained(tmp_path)
    assert (
        TronPipeline.from_pretrained(tmp_path).config.prompt_vocabulary == "a bold leaning left right seven thin three"
    )


def test_class_names_only_for_classifiers(clip_pipe, classifier_components):
    # transformers' CLIPConfig carries a default two-entry id2label; a CLIP encoder still has no classes.
    assert clip_pipe.encoder_adapter.class_names is None
    classifier = classifier_components["encoder"]
    assert EncoderAdapter(classifier).class_names == getattr(classifier.config, "labels", None)
    classifier.register_to_config(labels=["zero", "one", "two", "three"])
    assert EncoderAdapter(classifier).class_names == ["zero", "one", "two", "three"]
