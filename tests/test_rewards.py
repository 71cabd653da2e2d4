"""Reward models on tiny random weights, against the way their reference code scores images (ReNO's ``rewards/``,
PickScore's inference code, simple-aesthetics-predictor)."""

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_clip
from transformers import CLIPImageProcessor

from tron_pipelines import AestheticReward, ClipScoreReward, PickScoreReward, RewardModels
from tron_pipelines.encoders import CLIP_MEAN, CLIP_STD
from tron_pipelines.rewards.aesthetic import aesthetic_mlp
from tron_pipelines.rewards.base import clip_image_transform


PROMPTS = ["a red car", "a photo of a cat leaning left"]


def noise_images(height=40, width=56, batch=2, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random((batch, height, width, 3)) * 255).astype(np.uint8)


def to_model_range(arrays: np.ndarray) -> torch.Tensor:
    """uint8 ``(B, H, W, 3)`` -> ``(B, 3, H, W)`` in [-1, 1], as G makes them."""
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255 * 2 - 1


def laion_head_state_dict(input_dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random head in the layout of LAION's ``sac+logos+ava1-l14-linearMSE.pth``."""
    torch.manual_seed(seed)
    return {f"layers.{key}": value for key, value in aesthetic_mlp(input_dim).state_dict().items()}


@pytest.fixture
def pickscore(tokenizer):
    return PickScoreReward.from_clip(tiny_clip(len(tokenizer), seed=3), tokenizer)


@pytest.fixture
def aesthetic(tokenizer):
    clip = tiny_clip(len(tokenizer), seed=4)
    return AestheticReward.from_clip(clip, laion_head_state_dict(clip.config.projection_dim))


@pytest.mark.parametrize("height, width", [(40, 56), (56, 40), (48, 48)])
def test_preprocessing_matches_clip_image_processor(height, width):
    """ReNO's resize (shorter side, bicubic, antialiased), centre crop and normalisation, made differentiable, against
    transformers' CLIP processor (PIL: bicubic on 8-bit images, which rounds; hence the tolerance)."""
    arrays = noise_images(height, width)
    processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    reference = processor(images=[PIL.Image.fromarray(a) for a in arrays], return_tensors="pt").pixel_values
    ours = clip_image_transform(to_model_range(arrays), 16, CLIP_MEAN, CLIP_STD)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0.02)
    # The tolerance tells resampling filters apart: the same steps with bilinear resampling are far off.
    short = min(height, width)
    size = (16 * height // short, 16 * width // short)
    bilinear = F.interpolate((to_model_range(arrays) + 1) / 2, size=size, mode="bilinear", antialias=True)
    top, left = round((size[0] - 16) / 2), round((size[1] - 16) / 2)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    bilinear = (bilinear[..., top : top + 16, left : left + 16] - mean) / std
    assert (bilinear - reference).abs().max() > 0.1


def test_pickscore_equals_pickscore_inference_code(pickscore, tokenizer):
    """PickScore's own scoring: processor -> get_image_features / get_text_features -> L2 normalise ->
    ``logit_scale.exp() * text @ image.T``."""
    arrays = noise_images()
    model = pickscore.clip
    processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    with torch.no_grad():
        pixel_values = processor(images=[PIL.Image.fromarray(a) for a in arrays], return_tensors="pt").pixel_values
        image_embs = model.get_image_features(pixel_values=pixel_values).pooler_output
        image_embs = image_embs / image_embs.norm(dim=-1, keepdim=True)
        text_inputs = tokenizer(PROMPTS, padding=True, truncation=True, max_length=16, return_tensors="pt")
        text_embs = model.get_text_features(**text_inputs).pooler_output
        text_embs = text_embs / text_embs.norm(dim=-1, keepdim=True)
        expected = model.logit_scale.exp() * (text_embs @ image_embs.T).diagonal()
    ours = pickscore.score(to_model_range(arrays), PROMPTS)
    # About 14 * cosine for an untrained CLIP's logit scale; the processor's 8-bit rounding moves it by ~1e-3.
    assert model.logit_scale.exp() > 10
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-2)


@pytest.mark.parametrize("reward_class, offset", [(PickScoreReward, 30.0), (ClipScoreReward, 100.0)])
def test_clip_rewards_equal_renos_losses(reward_class, offset, tokenizer):
    """ReNO's ``PickScoreLoss`` / ``CLIPLoss`` for one image: ``offset - (logit_scale.exp() * img @ txt.T).mean()``
    on its preprocessed image, prompts tokenized with ``padding=True``; the reward is ``offset - loss``."""
    reward = reward_class.from_clip(tiny_clip(len(tokenizer), seed=5), tokenizer)
    images = to_model_range(noise_images(height=20, width=24))
    model = reward.clip
    for index, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            image_features = model.get_image_features(
                pixel_values=clip_image_transform(images[index : index + 1], 16, CLIP_MEAN, CLIP_STD)
            ).pooler_output
            tokens = tokenizer(prompt, return_tensors="pt", padding=True, max_length=77, truncation=True)
            text_features = model.get_text_features(**tokens).pooler_output
            image_features = image_features / image_features.norm(dim=-1, keepdim=True)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
            loss = offset - (model.logit_scale.exp() * (image_features @ text_features.T)).mean()
        ours = reward.score(images[index : index + 1], [prompt])
        torch.testing.assert_close(ours, (offset - loss).view(1), rtol=0, atol=1e-5)


def test_aesthetic_equals_renos_mlp_on_normalised_clip_features(aesthetic, tokenizer):
    """ReNO's ``AestheticLoss``: CLIP image features, L2-normalised, through LAION's MLP (five linear layers, no
    activations); the reward is ``10 - loss``."""
    clip = tiny_clip(len(tokenizer), seed=4)
    head = laion_head_state_dict(clip.config.projection_dim)
    images = to_model_range(noise_images(height=20, width=24))
    with torch.no_grad():
        features = clip.get_image_features(pixel_values=clip_image_transform(images, 16, CLIP_MEAN, CLIP_STD))
        features = features.pooler_output
        features = features / features.norm(dim=-1, keepdim=True)
        hidden = features
        for index in (0, 2, 4, 6, 7):
            hidden = hidden @ head[f"layers.{index}.weight"].T + head[f"layers.{index}.bias"]
        expected = 10.0 - (10.0 - hidden.squeeze(-1))
    torch.testing.assert_close(aesthetic.score(images), expected, rtol=0, atol=1e-5)


def test_aesthetic_equals_simple_aesthetics_predictor(aesthetic):
    predictor_module = pytest.importorskip(
        "aesthetics_predictor",
        reason="simple-aesthetics-predictor is not installed (pip install --no-deps simple-aesthetics-predictor: its "
        "declared torchvision dependency does not import with this torch)",
    )
    predictor = predictor_module.AestheticsPredictorV2Linear(aesthetic.vision.config)
    predictor.load_state_dict(
        {key.removeprefix("vision."): value for key, value in aesthetic.state_dict().items()}, strict=True
    )
    predictor.eval()
    images = to_model_range(noise_images(height=20, width=24))
    with torch.no_grad():
        expected = predictor(pixel_values=clip_image_transform(images, 16, CLIP_MEAN, CLIP_STD)).logits.squeeze(-1)
    torch.testing.assert_close(aesthetic.score(images), expected, rtol=0, atol=1e-5)
    converted = AestheticReward.from_aesthetics_predictor(predictor)
    torch.testing.assert_close(converted.score(images), expected, rtol=0, atol=1e-5)


def test_rewards_are_differentiable_wrt_images(pickscore):
    """Autograd's gradient of the reward w.r.t. the images agrees with a central finite difference."""
    reward = pickscore.double()
    images = to_model_range(noise_images(height=20, width=24)).double() * 0.9  # inside (-1, 1): away from the clamp
    prompt_embeds = reward.encode_prompt(PROMPTS)
    leaf = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(reward(leaf, prompt_embeds).sum(), leaf)
    direction = torch.randn_like(images)
    step = 1e-5
    with torch.no_grad():
        difference = (
            reward(images + step * direction, prompt_embeds) - reward(images - step * direction, prompt_embeds)
        ).sum() / (2 * step)
    torch.testing.assert_close((grad * direction).sum(), difference, rtol=1e-6, atol=1e-8)


def test_rewards_save_and_load_with_their_tokenizer(pickscore, aesthetic, tmp_path):
    images = to_model_range(noise_images(height=20, width=24))
    rewards = RewardModels({"pickscore": pickscore, "aesthetic": aesthetic})
    rewards.save_pretrained(tmp_path / "rewards")
    assert (tmp_path / "rewards" / "pickscore" / "tokenizer").is_dir()
    reloaded = RewardModels.from_pretrained(tmp_path / "rewards")
    assert isinstance(reloaded.models["pickscore"], PickScoreReward)
    assert isinstance(reloaded.models["aesthetic"], AestheticReward)
    expected = rewards(images, rewards.encode_prompts(PROMPTS))
    values = reloaded(images, reloaded.encode_prompts(PROMPTS))
    assert set(values) == {"pickscore", "aesthetic"}
    for name in values:
        torch.testing.assert_close(values[name], expected[name], rtol=0, atol=0)
    single = PickScoreReward.from_pretrained(tmp_path / "rewards", subfolder="pickscore")
    torch.testing.assert_close(single.score(images, PROMPTS), expected["pickscore"], rtol=0, atol=0)
    assert rewards.default_weights() == {"pickscore": 0.05, "aesthetic": 0.0}


def test_bad_rewards_are_refused(pickscore):
    with pytest.raises(ValueError, match="lower-case identifier"):
        RewardModels({"Pick Score": pickscore})
    with pytest.raises(TypeError, match="RewardModel"):
        RewardModels({"pickscore": torch.nn.Linear(2, 2)})
    with pytest.raises(ValueError, match="one row per image"):
        pickscore(torch.zeros(2, 3, 16, 16), pickscore.encode_prompt(PROMPTS[:1]))
    pickscore.tokenizer = None
    with pytest.raises(ValueError, match="no tokenizer"):
        pickscore.encode_prompt(PROMPTS)


def test_hpsv2_is_the_cosine_of_an_open_clip_model(tokenizer):
    pytest.importorskip(
        "open_clip",
        reason="open_clip_torch is not installed (extra: tron-pipelines[open_clip]); it imports torchvision, which "
        "PyPI does not build for this CPU torch",
    )
    from tron_pipelines import HPSv2Reward

    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 16, "layers": 2, "width": 32, "patch_size": 4, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": len(tokenizer), "width": 32, "heads": 2, "layers": 2},
    }
    torch.manual_seed(0)
    reward = HPSv2Reward(model_name=None, model_config=config, projection_dim=16, image_size=16).eval()
    reward.tokenizer = tokenizer
    images = to_model_range(noise_images(height=20, width=24))
    model = reward.clip.model
    with torch.no_grad():
        image_features = F.normalize(model.encode_image(clip_image_transform(images, 16, CLIP_MEAN, CLIP_STD)), dim=-1)
        ids = tokenizer(PROMPTS, padding="max_length", max_length=16, truncation=True, return_tensors="pt").input_ids
        text_features = F.normalize(model.encode_text(ids), dim=-1)
        expected = (image_features @ text_features.T).diagonal()
    torch.testing.assert_close(reward.score(images, PROMPTS), expected, rtol=0, atol=1e-5)
