"""Langevin dynamics over generator latents, as used by TR0N to refine the translator's proposals.

The sampler moves two kinds of variables per sample:

* the *Langevin variable* (``sample``): G's main latent, or in TR0N's mean-mixing initialisation all K component means
  ``(B, K, D)``. It follows (heavy-ball) stochastic gradient Langevin dynamics on the energy:
  ``buf = momentum * buf + g``, ``x = x - step_size * buf + noise_std * eps``, optionally clamped to a threshold.
* an optional *auxiliary variable* (``auxiliary_sample``, ``(B, A)``): auxiliary latents such as BigGAN's class
  embedding and the per-dimension mixture logits. It follows Adam, as in the method.

Gradients are clipped per sample (never one norm over the batch, which would couple samples and make results depend
on the batch size). Samples whose gradient is not finite are frozen for that step; the pipeline reports them.
"""

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor


ANNEALING_SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class LangevinSchedulerOutput(BaseOutput):
    """Output of a Langevin step.

    Args:
        prev_sample: The updated Langevin variable, same shape as the input ``sample``.
        prev_auxiliary_sample: The updated auxiliary variable ``(B, A)``, or ``None`` when none was given.
        finite: ``(B,)`` bool, False where a sample's gradient was not finite and its update was skipped.
    """

    prev_sample: torch.Tensor
    prev_auxiliary_sample: torch.Tensor | None = None
    finite: torch.Tensor | None = None


def annealing_factor(schedule: str, step_index: int, num_steps: int, min_ratio: float) -> float:
    """Multiplier of step size and noise at ``step_index`` of ``num_steps``: 1 at the start, ``min_ratio`` at the end."""
    if schedule == "constant" or num_steps <= 1:
        return 1.0
    progress = step_index / (num_steps - 1)
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * progress
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def clip_per_sample(grad: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Scale each sample's gradient (dim 0) so its L2 norm is at most ``max_norm``, as ``clip_grad_norm_`` would."""
    if max_norm is None:
        return grad
    norms = grad.flatten(1).norm(dim=1).view(-1, *([1] * (grad.ndim - 1)))
    return grad * (max_norm / (norms + 1e-6)).clamp(max=1.0)


def finite_per_sample(grad: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(grad.flatten(1)).all(dim=1)


class LangevinScheduler(SchedulerMixin, ConfigMixin):
    """Stochastic gradient Langevin dynamics with optional heavy-ball momentum, plus Adam for auxiliary variables.

    With ``momentum=0`` and ``noise_std=None`` this is plain (unadjusted) Langevin dynamics, ``x <- x - eta * g +
    sqrt(2 eta) * eps``. TR0N's BigGAN setting is ``step_size=5.0, noise_std=0.01, momentum=0.99, max_grad_norm=1.0,
    clamp_threshold=2.0``; its StyleGAN/NVAE setting uses ``step_size=0.1``.

    Args:
        step_size: Gradient step size eta (the paper's beta * lambda / 2).
        noise_std: Std of the Gaussian noise added each step (the paper's sqrt(lambda)); ``None`` means
            ``sqrt(2 * step_size)``.
        momentum: Heavy-ball momentum of the gradient buffer (0 disables it).
        max_grad_norm: Per-sample L2 bound of each gradient (Langevin and auxiliary separately); ``None`` disables it.
        clamp_threshold: Clamp of the Langevin variable to ``[-t, t]`` after each step; ``None`` disables it.
        annealing: ``"constant"``, ``"linear"`` or ``"cosine"`` decay of step size and noise over the steps.
        annealing_min_ratio: Multiplier reached at the last step by the linear and cosine schedules.
        auxiliary_learning_rate: Adam learning rate of the auxiliary variable (the method uses 5e-3).
        auxiliary_betas / auxiliary_eps: Adam's betas and epsilon.
        skip_nonfinite: When False (default) the pipeline raises on a non-finite energy or gradient; when True it
            only skips the affected sample's update.
        num_train_timesteps: Kept for diffusers compatibility; unused.
    """

    # Schedulers whose configs this one accepts without a warning (their extra keys are kept, unused, so that swapping
    # back restores them), as diffusers does for its own interchangeable schedulers.
    _compatibles = ["GradientDescentScheduler", "NoiseOptimizationScheduler"]
    order = 1

    @classmethod
    def _get_compatibles(cls):
        # diffusers looks the names up in its own namespace only, where this package's schedulers are not.
        import tron_pipelines.schedulers as schedulers

        return [getattr(schedulers, name) for name in sorted({cls.__name__, *cls._compatibles})]

    @register_to_config
    def __init__(
        self,
        step_size: float = 0.1,
        noise_std: float | None = 0.01,
        momentum: float = 0.0,
        max_grad_norm: float | None = 1.0,
        clamp_threshold: float | None = None,
        annealing: str = "constant",
        annealing_min_ratio: float = 0.1,
        auxiliary_learning_rate: float = 5e-3,
        auxiliary_betas: tuple[float, float] = (0.9, 0.999),
        auxiliary_eps: float = 1e-8,
        skip_nonfinite: bool = False,
        num_train_timesteps: int = 1000,
    ):
        if step_size < 0:
            raise ValueError(f"`step_size` must be >= 0, got {step_size}.")
        if noise_std is not None and noise_std < 0:
            raise ValueError(f"`noise_std` must be >= 0 or None, got {noise_std}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1), got {momentum}.")
        if annealing not in ANNEALING_SCHEDULES:
            raise ValueError(f"`annealing` must be one of {ANNEALING_SCHEDULES}, got {annealing!r}.")
        if max_grad_norm is not None and max_grad_norm <= 0:
            raise ValueError(f"`max_grad_norm` must be > 0 or None, got {max_grad_norm}.")
        if len(auxiliary_betas) != 2 or not all(0.0 <= beta < 1.0 for beta in auxiliary_betas):
            raise ValueError(f"`auxiliary_betas` must be two numbers in [0, 1), got {auxiliary_betas!r}.")
        # A saved config comes back from JSON as a list: one type either way, so a reloaded config equals the original.
        self.register_to_config(auxiliary_betas=tuple(auxiliary_betas))
        self.init_noise_sigma = 1.0
        self.timesteps = torch.zeros(0, dtype=torch.long)
        self.num_inference_steps = None
        self._reset_state()

    def _reset_state(self):
        self._step_index = 0
        self._momentum_buffer = None
        self._adam_first_moment = None
        self._adam_second_moment = None

    @property
    def step_index(self) -> int:
        """Number of steps taken since the last `set_timesteps`."""
        return self._step_index

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        return sample

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None):
        """Prepare ``num_inference_steps`` Langevin steps (0 is valid) and reset momentum and Adam state."""
        if not isinstance(num_inference_steps, int) or num_inference_steps < 0:
            raise ValueError(f"`num_inference_steps` must be an integer >= 0, got {num_inference_steps!r}.")
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.arange(num_inference_steps - 1, -1, -1, device=device, dtype=torch.long)
        self._reset_state()

    def current_step_size_and_noise(self) -> tuple[float, float]:
        """``(step_size, noise_std)`` after annealing, for the step about to be taken."""
        factor = annealing_factor(
            self.config.annealing, self._step_index, self.num_inference_steps or 1, self.config.annealing_min_ratio
        )
        step_size = self.config.step_size * factor
        noise_std = math.sqrt(2.0 * self.config.step_size) if self.config.noise_std is None else self.config.noise_std
        return step_size, noise_std * factor

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        auxiliary_output: torch.Tensor | None = None,
        auxiliary_sample: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> LangevinSchedulerOutput | tuple:
        """Take one Langevin step.

        Args:
            model_output: Energy gradient w.r.t. ``sample`` (same shape, ``(B, ...)``).
            timestep: Current entry of ``self.timesteps`` (only the step count matters).
            sample: Langevin variable ``(B, ...)``; float32 recommended.
            generator: RNG for the Langevin noise; a list gives one generator per sample.
            auxiliary_output / auxiliary_sample: Gradient and value of the Adam-driven variable, ``(B, A)``.
            return_dict: Return a `LangevinSchedulerOutput` (default) or a tuple.
        """
        if self.num_inference_steps is None:
            raise ValueError("Call `set_timesteps` before `step`.")
        if model_output.shape != sample.shape:
            raise ValueError(
                f"`model_output` {tuple(model_output.shape)} and `sample` {tuple(sample.shape)} differ in shape."
            )
        if (auxiliary_output is None) != (auxiliary_sample is None):
            raise ValueError("`auxiliary_output` and `auxiliary_sample` must be given together.")
        if self._step_index >= self.num_inference_steps:
            raise ValueError(f"All {self.num_inference_steps} steps were taken; call `set_timesteps` again.")

        finite = finite_per_sample(model_output)
        if auxiliary_output is not None:
            finite = finite & finite_per_sample(auxiliary_output)
        keep = finite.view(-1, *([1] * (sample.ndim - 1)))

        step_size, noise_std = self.current_step_size_and_noise()
        grad = clip_per_sample(
            torch.nan_to_num(model_output, nan=0.0, posinf=0.0, neginf=0.0), self.config.max_grad_norm
        )
        if self.config.momentum > 0:
            if self._momentum_buffer is None:
                self._momentum_buffer = torch.where(keep, grad, torch.zeros_like(grad))
            else:
                self._momentum_buffer = torch.where(
                    keep, self.config.momentum * self._momentum_buffer + grad, self._momentum_buffer
                )
            grad = self._momentum_buffer
        noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        prev_sample = sample - step_size * grad + noise_std * noise
        if self.config.clamp_threshold is not None:
            prev_sample = prev_sample.clamp(-self.config.clamp_threshold, self.config.clamp_threshold)
        prev_sample = torch.where(keep, prev_sample, sample)

        prev_auxiliary_sample = None
        if auxiliary_sample is not None:
            prev_auxiliary_sample = self._adam_step(auxiliary_output, auxiliary_sample, finite)

        self._step_index += 1
        if not return_dict:
            return (prev_sample, prev_auxiliary_sample, finite)
        return LangevinSchedulerOutput(
            prev_sample=prev_sample, prev_auxiliary_sample=prev_auxiliary_sample, finite=finite
        )

    def _adam_step(self, grad: torch.Tensor, value: torch.Tensor, finite: torch.Tensor) -> torch.Tensor:
        keep = finite.view(-1, *([1] * (value.ndim - 1)))
        grad = clip_per_sample(torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0), self.config.max_grad_norm)
        beta1, beta2 = self.config.auxiliary_betas
        if self._adam_first_moment is None:
            self._adam_first_moment = torch.zeros_like(value)
            self._adam_second_moment = torch.zeros_like(value)
        first = torch.where(keep, beta1 * self._adam_first_moment + (1 - beta1) * grad, self._adam_first_moment)
        second = torch.where(
            keep, beta2 * self._adam_second_moment + (1 - beta2) * grad.square(), self._adam_second_moment
        )
        self._adam_first_moment, self._adam_second_moment = first, second
        # Bias correction counts every step of the call, as torch.optim.Adam does for an unbroken run.
        t = self._step_index + 1
        denominator = (second / (1 - beta2**t)).sqrt() + self.config.auxiliary_eps
        updated = value - self.config.auxiliary_learning_rate * (first / (1 - beta1**t)) / denominator
        return torch.where(keep, updated, value)

    def __len__(self):
        return self.config.num_train_timesteps
