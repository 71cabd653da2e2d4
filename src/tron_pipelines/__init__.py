"""tron_pipelines: TR0N conditional generation from any unconditional generator and any encoder, diffusers-style.

Importing the package imports every component module: diffusers resolves the classes recorded in a saved pipeline's
``model_index.json`` only among modules that are already imported.
"""

from .models import (
    BigGANDeepGenerator,
    BigGANGenerator,
    ClassifierOutput,
    ConvClassifier,
    ConvGenerator,
    LatentSpec,
    OpenCLIPEncoder,
    TranslatorLoss,
    TranslatorModel,
    TranslatorOutput,
    TronGenerator,
)
from .encoders import EncoderAdapter
from .energies import ConditionTerm, DiffAugment, TronEnergy, cosine_energy, cross_entropy_energy, gaussian_prior_energy
from .pipelines import TronPipeline, TronPipelineOutput
from .pretrained import embedded_pipelines
from .schedulers import GradientDescentScheduler, LangevinScheduler, LangevinSchedulerOutput
from .version import __version__
