import pytest
import torch
import torch.nn.functional as F

from tron_pipelines import (
    ConditionTerm,
    DiffAugment,
    TronEnergy,
    cosine_energy,
    cross_entropy_energy,
    gaussian_prior_energy,
)
from tron_pipelines.models.generator import ConvGenerator, sample_normal_prior


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_tron_energy_defaults_score_the_plain_image(clip_pipe):
    # Without augmentations and without the prior term by default; a callable feature energy is used as given.
    latents = torch.randn(3, 8, generator=seeded(1))
    adapter = clip_pipe.encoder_adapter
    condition = adapter.encode_prompts(["a cat"], torch.device("cpu")).expand(3, -1)
    energy = TronEnergy(clip_pipe.generator, adapter, "cosine", [ConditionTerm(condition)])
    assert energy.sample_augmentations(latents, seeded(0)) is None
    with torch.no_grad():
        features = adapter.encoder.get_image_features(
            pixel_values=adapter.preprocess_generated(clip_pipe.generator.generate(latents))
        )
        features = features if isinstance(features, torch.Tensor) else features.pooler_output
        torch.testing.assert_close(energy(latents), -F.cosine_similarity(features, condition), atol=1e-6, rtol=1e-5)
        norm_energy = TronEnergy(
            clip_pipe.generator, adapter, lambda f, c: f.norm(dim=-1).mean(dim=1), [ConditionTerm(condition, 2.0)]
        )
        torch.testing.assert_close(norm_energy(latents), 2.0 * features.norm(dim=-1), atol=1e-5, rtol=1e-5)


def test_cosine_and_cross_entropy_energies():
    features = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert cosine_energy(features, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(-0.5)
    logits = torch.tensor([[[2.0, 0.0, -1.0]]])
    target = F.one_hot(torch.tensor([0]), 3).float()
    assert cross_entropy_energy(logits, target).item() == pytest.approx(
        F.cross_entropy(logits[0], torch.tensor([0])).item()
    )
    torch.testing.assert_close(
        gaussian_prior_energy(torch.tensor([[3.0, 4.0], [1.0, 0.0]])), torch.tensor([12.5, 0.5])
    )


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


def shifted(images, dx, dy):
    """``images`` (..., H, W) moved right by ``dx`` and down by ``dy`` whole pixels, zeros where nothing moved in."""
    out = torch.zeros_like(images)
    height, width = images.shape[-2:]
    out[..., max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = images[
        ..., max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


def draws_for(copies, **values):
    """Augmentation parameters ``(1, N, 8)``, 0.5 everywhere (the identity draw of every operation) except ``values``
    ``{index: [value of copy n]}``."""
    parameters = torch.full((1, copies, 8), 0.5)
    for index, per_copy in values.items():
        parameters[0, :, int(index[1:])] = torch.tensor(per_copy)
    return parameters


def shift_draw(pixels, side=8, ratio=0.25):
    # shift = (2u - 1) * ratio * side pixels
    return (pixels / (ratio * side) + 1) / 2


def test_translation_equals_a_shifted_copy():
    images = torch.rand(1, 2, 8, 8, generator=seeded(0)) * 2 - 1
    shifts = [(1, 0), (0, -2), (2, 1), (-1, -1), (0, 0)]
    parameters = draws_for(
        len(shifts), u4=[shift_draw(dx) for dx, _ in shifts], u5=[shift_draw(dy) for _, dy in shifts]
    )
    copies = DiffAugment(policy=("translation",), translation_ratio=0.25).apply(images, parameters)
    for index, (dx, dy) in enumerate(shifts):
        torch.testing.assert_close(copies[0, index], shifted(images[0], dx, dy), atol=1e-5, rtol=0)


def test_resize_zooms_about_the_centre_before_translating():
    # Scale 0.5 on an 8 x 8 image: output pixel j reads input coordinate 2j - 3.5, the mean of input pixels 2j - 4 and
    # 2j - 3: the 2 x 2 average-pooled image in the central 4 x 4 square. The shift then moves that picture.
    images = torch.rand(1, 3, 8, 8, generator=seeded(1)) * 2 - 1
    pooled = torch.zeros_like(images[0])
    pooled[:, 2:6, 2:6] = F.avg_pool2d(images, 2)[0]
    augment = DiffAugment(policy=("translation", "resize"), translation_ratio=0.25, resize_range=(0.5, 0.5))
    parameters = draws_for(2, u4=[0.5, shift_draw(2)], u5=[0.5, shift_draw(-1)])
    copies = augment.apply(images, parameters)
    torch.testing.assert_close(copies[0, 0], pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(copies[0, 1], shifted(pooled, 2, -1), atol=1e-5, rtol=0)
    # Resize alone; its ratio is drawn uniformly from the range: u = 0 of (0.5, 2.5) is 0.5, u = 0.25 is 1 (identity).
    alone = DiffAugment(policy=("resize",), resize_range=(0.5, 2.5)).apply(images, draws_for(2, u3=[0.0, 0.25]))
    torch.testing.assert_close(alone[0, 0], pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone[0, 1], images[0], atol=1e-5, rtol=0)


def test_color_changes_brightness_saturation_and_contrast_as_documented():
    images = torch.rand(1, 3, 6, 6, generator=seeded(2)) * 2 - 1
    augment = DiffAugment(policy=("color",))
    pixel_mean = images[0].mean(dim=0, keepdim=True)
    image_mean = images[0].mean()
    # Brightness alone: + (u0 - 0.5).
    torch.testing.assert_close(augment.apply(images, draws_for(1, u0=[0.8]))[0, 0], images[0] + 0.3)
    # Saturation alone: the channels move away from their per-pixel mean by a factor 2 * u1 (0: grey).
    torch.testing.assert_close(augment.apply(images, draws_for(1, u1=[0.0]))[0, 0], pixel_mean.expand(3, -1, -1))
    torch.testing.assert_close(
        augment.apply(images, draws_for(1, u1=[0.9]))[0, 0], pixel_mean + 1.8 * (images[0] - pixel_mean)
    )
    # Contrast alone: the pixels move away from the image mean by a factor 0.5 + u2.
    torch.testing.assert_close(
        augment.apply(images, draws_for(1, u2=[0.1]))[0, 0], image_mean + 0.6 * (images[0] - image_mean)
    )
    # All three: they commute (saturation keeps the image mean), so the result has a closed form.
    together = augment.apply(images, draws_for(1, u0=[0.2], u1=[0.3], u2=[0.9]))[0, 0]
    expected = -0.3 + image_mean + 1.4 * (0.6 * (images[0] - pixel_mean) + pixel_mean - image_mean)
    torch.testing.assert_close(together, expected)


def test_cutout_square_is_where_the_draws_put_it():
    # ratio 0.5 of 8 pixels: a 4 x 4 square centred at (u6 * 8, u7 * 8) = (4, 2): rows 2-5, columns 0-3.
    images = torch.rand(1, 1, 8, 8, generator=seeded(3)) + 1
    cut = DiffAugment(policy=("cutout",), cutout_ratio=0.5).apply(images, draws_for(1, u6=[0.5], u7=[0.25]))[0, 0, 0]
    expected = images[0, 0].clone()
    expected[2:6, 0:4] = 0
    torch.testing.assert_close(cut, expected)


def test_augmentation_draws_are_uniform_and_per_sample():
    draws = DiffAugment.sample_parameters(500, 2, seeded(0))
    assert draws.shape == (500, 2, 8) and draws.dtype == torch.float32
    assert 0 < draws.min() and draws.max() < 1
    # Uniform(0, 1): mean 1/2, std 1/sqrt(12) = 0.289; 8000 draws give standard errors of 0.003.
    assert abs(draws.mean().item() - 0.5) < 0.015 and abs(draws.std().item() - 12**-0.5) < 0.015
    batch = DiffAugment.sample_parameters(2, 3, [seeded(5), seeded(6)])
    torch.testing.assert_close(batch[1:], DiffAugment.sample_parameters(1, 3, seeded(6)))


def test_cutout_zeroes_a_square():
    image = torch.ones(1, 1, 16, 16)
    cut = DiffAugment(policy=("cutout",), cutout_ratio=0.5)(image, 6, generator=seeded(0))
    zeros = (cut == 0).flatten(2).sum(-1)
    assert (zeros > 0).all() and (zeros <= 64).all()


def test_augmented_copies_keep_the_images_dtype():
    # Under bfloat16 (autocast, or a pipeline cast to it) the copies stay bfloat16, as the encoder takes them: made in
    # float32 instead, energies would move by up to 6e-3 (measured), as much as bfloat16 itself moves them.
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    parameters = DiffAugment.sample_parameters(2, 3, torch.Generator().manual_seed(1))
    low = DiffAugment().apply(images.bfloat16(), parameters)
    assert low.dtype == torch.bfloat16
    # bfloat16 rounds the draws and pixels to 8 bits: shifts and zooms sample a little elsewhere (mean change 0.012 of
    # the [-1, 1] range, measured), a cutout edge may move by a pixel.
    assert (low.float() - DiffAugment().apply(images, parameters)).abs().mean() < 0.03


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
