"""PickScore (Kirstain et al., 2023) as a reward: ``yuvalkirstain/PickScore_v1`` is a transformers `CLIPModel`
(ViT-H-14) fine-tuned on human preferences, scored as ``logit_scale.exp() * cos`` like a CLIP score."""

from .clip_score import ClipScoreReward


class PickScoreReward(ClipScoreReward):
    """PickScore: ``logit_scale.exp() * cos(image, prompt)`` of the PickScore CLIP (about 20-23 for real images),
    exactly as PickScore's own inference code and ReNO's ``PickScoreLoss`` (``30 - PickScore``, weight 0.05) score it.
    Preprocessing: ReNO's differentiable resize (bicubic, shorter side to 224), centre crop and CLIP normalisation,
    in place of the PIL processor of PickScore's code.

    Example:
        ```py
        >>> from transformers import CLIPModel, CLIPTokenizer
        >>> reward = PickScoreReward.from_clip(
        ...     CLIPModel.from_pretrained("yuvalkirstain/PickScore_v1"),
        ...     CLIPTokenizer.from_pretrained("laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
        ... )
        >>> reward.save_pretrained("pickscore-reward")
        ```
    """

    default_weight = 0.05


__all__ = ["PickScoreReward"]
