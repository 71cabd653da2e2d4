"""CLIP score as a reward: ``logit_scale.exp() * cos(image embedding, prompt embedding)`` of any transformers
`CLIPModel` (ReNO's ``CLIPLoss`` is ``100 - CLIP score`` with LAION's ViT-H-14)."""

import torch
from diffusers.configuration_utils import register_to_config
from transformers import CLIPConfig, CLIPModel

from ..utils.constants import CLIP_MEAN, CLIP_STD
from .base import RewardModel, clip_image_transform, image_features, text_features


class CLIPSimilarityReward(RewardModel):
    """``scale * cos(f_image(x), f_text(prompt))`` of a CLIP-interface model held as ``self.clip``; subclasses build
    the model and say what ``scale`` is (`logit_scale`)."""

    def logit_scale(self) -> torch.Tensor | float:
        """Factor of the cosine similarity."""
        raise NotImplementedError

    @property
    def image_size(self) -> int:
        raise NotImplementedError

    @property
    def max_text_length(self) -> int:
        return self.tokenizer.model_max_length if self.tokenizer is not None else 77

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """L2-normalised prompt embeddings ``(B, E)``, float32."""
        with torch.no_grad():
            embeds = text_features(self.clip, self.tokenize(prompts, self.max_text_length))
        return embeds / embeds.norm(dim=-1, keepdim=True)

    def forward(self, images: torch.Tensor, prompt_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,)`` rewards of images ``(B, 3, H, W)`` in ``[-1, 1]`` against ``prompt_embeds`` ``(B, E)`` (from
        `encode_prompt`), float32."""
        if prompt_embeds is None or prompt_embeds.shape[0] != images.shape[0]:
            raise ValueError(
                f"`prompt_embeds` must have one row per image ({images.shape[0]}), got "
                f"{None if prompt_embeds is None else tuple(prompt_embeds.shape)}."
            )
        pixel_values = clip_image_transform(images, self.image_size, self.config.image_mean, self.config.image_std)
        embeds = image_features(self.clip, pixel_values)
        embeds = embeds / embeds.norm(dim=-1, keepdim=True)
        return self.logit_scale() * (embeds * prompt_embeds.to(embeds.device)).sum(dim=-1)


class ClipScoreReward(CLIPSimilarityReward):
    """CLIP score of a transformers `CLIPModel`: ``logit_scale.exp() * cos`` (about 100 * cos for trained CLIPs), as
    ReNO's ``CLIPLoss`` computes it (weight 0.01 in ReNO, off by default there).

    Args:
        clip_config: The `CLIPConfig` as a dict (``clip.config.to_dict()``); the weights come from `from_clip` or
            `from_pretrained`.
        image_mean / image_std: Input normalisation of the image encoder (OpenAI CLIP's by default).

    Example:
        ```py
        >>> from transformers import CLIPModel, CLIPTokenizer
        >>> reward = ClipScoreReward.from_clip(
        ...     CLIPModel.from_pretrained("laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
        ...     CLIPTokenizer.from_pretrained("laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
        ... )
        >>> reward.score(images, ["a red dog and a green cat"] * len(images))  # images in [-1, 1]
        ```
    """

    default_weight = 0.01

    @register_to_config
    def __init__(
        self,
        clip_config: dict,
        image_mean: tuple[float, float, float] = CLIP_MEAN,
        image_std: tuple[float, float, float] = CLIP_STD,
    ):
        super().__init__()
        self.clip = CLIPModel(CLIPConfig(**clip_config))

    @classmethod
    def from_clip(cls, clip: CLIPModel, tokenizer=None, **kwargs) -> "CLIPSimilarityReward":
        """This reward over ``clip``'s weights (copied), with the tokenizer of its text encoder."""
        reward = cls(clip_config=clip.config.to_dict(), **kwargs)
        reward.clip.load_state_dict(clip.state_dict())
        reward.tokenizer = tokenizer
        return reward.to(clip.dtype).eval()

    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.float().exp()

    @property
    def image_size(self) -> int:
        return self.clip.config.vision_config.image_size

    @property
    def max_text_length(self) -> int:
        return self.clip.config.text_config.max_position_embeddings


__all__ = ["CLIPSimilarityReward", "ClipScoreReward"]
