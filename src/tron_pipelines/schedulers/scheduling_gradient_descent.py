"""Noise-free gradient descent over generator latents: the deterministic counterpart of `LangevinScheduler`.

Useful as a mode-seeking baseline (plain CLIP+GAN latent optimisation) and as a drop-in proof of the scheduler
interface: ``GradientDescentScheduler.from_config(pipe.scheduler.config)`` keeps step size, clipping and clamping.
"""

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput


@dataclass
class GradientDescentSchedulerOutput(BaseOutput):
    """Same fields as `LangevinSchedulerOutput`: ``prev_sample``, ``prev_auxiliary_sample`` and ``finite`` (B,)."""

    prev_sample: torch.Tensor
    prev_auxiliary_sample: torch.Tensor | None = None
    finite: torch.Tensor | None = None


# Copied from tron_pipelines.schedulers.scheduling_langevin.clip_per_sample
def clip_per_sample(grad: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Scale each sample's gradient (dim 0) so its L2 norm is at most ``max_norm``, as ``clip_grad_norm_`` would."""
    if max_norm is None:
        return grad
    norms = grad.flatten(1).norm(dim=1).view(-1, *([1] * (grad.ndim - 1)))
    return grad * (max_norm / (norms + 1e-6)).clamp(max=1.0)


class GradientDescentScheduler(SchedulerMixin, ConfigMixin):
    """``x <- clamp(x - step_size * clip(g))`` for the latent, ``a <- a - auxiliary_learning_rate * clip(g_a)`` for the
    auxiliary variable. No noise, no state: the same inputs always give the same output.

    Args:
        step_size: Gradient step of the Langevin variable.
        max_grad_norm: Per-sample L2 bound of each gradient; ``None`` disables it.
        clamp_threshold: Clamp of the latent to ``[-t, t]``; ``None`` disables it.
        auxiliary_learning_rate: Step of the auxiliary variable.
        skip_nonfinite: See `LangevinScheduler`.
        num_train_timesteps: Kept for diffusers compatibility; unused.
    """

    # Schedulers whose configs this one accepts without a warning (their extra keys are kept, unused, so that swapping
    # back restores them), as diffusers does for its own interchangeable schedulers.
    _compatibles = ["LangevinScheduler", "NoiseOptimizationScheduler"]
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
        max_grad_norm: float | None = 1.0,
        clamp_threshold: float | None = None,
        auxiliary_learning_rate: float = 5e-3,
        skip_nonfinite: bool = False,
        num_train_timesteps: int = 1000,
    ):
        if step_size < 0:
            raise ValueError(f"`step_size` must be >= 0, got {step_size}.")
        self.init_noise_sigma = 1.0
        self.timesteps = torch.zeros(0, dtype=torch.long)
        self.num_inference_steps = None

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        return sample

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None):
        if not isinstance(num_inference_steps, int) or num_inference_steps < 0:
            raise ValueError(f"`num_inference_steps` must be an integer >= 0, got {num_inference_steps!r}.")
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.arange(num_inference_steps - 1, -1, -1, device=device, dtype=torch.long)

    def _descend(self, grad: torch.Tensor, value: torch.Tensor, rate: float, finite: torch.Tensor) -> torch.Tensor:
        keep = finite.view(-1, *([1] * (value.ndim - 1)))
        grad = clip_per_sample(torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0), self.config.max_grad_norm)
        return torch.where(keep, value - rate * grad, value)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        auxiliary_output: torch.Tensor | None = None,
        auxiliary_sample: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> GradientDescentSchedulerOutput | tuple:
        """One descent step; the arguments are those of `LangevinScheduler.step` (``generator`` is unused)."""
        if self.num_inference_steps is None:
            raise ValueError("Call `set_timesteps` before `step`.")
        if model_output.shape != sample.shape:
            raise ValueError(
                f"`model_output` {tuple(model_output.shape)} and `sample` {tuple(sample.shape)} differ in shape."
            )
        if (auxiliary_output is None) != (auxiliary_sample is None):
            raise ValueError("`auxiliary_output` and `auxiliary_sample` must be given together.")
        finite = torch.isfinite(model_output.flatten(1)).all(dim=1)
        if auxiliary_output is not None:
            finite = finite & torch.isfinite(auxiliary_output.flatten(1)).all(dim=1)
        prev_sample = self._descend(model_output, sample, self.config.step_size, finite)
        if self.config.clamp_threshold is not None:
            prev_sample = prev_sample.clamp(-self.config.clamp_threshold, self.config.clamp_threshold)
        prev_auxiliary_sample = None
        if auxiliary_sample is not None:
            prev_auxiliary_sample = self._descend(
                auxiliary_output, auxiliary_sample, self.config.auxiliary_learning_rate, finite
            )
        if not return_dict:
            return (prev_sample, prev_auxiliary_sample, finite)
        return GradientDescentSchedulerOutput(
            prev_sample=prev_sample, prev_auxiliary_sample=prev_auxiliary_sample, finite=finite
        )

    def __len__(self):
        return self.config.num_train_timesteps
