"""Constants shared across layers: the CLIP normalisation (encoders and the models that stand in for them), the
prefix of diffusers generator sources (the light format table of `tron build` and the converters)."""

# The image normalisation of OpenAI's CLIP (and of OpenCLIP's models trained on LAION).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# `--generator diffusers:<Hub id or folder>`: a diffusers pipeline or autoencoder turned into G.
DIFFUSERS_PREFIX = "diffusers:"
