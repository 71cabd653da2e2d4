"""HPSv2 (Human Preference Score v2, Wu et al., 2023) as a reward: an OpenCLIP ViT-H-14 fine-tuned on human
preferences, scored as the plain cosine similarity of image and prompt embeddings (no logit scale).

Needs the optional extra ``pip install "tron-pipelines[open_clip]"`` (OpenCLIP, which needs a torchvision built for the
installed torch).
"""

from diffusers.configuration_utils import register_to_config

from ..models.open_clip_encoder import OpenCLIPEncoder
from ..utils.constants import CLIP_MEAN, CLIP_STD
from .clip_score import CLIPSimilarityReward


class HPSv2Reward(CLIPSimilarityReward):
    """HPSv2: ``cos(image, prompt)`` of the HPS OpenCLIP model, as HPSv2's scorer and ReNO's ``HPSLoss``
    (``1 - HPS``, weight 5.0) compute it; about 0.25-0.35 for real images.

    The tokenizer is a transformers `CLIPTokenizer` with OpenAI's vocabulary (e.g. from
    ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``): OpenCLIP pools at the first highest token id, the end-of-text token,
    which its padding does not move (see `OpenCLIPEncoder`).

    Args:
        model_name: OpenCLIP architecture (``"ViT-H-14"`` for HPSv2 and HPSv2.1), used when ``model_config`` is None.
        model_config: A custom OpenCLIP architecture (tests use a tiny one).
        projection_dim / image_size / image_mean / image_std: As in `OpenCLIPEncoder`.

    Example:
        ```py
        >>> # From the xswu/HPSv2 repo: a dict of tensors, so it loads without unpickling code.
        >>> checkpoint = torch.load("HPS_v2.1_compressed.pt", map_location="cpu", weights_only=True)
        >>> reward = HPSv2Reward.from_hps_checkpoint(checkpoint, CLIPTokenizer.from_pretrained(
        ...     "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"))
        ```
    """

    default_weight = 5.0

    @register_to_config
    def __init__(
        self,
        model_name: str | None = "ViT-H-14",
        model_config: dict | None = None,
        projection_dim: int = 1024,
        image_size: int = 224,
        image_mean: tuple[float, float, float] = CLIP_MEAN,
        image_std: tuple[float, float, float] = CLIP_STD,
    ):
        super().__init__()
        self.clip = OpenCLIPEncoder(
            model_name=model_name,
            model_config=model_config,
            projection_dim=projection_dim,
            image_size=image_size,
            image_mean=image_mean,
            image_std=image_std,
        )

    @classmethod
    def from_hps_checkpoint(cls, checkpoint: dict, tokenizer=None, **kwargs) -> "HPSv2Reward":
        """The reward from an HPSv2 checkpoint as HPSv2 ships it (``{"state_dict": OpenCLIP ViT-H-14 weights}``)."""
        reward = cls(**kwargs)
        reward.clip.model.load_state_dict(checkpoint.get("state_dict", checkpoint))
        reward.tokenizer = tokenizer
        return reward.eval()

    def logit_scale(self) -> float:
        return 1.0

    @property
    def image_size(self) -> int:
        return self.config.image_size


__all__ = ["HPSv2Reward"]
