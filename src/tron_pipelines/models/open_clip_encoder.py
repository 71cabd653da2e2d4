"""OpenCLIP models (e.g. the method's LAION ViT-B-32) as a pipeline ``encoder`` component.

Needs the optional extra: ``pip install "tron-pipelines[open_clip]"``. The wrapper exposes the same
``get_text_features`` / ``get_image_features`` as transformers' `CLIPModel`, so the pipeline treats it like any CLIP.
OpenCLIP's ViT-B-32 models use OpenAI's BPE vocabulary and 77-token context, so the pipeline's ``tokenizer`` is a
`CLIPTokenizer` (e.g. from ``openai/clip-vit-base-patch32``): its end-of-text padding does not change OpenCLIP's
end-of-text pooling, which takes the first highest token id.
"""

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from ..utils.constants import CLIP_MEAN, CLIP_STD


def _import_open_clip():
    try:
        import open_clip
    except ImportError as error:
        raise ImportError(
            'OpenCLIPEncoder needs the `open_clip_torch` package: pip install "tron-pipelines[open_clip]".'
        ) from error
    return open_clip


class OpenCLIPEncoder(ModelMixin, ConfigMixin):
    """An OpenCLIP model behind the transformers CLIP interface.

    Args:
        model_name: OpenCLIP architecture name (e.g. ``"ViT-B-32"``), used when ``model_config`` is ``None``.
        model_config: A custom architecture (``embed_dim``, ``vision_cfg``, ``text_cfg`` as in OpenCLIP's JSON
            configs), e.g. a tiny one for tests.
        projection_dim: Size of the joint embedding (the condition dimension).
        image_size: Side of the square image input.
        image_mean / image_std: Input normalisation of images in [0, 1].
    """

    @register_to_config
    def __init__(
        self,
        model_name: str | None = "ViT-B-32",
        model_config: dict | None = None,
        projection_dim: int = 512,
        image_size: int = 224,
        image_mean: tuple[float, float, float] = CLIP_MEAN,
        image_std: tuple[float, float, float] = CLIP_STD,
    ):
        super().__init__()
        open_clip = _import_open_clip()
        if model_config is not None:
            self.model = open_clip.model.CLIP(**model_config)
        elif model_name is not None:
            self.model = open_clip.create_model(model_name, pretrained=None)
        else:
            raise ValueError("Give `model_name` or `model_config`.")

    @classmethod
    def from_open_clip(cls, model_name: str, pretrained: str | None = None, **kwargs) -> "OpenCLIPEncoder":
        """Wrap an OpenCLIP model with its pretrained weights (downloaded by OpenCLIP), ready for `save_pretrained`.

        Example: ``OpenCLIPEncoder.from_open_clip("ViT-B-32", "laion2b_s34b_b79k").save_pretrained("laion-vit-b-32")``.
        """
        open_clip = _import_open_clip()
        model = open_clip.create_model(model_name, pretrained=pretrained, **kwargs)
        image_size = model.visual.image_size
        encoder = cls(
            model_name=model_name,
            projection_dim=model.text_projection.shape[1]
            if hasattr(model, "text_projection")
            else model.visual.output_dim,
            image_size=image_size[0] if isinstance(image_size, (tuple, list)) else image_size,
            image_mean=tuple(getattr(model.visual, "image_mean", None) or CLIP_MEAN),
            image_std=tuple(getattr(model.visual, "image_std", None) or CLIP_STD),
        )
        encoder.model.load_state_dict(model.state_dict())
        return encoder.eval()

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Projected, unnormalised text embeddings ``(B, projection_dim)`` for token ids ``(B, L)``."""
        return self.model.encode_text(input_ids)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected, unnormalised image embeddings ``(B, projection_dim)`` for normalised images ``(B, 3, S, S)``."""
        return self.model.encode_image(pixel_values)


__all__ = ["OpenCLIPEncoder"]
