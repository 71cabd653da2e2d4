"""What `EncoderAdapter` reads from each kind of encoder (sizes, channels, normalisation, classes, text length), and its
differentiable preprocessing of generated images, against values written out by hand."""

import copy
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_clip
from transformers import CLIPImageProcessor, ViTConfig, ViTForImageClassification

from tron_pipelines import ConvClassifier
from tron_pipelines.encoders import EncoderAdapter


# OpenAI CLIP's published pixel statistics.
OPENAI_CLIP_MEAN, OPENAI_CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def clip(tokenizer):
    return tiny_clip(len(tokenizer))


def test_clip_without_an_image_processor_reads_its_vision_config(clip, tokenizer):
    adapter = EncoderAdapter(clip, tokenizer)
    assert adapter.kind == "clip" and adapter.feature_energy == "cosine"
    assert (adapter.condition_dim, adapter.image_size, adapter.channels) == (16, 16, 3)
    assert adapter.image_mean == OPENAI_CLIP_MEAN and adapter.image_std == OPENAI_CLIP_STD
    assert adapter.num_classes is None


@pytest.mark.parametrize(
    "processor,size",
    [
        (
            CLIPImageProcessor(size={"shortest_edge": 24}, crop_size={"height": 20, "width": 20}),
            20,
        ),  # the crop decides
        (SimpleNamespace(size={"shortest_edge": 18}), 18),
        (SimpleNamespace(crop_size=None, size={"height": 12, "width": 12}), 12),
        (SimpleNamespace(size=14, image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6]), 14),
    ],
)
def test_image_processor_sets_size_and_statistics(clip, tokenizer, processor, size):
    adapter = EncoderAdapter(clip, tokenizer, processor)
    assert adapter.image_size == size
    statistics = (
        tuple(getattr(processor, "image_mean", OPENAI_CLIP_MEAN)),
        tuple(getattr(processor, "image_std", OPENAI_CLIP_STD)),
    )
    assert (adapter.image_mean, adapter.image_std) == statistics


def test_text_length_is_the_shorter_of_tokenizer_and_position_table(clip, tokenizer):
    # The test CLIP has 16 text positions; a tokenizer that allows 77 tokens must still be cut at 16.
    for limit, expected in ((77, 16), (8, 8)):
        other = copy.deepcopy(tokenizer)
        other.model_max_length = limit
        assert EncoderAdapter(clip, other).max_text_length() == expected
    long_limit = copy.deepcopy(tokenizer)
    long_limit.model_max_length = 77
    prompts = ["a bold seven leaning right", "the number three"]
    cpu = torch.device("cpu")
    torch.testing.assert_close(
        EncoderAdapter(clip, long_limit).encode_prompts(prompts, cpu),
        EncoderAdapter(clip, tokenizer).encode_prompts(prompts, cpu),
    )


GREY_STATISTICS = {"image_mean": (0.1, 0.2, 0.3), "image_std": (0.4, 0.5, 0.6)}


@pytest.mark.parametrize(
    "config,expected",
    [
        ({"image_size": 20, "num_channels": 1, **GREY_STATISTICS}, (20, 1, (0.1,), (0.4,))),
        ({}, (224, 3, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)),
    ],
)
def test_clip_without_transformers_sub_configs(clip, tokenizer, config, expected):
    # OpenCLIP's wrapper: one flat config (no `vision_config`, `text_config` or `projection_dim`) with the image size,
    # channels and statistics, or CLIP's defaults where it has none; the tokenizer's limit is the text length.
    encoder = SimpleNamespace(
        config=SimpleNamespace(embed_dim=8, **config),
        get_text_features=clip.get_text_features,
        get_image_features=clip.get_image_features,
    )
    adapter = EncoderAdapter(encoder, tokenizer)
    assert (adapter.kind, adapter.condition_dim) == ("clip", 8)
    assert (adapter.image_size, adapter.channels, adapter.image_mean, adapter.image_std) == expected
    assert adapter.max_text_length() == tokenizer.model_max_length


@pytest.mark.parametrize(
    "config,expected",
    [({"image_size": 12, "num_channels": 1}, (12, 1, (0.5,), (0.5,))), ({}, (224, 3, (0.5,) * 3, (0.5,) * 3))],
)
def test_classifier_config_defaults(config, expected):
    # A classifier is anything without text features; its size and channels come from its config (`num_channels`
    # when there is no `in_channels`), else 224 and RGB, normalised to [-1, 1].
    encoder = SimpleNamespace(
        config=SimpleNamespace(num_classes=4, **config), get_image_features=lambda **kwargs: None
    )
    adapter = EncoderAdapter(encoder)
    assert adapter.kind == "classifier"
    assert (adapter.image_size, adapter.channels, adapter.image_mean, adapter.image_std) == expected


def test_truncation_warning_names_the_dropped_words(clip, tokenizer):
    # 16 tokens: start, 14 words, end. Twenty one-token words drop six, all quoted; twenty-one drop seven, six quoted.
    adapter, cpu = EncoderAdapter(clip, tokenizer), torch.device("cpu")
    words = ("a photo of the number seven " * 4).split()
    for count, shown in ((20, " ".join(words[14:20])), (21, " ".join(words[14:20]) + " ...")):
        with pytest.warns(UserWarning) as warned:
            adapter.encode_prompts([" ".join(words[:count])], cpu)
        assert str(warned[0].message).endswith(
            f"{count - 14} tokens ({count - 14} words) were dropped, starting with {shown!r}."
        )


def test_model_outputs_and_plain_tensors_both_give_the_embedding():
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from tron_pipelines.encoders import output_tensor

    embedding = torch.randn(2, 16)
    assert output_tensor(embedding) is embedding  # transformers 4 and OpenCLIP return the tensor itself
    assert output_tensor(BaseModelOutputWithPooling(pooler_output=embedding)) is embedding


def test_generated_images_are_preprocessed_as_documented(clip, tokenizer):
    # [-1, 1] -> [0, 1], bilinear resize to the encoder's side (no antialias), grey replicated to RGB, (x - mean) / std.
    adapter = EncoderAdapter(clip, tokenizer)
    grey = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    resized = F.interpolate((grey + 1) / 2, size=(16, 16), mode="bilinear", align_corners=False)
    mean, std = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(adapter.preprocess_generated(grey), (resized.expand(-1, 3, -1, -1) - mean) / std)
    with pytest.raises(ValueError, match="2-channel images; the encoder takes 3"):
        adapter.preprocess_generated(torch.zeros(1, 2, 16, 16))


def test_images_of_another_shape_are_resized_to_the_encoders_square(clip, tokenizer):
    # Non-square generator output, with one side already right: both sides go to the encoder's 16.
    adapter = EncoderAdapter(clip, tokenizer)
    mean, std = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    for height, width in ((16, 8), (8, 16)):
        images = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height)) * 2 - 1
        resized = F.interpolate((images + 1) / 2, size=(16, 16), mode="bilinear", align_corners=False)
        torch.testing.assert_close(adapter.preprocess_generated(images), (resized - mean) / std)


def test_preprocessing_keeps_the_images_dtype(clip, tokenizer):
    # bfloat16 images (autocast) stay bfloat16 for the encoder; the statistics are cast to them.
    adapter = EncoderAdapter(clip, tokenizer)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    low = adapter.preprocess_generated(images.bfloat16())
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), adapter.preprocess_generated(images), atol=0.05, rtol=0.01)


class TupleClassifier(torch.nn.Module):
    """A classifier whose forward returns a plain tuple ``(logits, features)``, as many non-transformers models do."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(num_classes=3, image_size=4, in_channels=1)
        self.head = torch.nn.Linear(16, 3)

    @property
    def dtype(self):
        return self.head.weight.dtype

    def forward(self, pixel_values):
        features = pixel_values.flatten(1)
        return self.head(features), features


def test_a_classifier_returning_a_tuple_gives_its_logits():
    torch.manual_seed(0)
    adapter = EncoderAdapter(TupleClassifier())
    pixels = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(adapter.features(pixels), adapter.encoder.head(pixels.flatten(1)))


def test_features_cast_the_pixels_to_the_encoders_dtype():
    # A pipeline cast with `pipe.to(torch.bfloat16)` feeds float32 pixels to a bfloat16 encoder.
    classifier = ConvClassifier(num_classes=4, in_channels=1, image_size=12, channels=(4,)).eval().to(torch.bfloat16)
    pixels = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(
            EncoderAdapter(classifier).features(pixels), classifier(pixel_values=pixels.to(torch.bfloat16)).logits
        )


def test_package_classifier():
    classifier = ConvClassifier(
        num_classes=4,
        in_channels=1,
        image_size=12,
        channels=(4,),
        image_mean=(0.2,),
        image_std=(0.7,),
        labels=["a", "b", "c", "d"],
    )
    adapter = EncoderAdapter(classifier)
    assert adapter.kind == "classifier" and adapter.feature_energy == "cross_entropy"
    assert (adapter.condition_dim, adapter.num_classes, adapter.image_size, adapter.channels) == (4, 4, 12, 1)
    assert (adapter.image_mean, adapter.image_std) == ((0.2,), (0.7,))
    assert adapter.class_names == ["a", "b", "c", "d"]
    torch.testing.assert_close(adapter.encode_class_labels([2, 0], torch.device("cpu")), torch.eye(4)[[2, 0]])
    logits = torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.0, 0.0, 3.0, 0.0]])
    torch.testing.assert_close(adapter.conditions_from_features(logits), logits.softmax(dim=1))


def test_transformers_classifier_without_image_statistics():
    # A transformers image classifier: classes from num_labels and id2label, size and channels from its config, and
    # the [-1, 1] normalisation ((x - 0.5) / 0.5) when the config has no image statistics.
    config = ViTConfig(
        image_size=16,
        patch_size=8,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        num_labels=3,
        id2label={0: "cat", 1: "dog", 2: "car"},
    )
    adapter = EncoderAdapter(ViTForImageClassification(config).eval())
    assert adapter.kind == "classifier" and adapter.condition_dim == 3 and adapter.class_names == ["cat", "dog", "car"]
    assert (adapter.image_size, adapter.channels) == (16, 3)
    assert adapter.image_mean == (0.5, 0.5, 0.5) and adapter.image_std == (0.5, 0.5, 0.5)
    pixels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(adapter.features(pixels), adapter.encoder(pixel_values=pixels).logits)


def test_array_layouts_without_an_image_processor(clip, tokenizer):
    # Channels first or last, told apart by which axis has 1 or 3 entries: also for images 3 pixels wide, where both
    # ends of the shape look like channels.
    adapter = EncoderAdapter(clip, tokenizer)
    mean, std = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)

    def by_hand(channels_first):
        resized = F.interpolate(
            channels_first.expand(-1, 3, -1, -1), size=(16, 16), mode="bilinear", align_corners=False
        )
        with torch.no_grad():
            features = adapter.encoder.get_image_features(pixel_values=(resized - mean) / std)
        return features if isinstance(features, torch.Tensor) else features.pooler_output

    cpu = torch.device("cpu")
    generator = torch.Generator().manual_seed(2)
    for shape in ((1, 1, 6, 3), (1, 3, 6, 3), (2, 3, 16, 16)):
        pixels = torch.rand(shape, generator=generator)
        torch.testing.assert_close(adapter.encode_images(pixels.numpy(), cpu), by_hand(pixels), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            adapter.encode_images(pixels.permute(0, 2, 3, 1), cpu), by_hand(pixels), atol=1e-5, rtol=1e-5
        )
    # Grey PIL images are 2-D arrays of 0..255: one channel, scaled by 1/255, one image or a list.
    grey = torch.randint(0, 256, (2, 1, 6, 5), generator=generator).float()
    pil = [PIL.Image.fromarray(image[0].numpy().astype(np.uint8), mode="L") for image in grey]
    torch.testing.assert_close(adapter.encode_images(pil, cpu), by_hand(grey / 255), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(adapter.encode_images(pil[1], cpu), by_hand(grey[1:] / 255), atol=1e-5, rtol=1e-5)
