"""The generator interface TR0N needs from any frozen unconditional generator G, and one small concrete generator.

A generator declares its latents: one *main* latent ``z`` (a flat vector of ``latent_dim`` values, the part the
translator models with a Gaussian mixture and Langevin refines) and zero or more named *auxiliary* latents (flat
vectors too, e.g. BigGAN's continuous class embedding ``y``) that the translator predicts deterministically and the
sampler refines with Adam. The pipeline handles all of them as one packed tensor ``[z, aux_1, aux_2, ...]`` of
``total_latent_dim`` values per sample, so a generator only has to map a packed batch to images in ``[-1, 1]``.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils.torch_utils import randn_tensor


LATENT_PRIORS = ("normal", "truncated_normal")


@dataclass(frozen=True)
class LatentSpec:
    """Description of one latent vector of a generator.

    Args:
        name: Name of the latent (``"z"`` for the main latent, e.g. ``"y"`` for BigGAN's class embedding).
        dim: Number of values per sample.
        prior: ``"normal"`` (N(0, I), clipped element-wise to ``[-threshold, threshold]`` when a threshold is set, as
            TR0N's BigGAN pairs are) or ``"truncated_normal"`` (N(0, I) conditioned on ``|z| <= threshold``), the
            priors the base `TronGenerator.sample_latents` draws from. A generator that overrides `sample_latents`
            names its own, e.g. ``"stylegan_mapping(psi=1.0)"`` (StyleGAN's ``w``: N(0, I) pushed through the mapping
            network, truncated by ``psi``).
        threshold: Bound of the prior and of Langevin's clamp, or ``None`` for an unbounded latent.
    """

    name: str
    dim: int
    prior: str = "normal"
    threshold: float | None = None


def sample_normal_prior(
    shape: tuple[int, ...],
    prior: str,
    threshold: float | None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw from a (clipped or truncated) standard normal with diffusers' per-sample generator semantics."""
    if prior not in LATENT_PRIORS:
        raise ValueError(f"`prior` must be one of {LATENT_PRIORS}, got {prior!r}.")
    noise = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    if threshold is None:
        return noise.to(dtype)
    if prior == "normal":
        return noise.clamp(-threshold, threshold).to(dtype)
    # Inverse-CDF sampling keeps exactly one draw per value, so the result is reproducible per generator.
    uniform = torch.special.ndtr(noise)
    low = torch.special.ndtr(torch.tensor(-threshold, dtype=torch.float64)).item()
    high = 1.0 - low
    return torch.special.ndtri(low + (high - low) * uniform).clamp(-threshold, threshold).to(dtype)


class TronGenerator(ModelMixin):
    """Base class of every generator G usable by `TronPipeline`.

    Subclasses are `ModelMixin` + `ConfigMixin` models that implement `latent_specs` and `generate`. They may override
    `sample_latents` when an auxiliary latent has a prior of its own (BigGAN draws ``y`` from its class embedding
    table). A generator that takes a text prompt of its own (a text-to-image diffusion model) sets `accepts_prompts`
    and implements `conditioned_on`.
    """

    # Whether `conditioned_on` can give G the prompts of a call (a text-to-image G); otherwise G is a pushforward of
    # its latents alone.
    accepts_prompts = False

    def conditioned_on(self, prompts: list[str], num_images_per_prompt: int = 1) -> "TronGenerator":
        """G conditioned on a call's ``prompts``: a per-call view that renders image ``i`` of packed latents
        ``(len(prompts) * num_images_per_prompt, total_latent_dim)`` for prompt ``i // num_images_per_prompt``, and
        otherwise behaves as this generator. Only for generators with `accepts_prompts`."""
        raise ValueError(
            f"{type(self).__name__} takes no prompt of its own; only a text-to-image generator can be conditioned on "
            "the call's prompt."
        )

    @property
    def latent_specs(self) -> list[LatentSpec]:
        """Main latent first, then the auxiliary latents in packing order."""
        raise NotImplementedError

    def generate(self, latents: torch.Tensor) -> torch.Tensor:
        """Map packed latents ``(B, total_latent_dim)`` to images ``(B, C, H, W)`` in ``[-1, 1]``."""
        raise NotImplementedError

    @property
    def main_latent(self) -> LatentSpec:
        return self.latent_specs[0]

    @property
    def auxiliary_latents(self) -> list[LatentSpec]:
        return self.latent_specs[1:]

    @property
    def latent_dim(self) -> int:
        return self.main_latent.dim

    @property
    def total_latent_dim(self) -> int:
        return sum(spec.dim for spec in self.latent_specs)

    def split_latents(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unpack ``(B, total_latent_dim)`` into ``{name: (B, dim)}``."""
        if latents.ndim != 2 or latents.shape[1] != self.total_latent_dim:
            raise ValueError(
                f"`latents` must have shape (batch, {self.total_latent_dim}) for this generator, got {tuple(latents.shape)}."
            )
        parts = torch.split(latents, [spec.dim for spec in self.latent_specs], dim=1)
        return {spec.name: part for spec, part in zip(self.latent_specs, parts)}

    def pack_latents(self, latents: dict[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of `split_latents`."""
        missing = [spec.name for spec in self.latent_specs if spec.name not in latents]
        if missing:
            raise ValueError(
                f"`latents` is missing {missing}; this generator needs {[s.name for s in self.latent_specs]}."
            )
        return torch.cat([latents[spec.name] for spec in self.latent_specs], dim=1)

    def sample_latents(
        self,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draw packed latents ``(batch_size, total_latent_dim)`` from the generator's prior p(z)."""
        parts = [
            sample_normal_prior((batch_size, spec.dim), spec.prior, spec.threshold, generator, device, dtype)
            for spec in self.latent_specs
        ]
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def sample(
        self, batch_size: int, generator: torch.Generator | list[torch.Generator] | None = None
    ) -> torch.Tensor:
        """Unconditional images ``(batch_size, C, H, W)`` in ``[-1, 1]``."""
        return self.generate(self.sample_latents(batch_size, generator=generator, device=self.device))


class ConvGenerator(TronGenerator, ConfigMixin):
    """A small DCGAN-style generator: ``z -> Linear -> (ConvTranspose, BatchNorm, ReLU) x n -> Conv -> tanh``.

    The output side is ``base_resolution * 2**len(channel_multipliers)`` pixels square (28 for the defaults, MNIST).

    Args:
        latent_dim: Size of z.
        out_channels: Image channels.
        base_channels: Channels of the last upsampling block; earlier blocks have ``base_channels * multiplier``.
        base_resolution: Side of the first feature map.
        channel_multipliers: One upsampling (x2) block per entry, from the lowest resolution up.
        latent_prior / latent_threshold: Prior of z (see `LatentSpec`).
    """

    @register_to_config
    def __init__(
        self,
        latent_dim: int = 32,
        out_channels: int = 1,
        base_channels: int = 32,
        base_resolution: int = 7,
        channel_multipliers: tuple[int, ...] = (2, 1),
        latent_prior: str = "normal",
        latent_threshold: float | None = None,
    ):
        super().__init__()
        if latent_prior not in LATENT_PRIORS:
            raise ValueError(f"`latent_prior` must be one of {LATENT_PRIORS}, got {latent_prior!r}.")
        channels = [base_channels * m for m in channel_multipliers]
        self.project = nn.Sequential(
            nn.Linear(latent_dim, channels[0] * base_resolution**2),
            nn.BatchNorm1d(channels[0] * base_resolution**2),
            nn.ReLU(),
        )
        blocks = []
        for c_in, c_out in zip(channels, channels[1:] + [base_channels]):
            blocks += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.Conv2d(base_channels, out_channels, 3, padding=1)

    @property
    def latent_specs(self) -> list[LatentSpec]:
        return [LatentSpec("z", self.config.latent_dim, self.config.latent_prior, self.config.latent_threshold)]

    @property
    def resolution(self) -> int:
        return self.config.base_resolution * 2 ** len(self.config.channel_multipliers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        channels = self.config.base_channels * self.config.channel_multipliers[0]
        side = self.config.base_resolution
        hidden = self.project(latents).view(latents.shape[0], channels, side, side)
        return torch.tanh(self.to_image(self.blocks(hidden)))

    def generate(self, latents: torch.Tensor) -> torch.Tensor:
        return self(latents)


__all__ = ["LatentSpec", "TronGenerator", "ConvGenerator", "sample_normal_prior", "LATENT_PRIORS"]
