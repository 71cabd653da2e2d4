"""The captions of the MNIST text pipeline: how the small CLIP's training digits were described, and the captioner of
its translator's caption route, which describes generated digits the same way.

A caption names the digit and, each with chance `ATTRIBUTE_PROBABILITY`, the attributes measured on the pixels by
`data.attribute_categories` (stroke weight thin/bold, slant left/upright/right, size small/large), in one of several
phrasings: "a bold 7", "the number seven, leaning right", "seven", "a thin small 3". `train_clip.py` captions real
digits by their labels; `MnistCaptioner` captions generated ones by the digit the classifier f of `tron-mnist` reads
(never the benchmark's evaluation classifier, which judges the results).

    tron train-translator --pipeline <text pipeline> --condition_route caption --captioner captions:MnistCaptioner ...

(with ``examples/mnist`` on ``PYTHONPATH``; `build_pipelines.py` does this for `tron-mnist-text`).
"""

import re

import numpy as np
import torch
from data import DIGIT_WORDS, NUM_CLASSES, UNSPECIFIED, attribute_categories

from tron_pipelines.training.captioning import Captioner, seed_from


# Chance that each defined attribute of a digit is named in its caption.
ATTRIBUTE_PROBABILITY = 0.6
# Order of the attribute codes in a ``(B, 3)`` array, and of `make_caption`'s arguments.
ATTRIBUTES = ("stroke_weight", "slant", "size")

# Phrasings per attribute category, index-aligned with data.STROKE_WEIGHTS / SIZES / SLANTS.
STROKE_WEIGHT_WORDS = (("thin", "light", "fine"), ("bold", "thick", "heavy"))
SIZE_WORDS = (("small", "little"), ("large", "big"))
SLANT_PHRASES = (
    ("leaning left", "leaning to the left", "slanted left", "tilted left"),
    ("upright", "standing upright", "straight"),
    ("leaning right", "leaning to the right", "slanted right", "tilted right"),
)
# Noun phrases; {adjectives} may be empty. The article is added afterwards ("a" or "an").
DIGIT_TEMPLATES = (
    "{adjectives}{digit}",
    "the {adjectives}number {word}",
    "the {adjectives}digit {numeral}",
    "{adjectives}handwritten {digit}",
    "number {numeral}",
)
ARTICLE_TEMPLATES = (0, 3)  # templates that may take "a"/"an" in front


def with_article(phrase: str) -> str:
    """Prefix "an" before "8"/"eight", "a" otherwise (no other caption word starts with a vowel sound)."""
    return ("an " if phrase.split()[0] in ("8", "eight") else "a ") + phrase


def make_caption(label: int, stroke_weight: int, slant: int, size: int, rng: np.random.Generator) -> str:
    """One caption for a digit with the given attribute codes (`UNSPECIFIED` ones are never named)."""
    adjectives = []
    if stroke_weight != UNSPECIFIED:
        adjectives.append(rng.choice(STROKE_WEIGHT_WORDS[stroke_weight]))
    if size != UNSPECIFIED:
        adjectives.append(rng.choice(SIZE_WORDS[size]))
    template_index = int(rng.integers(len(DIGIT_TEMPLATES)))
    if adjectives and "{adjectives}" not in DIGIT_TEMPLATES[template_index]:
        template_index = 0
    numeral, word = str(label), DIGIT_WORDS[label]
    phrase = DIGIT_TEMPLATES[template_index].format(
        adjectives="".join(a + " " for a in adjectives), digit=rng.choice([numeral, word]), numeral=numeral, word=word
    )
    if template_index in ARTICLE_TEMPLATES and (adjectives or rng.random() < 0.5):
        phrase = with_article(phrase)
    if slant != UNSPECIFIED:
        phrase += rng.choice([", ", " "]) + rng.choice(SLANT_PHRASES[slant])
    return phrase


def attribute_codes(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(B, 3)`` attribute codes of digits in `ATTRIBUTES` order (see `data.attribute_categories`)."""
    categories = attribute_categories(images, labels)
    return np.stack([categories[name] for name in ATTRIBUTES], axis=1)


def sample_captions(labels: np.ndarray, codes: np.ndarray, probability: float, rng: np.random.Generator):
    """A caption per image, and the attribute codes ``(B, 3)`` it names (`UNSPECIFIED` where it is silent). Each
    defined attribute is named with chance `probability`."""
    named = np.where(rng.random(codes.shape) < probability, codes, UNSPECIFIED)
    captions = [make_caption(int(label), *map(int, image_named), rng) for label, image_named in zip(labels, named)]
    return captions, named


def caption_words() -> list[str]:
    """Every word and numeral a caption can contain: what the text tower learns to read (`make_caption`)."""
    phrases = [*DIGIT_WORDS, *DIGIT_TEMPLATES, "a", "an", *(str(label) for label in range(NUM_CLASSES))]
    phrases += [w for group in STROKE_WEIGHT_WORDS + SIZE_WORDS + SLANT_PHRASES for w in group]
    return sorted({word for phrase in phrases for word in re.findall(r"[a-z0-9]+", re.sub(r"\{\w+\}", " ", phrase))})


class MnistCaptioner(Captioner):
    """Captions generated digits as the CLIP's training digits were captioned: the digit read by the classifier f,
    and the stroke weight, slant and size measured on the pixels, each named with chance ``attribute_probability``, in
    `make_caption`'s phrasings (drawn from the generator given to each call).

    Args:
        classifier: A classifier of 28x28 digits (default: the CNN f of the embedded `tron-mnist`).
        attribute_probability: Chance that each defined attribute is named.
    """

    def __init__(self, classifier=None, attribute_probability: float = ATTRIBUTE_PROBABILITY):
        from tron_pipelines import ConvClassifier, EncoderAdapter
        from tron_pipelines.pretrained import EMBEDDED_ROOT

        if classifier is None:
            classifier = ConvClassifier.from_pretrained(EMBEDDED_ROOT / "tron-mnist" / "encoder")
        self.adapter = EncoderAdapter(classifier.eval().requires_grad_(False))
        self.attribute_probability = attribute_probability

    def to(self, device):
        self.adapter.encoder.to(device)
        return self

    @torch.no_grad()
    def labels(self, images: torch.Tensor) -> np.ndarray:
        """The digit f reads in each image ``(B, 1, 28, 28)`` in ``[-1, 1]``, ``(B,)``."""
        return self.adapter.encode_generated(images.to(self.adapter.encoder.device)).argmax(dim=1).cpu().numpy()

    def __call__(self, images, generator=None):
        labels = self.labels(images)
        grey = ((images[:, 0].detach().float() + 1.0) / 2.0).clamp(0.0, 1.0).cpu().numpy()
        rng = np.random.default_rng(seed_from(generator))
        return sample_captions(labels, attribute_codes(grey, labels), self.attribute_probability, rng)[0]

    def identity(self) -> dict:
        from tron_pipelines.utils.fingerprints import module_fingerprint

        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "classifier": module_fingerprint(self.adapter.encoder),
            "attribute_probability": self.attribute_probability,
        }
