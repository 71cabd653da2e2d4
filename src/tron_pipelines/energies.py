"""Energies E(z, c) that Langevin dynamics minimises, built from small composable callables.

* `cosine_energy` / `cross_entropy_energy`: per-sample energy of encoder features against a condition.
* `DiffAugment`: differentiable augmentations (color, translation, resize, cutout), N copies per image in one call.
* `gaussian_prior_energy`: ``0.5 * ||z||^2``, an optional pull towards the generator's prior.
* `ConditionTerm` + `TronEnergy`: a weighted sum over several conditions; a negative weight pushes away from a
  condition (negative prompts).
* `RewardEnergy`: minus a weighted sum of reward models (PickScore, HPSv2, ...) of the images and their prompts.

All energies return one value per sample ``(B,)`` so that gradients of ``energy.sum()`` never mix samples.
"""

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor


AUGMENTATIONS = ("color", "translation", "resize", "cutout")
# Uniform draws per augmented copy: brightness, saturation, contrast, resize, shift x, shift y, cutout centre y and x.
PARAMETERS_PER_COPY = 8


def cosine_energy(features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """``-mean_n cos(features[b, n], condition[b])``: features ``(B, N, E)``, condition ``(B, E)`` -> ``(B,)`` in [-1, 1]."""
    return -F.cosine_similarity(features.float(), condition.float().unsqueeze(1), dim=-1).mean(dim=1)


def cross_entropy_energy(logits: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of class ``logits`` ``(B, N, C)`` against target probabilities ``(B, C)`` (one-hot for a class
    label), averaged over the N copies -> ``(B,)``, >= 0."""
    return -(condition.float().unsqueeze(1) * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean(dim=1)


FEATURE_ENERGIES = {"cosine": cosine_energy, "cross_entropy": cross_entropy_energy}


def gaussian_prior_energy(latents: torch.Tensor) -> torch.Tensor:
    """``0.5 * ||z||^2`` per sample for latents ``(B, D)``: minus the log-density of N(0, I) up to a constant."""
    return 0.5 * latents.float().pow(2).sum(dim=1)


def _uniform(shape, generator, device) -> torch.Tensor:
    # Gaussian draws mapped through the normal CDF: diffusers' randn_tensor gives per-sample generator semantics.
    return torch.special.ndtr(randn_tensor(shape, generator=generator, device=device, dtype=torch.float32))


class DiffAugment:
    """Differentiable augmentations of TR0N's augmented CLIP score (DiffAugment policy 'color,translation,resize,
    cutout'), applied to images in ``[-1, 1]`` where filled zeros are mid-grey.

    brightness +U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5); translation by up to
    ``translation_ratio`` of the side; resize by U(``resize_range``) about the centre (both as one bilinear affine
    warp, zero-filled); cutout of a square of ``cutout_ratio`` of the side at a random centre. Unlike the original, the
    resize ratio is drawn per copy and all randomness comes from the torch generator(s), so results are reproducible
    and independent of batch composition.
    """

    def __init__(
        self,
        policy: tuple[str, ...] = AUGMENTATIONS,
        translation_ratio: float = 0.125,
        resize_range: tuple[float, float] = (0.8, 1.2),
        cutout_ratio: float = 0.5,
    ):
        unknown = set(policy) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(f"`policy` has unknown augmentations {sorted(unknown)}; known: {AUGMENTATIONS}.")
        self.policy = tuple(policy)
        self.translation_ratio = translation_ratio
        self.resize_range = resize_range
        self.cutout_ratio = cutout_ratio

    def __call__(
        self,
        images: torch.Tensor,
        num_augmentations: int,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, N, C, H, W)``: N independently augmented copies of every image."""
        return self.apply(images, self.sample_parameters(images.shape[0], num_augmentations, generator, images.device))

    @staticmethod
    def sample_parameters(
        batch_size: int,
        num_augmentations: int,
        generator: torch.Generator | list[torch.Generator] | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """All random draws of `apply` for ``batch_size`` images: uniforms ``(B, N, 8)`` in ``(0, 1)``, float32.

        Drawing them apart from `apply` keeps the random number generators out of the differentiable (and possibly
        compiled) part of the energy. One ``(B, N, 8)`` draw: with a generator list, sample b's draws come from
        generator b only.
        """
        return _uniform((batch_size, num_augmentations, PARAMETERS_PER_COPY), generator, device)

    def apply(self, images: torch.Tensor, parameters: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, N, C, H, W)``: the copies described by ``parameters`` ``(B, N, 8)`` (from
        `sample_parameters`). Deterministic and differentiable w.r.t. ``images``."""
        batch, channels, height, width = images.shape
        num_augmentations = parameters.shape[1]
        copies = images.unsqueeze(1).expand(-1, num_augmentations, -1, -1, -1).reshape(-1, channels, height, width)
        draws = parameters.reshape(-1, PARAMETERS_PER_COPY).to(images.dtype)
        if "color" in self.policy:
            copies = copies + (draws[:, 0] - 0.5).view(-1, 1, 1, 1)
            channel_mean = copies.mean(dim=1, keepdim=True)
            copies = (copies - channel_mean) * (2.0 * draws[:, 1]).view(-1, 1, 1, 1) + channel_mean
            image_mean = copies.mean(dim=(1, 2, 3), keepdim=True)
            copies = (copies - image_mean) * (0.5 + draws[:, 2]).view(-1, 1, 1, 1) + image_mean
        if "translation" in self.policy or "resize" in self.policy:
            copies = self._warp(copies, draws)
        if "cutout" in self.policy:
            copies = copies * self._cutout_mask(draws, height, width, copies.dtype)
        return copies.view(batch, num_augmentations, channels, height, width)

    def _warp(self, copies: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(draws[:, 0])
        scale = ones
        if "resize" in self.policy:
            low, high = self.resize_range
            scale = low + (high - low) * draws[:, 3]
        shift_x = shift_y = torch.zeros_like(ones)
        if "translation" in self.policy:
            # Normalised coordinates span 2, so a shift of `ratio * side` pixels is `2 * ratio` there.
            shift_x = (draws[:, 4] * 2 - 1) * 2 * self.translation_ratio
            shift_y = (draws[:, 5] * 2 - 1) * 2 * self.translation_ratio
        zeros = torch.zeros_like(ones)
        # Output coordinate p reads input (p - shift) / scale: zoom about the centre, then translate.
        theta = torch.stack(
            [
                torch.stack([1 / scale, zeros, -shift_x / scale], -1),
                torch.stack([zeros, 1 / scale, -shift_y / scale], -1),
            ],
            1,
        )
        grid = F.affine_grid(theta, list(copies.shape), align_corners=False)
        return F.grid_sample(copies, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _cutout_mask(self, draws: torch.Tensor, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        half_h, half_w = self.cutout_ratio * height / 2, self.cutout_ratio * width / 2
        centre_y = (draws[:, 6] * height).view(-1, 1, 1)
        centre_x = (draws[:, 7] * width).view(-1, 1, 1)
        rows = torch.arange(height, device=draws.device, dtype=draws.dtype).view(1, -1, 1) + 0.5
        cols = torch.arange(width, device=draws.device, dtype=draws.dtype).view(1, 1, -1) + 0.5
        inside = ((rows - centre_y).abs() < half_h) & ((cols - centre_x).abs() < half_w)
        return (~inside).to(dtype).unsqueeze(1)


@dataclass
class ConditionTerm:
    """One condition in a weighted energy: ``weight * E(f(G(z)), condition)``.

    Args:
        condition: ``(B, condition_dim)`` condition vectors, one per sample.
        weight: Scalar weight; negative to push away from the condition (a negative prompt).
    """

    condition: torch.Tensor
    weight: float = 1.0


class TronEnergy:
    """``E(z) = sum_i w_i * E_feat(f(aug(G(z))), c_i) + prior_weight * 0.5 * ||z_main||^2`` per sample.

    A call draws the augmentation parameters from the generator(s) first and then runs `evaluate`, which is
    deterministic and free of random number generators, so it can be compiled with `torch.compile` as one graph from
    the latents to the energies (see `TronPipeline.enable_energy_compile`).

    Args:
        generator_model: A `TronGenerator` (maps packed latents to images in [-1, 1]).
        encoder: An `EncoderAdapter`.
        feature_energy: ``"cosine"`` (CLIP) or ``"cross_entropy"`` (classifiers), or a callable
            ``(features (B, N, E), condition (B, E)) -> (B,)``.
        terms: The conditions and their weights.
        num_augmentations: Augmented copies per image (0 scores the plain image once).
        augment: The augmentation to use; `DiffAugment()` by default.
        prior_weight: Weight of the Gaussian prior term on the main latent (0 disables it).
        autocast_dtype: Run G and f under `torch.autocast` in this dtype (e.g. ``torch.bfloat16``), or ``None``.
        evaluate_fn: Stand-in for the energy's `evaluate` with the signature ``(energy, latents, parameters)``,
            typically a compiled ``lambda energy, *args: energy.evaluate(*args)``; ``None`` runs `evaluate` eagerly.
    """

    def __init__(
        self,
        generator_model,
        encoder,
        feature_energy,
        terms: list[ConditionTerm],
        num_augmentations: int = 0,
        augment: DiffAugment | None = None,
        prior_weight: float = 0.0,
        autocast_dtype: torch.dtype | None = None,
        evaluate_fn: Callable | None = None,
    ):
        self.generator_model = generator_model
        self.encoder = encoder
        self.feature_energy = FEATURE_ENERGIES[feature_energy] if isinstance(feature_energy, str) else feature_energy
        self.terms = terms
        self.num_augmentations = num_augmentations
        self.augment = augment or DiffAugment()
        self.prior_weight = prior_weight
        self.autocast_dtype = autocast_dtype
        self.evaluate_fn = evaluate_fn or type(self).evaluate

    def sample_augmentations(self, latents: torch.Tensor, generator=None) -> torch.Tensor | None:
        """The augmentation parameters of one evaluation of ``latents`` ``(B, ...)``, or ``None`` without
        augmentations."""
        if self.num_augmentations == 0:
            return None
        return self.augment.sample_parameters(latents.shape[0], self.num_augmentations, generator, latents.device)

    def autocast(self, device: torch.device):
        """``torch.autocast`` in ``autocast_dtype`` on ``device``'s type, or a no-op context without one."""
        return (
            torch.autocast(device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else nullcontext()
        )

    def render(
        self, latents: torch.Tensor, augmentations: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """G's images ``(B, C, H, W)`` in [-1, 1] of packed ``latents`` ``(B, total_latent_dim)``, and their copies
        ``(B, N, C, H, W)`` augmented as ``augmentations`` ``(B, N, 8)`` says (``None``: the plain image, N = 1).
        Call inside `autocast`."""
        images = self.generator_model.generate(latents.to(self.generator_model.dtype))
        copies = images.unsqueeze(1) if augmentations is None else self.augment.apply(images, augmentations)
        return images, copies

    def features(self, latents: torch.Tensor, augmentations: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features ``(B, N, E)`` of the images of packed ``latents`` ``(B, total_latent_dim)``, augmented as
        ``augmentations`` ``(B, N, 8)`` says (``None``: the plain image, N = 1), and the un-augmented images
        ``(B, C, H, W)`` in [-1, 1]."""
        with self.autocast(latents.device):
            images, copies = self.render(latents, augmentations)
            batch, copies_per_image = copies.shape[:2]
            pixel_values = self.encoder.preprocess_generated(copies.flatten(0, 1))
            features = self.encoder.features(pixel_values).float().view(batch, copies_per_image, -1)
        return features, images

    def evaluate(self, latents: torch.Tensor, augmentations: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy per sample ``(B,)`` (float32) and G's images for given augmentation parameters; no randomness."""
        features, images = self.features(latents, augmentations)
        energy = sum(term.weight * self.feature_energy(features, term.condition) for term in self.terms)
        return self.with_prior(energy, latents), images

    def with_prior(self, energy: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """``energy`` ``(B,)`` plus ``prior_weight * 0.5 * ||z_main||^2`` of packed ``latents`` (unchanged at weight 0)."""
        if not self.prior_weight:
            return energy
        return energy + self.prior_weight * gaussian_prior_energy(latents[:, : self.generator_model.latent_dim])

    def unaugmented(self, latents: torch.Tensor) -> torch.Tensor:
        """Energy per sample ``(B,)`` (float32) of the plain images of packed ``latents``; draws no random numbers."""
        return self.evaluate_fn(self, latents, None)[0]

    def __call__(self, latents: torch.Tensor, generator=None, return_images: bool = False):
        """Energy per sample ``(B,)`` (float32) of packed latents; with ``return_images``, also G's images."""
        energy, images = self.evaluate_fn(self, latents, self.sample_augmentations(latents, generator))
        return (energy, images) if return_images else energy


class RewardEnergy(TronEnergy):
    """``E(z) = sum_t v_t * (-sum_i w_i * mean_n r_i(aug_n(G(z)), prompt_t)) + prior_weight * 0.5 * ||z_main||^2`` per
    sample: minus a weighted sum of rewards, as ReNO optimises (its losses are ``const_i - r_i``, so the same
    gradients and the same ranking of iterates).

    Args:
        generator_model: A `TronGenerator`.
        rewards: A `RewardModels` (``{name: reward model}``).
        reward_weights: ``{name: w_i}`` for every reward; rewards with weight 0 are not evaluated here (they are
            only reported, by `plain_rewards`).
        terms: The prompts: ``ConditionTerm(condition={name: prompt encodings (B, ...) or None}, weight=v_t)``, the
            prompt with weight 1 first, a negative prompt with a negative weight.
        num_augmentations / augment / prior_weight / autocast_dtype / evaluate_fn: As in `TronEnergy`.
    """

    def __init__(
        self,
        generator_model,
        rewards,
        reward_weights: dict[str, float],
        terms: list[ConditionTerm],
        num_augmentations: int = 0,
        augment: DiffAugment | None = None,
        prior_weight: float = 0.0,
        autocast_dtype: torch.dtype | None = None,
        evaluate_fn: Callable | None = None,
    ):
        super().__init__(
            generator_model,
            None,
            None,
            terms,
            num_augmentations=num_augmentations,
            augment=augment,
            prior_weight=prior_weight,
            autocast_dtype=autocast_dtype,
            evaluate_fn=evaluate_fn,
        )
        self.rewards = rewards
        self.reward_weights = reward_weights

    def reward_values(
        self, copies: torch.Tensor, prompt_embeds: dict, names: list[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """``{name: (B,)}`` rewards of ``copies`` ``(B, N, C, H, W)`` in [-1, 1], each the mean over the N copies of
        an image, for prompt encodings ``{name: (B, ...) or None}``; ``names`` picks the rewards (all by default)."""
        batch, copies_per_image = copies.shape[:2]
        repeated = {
            name: None if embeds is None else embeds.repeat_interleave(copies_per_image, dim=0)
            for name, embeds in prompt_embeds.items()
        }
        values = self.rewards(copies.flatten(0, 1), repeated, names=names)
        return {name: value.float().view(batch, copies_per_image).mean(dim=1) for name, value in values.items()}

    def evaluate(self, latents: torch.Tensor, augmentations: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy per sample ``(B,)`` (float32) and G's images for given augmentation parameters; no randomness."""
        weighted = [name for name, weight in self.reward_weights.items() if weight != 0]
        with self.autocast(latents.device):
            images, copies = self.render(latents, augmentations)
            energy = torch.zeros(latents.shape[0], device=latents.device)
            for term in self.terms:
                values = self.reward_values(copies, term.condition, weighted)
                energy = energy - term.weight * sum(self.reward_weights[name] * values[name] for name in weighted)
        return self.with_prior(energy, latents), images

    @torch.no_grad()
    def plain_rewards(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: (B,)}`` every reward of ``images`` ``(B, C, H, W)`` in [-1, 1] (no augmentation) for the first
        term's prompts: the per-image values a pipeline reports."""
        with self.autocast(images.device):
            return self.reward_values(images.unsqueeze(1), self.terms[0].condition)


__all__ = [
    "AUGMENTATIONS",
    "ConditionTerm",
    "DiffAugment",
    "FEATURE_ENERGIES",
    "PARAMETERS_PER_COPY",
    "RewardEnergy",
    "TronEnergy",
    "cosine_energy",
    "cross_entropy_energy",
    "gaussian_prior_energy",
]
