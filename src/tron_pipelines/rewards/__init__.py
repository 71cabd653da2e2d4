"""Reward models: preference and alignment scores of generated images, maximised as energies (imported on first use).

Each maps images in ``[-1, 1]`` and prompts to one reward per image, differentiably; `RewardModels` holds a named set
of them as a pipeline's ``rewards`` component. See docs/text-to-image.md.
"""

from ..utils.lazy import lazy_exports


_EXPORTS = {
    "base": ("RewardModel", "clip_image_transform"),
    "clip_score": ("CLIPSimilarityReward", "ClipScoreReward"),
    "pickscore": ("PickScoreReward",),
    "aesthetic": ("AestheticReward",),
    "hps": ("HPSv2Reward",),
    "collection": ("RewardModels",),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
