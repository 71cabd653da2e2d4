import json
import math

import pytest
import torch

from tron_pipelines import GradientDescentScheduler, LangevinScheduler
from tron_pipelines.schedulers.scheduling_langevin import annealing_factor


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def run(scheduler, steps=4, batch=3, seed=0, generator=None, with_auxiliary=True):
    torch.manual_seed(seed)
    sample = torch.randn(batch, 5)
    auxiliary = torch.randn(batch, 2) if with_auxiliary else None
    scheduler.set_timesteps(steps)
    generator = generator if generator is not None else seeded(seed)
    for t in scheduler.timesteps:
        grad = 2 * sample  # energy |x|^2
        aux_grad = 2 * auxiliary if with_auxiliary else None
        out = scheduler.step(
            grad, t, sample, generator=generator, auxiliary_output=aux_grad, auxiliary_sample=auxiliary
        )
        sample, auxiliary = out.prev_sample, out.prev_auxiliary_sample
    return sample, auxiliary


def comparable(config):
    return json.loads(json.dumps({k: v for k, v in config.items() if k != "_use_default_values"}))


CONFIGS = [
    {},
    {"momentum": 0.99, "step_size": 5.0, "noise_std": 0.01, "clamp_threshold": 2.0},
    {"noise_std": None, "momentum": 0.0, "max_grad_norm": None},
    {"annealing": "cosine", "annealing_min_ratio": 0.0},
    {"annealing": "linear", "auxiliary_learning_rate": 0.1},
]


@pytest.mark.parametrize("config", CONFIGS)
def test_save_reload_gives_same_steps(config, tmp_path):
    scheduler = LangevinScheduler(**config)
    scheduler.save_pretrained(tmp_path)
    reloaded = LangevinScheduler.from_pretrained(tmp_path)
    for a, b in zip(run(scheduler), run(reloaded)):
        torch.testing.assert_close(a, b)
    assert comparable(reloaded.config) == comparable(scheduler.config)


def test_interface_and_shapes():
    scheduler = LangevinScheduler()
    assert scheduler.init_noise_sigma == 1.0 and scheduler.order == 1
    sample = torch.randn(2, 3, 4)
    assert scheduler.scale_model_input(sample, 0) is sample
    scheduler.set_timesteps(3)
    assert scheduler.timesteps.tolist() == [2, 1, 0]
    out = scheduler.step(torch.ones_like(sample), 2, sample, generator=seeded())
    assert out.prev_sample.shape == sample.shape and out.prev_auxiliary_sample is None
    scheduler.set_timesteps(3)
    first = scheduler.step(torch.ones_like(sample), 2, sample, generator=seeded(), return_dict=False)
    torch.testing.assert_close(first[0], out.prev_sample)


def test_plain_langevin_update_and_default_noise():
    scheduler = LangevinScheduler(step_size=0.02, noise_std=None, momentum=0.0, max_grad_norm=None)
    scheduler.set_timesteps(1)
    sample, grad = torch.zeros(1, 4), torch.ones(1, 4)
    noise = torch.randn(1, 4, generator=seeded(3))
    out = scheduler.step(grad, 0, sample, generator=seeded(3))
    torch.testing.assert_close(out.prev_sample, -0.02 * grad + math.sqrt(0.04) * noise)


def test_heavy_ball_momentum_matches_the_method():
    scheduler = LangevinScheduler(step_size=1.0, noise_std=0.0, momentum=0.9, max_grad_norm=None)
    scheduler.set_timesteps(2)
    sample = torch.zeros(1, 1)
    grad = torch.ones(1, 1)
    sample = scheduler.step(grad, 1, sample).prev_sample  # buf = g
    sample = scheduler.step(grad, 0, sample).prev_sample  # buf = 0.9 g + g
    torch.testing.assert_close(sample, torch.tensor([[-1.0 - 1.9]]))


def test_set_timesteps_resets_state():
    scheduler = LangevinScheduler(momentum=0.9)
    first = run(scheduler)
    second = run(scheduler)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)


def test_gradient_clipping_is_per_sample():
    scheduler = LangevinScheduler(step_size=1.0, noise_std=0.0, max_grad_norm=1.0)
    scheduler.set_timesteps(1)
    grad = torch.tensor([[30.0, 40.0], [0.3, 0.4]])
    out = scheduler.step(grad, 0, torch.zeros(2, 2))
    torch.testing.assert_close(out.prev_sample, torch.tensor([[-0.6, -0.8], [-0.3, -0.4]]), atol=1e-5, rtol=0)


def test_batch_item_matches_single_run_with_generator_list():
    scheduler = LangevinScheduler(momentum=0.5, noise_std=0.1)
    torch.manual_seed(0)
    batch_sample, _ = run(scheduler, batch=3, generator=[seeded(10), seeded(11), seeded(12)])
    torch.manual_seed(0)
    full = torch.randn(3, 5)
    scheduler.set_timesteps(4)
    sample = full[1:2]
    generator = seeded(11)
    for t in scheduler.timesteps:
        sample = scheduler.step(2 * sample, t, sample, generator=generator).prev_sample
    torch.testing.assert_close(batch_sample[1:2], sample)


def test_clamp_threshold():
    scheduler = LangevinScheduler(step_size=10.0, noise_std=0.0, clamp_threshold=2.0, max_grad_norm=None)
    scheduler.set_timesteps(1)
    out = scheduler.step(torch.tensor([[-1.0, 1.0]]), 0, torch.zeros(1, 2))
    torch.testing.assert_close(out.prev_sample, torch.tensor([[2.0, -2.0]]))


def test_adam_matches_torch_adam():
    scheduler = LangevinScheduler(auxiliary_learning_rate=0.05, max_grad_norm=None)
    value = torch.randn(2, 3, generator=seeded(1))
    parameter = torch.nn.Parameter(value.clone())
    optimizer = torch.optim.Adam([parameter], lr=0.05)
    scheduler.set_timesteps(5)
    for t in scheduler.timesteps:
        grad = torch.sin(3 * value)
        value = scheduler.step(
            torch.zeros(2, 1), t, torch.zeros(2, 1), auxiliary_output=grad, auxiliary_sample=value
        ).prev_auxiliary_sample
        parameter.grad = torch.sin(3 * parameter.detach())
        optimizer.step()
    torch.testing.assert_close(value, parameter.detach(), atol=1e-6, rtol=1e-5)


def test_nonfinite_samples_are_frozen():
    scheduler = LangevinScheduler(noise_std=0.1)
    scheduler.set_timesteps(1)
    sample = torch.randn(2, 3)
    grad = torch.ones(2, 3)
    grad[1, 0] = float("nan")
    out = scheduler.step(grad, 0, sample, generator=seeded())
    assert out.finite.tolist() == [True, False]
    torch.testing.assert_close(out.prev_sample[1], sample[1])
    assert not torch.equal(out.prev_sample[0], sample[0])


def test_annealing_schedules():
    assert annealing_factor("constant", 5, 10, 0.1) == 1.0
    assert annealing_factor("linear", 0, 11, 0.1) == 1.0
    assert annealing_factor("linear", 10, 11, 0.1) == pytest.approx(0.1)
    assert annealing_factor("cosine", 5, 11, 0.0) == pytest.approx(0.5)
    scheduler = LangevinScheduler(step_size=1.0, noise_std=0.5, annealing="linear", annealing_min_ratio=0.5)
    scheduler.set_timesteps(3)
    assert scheduler.current_step_size_and_noise() == (1.0, 0.5)


def schedule_by_definition(schedule, step_index, num_steps, min_ratio):
    """The documented annealing multipliers, written out: linear and half-cosine from 1 down to ``min_ratio``."""
    progress = step_index / (num_steps - 1)
    if schedule == "linear":
        return 1.0 + (min_ratio - 1.0) * progress
    return min_ratio + (1.0 - min_ratio) * (math.cos(math.pi * progress) + 1.0) / 2.0


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_annealing_scales_step_size_and_noise_at_every_step(schedule):
    steps, min_ratio = 5, 0.2
    factors = [schedule_by_definition(schedule, i, steps, min_ratio) for i in range(steps)]
    assert min(abs(a - b) for a, b in zip(factors, factors[1:])) > 0.05  # every step has its own multiplier

    # Noise-free: x moves by exactly -step_size * factor * g.
    scheduler = LangevinScheduler(
        step_size=0.3, noise_std=0.0, max_grad_norm=None, annealing=schedule, annealing_min_ratio=min_ratio
    )
    scheduler.set_timesteps(steps)
    sample, grad = torch.zeros(2, 3), torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    for factor, t in zip(factors, scheduler.timesteps):
        assert scheduler.current_step_size_and_noise() == pytest.approx((0.3 * factor, 0.0))
        moved = scheduler.step(grad, t, sample).prev_sample
        torch.testing.assert_close(moved - sample, -0.3 * factor * grad)
        sample = moved

    # Gradient-free: x moves by exactly noise_std * factor * eps, eps the generator's next normal draw; with
    # noise_std=None the noise is sqrt(2 * step_size) before annealing.
    for noise_std, base in ((0.5, 0.5), (None, math.sqrt(2 * 0.3))):
        scheduler = LangevinScheduler(
            step_size=0.3, noise_std=noise_std, annealing=schedule, annealing_min_ratio=min_ratio
        )
        scheduler.set_timesteps(steps)
        sample, generator, reference = torch.zeros(2, 3), seeded(4), seeded(4)
        for factor, t in zip(factors, scheduler.timesteps):
            moved = scheduler.step(torch.zeros(2, 3), t, sample, generator=generator).prev_sample
            torch.testing.assert_close(moved - sample, base * factor * torch.randn(2, 3, generator=reference))
            sample = moved


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_annealing_over_one_and_two_steps(schedule):
    # One step: the factor is 1 (no division by zero). Two steps: 1, then the minimum ratio.
    for steps, factors in ((1, [1.0]), (2, [1.0, 0.3])):
        scheduler = LangevinScheduler(
            step_size=1.0, noise_std=0.0, max_grad_norm=None, annealing=schedule, annealing_min_ratio=0.3
        )
        scheduler.set_timesteps(steps)
        sample = torch.zeros(1, 1)
        for factor, t in zip(factors, scheduler.timesteps):
            moved = scheduler.step(torch.ones(1, 1), t, sample).prev_sample
            torch.testing.assert_close(moved - sample, torch.tensor([[-factor]]))
            sample = moved


def test_noise_has_the_sample_dtype():
    # A float64 sample gets float64 draws from the generator, not float32 draws cast up.
    scheduler = LangevinScheduler(noise_std=1.0)
    scheduler.set_timesteps(1)
    out = scheduler.step(
        torch.zeros(2, 3, dtype=torch.float64), 0, torch.zeros(2, 3, dtype=torch.float64), generator=seeded(6)
    )
    # Exactly: float32 draws cast up differ from the float64 ones by ~3e-8, inside assert_close's float64 tolerance.
    torch.testing.assert_close(
        out.prev_sample, torch.randn(2, 3, generator=seeded(6), dtype=torch.float64), rtol=0, atol=0
    )


def test_nonfinite_sample_keeps_its_momentum_buffer_while_others_update():
    # Momentum 0.5, no noise, no clipping: x moves by -buf, buf = 0.5 * buf + g, by hand.
    scheduler = LangevinScheduler(step_size=1.0, noise_std=0.0, momentum=0.5, max_grad_norm=None)
    scheduler.set_timesteps(3)
    nan = float("nan")
    grads = [
        torch.tensor([[1.0], [2.0], [nan]]),  # sample 2 is non-finite from the first step: its buffer starts at 0
        torch.tensor([[1.0], [nan], [4.0]]),  # sample 1 is frozen with a buffer of 2
        torch.tensor([[1.0], [8.0], [16.0]]),
    ]
    buffers = [[1.0, 2.0, 0.0], [1.5, 2.0, 4.0], [1.75, 9.0, 18.0]]
    finites = [[True, True, False], [True, False, True], [True, True, True]]
    sample = torch.zeros(3, 1)
    for grad, buffer, finite, t in zip(grads, buffers, finites, scheduler.timesteps):
        out = scheduler.step(grad, t, sample)
        assert out.finite.tolist() == finite
        expected_move = torch.tensor([[-b if f else 0.0] for b, f in zip(buffer, finite)])
        torch.testing.assert_close(out.prev_sample - sample, expected_move)
        sample = out.prev_sample


def test_nonfinite_sample_keeps_its_adam_moments():
    # Sample 1's auxiliary gradient is non-finite at the second of three steps: its value and Adam moments stay, and
    # the third step's bias correction still counts three steps. Sample 0 follows torch.optim.Adam.
    lr, (beta1, beta2), eps = 0.1, (0.9, 0.999), 1e-8
    scheduler = LangevinScheduler(auxiliary_learning_rate=lr, max_grad_norm=None, noise_std=0.0)
    scheduler.set_timesteps(3)
    grads = [torch.tensor([[0.5], [1.0]]), torch.tensor([[-0.2], [float("inf")]]), torch.tensor([[0.3], [-3.0]])]
    value = torch.zeros(2, 1)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=lr, betas=(beta1, beta2), eps=eps)
    values = []
    for grad, t in zip(grads, scheduler.timesteps):
        value = scheduler.step(
            torch.zeros(2, 1), t, torch.zeros(2, 1), auxiliary_output=grad, auxiliary_sample=value
        ).prev_auxiliary_sample
        values.append(value)
        parameter.grad = grad[0].clone()
        optimizer.step()
        torch.testing.assert_close(value[0], parameter.detach())
    first, second = (1 - beta1) * 1.0, (1 - beta2) * 1.0
    after_first = -lr * (first / (1 - beta1)) / (math.sqrt(second / (1 - beta2)) + eps)
    assert values[0][1].item() == pytest.approx(after_first) and values[1][1].item() == pytest.approx(after_first)
    first, second = beta1 * first + (1 - beta1) * -3.0, beta2 * second + (1 - beta2) * 9.0
    after_third = after_first - lr * (first / (1 - beta1**3)) / (math.sqrt(second / (1 - beta2**3)) + eps)
    assert values[2][1].item() == pytest.approx(after_third, rel=1e-5)


def test_auxiliary_gradients_are_clipped_per_sample_before_adam():
    # Adam only sees the direction of a steady gradient, so clipping shows when the gradient's size changes between
    # steps: sample 0's norm goes 3 -> 0.5 -> 6 against a bound of 1. Sample 1's gradient, 1e-8, is the size of
    # Adam's epsilon, where the denominator sqrt(v) + eps matters. Each sample must follow torch.optim.Adam fed its
    # own clipped gradient.
    lr = 0.1
    scheduler = LangevinScheduler(auxiliary_learning_rate=lr, max_grad_norm=1.0, noise_std=0.0)
    scheduler.set_timesteps(3)
    value = torch.zeros(2, 2)
    grads = [
        torch.tensor([[3.0, 0.0], [1e-8, 0.0]]),
        torch.tensor([[0.3, 0.4], [1e-8, 0.0]]),
        torch.tensor([[0.0, 6.0], [0.0, 1e-8]]),
    ]
    parameters = [torch.nn.Parameter(torch.zeros(2)) for _ in range(2)]
    optimizers = [torch.optim.Adam([p], lr=lr) for p in parameters]
    for grad, t in zip(grads, scheduler.timesteps):
        value = scheduler.step(
            torch.zeros(2, 1), t, torch.zeros(2, 1), auxiliary_output=grad, auxiliary_sample=value
        ).prev_auxiliary_sample
        for parameter, optimizer, row in zip(parameters, optimizers, grad):
            parameter.grad = row.clone()
            torch.nn.utils.clip_grad_norm_([parameter], 1.0)
            optimizer.step()
    torch.testing.assert_close(value, torch.stack([p.detach() for p in parameters]), atol=1e-6, rtol=1e-5)


def test_gradient_descent_step_by_hand():
    # x <- clamp(x - eta * clip(g)), a <- a - lr * clip(g_a), per sample; a sample with any non-finite gradient keeps
    # both.
    scheduler = GradientDescentScheduler(
        step_size=0.5, max_grad_norm=1.0, clamp_threshold=1.2, auxiliary_learning_rate=0.1
    )
    scheduler.set_timesteps(1)
    assert scheduler.timesteps.tolist() == [0]
    sample = torch.tensor([[1.0, 0.0], [0.0, -1.0], [0.2, 0.3], [0.5, 0.5]])
    grad = torch.tensor([[-3.0, 4.0], [0.3, 0.4], [float("nan"), 1.0], [1.0, 1.0]])
    auxiliary, auxiliary_grad = torch.ones(4, 1), torch.tensor([[2.0], [-0.5], [1.0], [float("inf")]])
    out = scheduler.step(grad, 0, sample, auxiliary_output=auxiliary_grad, auxiliary_sample=auxiliary)
    assert out.finite.tolist() == [True, True, False, False]
    # Sample 0: clipped to (-0.6, 0.8), x = (1.3, -0.4), clamped to 1.2. Sample 1: under the bound, -1.2 stays.
    expected = torch.tensor([[1.2, -0.4], [-0.15, -1.2], [0.2, 0.3], [0.5, 0.5]])
    torch.testing.assert_close(out.prev_sample, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out.prev_auxiliary_sample, torch.tensor([[0.9], [1.05], [1.0], [1.0]]), atol=1e-5, rtol=0
    )
    # Clamped from below too, and without an auxiliary variable none comes back.
    scheduler.set_timesteps(1)
    alone = scheduler.step(torch.tensor([[0.0, 1.0]]), 0, torch.tensor([[-1.3, -1.0]]), return_dict=False)
    torch.testing.assert_close(alone[0], torch.tensor([[-1.2, -1.2]]))
    assert alone[1] is None and alone[2].tolist() == [True]


@pytest.mark.parametrize("scheduler_class", [LangevinScheduler, GradientDescentScheduler])
def test_clipping_leaves_gradients_under_the_bound_alone(scheduler_class):
    # Even a tiny gradient: the bound divides by its norm (plus a small epsilon), which must not flip or blow it up.
    scheduler = scheduler_class(
        step_size=1.0, max_grad_norm=1.0, **({"noise_std": 0.0} if scheduler_class is LangevinScheduler else {})
    )
    scheduler.set_timesteps(1)
    grad = torch.tensor([[3e-8, 4e-8], [0.6, 0.0]])
    torch.testing.assert_close(scheduler.step(grad, 0, torch.zeros(2, 2)).prev_sample, -grad)


@pytest.mark.parametrize("scheduler_class", [LangevinScheduler, GradientDescentScheduler])
def test_timesteps_count_the_steps(scheduler_class):
    scheduler = scheduler_class()
    scheduler.set_timesteps(3)
    assert scheduler.timesteps.tolist() == [2, 1, 0] and scheduler.timesteps.dtype == torch.long
    scheduler.set_timesteps(0)  # translator only
    assert scheduler.timesteps.tolist() == []
    for bad in (-1, 2.0):
        with pytest.raises(ValueError, match="`num_inference_steps` must be an integer >= 0"):
            scheduler.set_timesteps(bad)


def test_gradient_descent_bad_step_use():
    scheduler = GradientDescentScheduler()
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(torch.zeros(1, 2), 0, torch.zeros(1, 2))
    scheduler.set_timesteps(1)
    with pytest.raises(ValueError, match=r"`model_output` \(1, 3\) and `sample` \(1, 2\) differ in shape"):
        scheduler.step(torch.zeros(1, 3), 0, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="must be given together"):
        scheduler.step(torch.zeros(1, 2), 0, torch.zeros(1, 2), auxiliary_output=torch.zeros(1, 1))
    with pytest.raises(ValueError, match="step_size"):
        GradientDescentScheduler(step_size=-0.1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"step_size": -1.0}, "step_size"),
        ({"momentum": 1.0}, "momentum"),
        ({"annealing": "exp"}, "annealing"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"noise_std": -0.1}, "noise_std"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LangevinScheduler(**kwargs)


def test_bad_step_use():
    scheduler = LangevinScheduler()
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(torch.zeros(1, 2), 0, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="num_inference_steps"):
        scheduler.set_timesteps(-1)
    scheduler.set_timesteps(1)
    with pytest.raises(ValueError, match="differ in shape"):
        scheduler.step(torch.zeros(1, 3), 0, torch.zeros(1, 2))
    scheduler.step(torch.zeros(1, 2), 0, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="All 1 steps"):
        scheduler.step(torch.zeros(1, 2), 0, torch.zeros(1, 2))


def test_config_attribute_access_warns():
    scheduler = LangevinScheduler()
    with pytest.warns(FutureWarning):
        assert scheduler.step_size == 0.1
    with pytest.raises(AttributeError):
        scheduler.does_not_exist


def test_gradient_descent_from_langevin_config():
    langevin = LangevinScheduler(step_size=0.5, clamp_threshold=1.0, max_grad_norm=None, momentum=0.9)
    descent = GradientDescentScheduler.from_config(langevin.config)
    assert descent.config.step_size == 0.5 and descent.config.clamp_threshold == 1.0
    descent.set_timesteps(1)
    out = descent.step(
        torch.tensor([[1.0, -4.0]]),
        0,
        torch.zeros(1, 2),
        auxiliary_output=torch.ones(1, 1),
        auxiliary_sample=torch.zeros(1, 1),
    )
    torch.testing.assert_close(out.prev_sample, torch.tensor([[-0.5, 1.0]]))
    torch.testing.assert_close(out.prev_auxiliary_sample, torch.tensor([[-5e-3]]))
    back = LangevinScheduler.from_config(descent.config)
    assert back.config.step_size == 0.5
