# Written by tron_pipelines' TronPipeline.save_pretrained. It only re-exports a class of the installed package, so
# that diffusers' generic loader finds it: DiffusionPipeline.from_pretrained(<this repo>, trust_remote_code=True).
from tron_pipelines.models.translator import TranslatorModel  # noqa: F401
