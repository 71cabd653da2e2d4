"""Reward-based noise optimisation (ReNO, NeurIPS 2024) as a scheduler: SGD with Nesterov momentum on the initial
noise of a one-step generator, a norm regulariser that keeps the noise where a Gaussian puts its mass, and the best
evaluated iterate kept.

One step, per sample, from the gradient ``g`` of the reward energy ``E(z) = -sum_i w_i r_i(G(z))``:

* ``g <- g + w * (z - (d - 1) * z / |z|^2)``: the gradient of the regulariser ``w * (0.5 |z|^2 - (d - 1) log |z|)``
  (minus the log-density of |z| for z ~ N(0, I_d), up to a constant), added before clipping as ReNO's loss does;
* ``g <- g * min(1, c / (|g| + 1e-6))``: clipping to norm ``c``, as ``torch.nn.utils.clip_grad_norm_``;
* ``buf <- m * buf + g`` (``buf = g`` at the first step), ``z <- z - lr * (g + m * buf)``: ``torch.optim.SGD`` with
  ``nesterov=True`` (``z <- z - lr * buf`` without Nesterov).

ReNO evaluates the reward 50 times and updates the noise after all but the last evaluation; it returns the image of
the evaluation with the highest total reward. Here a pipeline call with ``num_inference_steps = T`` takes T steps and
evaluates T + 1 times (once before every step, once at the end), so ReNO's 50 iterations are
``num_inference_steps=49``. The pipeline hands every evaluation to `keep_best` (it asks for the ``keeps_best_iterate``
capability, not for this class), and returns `best_sample`.

The settings have names of their own (not `LangevinScheduler`'s ``step_size``, ``momentum``, ``max_grad_norm``) so
that ``NoiseOptimizationScheduler.from_config(langevin_pipe.scheduler.config)`` starts from ReNO's values rather than
Langevin's, and swapping back restores Langevin's.
"""

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput


@dataclass
class NoiseOptimizationSchedulerOutput(BaseOutput):
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


def norm_regularizer_gradient(sample: torch.Tensor, weight: float) -> torch.Tensor:
    """Gradient of ``weight * (0.5 * |z|^2 - (d - 1) * log |z|)`` w.r.t. z, for every vector along the last dim of
    ``sample`` (``(B, D)``: one latent per sample; ``(B, K, D)``: K latents per sample), d = D."""
    dim = sample.shape[-1]
    squared_norm = sample.pow(2).sum(dim=-1, keepdim=True)
    return weight * (sample - (dim - 1) * sample / squared_norm)


class NoiseOptimizationScheduler(SchedulerMixin, ConfigMixin):
    """ReNO's noise optimisation: Nesterov SGD on the latent with ReNO's norm regulariser and gradient clipping, and
    the best evaluated iterate kept. The defaults are ReNO's (``lr=5``, momentum 0.9, Nesterov, ``grad_clip=0.1``,
    ``reg_weight=0.01``).

    Everything is per sample: the regulariser, the clipping norm and the momentum buffer of sample b depend on sample
    b only, so a batch gives the images of its samples run alone.

    Args:
        learning_rate: SGD learning rate of the latent (ReNO's ``--lr``).
        sgd_momentum: Momentum of the SGD buffer (0 disables it).
        nesterov: Nesterov momentum (ReNO's default) or heavy-ball momentum.
        grad_clip_norm: Per-sample L2 bound of the gradient after the regulariser is added; ``None`` disables it.
        regularization_weight: Weight w of the norm regulariser (0 disables it).
        keep_best_iterate: Keep, per sample, the evaluated iterate with the lowest energy (ReNO returns the image
            with the best total reward); when False the pipeline returns the last iterate.
        skip_nonfinite: See `LangevinScheduler`.
        num_train_timesteps: Kept for diffusers compatibility; unused.

    The auxiliary variable (BigGAN's class embedding, per-dimension mixture logits) takes the same SGD step with its
    own buffer and clipping, without the regulariser, which is a statement about Gaussian noise.
    """

    # Schedulers whose configs this one accepts without a warning (their extra keys are kept, unused, so that swapping
    # back restores them), as diffusers does for its own interchangeable schedulers.
    _compatibles = ["LangevinScheduler", "GradientDescentScheduler"]
    order = 1

    @classmethod
    def _get_compatibles(cls):
        # diffusers looks the names up in its own namespace only, where this package's schedulers are not.
        import tron_pipelines.schedulers as schedulers

        return [getattr(schedulers, name) for name in sorted({cls.__name__, *cls._compatibles})]

    @register_to_config
    def __init__(
        self,
        learning_rate: float = 5.0,
        sgd_momentum: float = 0.9,
        nesterov: bool = True,
        grad_clip_norm: float | None = 0.1,
        regularization_weight: float = 0.01,
        keep_best_iterate: bool = True,
        skip_nonfinite: bool = False,
        num_train_timesteps: int = 1000,
    ):
        if learning_rate < 0:
            raise ValueError(f"`learning_rate` must be >= 0, got {learning_rate}.")
        if not 0.0 <= sgd_momentum < 1.0:
            raise ValueError(f"`sgd_momentum` must be in [0, 1), got {sgd_momentum}.")
        if nesterov and sgd_momentum == 0:
            raise ValueError("`nesterov=True` needs `sgd_momentum` > 0, as in torch.optim.SGD.")
        if grad_clip_norm is not None and grad_clip_norm <= 0:
            raise ValueError(f"`grad_clip_norm` must be > 0 or None, got {grad_clip_norm}.")
        if regularization_weight < 0:
            raise ValueError(f"`regularization_weight` must be >= 0, got {regularization_weight}.")
        self.init_noise_sigma = 1.0
        self.timesteps = torch.zeros(0, dtype=torch.long)
        self.num_inference_steps = None
        self._reset_state()

    def _reset_state(self):
        self._step_index = 0
        self._buffers = {}
        self._best = None

    @property
    def step_index(self) -> int:
        """Number of steps taken since the last `set_timesteps`."""
        return self._step_index

    @property
    def keeps_best_iterate(self) -> bool:
        """Whether the pipeline should hand every evaluation to `keep_best` and return `best_sample`."""
        return self.config.keep_best_iterate

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        return sample

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None):
        """Prepare ``num_inference_steps`` updates (0 is valid) and forget momentum and the best iterate."""
        if not isinstance(num_inference_steps, int) or num_inference_steps < 0:
            raise ValueError(f"`num_inference_steps` must be an integer >= 0, got {num_inference_steps!r}.")
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.arange(num_inference_steps - 1, -1, -1, device=device, dtype=torch.long)
        self._reset_state()

    def _sgd(self, name: str, grad: torch.Tensor, value: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        grad = clip_per_sample(grad, self.config.grad_clip_norm)
        momentum = self.config.sgd_momentum
        if momentum > 0:
            previous = self._buffers.get(name)
            if previous is None:
                buffer = torch.where(keep, grad, torch.zeros_like(grad))
            else:
                buffer = torch.where(keep, momentum * previous + grad, previous)
            self._buffers[name] = buffer
            grad = grad + momentum * buffer if self.config.nesterov else buffer
        return torch.where(keep, value - self.config.learning_rate * grad, value)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        auxiliary_output: torch.Tensor | None = None,
        auxiliary_sample: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> NoiseOptimizationSchedulerOutput | tuple:
        """One ReNO update.

        Args:
            model_output: Gradient of the reward energy w.r.t. ``sample`` (same shape, ``(B, D)`` or ``(B, K, D)``),
                without the regulariser, which this step adds.
            timestep: Current entry of ``self.timesteps`` (only the step count matters).
            sample: The latent ``(B, D)`` (``(B, K, D)``: K latents per sample, each regularised on its own).
            generator: Unused (the update is deterministic); accepted for the `LangevinScheduler` interface.
            auxiliary_output / auxiliary_sample: Gradient and value of the auxiliary variable, ``(B, A)``.
            return_dict: Return a `NoiseOptimizationSchedulerOutput` (default) or a tuple.
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

        grad = model_output + norm_regularizer_gradient(sample, self.config.regularization_weight)
        finite = torch.isfinite(grad.flatten(1)).all(dim=1)
        if auxiliary_output is not None:
            finite = finite & torch.isfinite(auxiliary_output.flatten(1)).all(dim=1)

        def keep_for(value):
            return finite.view(-1, *([1] * (value.ndim - 1)))

        clean = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        prev_sample = self._sgd("sample", clean, sample, keep_for(sample))
        prev_auxiliary_sample = None
        if auxiliary_sample is not None:
            clean = torch.nan_to_num(auxiliary_output, nan=0.0, posinf=0.0, neginf=0.0)
            prev_auxiliary_sample = self._sgd("auxiliary", clean, auxiliary_sample, keep_for(auxiliary_sample))

        self._step_index += 1
        if not return_dict:
            return (prev_sample, prev_auxiliary_sample, finite)
        return NoiseOptimizationSchedulerOutput(
            prev_sample=prev_sample, prev_auxiliary_sample=prev_auxiliary_sample, finite=finite
        )

    # Best iterate ----------------------------------------------------------------------------------------------------
    def keep_best(
        self, energies: torch.Tensor, sample: torch.Tensor, auxiliary_sample: torch.Tensor | None = None
    ) -> None:
        """Record one evaluated iterate: energies ``(B,)`` of ``sample`` (and ``auxiliary_sample``). Per sample, the
        iterate with the lowest energy so far is kept; on a tie the earlier one (ReNO's strict ``<``), and a
        non-finite energy never replaces a finite one."""
        energies = energies.detach()
        if self._best is None:
            self._best = (energies, sample.detach(), None if auxiliary_sample is None else auxiliary_sample.detach())
            return
        best_energies, best_sample, best_auxiliary = self._best
        better = (energies < best_energies) | (~torch.isfinite(best_energies) & torch.isfinite(energies))

        def select(new, old):
            return None if new is None else torch.where(better.view(-1, *([1] * (new.ndim - 1))), new.detach(), old)

        self._best = (
            torch.where(better, energies, best_energies),
            select(sample, best_sample),
            select(auxiliary_sample, best_auxiliary),
        )

    @property
    def best_energies(self) -> torch.Tensor | None:
        """``(B,)`` energy of each sample's kept iterate (``None`` before the first `keep_best`)."""
        return None if self._best is None else self._best[0]

    @property
    def best_sample(self) -> torch.Tensor | None:
        """Each sample's kept iterate, shaped like ``sample``."""
        return None if self._best is None else self._best[1]

    @property
    def best_auxiliary_sample(self) -> torch.Tensor | None:
        """The auxiliary variable of each sample's kept iterate, or ``None``."""
        return None if self._best is None else self._best[2]

    def __len__(self):
        return self.config.num_train_timesteps
