"""Constants shared by the encoders and the models that stand in for them."""

# The image normalisation of OpenAI's CLIP (and of OpenCLIP's models trained on LAION).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
