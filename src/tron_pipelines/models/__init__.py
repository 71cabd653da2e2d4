"""The models of TR0N pipelines: generators, the translator, encoders (imported on first use)."""

from ..utils.lazy import lazy_exports


_EXPORTS = {
    "generator": ("LATENT_PRIORS", "ConvGenerator", "LatentSpec", "TronGenerator", "sample_normal_prior"),
    "translator": ("TranslatorLoss", "TranslatorModel", "TranslatorOutput"),
    "classifier": ("ClassifierOutput", "ConvClassifier"),
    "biggan": ("BigGANGenerator",),
    "biggan_deep": ("BigGANDeepGenerator",),
    "open_clip_encoder": ("OpenCLIPEncoder",),
    "stylegan2": ("StyleGAN2Generator", "StyleGANGenerator"),
    "stylegan3": ("StyleGAN3Generator",),
    "nvae": ("NVAEDecoderOutput", "NVAEGenerator"),
    "diffusers_generators": (
        "ConsistencyModelGenerator",
        "DiffusersGenerator",
        "DiffusionSamplerGenerator",
        "VAEDecoderGenerator",
    ),
    "text_to_image_generators": (
        "PromptConditionedGenerator",
        "StableDiffusionXLGenerator",
        "TextConditionalSamplerGenerator",
        "TextToImageGenerator",
    ),
    "diffusers_loading": ("load_diffusers_generator",),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
