"""tron_pipelines: TR0N conditional generation from any unconditional generator and any encoder, diffusers-style.

Names are imported on first use (``from tron_pipelines import TronPipeline`` imports the pipeline and what it needs,
nothing else). `TronPipeline.from_pretrained` imports the component modules a saved pipeline names, since diffusers
resolves them only among modules that are already imported.

Layers, each importing only from those below it (docs/architecture.md): ``commands`` (the ``tron`` command line) ->
``training`` | ``conversion`` | ``evaluation`` -> ``pipelines`` -> ``energies`` | ``rewards`` -> ``encoders`` ->
``models`` | ``schedulers`` -> ``pretrained`` -> ``utils``.
"""

from .utils.lazy import lazy_exports
from .utils.moved_modules import alias_moved_modules
from .version import __version__


_EXPORTS = {
    "models.generator": ("LATENT_PRIORS", "ConvGenerator", "LatentSpec", "TronGenerator", "sample_normal_prior"),
    "models.translator": ("TranslatorLoss", "TranslatorModel", "TranslatorOutput"),
    "models.classifier": ("ClassifierOutput", "ConvClassifier"),
    "models.biggan": ("BigGANGenerator",),
    "models.biggan_deep": ("BigGANDeepGenerator",),
    "models.stylegan2": ("StyleGAN2Generator", "StyleGANGenerator"),
    "models.stylegan3": ("StyleGAN3Generator",),
    "models.nvae": ("NVAEDecoderOutput", "NVAEGenerator"),
    "models.open_clip_encoder": ("OpenCLIPEncoder",),
    "models.diffusers_generators": (
        "ConsistencyModelGenerator",
        "DiffusersGenerator",
        "DiffusionSamplerGenerator",
        "VAEDecoderGenerator",
    ),
    "models.text_to_image_generators": (
        "PromptConditionedGenerator",
        "StableDiffusionXLGenerator",
        "TextConditionalSamplerGenerator",
        "TextToImageGenerator",
    ),
    "models.diffusers_loading": ("load_diffusers_generator",),
    "encoders": ("EncoderAdapter",),
    "energies": (
        "ConditionTerm",
        "DiffAugment",
        "TronEnergy",
        "cosine_energy",
        "cross_entropy_energy",
        "gaussian_prior_energy",
    ),
    "rewards.base": ("RewardModel",),
    "rewards.clip_score": ("ClipScoreReward",),
    "rewards.pickscore": ("PickScoreReward",),
    "rewards.aesthetic": ("AestheticReward",),
    "rewards.hps": ("HPSv2Reward",),
    "rewards.collection": ("RewardModels",),
    "pipelines.pipeline_tron": ("TronPipeline",),
    "pipelines.pipeline_output": ("TronPipelineOutput",),
    "pretrained": ("embedded_pipelines",),
    "schedulers.scheduling_langevin": ("LangevinScheduler", "LangevinSchedulerOutput"),
    "schedulers.scheduling_gradient_descent": ("GradientDescentScheduler", "GradientDescentSchedulerOutput"),
    "schedulers.scheduling_noise_optimization": ("NoiseOptimizationScheduler", "NoiseOptimizationSchedulerOutput"),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
__all__ = [*__all__, "__version__"]

# Modules that moved when the package was split into layers: their old paths keep working, with a FutureWarning.
MOVED_MODULES = {
    f"{__name__}.{old}": f"{__name__}.{new}"
    for old, new in {
        "_lazy": "utils.lazy",
        "build": "commands.build_stages",
        "captioning": "training.captioning",
        "demo": "commands.demo_app",
        "evaluate_command": "commands.evaluate",
        "generate_command": "commands.generate",
        "generate_many": "commands.generate_many",
        "samples": "commands.samples",
    }.items()
}
alias_moved_modules(MOVED_MODULES)
