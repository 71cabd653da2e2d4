"""`TronPipeline` with reward models: the energy is minus their weighted sum, each reward is reported per image, and a
scheduler that keeps its best iterate (ReNO's rule) gets it."""

import pytest
import torch
from conftest import tiny_clip
from test_rewards import laion_head_state_dict

from tron_pipelines import (
    AestheticReward,
    LangevinScheduler,
    NoiseOptimizationScheduler,
    PickScoreReward,
    RewardModels,
    TronPipeline,
)


WEIGHTS = {"pickscore": 2.0, "aesthetic": 1.5}
CALL = {"prompt": ["a red car", "a cat"], "num_images_per_prompt": 2, "num_augmentations": 0, "output_type": "pt"}


def seeded(count=4, seed=0):
    return [torch.Generator().manual_seed(seed + index) for index in range(count)]


@pytest.fixture
def reward_pipe(clip_components, tokenizer):
    clip = tiny_clip(len(tokenizer), seed=4)
    rewards = RewardModels(
        {
            "pickscore": PickScoreReward.from_clip(tiny_clip(len(tokenizer), seed=3), tokenizer),
            "aesthetic": AestheticReward.from_clip(clip, laion_head_state_dict(clip.config.projection_dim)),
        }
    )
    pipe = TronPipeline(**clip_components, rewards=rewards, reward_weights=WEIGHTS)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def direct_rewards(pipe, out, prompts):
    """Each reward of the returned images ([0, 1]) computed by the reward models themselves."""
    images = out.images * 2 - 1
    return {name: model.score(images, prompts) for name, model in pipe.rewards.models.items()}


@pytest.mark.parametrize(
    "scheduler",
    [LangevinScheduler(step_size=0.5, noise_std=0.01, momentum=0.5), NoiseOptimizationScheduler(learning_rate=0.5)],
    ids=["langevin", "noise_optimization"],
)
def test_reported_rewards_are_the_rewards_of_the_returned_images(reward_pipe, scheduler):
    pipe = TronPipeline.from_pipe(reward_pipe, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(num_inference_steps=4, generator=seeded(), **CALL)
    prompts = ["a red car"] * 2 + ["a cat"] * 2
    expected = direct_rewards(pipe, out, prompts)
    assert set(out.rewards) == set(WEIGHTS)
    for name, values in out.rewards.items():
        assert values.shape == (4,)
        # The returned images went through [-1, 1] -> [0, 1] (float rounding only).
        torch.testing.assert_close(values, expected[name], rtol=0, atol=2e-5)
    # Without augmentations the energy is exactly minus the weighted sum of the reported rewards.
    weighted = sum(WEIGHTS[name] * out.rewards[name] for name in WEIGHTS)
    torch.testing.assert_close(out.energies, -weighted, rtol=0, atol=1e-5)


def test_rewards_drive_the_sampler(reward_pipe):
    """Noise optimisation raises the weighted reward over the initialisation for every image."""
    pipe = TronPipeline.from_pipe(reward_pipe, scheduler=NoiseOptimizationScheduler(learning_rate=0.5))
    pipe.set_progress_bar_config(disable=True)
    start = pipe(num_inference_steps=0, generator=seeded(), **CALL)
    refined = pipe(num_inference_steps=10, generator=seeded(), **CALL)
    assert bool((refined.energies < start.energies - 1e-3).all())


def test_best_iterate_is_returned(reward_pipe):
    """With ReNO's rule the returned latents are the evaluated iterate of lowest energy: no energy seen along the
    way is lower, and re-scoring the returned latents gives the returned energies."""
    pipe = TronPipeline.from_pipe(reward_pipe, scheduler=NoiseOptimizationScheduler(learning_rate=10.0))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(num_inference_steps=8, generator=seeded(), return_energy_trace=True, **CALL)
    assert bool((out.energies <= out.energy_trace.min(dim=0).values + 1e-6).all())
    rescored = pipe(latents=out.latents, num_inference_steps=0, **CALL)
    torch.testing.assert_close(rescored.energies, out.energies, rtol=0, atol=1e-5)
    torch.testing.assert_close(rescored.images, out.images, rtol=0, atol=1e-5)
    # With a large step some images overshoot, so their best iterate is an earlier one: the rule changed the result.
    last = TronPipeline.from_pipe(
        pipe, scheduler=NoiseOptimizationScheduler(learning_rate=10.0, keep_best_iterate=False)
    )(num_inference_steps=8, generator=seeded(), **CALL)
    earlier = (out.energies < last.energies - 1e-4).tolist()
    assert any(earlier) and not all(earlier)
    assert bool((out.energies <= last.energies + 1e-6).all())
    for index, changed in enumerate(earlier):
        assert torch.equal(out.latents[index], last.latents[index]) != changed


def test_call_weights_override_the_saved_ones_and_zero_reports_only(reward_pipe):
    out = reward_pipe(num_inference_steps=2, generator=seeded(), reward_weights={"aesthetic": 0.0}, **CALL)
    torch.testing.assert_close(out.energies, -WEIGHTS["pickscore"] * out.rewards["pickscore"], rtol=0, atol=1e-5)
    assert reward_pipe.reward_weights_for({"aesthetic": 0.0}) == {"pickscore": 2.0, "aesthetic": 0.0}


def test_default_weights_are_renos(clip_components, tokenizer):
    rewards = RewardModels({"pickscore": PickScoreReward.from_clip(tiny_clip(len(tokenizer), seed=3), tokenizer)})
    pipe = TronPipeline(**clip_components, rewards=rewards)
    assert pipe.config.reward_weights == {"pickscore": 0.05}


def test_save_and_load_round_trip(reward_pipe, tmp_path):
    kwargs = {"num_inference_steps": 3, **CALL}
    before = reward_pipe(generator=seeded(), **kwargs)
    reward_pipe.save_pretrained(tmp_path)
    reloaded = TronPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert isinstance(reloaded.rewards, RewardModels) and reloaded.config.reward_weights == WEIGHTS
    after = reloaded(generator=seeded(), **kwargs)
    torch.testing.assert_close(after.images, before.images, rtol=0, atol=1e-6)
    for name in WEIGHTS:
        torch.testing.assert_close(after.rewards[name], before.rewards[name], rtol=0, atol=1e-6)


def test_negative_prompt_pushes_rewards_apart(reward_pipe):
    """A negative prompt adds ``+negative_prompt_weight * sum_i w_i r_i(x, negative)`` to the energy."""
    kwargs = {"num_inference_steps": 0, **CALL}
    plain = reward_pipe(generator=seeded(), **kwargs)
    negative = reward_pipe(generator=seeded(), negative_prompt="a dog", negative_prompt_weight=0.5, **kwargs)
    images = plain.images * 2 - 1
    against_dog = WEIGHTS["pickscore"] * reward_pipe.rewards.models["pickscore"].score(images, ["a dog"] * 4)
    against_dog = against_dog + WEIGHTS["aesthetic"] * reward_pipe.rewards.models["aesthetic"].score(images)
    torch.testing.assert_close(negative.energies, plain.energies + 0.5 * against_dog, rtol=0, atol=1e-5)


def test_rewards_without_prompt_or_with_unknown_names_are_refused(reward_pipe):
    with pytest.raises(ValueError, match="give `prompt`"):
        reward_pipe(condition_embeds=torch.randn(1, 16), num_inference_steps=1)
    with pytest.raises(ValueError, match="hps"):
        reward_pipe("a cat", reward_weights={"hps": 1.0})
    with pytest.raises(TypeError, match="numbers"):
        reward_pipe("a cat", reward_weights={"pickscore": "high"})


def test_pipelines_without_rewards_report_none(clip_pipe):
    out = clip_pipe("a cat", num_inference_steps=1, output_type="pt")
    assert out.rewards is None
    with pytest.raises(ValueError, match="rewards"):
        clip_pipe("a cat", reward_weights={"pickscore": 1.0})


def test_candidate_search_ranks_by_the_reward_energy(reward_pipe):
    """The first of several candidates is the single draw, so the best of three is never worse by the rewards."""
    single = reward_pipe(num_inference_steps=0, num_candidates=1, generator=seeded(), **CALL)
    searched = reward_pipe(num_inference_steps=0, num_candidates=3, generator=seeded(), **CALL)
    assert bool((searched.energies <= single.energies + 1e-6).all())
    assert bool((searched.energies < single.energies - 1e-4).any())
