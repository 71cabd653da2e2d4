"""The LAION aesthetic predictor (improved-aesthetic-predictor, ``sac+logos+ava1-l14-linearMSE``) as a reward: an MLP
on the L2-normalised CLIP ViT-L/14 image embedding, predicting a 1-10 rating. It reads no prompt."""

import torch
from diffusers.configuration_utils import register_to_config
from torch import nn
from transformers import CLIPModel, CLIPVisionConfig, CLIPVisionModelWithProjection

from ..utils.constants import CLIP_MEAN, CLIP_STD
from .base import RewardModel, at_least_float32, clip_image_transform


def aesthetic_mlp(input_dim: int) -> nn.Sequential:
    """LAION's head, in its state-dict layout (``layers.0/2/4/6/7``): five linear layers with dropouts between the
    first four and no activation, so a linear map as a whole (the ``linearMSE`` models)."""
    return nn.Sequential(
        nn.Linear(input_dim, 1024),
        nn.Dropout(0.2),
        nn.Linear(1024, 128),
        nn.Dropout(0.2),
        nn.Linear(128, 64),
        nn.Dropout(0.1),
        nn.Linear(64, 16),
        nn.Linear(16, 1),
    )


class AestheticReward(RewardModel):
    """``mlp(e / |e|)`` with ``e`` the projected CLIP image embedding, as ReNO's ``AestheticLoss`` (``10 - score``)
    and simple-aesthetics-predictor's ``AestheticsPredictorV2Linear`` compute it.

    ReNO gives it weight 0 unless asked (its ``--aesthetic_weighting`` default), so in a pipeline it is reported per
    image but not optimised until its weight is set.

    Args:
        vision_config: The `CLIPVisionConfig` of a `CLIPVisionModelWithProjection` as a dict (ViT-L/14 for LAION's
            head: ``projection_dim=768``).
        image_mean / image_std: Input normalisation (OpenAI CLIP's).

    Example:
        ```py
        >>> from transformers import CLIPModel
        >>> # LAION's state dict (layers.0.weight, ...): tensors only, so it loads without unpickling code.
        >>> head = torch.load("sac+logos+ava1-l14-linearMSE.pth", weights_only=True)
        >>> reward = AestheticReward.from_clip(CLIPModel.from_pretrained("openai/clip-vit-large-patch14"), head)
        ```
    """

    default_weight = 0.0
    needs_prompt = False

    @register_to_config
    def __init__(
        self,
        vision_config: dict,
        image_mean: tuple[float, float, float] = CLIP_MEAN,
        image_std: tuple[float, float, float] = CLIP_STD,
    ):
        super().__init__()
        self.vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision_config))
        self.layers = aesthetic_mlp(self.vision.config.projection_dim)

    @classmethod
    def from_clip(cls, clip: CLIPModel, head_state_dict: dict[str, torch.Tensor], **kwargs) -> "AestheticReward":
        """The reward from a transformers `CLIPModel` (its vision tower and projection) and LAION's head state dict
        (``layers.0.weight`` ... ``layers.7.bias``, as in ``sac+logos+ava1-l14-linearMSE.pth``)."""
        vision_config = clip.config.vision_config.to_dict()
        vision_config["projection_dim"] = clip.config.projection_dim
        reward = cls(vision_config=vision_config, **kwargs)
        reward.vision.vision_model.load_state_dict(clip.vision_model.state_dict())
        reward.vision.visual_projection.load_state_dict(clip.visual_projection.state_dict())
        reward.layers.load_state_dict({key.removeprefix("layers."): value for key, value in head_state_dict.items()})
        return reward.to(clip.dtype).eval()

    @classmethod
    def from_aesthetics_predictor(cls, predictor, **kwargs) -> "AestheticReward":
        """The reward from simple-aesthetics-predictor's ``AestheticsPredictorV2Linear`` (a transformers
        `CLIPVisionModelWithProjection` with the head as ``layers``), e.g.
        ``shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE``."""
        reward = cls(vision_config=predictor.config.to_dict(), **kwargs)
        reward.load_state_dict(
            {
                f"vision.{key}" if not key.startswith("layers.") else key: value
                for key, value in predictor.state_dict().items()
            }
        )
        return reward.to(predictor.dtype).eval()

    def encode_prompt(self, prompts: list[str] | None = None) -> None:
        """The aesthetic score reads no prompt."""
        return None

    def forward(self, images: torch.Tensor, prompt_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,)`` predicted ratings of images ``(B, 3, H, W)`` in ``[-1, 1]``, float32."""
        size = self.vision.config.image_size
        pixel_values = clip_image_transform(images, size, self.config.image_mean, self.config.image_std)
        embeds = self.vision(pixel_values=pixel_values.to(self.dtype)).image_embeds
        embeds = embeds / embeds.norm(dim=-1, keepdim=True)
        return at_least_float32(self.layers(embeds).squeeze(-1))


__all__ = ["AestheticReward", "aesthetic_mlp"]
