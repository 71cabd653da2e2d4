"""TR0N's translator q(z | c): a residual MLP from a condition vector to a Gaussian mixture over G's main latent."""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor


@dataclass
class TranslatorOutput(BaseOutput):
    """Mixture parameters predicted for a batch of conditions.

    Args:
        mixture_logits: ``(B, K)`` unnormalised log-weights of the K components.
        means: ``(B, K, D)`` component means (inside ``(-latent_threshold, latent_threshold)`` when a threshold is set).
        stds: ``(B, K, D)`` component standard deviations (> 0), shared by all components and conditions.
        auxiliary_latents: ``{name: (B, dim)}`` deterministic predictions of the generator's auxiliary latents.
    """

    mixture_logits: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor
    auxiliary_latents: dict[str, torch.Tensor]


@dataclass
class TranslatorLoss(BaseOutput):
    """Training loss of the translator and its parts (scalars).

    ``loss = nll_weight * nll + auxiliary_mse``; ``nll`` is the mean negative log-likelihood per sample (nats, summed
    over latent dimensions) and ``auxiliary_mse`` the element-mean squared error summed over auxiliary latents.
    """

    loss: torch.Tensor
    nll: torch.Tensor
    auxiliary_mse: torch.Tensor


def _gather_per_sample_generator(generator, batch_size):
    if isinstance(generator, list) and len(generator) != batch_size:
        raise ValueError(
            f"`generator` is a list of {len(generator)} generators, but the batch has {batch_size} samples."
        )


class TranslatorModel(ModelMixin, ConfigMixin):
    """Translator network of TR0N.

    ``u = ReLU(W1 c)``, ``u = u + ReLU(W2 u)``; the mixture means are ``threshold * tanh(W_mu u)`` (or ``W_mu u``
    without a threshold), the logits ``W_l u``, each auxiliary latent ``W_a u``; the std is one learned value per
    latent dimension.

    The full mean head ``W_mu`` has ``hidden_dim * num_components * latent_dim`` weights: 503 M for the 16,384-value
    noise of a 512 px Stable Diffusion with a 768-d condition and K = 10 (1.9 GiB in float32, 7.7 GiB to train with
    Adam). ``mean_rank`` replaces it with a factorisation through a basis shared by all components: component ``k``'s
    mean (before the threshold) is ``B a_k(u) + b``, with coefficients ``a_k(u) = A_k u + a_k`` of ``mean_rank``
    values and one ``(latent_dim, mean_rank)`` basis ``B``, so the means of every condition lie in one
    ``mean_rank``-dimensional affine subspace of the latent space (3.0 M weights at rank 64 in that example).

    Args:
        condition_dim: Size of the condition vector c (e.g. 512 for CLIP ViT-B/32, the class count for a classifier).
        latent_dim: Size D of the generator's main latent z.
        num_components: Number K of mixture components.
        hidden_dim: Width of the trunk; defaults to ``4 * condition_dim``.
        latent_threshold: Bound tau of the means (``tau * tanh``), or ``None`` for unbounded means.
        auxiliary_latent_dims: ``{name: dim}`` of auxiliary latents predicted by deterministic heads.
        init_std: Initial std of every component. 1, the scale of a standard normal prior, makes an untrained
            translator over-dispersed (close to the prior) rather than collapsed; the method's 0.01 puts every sample
            on a mean until training has widened the std. Training sets it from the data (`initialize_spread`).
        mean_rank: Rank of the shared-basis mean head (``mean_head``: ``hidden_dim -> num_components * mean_rank``
            coefficients, ``mean_basis``: ``mean_rank -> latent_dim``), or ``None`` (default) for the method's full
            head ``hidden_dim -> num_components * latent_dim``.
    """

    @register_to_config
    def __init__(
        self,
        condition_dim: int = 512,
        latent_dim: int = 128,
        num_components: int = 10,
        hidden_dim: int | None = None,
        latent_threshold: float | None = None,
        auxiliary_latent_dims: dict[str, int] | None = None,
        init_std: float = 1.0,
        mean_rank: int | None = None,
    ):
        super().__init__()
        for name, value in (
            ("condition_dim", condition_dim),
            ("latent_dim", latent_dim),
            ("num_components", num_components),
        ):
            if value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value}.")
        if mean_rank is not None and mean_rank < 1:
            raise ValueError(f"`mean_rank` must be a positive integer or None (a full mean head), got {mean_rank}.")
        if init_std <= 0:
            raise ValueError(f"`init_std` must be > 0, got {init_std}.")
        hidden_dim = hidden_dim or 4 * condition_dim
        self.trunk_in = nn.Linear(condition_dim, hidden_dim)
        self.trunk_hidden = nn.Linear(hidden_dim, hidden_dim)
        if mean_rank is None:
            self.mean_head = nn.Linear(hidden_dim, num_components * latent_dim)
            self.mean_basis = None
        else:
            self.mean_head = nn.Linear(hidden_dim, num_components * mean_rank)
            self.mean_basis = nn.Linear(mean_rank, latent_dim)
        self.logit_head = nn.Linear(hidden_dim, num_components)
        self.log_stds = nn.Parameter(torch.full((latent_dim,), math.log(init_std)))
        self.auxiliary_heads = nn.ModuleDict(
            {name: nn.Linear(hidden_dim, dim) for name, dim in (auxiliary_latent_dims or {}).items()}
        )

    def _check_condition(self, condition: torch.Tensor) -> None:
        if condition.ndim != 2 or condition.shape[1] != self.config.condition_dim:
            raise ValueError(
                f"`condition` must have shape (batch, {self.config.condition_dim}), got {tuple(condition.shape)}."
            )

    @torch.no_grad()
    def initialize_spread(self, latents: torch.Tensor) -> None:
        """Set the component std to the per-dimension std of ``latents`` ``(N, D)``, samples of G's prior.

        Before training, the translator knows nothing of the condition, so the spread of z over the whole prior is the
        honest one: samples of an under-trained translator then look like prior samples (over-dispersed), never all
        alike. Training narrows it to what the conditions explain.
        """
        if latents.ndim != 2 or latents.shape[1] != self.config.latent_dim or latents.shape[0] < 2:
            raise ValueError(
                f"`latents` must have shape (N >= 2, {self.config.latent_dim}), got {tuple(latents.shape)}."
            )
        spread = latents.float().std(dim=0).clamp(min=1e-3)
        self.log_stds.copy_((spread - 1e-6).clamp(min=1e-6).log().to(self.log_stds))

    @property
    def stds(self) -> torch.Tensor:
        """``(D,)`` shared component standard deviation."""
        return self.log_stds.exp() + 1e-6

    def forward(self, condition: torch.Tensor, return_dict: bool = True) -> TranslatorOutput | tuple:
        """Predict the mixture for ``condition`` ``(B, condition_dim)`` (raw, not L2-normalised)."""
        self._check_condition(condition)
        condition = condition.to(self.trunk_in.weight.dtype)
        hidden = F.relu(self.trunk_in(condition))
        hidden = hidden + F.relu(self.trunk_hidden(hidden))
        means = self.mean_head(hidden).view(condition.shape[0], self.config.num_components, -1)
        if self.mean_basis is not None:
            means = self.mean_basis(means)
        if self.config.latent_threshold is not None:
            means = self.config.latent_threshold * torch.tanh(means)
        logits = self.logit_head(hidden)
        stds = self.stds.to(means.dtype).expand_as(means)
        auxiliary = {name: head(hidden) for name, head in self.auxiliary_heads.items()}
        if not return_dict:
            return logits, means, stds, auxiliary
        return TranslatorOutput(mixture_logits=logits, means=means, stds=stds, auxiliary_latents=auxiliary)

    def log_prob(self, latents: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Mixture log-density ``log q(z | c)`` in nats, ``(B,)``, for ``latents`` ``(B, D)``."""
        return self._mixture_log_prob(self(condition), latents)

    def _mixture_log_prob(self, out: TranslatorOutput, latents: torch.Tensor) -> torch.Tensor:
        if latents.shape != out.means.shape[::2]:
            raise ValueError(f"`latents` must have shape {tuple(out.means.shape[::2])}, got {tuple(latents.shape)}.")
        # float32 even under autocast: the squared distances reach 1e4 and the logsumexp needs the precision.
        means, stds = out.means.float(), out.stds.float()
        diff = (latents.float().unsqueeze(1) - means) / stds
        component_log_prob = (
            -0.5 * diff.pow(2).sum(-1) - stds.log().sum(-1) - 0.5 * means.shape[-1] * math.log(2 * math.pi)
        )
        return torch.logsumexp(F.log_softmax(out.mixture_logits.float(), dim=-1) + component_log_prob, dim=-1)

    def sample(
        self,
        condition: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        temperature: float = 1.0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Draw one latent per condition from the mixture.

        Returns ``(latents (B, D), auxiliary_latents {name: (B, dim)})``. The component index and the Gaussian noise
        come from ``generator`` (a list gives one generator per sample). ``temperature`` scales the std.
        """
        batch_size = condition.shape[0]
        _gather_per_sample_generator(generator, batch_size)
        out = self(condition)
        device = out.means.device
        uniform = torch.special.ndtr(
            randn_tensor((batch_size, 1), generator=generator, device=device, dtype=torch.float32)
        )
        noise = randn_tensor(
            (batch_size, self.config.latent_dim), generator=generator, device=device, dtype=torch.float32
        )
        # Inverse-CDF draw of the component index: one uniform per sample keeps per-sample generators reproducible.
        cdf = F.softmax(out.mixture_logits.float(), dim=-1).cumsum(-1)
        component = torch.searchsorted(cdf, uniform).clamp(max=self.config.num_components - 1).squeeze(1)
        chosen_means = out.means[torch.arange(batch_size, device=device), component].float()
        latents = chosen_means + temperature * out.stds[:, 0].float() * noise
        if self.config.latent_threshold is not None:
            latents = latents.clamp(-self.config.latent_threshold, self.config.latent_threshold)
        return latents, out.auxiliary_latents

    def loss(
        self,
        condition: torch.Tensor,
        latents: torch.Tensor,
        auxiliary_latents: dict[str, torch.Tensor] | None = None,
        nll_weight: float = 1e-4,
    ) -> TranslatorLoss:
        """Training objective: ``nll_weight * mean NLL(z | c) + sum_a MSE(a_hat, a)`` (the method's alpha = 1e-4)."""
        out = self(condition)
        nll = -self._mixture_log_prob(out, latents).mean()
        auxiliary_mse = nll.new_zeros(())
        if self.auxiliary_heads:
            if auxiliary_latents is None or set(auxiliary_latents) != set(self.auxiliary_heads):
                raise ValueError(f"`auxiliary_latents` must have the keys {sorted(self.auxiliary_heads)}.")
            for name, target in auxiliary_latents.items():
                auxiliary_mse = auxiliary_mse + F.mse_loss(out.auxiliary_latents[name].float(), target.float())
        return TranslatorLoss(loss=nll_weight * nll + auxiliary_mse, nll=nll, auxiliary_mse=auxiliary_mse)


__all__ = ["TranslatorModel", "TranslatorOutput", "TranslatorLoss"]
