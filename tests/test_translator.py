import math

import pytest
import torch

from tron_pipelines import TranslatorModel


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def translator():
    torch.manual_seed(0)
    return TranslatorModel(
        condition_dim=6,
        latent_dim=4,
        num_components=3,
        hidden_dim=16,
        latent_threshold=2.0,
        auxiliary_latent_dims={"y": 5},
    )


def test_forward_shapes_and_bounds(translator):
    out = translator(torch.randn(7, 6) * 100)
    assert out.mixture_logits.shape == (7, 3) and out.means.shape == (7, 3, 4) and out.stds.shape == (7, 3, 4)
    assert out.means.abs().max() <= 2.0 and (out.stds > 0).all()
    assert out.auxiliary_latents["y"].shape == (7, 5)
    # An untrained translator is as spread out as a standard normal prior, not collapsed onto its means.
    torch.testing.assert_close(out.stds[0, 0], torch.full((4,), 1.0 + 1e-6))
    assert translator.config.hidden_dim == 16
    assert TranslatorModel(condition_dim=6, latent_dim=4).trunk_in.out_features == 24  # default 4 x condition_dim


def test_forward_is_the_documented_network(translator):
    # u = ReLU(W1 c); u = u + ReLU(W2 u); means = tau * tanh(W_mu u), logits W_l u, auxiliary W_a u; one std per
    # dimension, exp(log_std) + 1e-6, shared by all components. Trained-like weights: random log stds.
    with torch.no_grad():
        translator.log_stds.copy_(torch.randn(4, generator=seeded(2)))
    condition = torch.randn(5, 6, generator=seeded(3))
    p = dict(translator.named_parameters())

    def linear(name, x):
        return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    hidden = torch.relu(linear("trunk_in", condition))
    hidden = hidden + torch.relu(linear("trunk_hidden", hidden))
    out = translator(condition)
    torch.testing.assert_close(out.means, 2.0 * torch.tanh(linear("mean_head", hidden)).view(5, 3, 4))
    torch.testing.assert_close(out.mixture_logits, linear("logit_head", hidden))
    torch.testing.assert_close(out.auxiliary_latents["y"], linear("auxiliary_heads.y", hidden))
    torch.testing.assert_close(out.stds, (p["log_stds"].exp() + 1e-6).expand(5, 3, 4))
    # A translator cast to bfloat16 gives every output in bfloat16.
    low = translator.to(torch.bfloat16)(condition)
    assert {low.means.dtype, low.stds.dtype, low.mixture_logits.dtype, low.auxiliary_latents["y"].dtype} == {
        torch.bfloat16
    }


def test_log_prob_matches_mixture_by_hand(translator):
    condition, latents = torch.randn(2, 6), torch.randn(2, 4) * 0.01
    out = translator(condition)
    weights = out.mixture_logits.softmax(-1)
    expected = []
    for b in range(2):
        log_terms = [
            weights[b, k].log()
            + torch.distributions.Normal(out.means[b, k], out.stds[b, k]).log_prob(latents[b]).sum()
            for k in range(3)
        ]
        expected.append(torch.stack(log_terms).logsumexp(0))
    torch.testing.assert_close(translator.log_prob(latents, condition), torch.stack(expected), atol=1e-3, rtol=1e-4)


def test_log_prob_and_loss_match_torch_distributions_where_components_overlap(translator):
    # Overlapping components with unequal per-dimension stds: here log-sum-exp exceeds the max over components by
    # 0.4-0.9 nats and the logits' log-normaliser is about 0.9, so a max, a dropped log-softmax or a wrong std term
    # all move the density by far more than float rounding.
    with torch.no_grad():
        translator.log_stds.copy_(torch.tensor([-0.5, -0.1, 0.2, 0.4]))
    condition = torch.randn(5, 6, generator=seeded(1))
    out = translator(condition)
    # Latents among the means, where no single component explains them.
    latents = out.means.detach().mean(1) + 0.5 * torch.randn(5, 4, generator=seeded(2))
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=out.mixture_logits),
        torch.distributions.Independent(torch.distributions.Normal(out.means, out.stds), 1),
    )
    components = mixture.component_distribution.log_prob(latents.unsqueeze(1)) + out.mixture_logits.log_softmax(-1)
    assert (components.logsumexp(-1) - components.max(-1).values).min() > 0.3, "the components must overlap"
    assert (out.mixture_logits.logsumexp(-1).abs() > 0.5).all(), "the logits must not be normalised already"
    expected = mixture.log_prob(latents)
    torch.testing.assert_close(translator.log_prob(latents, condition), expected, atol=1e-5, rtol=1e-5)

    targets = {"y": torch.randn(5, 5, generator=seeded(3))}
    loss = translator.loss(condition, latents, targets, nll_weight=0.25)
    expected_mse = ((out.auxiliary_latents["y"] - targets["y"]) ** 2).mean()
    torch.testing.assert_close(loss.nll, -expected.mean(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss.auxiliary_mse, expected_mse)
    torch.testing.assert_close(loss.loss, 0.25 * -expected.mean() + expected_mse, atol=1e-5, rtol=1e-5)
    # The method's alpha = 1e-4 by default.
    default = translator.loss(condition, latents, targets)
    torch.testing.assert_close(default.loss, 1e-4 * -expected.mean() + expected_mse, atol=1e-6, rtol=1e-5)


def test_sample_is_deterministic_and_per_sample(translator):
    condition = torch.randn(3, 6)
    first, aux = translator.sample(condition, generator=[seeded(1), seeded(2), seeded(3)])
    single, _ = translator.sample(condition[1:2], generator=seeded(2))
    torch.testing.assert_close(first[1:2], single)
    again, _ = translator.sample(condition, generator=[seeded(1), seeded(2), seeded(3)])
    torch.testing.assert_close(first, again)
    assert aux["y"].shape == (3, 5) and first.abs().max() <= 2.0
    with pytest.raises(ValueError, match="list of 2 generators"):
        translator.sample(condition, generator=[seeded(1), seeded(2)])


def test_samples_follow_the_mixture():
    translator = TranslatorModel(condition_dim=2, latent_dim=1, num_components=2, hidden_dim=4, init_std=0.1)
    with torch.no_grad():
        for p in translator.parameters():
            p.zero_()
        translator.mean_head.bias.copy_(torch.tensor([-3.0, 3.0]))
        translator.logit_head.bias.copy_(torch.tensor([math.log(0.25), math.log(0.75)]))
        translator.log_stds.fill_(math.log(0.1))
    latents, _ = translator.sample(torch.zeros(4000, 2), generator=seeded(0))
    assert abs((latents > 0).float().mean().item() - 0.75) < 0.03
    assert abs(latents[latents > 0].std().item() - 0.1) < 0.01
    # temperature scales the std: 4000 draws estimate it within about 2%.
    hotter, _ = translator.sample(torch.zeros(4000, 2), generator=seeded(0), temperature=2.5)
    assert abs(hotter[hotter > 0].std().item() - 0.25) < 0.02


def test_samples_are_clamped_to_the_latent_threshold(translator):
    # Means within +-2 (2 tanh) and a std of 1 put many draws past the bound on both sides.
    latents, _ = translator.sample(torch.randn(500, 6, generator=seeded(4)) * 3, generator=seeded(5), temperature=3.0)
    assert latents.min() == -2.0 and latents.max() == 2.0
    assert ((latents == -2.0).float().mean() > 0.1) and ((latents == 2.0).float().mean() > 0.1)


def test_nll_decreases_when_fit_to_pairs():
    torch.manual_seed(0)
    # Synthetic pairs: z depends on c through a fixed non-linear map plus noise, y = linear(c).
    conditions = torch.randn(512, 6)
    latents = torch.tanh(conditions[:, :4] * 1.5) + 0.1 * torch.randn(512, 4)
    auxiliary = conditions @ torch.randn(6, 5)
    translator = TranslatorModel(
        condition_dim=6,
        latent_dim=4,
        num_components=3,
        hidden_dim=32,
        latent_threshold=2.0,
        auxiliary_latent_dims={"y": 5},
    )
    optimizer = torch.optim.Adam(
        [
            {"params": [p for n, p in translator.named_parameters() if n != "log_stds"]},
            {"params": [translator.log_stds], "lr": 1e-1},
        ],
        lr=3e-3,
    )
    start = translator.loss(conditions, latents, {"y": auxiliary})
    for _ in range(300):
        loss = translator.loss(conditions, latents, {"y": auxiliary}, nll_weight=1e-2)
        optimizer.zero_grad()
        loss.loss.backward()
        optimizer.step()
    end = translator.loss(conditions, latents, {"y": auxiliary})
    assert end.nll < start.nll - 5.0  # measured: 5.16 -> -1.03 nats per sample
    assert end.auxiliary_mse < start.auxiliary_mse * 0.2
    assert 0.05 < translator.stds.mean().item() < 0.5  # the spread is learned: from 1 towards the noise's 0.1


def test_round_trip(translator, tmp_path):
    translator.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    reloaded = TranslatorModel.from_pretrained(tmp_path)
    condition = torch.randn(2, 6)
    for a, b in zip(translator(condition, return_dict=False)[:3], reloaded(condition, return_dict=False)[:3]):
        torch.testing.assert_close(a, b)
    assert reloaded.config.auxiliary_latent_dims == {"y": 5}


def test_bad_input(translator):
    with pytest.raises(ValueError, match=r"`condition` must have shape \(batch, 6\)"):
        translator(torch.randn(2, 5))
    with pytest.raises(ValueError, match="`latents` must have shape"):
        translator.log_prob(torch.randn(2, 3), torch.randn(2, 6))
    with pytest.raises(ValueError, match="auxiliary_latents"):
        translator.loss(torch.randn(2, 6), torch.randn(2, 4))
    with pytest.raises(ValueError, match="num_components"):
        TranslatorModel(num_components=0)


# A shared-basis (low-rank) mean head, for latents of many thousand values ----------------------------------------
@pytest.fixture
def low_rank():
    torch.manual_seed(1)
    return TranslatorModel(
        condition_dim=6, latent_dim=10, num_components=3, hidden_dim=16, latent_threshold=2.0, mean_rank=2
    )


def test_low_rank_means_are_the_documented_network(low_rank):
    # Component k's mean: tau * tanh(B (A_k u + a_k) + b), one (D, r) basis B shared by all components.
    condition = torch.randn(5, 6, generator=seeded(3))
    p = dict(low_rank.named_parameters())
    hidden = torch.relu(condition @ p["trunk_in.weight"].T + p["trunk_in.bias"])
    hidden = hidden + torch.relu(hidden @ p["trunk_hidden.weight"].T + p["trunk_hidden.bias"])
    coefficients = (hidden @ p["mean_head.weight"].T + p["mean_head.bias"]).view(5, 3, 2)
    expected = 2.0 * torch.tanh(coefficients @ p["mean_basis.weight"].T + p["mean_basis.bias"])
    torch.testing.assert_close(low_rank(condition).means, expected)
    # Without the threshold the means are the affine map itself: every one lies in the basis's 2-d subspace.
    unbounded = TranslatorModel(condition_dim=6, latent_dim=10, num_components=3, hidden_dim=16, mean_rank=2)
    means = unbounded(condition).means.detach().reshape(-1, 10) - unbounded.mean_basis.bias.detach()
    assert torch.linalg.matrix_rank(means) == 2


def test_low_rank_translator_is_a_valid_mixture(low_rank):
    with torch.no_grad():
        low_rank.log_stds.copy_(torch.linspace(-0.5, 0.4, 10))
    condition = torch.randn(4, 6, generator=seeded(1))
    out = low_rank(condition)
    latents = out.means.detach().mean(1) + 0.5 * torch.randn(4, 10, generator=seeded(2))
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=out.mixture_logits),
        torch.distributions.Independent(torch.distributions.Normal(out.means, out.stds), 1),
    )
    torch.testing.assert_close(low_rank.log_prob(latents, condition), mixture.log_prob(latents), atol=1e-5, rtol=1e-5)
    drawn, _ = low_rank.sample(condition, generator=seeded(4))
    assert drawn.shape == (4, 10) and drawn.abs().max() <= 2.0
    # It trains like the full head: the loss has gradients for the coefficients and the basis.
    low_rank.loss(condition, latents).loss.backward()
    assert low_rank.mean_head.weight.grad.abs().sum() > 0 and low_rank.mean_basis.weight.grad.abs().sum() > 0


def test_low_rank_head_sizes_and_the_unchanged_default(low_rank, tmp_path):
    h, k, d, r = 16, 3, 10, 2
    assert low_rank.mean_head.weight.shape == (k * r, h) and low_rank.mean_basis.weight.shape == (d, r)
    full = TranslatorModel(condition_dim=6, latent_dim=d, num_components=k, hidden_dim=h)
    assert full.mean_basis is None and not any(name.startswith("mean_basis") for name in full.state_dict())
    assert full.mean_head.weight.shape == (k * d, h)
    assert sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in low_rank.parameters()) == (
        (h * k * d + k * d) - (h * k * r + k * r + r * d + d)
    )
    low_rank.save_pretrained(tmp_path)
    reloaded = TranslatorModel.from_pretrained(tmp_path)
    assert reloaded.config.mean_rank == 2
    condition = torch.randn(2, 6)
    torch.testing.assert_close(reloaded(condition).means, low_rank(condition).means)
    assert TranslatorModel(condition_dim=6, latent_dim=d, mean_rank=1).mean_basis.in_features == 1
    with pytest.raises(ValueError, match="mean_rank"):
        TranslatorModel(condition_dim=6, latent_dim=d, mean_rank=0)
