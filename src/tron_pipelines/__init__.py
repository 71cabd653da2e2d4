"""tron_pipelines: TR0N conditional generation from any unconditional generator and any encoder, diffusers-style.

Names are imported on first use (``from tron_pipelines import TronPipeline`` imports the pipeline and what it needs,
nothing else). `TronPipeline.from_pretrained` imports the component modules a saved pipeline names, since diffusers
resolves them only among modules that are already imported.
"""

from ._lazy import lazy_exports
from .version import __version__


_EXPORTS = {
    "models.generator": ("LATENT_PRIORS", "ConvGenerator", "LatentSpec", "TronGenerator", "sample_normal_prior"),
    "models.translator": ("TranslatorLoss", "TranslatorModel", "TranslatorOutput"),
    "models.classifier": ("ClassifierOutput", "ConvClassifier"),
    "models.biggan": ("BigGANGenerator",),
    "models.biggan_deep": ("BigGANDeepGenerator",),
    "models.stylegan2": ("StyleGAN2Generator", "StyleGANGenerator"),
    "models.stylegan3": ("StyleGAN3Generator",),
    "models.stylegan_xl": ("StyleGANXLGenerator",),
    "models.open_clip_encoder": ("OpenCLIPEncoder",),
    "encoders": ("EncoderAdapter",),
    "energies": (
        "ConditionTerm",
        "DiffAugment",
        "TronEnergy",
        "cosine_energy",
        "cross_entropy_energy",
        "gaussian_prior_energy",
    ),
    "pipelines.pipeline_tron": ("TronPipeline",),
    "pipelines.pipeline_output": ("TronPipelineOutput",),
    "pretrained": ("embedded_pipelines",),
    "schedulers.scheduling_langevin": ("LangevinScheduler", "LangevinSchedulerOutput"),
    "schedulers.scheduling_gradient_descent": ("GradientDescentScheduler", "GradientDescentSchedulerOutput"),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
__all__ = [*__all__, "__version__"]
