"""`NoiseOptimizationScheduler` against ReNO's optimisation loop, restated in plain PyTorch."""

import json
import math

import pytest
import torch

from tron_pipelines import GradientDescentScheduler, LangevinScheduler, NoiseOptimizationScheduler


DIM = 16
RENO_ITERATIONS = 50


def smooth_reward(latents: torch.Tensor) -> torch.Tensor:
    """A smooth, non-concave reward of latents ``(B, DIM)`` -> ``(B,)``, float64 (fixed random parameters)."""
    parameters = torch.Generator().manual_seed(7)
    weight = torch.randn(32, DIM, generator=parameters, dtype=torch.float64) / 2
    bias = torch.randn(32, generator=parameters, dtype=torch.float64)
    head = torch.randn(32, generator=parameters, dtype=torch.float64)
    return torch.tanh(latents @ weight.T + bias) @ head + torch.sin(3 * latents).sum(dim=1)


def energy_and_gradient(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        leaf = latents.detach().requires_grad_(True)
        energies = -smooth_reward(leaf)
        (grad,) = torch.autograd.grad(energies.sum(), leaf)
    return energies.detach(), grad


def reno_loop(initial: torch.Tensor, n_iters=RENO_ITERATIONS, lr=5.0, reg_weight=0.01, grad_clip=0.1):
    """ReNO's `LatentNoiseTrainer.train` for one prompt (batch 1): the reward loss and its regulariser, backward,
    `clip_grad_norm_` on the latent, a Nesterov SGD step, for every iteration but the last; the image kept is the
    iterate with the lowest reward loss (strict `<`). Returns all iterates and the kept iterate's index."""
    latents = torch.nn.Parameter(initial.clone())
    optimizer = torch.optim.SGD([latents], lr=lr, nesterov=True, momentum=0.9)
    latent_dim = math.prod(latents.shape[1:])
    best_loss, best_index, iterates = math.inf, None, []
    for iteration in range(n_iters):
        optimizer.zero_grad()
        iterates.append(latents.detach().clone())
        total_loss = -smooth_reward(latents).sum()
        total_reward_loss = total_loss.item()
        latent_norm = torch.linalg.vector_norm(latents)
        total_loss = total_loss + reg_weight * (0.5 * latent_norm**2 - (latent_dim - 1) * torch.log(latent_norm))
        if total_reward_loss < best_loss:
            best_loss, best_index = total_reward_loss, iteration
        if iteration != n_iters - 1:
            total_loss.backward()
            torch.nn.utils.clip_grad_norm_(latents, grad_clip)
            optimizer.step()
    return iterates, best_index


def run_scheduler(scheduler, initial: torch.Tensor, num_steps=RENO_ITERATIONS - 1):
    """How `TronPipeline` drives a scheduler that keeps its best iterate: evaluate, record, step; then one last
    evaluation without a step. Returns every iterate and the kept one."""
    scheduler.set_timesteps(num_steps)
    latents, iterates = initial.clone(), []
    for t in scheduler.timesteps:
        iterates.append(latents)
        energies, grad = energy_and_gradient(latents)
        scheduler.keep_best(energies, latents)
        latents = scheduler.step(grad, t, latents).prev_sample
    iterates.append(latents)
    scheduler.keep_best(energy_and_gradient(latents)[0], latents)
    return iterates, scheduler.best_sample


def test_defaults_are_renos():
    config = NoiseOptimizationScheduler().config
    assert config.learning_rate == 5.0 and config.sgd_momentum == 0.9 and config.nesterov is True
    assert config.grad_clip_norm == 0.1 and config.regularization_weight == 0.01 and config.keep_best_iterate


def test_iterates_and_kept_iterate_equal_renos_loop():
    initial = torch.randn(1, DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected, best_index = reno_loop(initial)
    iterates, kept = run_scheduler(NoiseOptimizationScheduler(), initial)
    assert len(iterates) == len(expected) == RENO_ITERATIONS
    for ours, theirs in zip(iterates, expected):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)
    # The run moves far and the best is neither the start nor the end, so keeping the right iterate is tested.
    assert (iterates[-1] - initial).norm() > 1.0 and 0 < best_index < RENO_ITERATIONS - 1
    torch.testing.assert_close(kept, expected[best_index], rtol=0, atol=1e-10)


def test_a_batch_equals_single_runs():
    initial = torch.randn(4, DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.5
    iterates, kept = run_scheduler(NoiseOptimizationScheduler(), initial, num_steps=30)
    for index in range(initial.shape[0]):
        single_iterates, single_kept = run_scheduler(NoiseOptimizationScheduler(), initial[index : index + 1], 30)
        for ours, theirs in zip(iterates, single_iterates):
            torch.testing.assert_close(ours[index : index + 1], theirs, rtol=0, atol=1e-12)
        torch.testing.assert_close(kept[index : index + 1], single_kept, rtol=0, atol=1e-12)


def test_heavy_ball_without_nesterov_matches_torch_sgd():
    initial = torch.randn(1, DIM, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    scheduler = NoiseOptimizationScheduler(
        learning_rate=0.05, nesterov=False, regularization_weight=0.0, grad_clip_norm=None
    )
    iterates, _ = run_scheduler(scheduler, initial, num_steps=10)
    latents = torch.nn.Parameter(initial.clone())
    optimizer = torch.optim.SGD([latents], lr=0.05, momentum=0.9)
    for ours in iterates:
        torch.testing.assert_close(ours, latents.detach(), rtol=0, atol=1e-10)
        optimizer.zero_grad()
        (-smooth_reward(latents).sum()).backward()
        optimizer.step()


def test_regularizer_gradient_is_the_gradient_of_renos_regularizer():
    sample = torch.randn(3, 2, DIM, dtype=torch.float64)  # K = 2 latents per sample, each regularised alone
    scheduler = NoiseOptimizationScheduler(grad_clip_norm=None, sgd_momentum=0.0, nesterov=False, learning_rate=1.0)
    scheduler.set_timesteps(1)
    moved = scheduler.step(torch.zeros_like(sample), 0, sample).prev_sample
    leaf = sample.clone().requires_grad_(True)
    norms = leaf.norm(dim=-1)
    (expected,) = torch.autograd.grad((0.01 * (0.5 * norms**2 - (DIM - 1) * norms.log())).sum(), leaf)
    torch.testing.assert_close(sample - moved, expected, rtol=0, atol=1e-12)


def test_auxiliary_variable_takes_the_sgd_step_without_regularizer():
    scheduler = NoiseOptimizationScheduler(grad_clip_norm=None, sgd_momentum=0.0, nesterov=False, learning_rate=0.5)
    scheduler.set_timesteps(1)
    out = scheduler.step(
        torch.zeros(2, 3), 0, torch.ones(2, 3), auxiliary_output=torch.ones(2, 2), auxiliary_sample=torch.zeros(2, 2)
    )
    torch.testing.assert_close(out.prev_auxiliary_sample, torch.full((2, 2), -0.5))


def test_nonfinite_sample_is_frozen_and_never_kept_over_a_finite_one():
    scheduler = NoiseOptimizationScheduler()
    scheduler.set_timesteps(2)
    sample = torch.randn(2, DIM)
    grad = torch.randn(2, DIM)
    grad[1, 0] = float("nan")
    out = scheduler.step(grad, 1, sample)
    assert out.finite.tolist() == [True, False]
    torch.testing.assert_close(out.prev_sample[1], sample[1])
    assert not torch.equal(out.prev_sample[0], sample[0])
    scheduler.keep_best(torch.tensor([0.0, float("nan")]), sample)
    scheduler.keep_best(torch.tensor([1.0, 5.0]), out.prev_sample)
    assert scheduler.best_energies.tolist() == [0.0, 5.0]
    torch.testing.assert_close(scheduler.best_sample, torch.stack([sample[0], out.prev_sample[1]]))


def test_ties_keep_the_earlier_iterate():
    scheduler = NoiseOptimizationScheduler()
    scheduler.set_timesteps(0)
    scheduler.keep_best(torch.tensor([1.0]), torch.zeros(1, 2))
    scheduler.keep_best(torch.tensor([1.0]), torch.ones(1, 2))
    torch.testing.assert_close(scheduler.best_sample, torch.zeros(1, 2))


def test_set_timesteps_forgets_momentum_and_best():
    initial = torch.randn(1, DIM, dtype=torch.float64)
    scheduler = NoiseOptimizationScheduler()
    first = run_scheduler(scheduler, initial, num_steps=5)
    second = run_scheduler(scheduler, initial, num_steps=5)
    for a, b in zip(first[0] + [first[1]], second[0] + [second[1]]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_save_reload_round_trips(tmp_path):
    scheduler = NoiseOptimizationScheduler(learning_rate=2.0, nesterov=False, grad_clip_norm=None)
    scheduler.save_pretrained(tmp_path)
    reloaded = NoiseOptimizationScheduler.from_pretrained(tmp_path)
    drop = {"_use_default_values"}
    assert json.dumps({k: v for k, v in reloaded.config.items() if k not in drop}, sort_keys=True) == json.dumps(
        {k: v for k, v in scheduler.config.items() if k not in drop}, sort_keys=True
    )


def test_swaps_with_langevin_both_ways_keep_each_others_settings():
    langevin = LangevinScheduler(step_size=0.3, momentum=0.99, max_grad_norm=1.0, noise_std=0.02)
    renoish = NoiseOptimizationScheduler.from_config(langevin.config)
    # Langevin's settings do not leak into ReNO's: the swap starts from ReNO's defaults.
    assert renoish.config.learning_rate == 5.0 and renoish.config.sgd_momentum == 0.9
    assert renoish.config.grad_clip_norm == 0.1 and renoish.keeps_best_iterate
    back = LangevinScheduler.from_config(
        NoiseOptimizationScheduler.from_config(langevin.config, learning_rate=1.0).config
    )
    assert back.config.step_size == 0.3 and back.config.momentum == 0.99 and back.config.noise_std == 0.02
    # The reverse: ReNO's settings survive a round trip through Langevin, and Langevin does not keep iterates.
    original = NoiseOptimizationScheduler(learning_rate=1.5, regularization_weight=0.0)
    assert not hasattr(LangevinScheduler.from_config(original.config), "keeps_best_iterate")
    again = NoiseOptimizationScheduler.from_config(LangevinScheduler.from_config(original.config).config)
    assert again.config.learning_rate == 1.5 and again.config.regularization_weight == 0.0
    assert NoiseOptimizationScheduler in langevin.compatibles and LangevinScheduler in original.compatibles
    assert GradientDescentScheduler in original.compatibles


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"sgd_momentum": 1.0}, "sgd_momentum"),
        ({"sgd_momentum": 0.0}, "nesterov"),
        ({"grad_clip_norm": 0.0}, "grad_clip_norm"),
        ({"regularization_weight": -0.1}, "regularization_weight"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoiseOptimizationScheduler(**kwargs)


def test_bad_step_use():
    scheduler = NoiseOptimizationScheduler()
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(torch.zeros(1, 2), 0, torch.ones(1, 2))
    scheduler.set_timesteps(1)
    with pytest.raises(ValueError, match="differ in shape"):
        scheduler.step(torch.zeros(1, 3), 0, torch.ones(1, 2))
    with pytest.raises(ValueError, match="together"):
        scheduler.step(torch.zeros(1, 2), 0, torch.ones(1, 2), auxiliary_output=torch.zeros(1, 1))
    scheduler.step(torch.zeros(1, 2), 0, torch.ones(1, 2))
    with pytest.raises(ValueError, match="All 1 steps"):
        scheduler.step(torch.zeros(1, 2), 0, torch.ones(1, 2))
