import pytest
import torch
import torch.nn.functional as F

from tron_pipelines import DiffAugment, cosine_energy, cross_entropy_energy, gaussian_prior_energy
from tron_pipelines.models.generator import ConvGenerator, sample_normal_prior


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_cosine_and_cross_entropy_energies():
    features = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert cosine_energy(features, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(-0.5)
    logits = torch.tensor([[[2.0, 0.0, -1.0]]])
    target = F.one_hot(torch.tensor([0]), 3).float()
    assert cross_entropy_energy(logits, target).item() == pytest.approx(F.cross_entropy(logits[0], torch.tensor([0])).item())
    assert gaussian_prior_energy(torch.tensor([[3.0, 4.0]])).item() == pytest.approx(12.5)


def test_diff_augment_shapes_randomness_and_gradients():
    images = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    augment = DiffAugment()
    copies = augment(images, 5, generator=seeded(0))
    assert copies.shape == (2, 5, 3, 16, 16)
    assert not torch.allclose(copies[0, 0], copies[0, 1])
    torch.testing.assert_close(copies, augment(images, 5, generator=seeded(0)))
    copies.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_diff_augment_per_sample_generators_match_single():
    images = torch.rand(3, 1, 12, 12) * 2 - 1
    batch = DiffAugment()(images, 4, generator=[seeded(1), seeded(2), seeded(3)])
    single = DiffAugment()(images[2:3], 4, generator=seeded(3))
    torch.testing.assert_close(batch[2:3], single)


def test_translation_only_shifts_and_fills_grey():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 3:5, 3:5] = 1.0
    augment = DiffAugment(policy=("translation",), translation_ratio=0.25)
    shifted = augment(image, 8, generator=seeded(0))
    assert shifted.shape == (1, 8, 1, 8, 8)
    # The mass of the square is kept (bilinear warp, shift within the frame) and nothing appears from nowhere.
    torch.testing.assert_close(shifted.sum(dim=(2, 3, 4)), torch.full((1, 8), 4.0), atol=1e-4, rtol=0)


def test_cutout_zeroes_a_square():
    image = torch.ones(1, 1, 16, 16)
    cut = DiffAugment(policy=("cutout",), cutout_ratio=0.5)(image, 6, generator=seeded(0))
    zeros = (cut == 0).flatten(2).sum(-1)
    assert (zeros > 0).all() and (zeros <= 64).all()


def test_unknown_policy():
    with pytest.raises(ValueError, match="blur"):
        DiffAugment(policy=("color", "blur"))


def test_priors():
    draws = sample_normal_prior((2000, 8), "truncated_normal", 0.5, generator=seeded(0))
    assert draws.abs().max() <= 0.5 and draws.std() > 0.25  # truncated, not clipped to the edge
    clipped = sample_normal_prior((2000, 8), "normal", 0.5, generator=seeded(0))
    assert (clipped.abs() == 0.5).float().mean() > 0.5
    with pytest.raises(ValueError, match="prior"):
        sample_normal_prior((1, 1), "cauchy", None)
    generator = ConvGenerator(latent_dim=4, latent_threshold=1.0, latent_prior="truncated_normal")
    assert generator.sample_latents(3, generator=seeded(0)).abs().max() <= 1.0
    with pytest.raises(ValueError, match="shape"):
        generator.split_latents(torch.zeros(2, 5))
