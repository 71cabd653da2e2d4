"""How a TronPipeline is called, as its model cards say it: the kinds of condition its encoder takes, a snippet that
runs, and the Hub tags that follow from them.

A CLIP encoder takes prompts (with a tokenizer) and images; a classifier takes class labels and images (the class
probabilities of an image are a condition too). Both model cards (``tron build``'s and ``tron train-translator``'s)
use these functions, so a card never shows a call its pipeline refuses.
"""

from ..encoders import EncoderAdapter


CONDITION_KINDS = ("text", "class", "image")
# The Hub's pipeline tag and extra tags per condition kind. The Hub has no class-conditional task: a classifier
# pipeline is listed under unconditional generation, with a tag that says what it takes.
PIPELINE_TAGS = {"text": "text-to-image", "class": "unconditional-image-generation", "image": "image-to-image"}
KIND_TAGS = {"text": "text-to-image", "class": "class-conditional-image-generation", "image": "image-to-image"}
DEFAULT_PROMPT = "a photo of a cat"
NUM_SNIPPET_CLASSES = 3


def condition_kinds(adapter: EncoderAdapter) -> tuple[str, ...]:
    """The conditions a pipeline with this encoder takes, main one first: ``("text", "image")`` for a CLIP with a
    tokenizer, ``("image",)`` for one without, ``("class", "image")`` for a classifier."""
    if adapter.kind == "classifier":
        return ("class", "image")
    return ("text", "image") if adapter.tokenizer is not None else ("image",)


def pipeline_tags(adapter: EncoderAdapter) -> tuple[str, list[str]]:
    """``(pipeline_tag, tags)`` of a model card: the Hub task of the main condition, and one tag per condition kind."""
    kinds = condition_kinds(adapter)
    return PIPELINE_TAGS[kinds[0]], [KIND_TAGS[kind] for kind in kinds]


def usage_snippet(repo_id: str, adapter: EncoderAdapter, prompt: str = DEFAULT_PROMPT) -> str:
    """A Markdown Python block that loads ``repo_id`` and calls it with each condition kind it takes: ``prompt`` or
    the first classes, and an image (the first result; a blank picture when images are the only condition)."""
    kinds = condition_kinds(adapter)
    seeded = "generator=torch.Generator().manual_seed(0)"
    if kinds == ("image",):
        imports = ["import torch", "from PIL import Image", "from tron_pipelines import TronPipeline"]
        calls = [
            'image = Image.new("RGB", (64, 64), "white")  # your picture, e.g. Image.open("photo.png")',
            f"images = pipe(image=image, num_images_per_prompt=2, {seeded}).images",
        ]
    else:
        if kinds[0] == "text":
            condition = repr(prompt)
        else:
            condition = f"class_labels={list(range(min(NUM_SNIPPET_CLASSES, adapter.num_classes)))}"
        imports = ["import torch", "from tron_pipelines import TronPipeline"]
        calls = [
            f"images = pipe({condition}, {seeded}).images",
            "# Images like a given picture (any PIL image; here the first one above):",
            "variations = pipe(image=images[0], num_images_per_prompt=2).images",
        ]
    return "\n".join(["```python", *imports, "", f'pipe = TronPipeline.from_pretrained("{repo_id}")', *calls, "```"])


__all__ = ["CONDITION_KINDS", "condition_kinds", "pipeline_tags", "usage_snippet"]
