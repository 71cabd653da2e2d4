from .biggan import BigGANGenerator
from .biggan_deep import BigGANDeepGenerator
from .classifier import ClassifierOutput, ConvClassifier
from .generator import LATENT_PRIORS, ConvGenerator, LatentSpec, TronGenerator, sample_normal_prior
from .open_clip_encoder import OpenCLIPEncoder
from .translator import TranslatorLoss, TranslatorModel, TranslatorOutput
