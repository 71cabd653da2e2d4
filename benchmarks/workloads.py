"""Pipelines the benchmarks run on, and the conditions each one is asked for.

* a saved or embedded pipeline (``--pipeline``, default the embedded ``tron-mnist``);
* ``biggan-tiny``: a small BigGAN + a small random CLIP, random weights, runs anywhere in seconds;
* ``biggan-deep-256-clip``: full-size BigGAN-deep-256 + CLIP ViT-B/32 with random weights (a GPU workload: compute
  does not depend on the weights, so random weights give the real cost);
* ``ddpm-cifar10-32-clip``: a `DiffusionSamplerGenerator` with the architecture of `google/ddpm-cifar10-32` (35.7 M
  parameters, DDIM, 10 sampler steps) + CLIP ViT-B/32, random weights.

Also the full-size models with random weights that other sections build on their own: CLIP ViT-B/32
(`clip_vit_b32`), the released BigGAN-deep architectures (`biggan_deep_generator`) and BLIP captioners
(`random_blip`).
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

from tron_pipelines import BigGANDeepGenerator, BigGANGenerator, LangevinScheduler, TranslatorModel, TronPipeline
from tron_pipelines.conversion.biggan import biggan_deep_config_from_pytorch_pretrained
from tron_pipelines.conversion.tr0n import assemble_pipeline
from tron_pipelines.models import DiffusionSamplerGenerator


REPO_ROOT = Path(__file__).resolve().parent.parent
MNIST_EXAMPLES = REPO_ROOT / "examples" / "mnist"
SYNTHETIC_WORKLOADS = ("biggan-tiny", "biggan-deep-256-clip", "ddpm-cifar10-32-clip")
# Seed blocks: evaluation images, grid tuning images, prior candidates, and the augmentations of the final scoring.
EVALUATION_SEED, TUNING_SEED, CANDIDATE_SEED, SCORING_SEED = 1_000, 500_000, 2_000_000, 900_000


@dataclass
class Workload:
    """A pipeline plus how to make a batch of conditions for it.

    Attributes:
        name: Label used in tables and file names.
        pipe: The pipeline (on its device, progress bar off).
        name_or_path: What `load_workload` was given (to load the same workload in another process).
        kind: ``"class"`` (class labels), ``"text"`` (prompts) or ``"embeds"`` (random condition vectors).
        description: Where the pipeline came from.
        num_classes: Classes of a class pipeline.
        prompts: Prompts cycled through by a text pipeline.
        condition_pool: Condition vectors cycled through by an ``"embeds"`` workload.
    """

    name: str
    pipe: TronPipeline
    kind: str
    description: str
    name_or_path: str = ""
    num_classes: int = 0
    prompts: list[str] = field(default_factory=list)
    condition_pool: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    def condition_kwargs(self, batch_size: int, start: int = 0) -> dict:
        """Pipeline keyword arguments for ``batch_size`` conditions, entries ``start .. start + batch_size - 1`` of
        this workload's cycle (so a batch and its one-at-a-time split ask for the same conditions)."""
        indices = [(start + i) for i in range(batch_size)]
        if self.kind == "class":
            return {"class_labels": [i % self.num_classes for i in indices]}
        if self.kind == "text":
            return {"prompt": [self.prompts[i % len(self.prompts)] for i in indices]}
        pool = self.condition_pool
        return {"condition_embeds": pool[torch.tensor([i % len(pool) for i in indices])]}


def load_workload(name_or_path: str, device: str | torch.device = "cpu") -> Workload:
    """A synthetic workload by name, or any pipeline `TronPipeline.from_pretrained` can load."""
    device = torch.device(device)
    if name_or_path == "biggan-tiny":
        workload = biggan_tiny_workload()
    elif name_or_path == "biggan-deep-256-clip":
        workload = biggan_deep_256_clip_workload()
    elif name_or_path == "ddpm-cifar10-32-clip":
        workload = ddpm_cifar10_32_clip_workload()
    else:
        pipe = TronPipeline.from_pretrained(name_or_path)
        adapter = pipe.encoder_adapter
        if adapter.kind == "classifier":
            workload = Workload(
                Path(str(name_or_path)).name, pipe, "class", str(name_or_path), num_classes=adapter.num_classes
            )
        else:
            workload = Workload(
                Path(str(name_or_path)).name, pipe, "text", str(name_or_path), prompts=mnist_prompts()[0]
            )
    workload.name_or_path = str(name_or_path)
    workload.pipe.to(device)
    workload.pipe.set_progress_bar_config(disable=True)
    if workload.condition_pool is not None:
        workload.condition_pool = workload.condition_pool.to(device)
    return workload


def clip_vit_b32() -> CLIPModel:
    """CLIP ViT-B/32 (transformers' default `CLIPConfig`: 512-dim projections, 151.3 M parameters), random weights."""
    return CLIPModel(CLIPConfig()).eval()


# Block lists of the released biggan-deep-{128,256,512} config.json files: (upsample, in, out) channel multipliers.
# Each resolution repeats the blocks of the one below it and adds an 8x (256 px) or a 1x (512 px) pair of blocks.
_BIGGAN_DEEP_16X = [(False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8)]
_BIGGAN_DEEP_8X = [(False, 8, 8), (True, 8, 8)]
_BIGGAN_DEEP_TO_1X = [(False, 8, 8), (True, 8, 4), (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1)]
BIGGAN_DEEP_LAYERS = {
    128: _BIGGAN_DEEP_16X + _BIGGAN_DEEP_TO_1X,
    256: _BIGGAN_DEEP_16X + _BIGGAN_DEEP_8X + _BIGGAN_DEEP_TO_1X,
    512: _BIGGAN_DEEP_16X + _BIGGAN_DEEP_8X + _BIGGAN_DEEP_TO_1X + [(False, 1, 1), (True, 1, 1)],
}


def biggan_deep_config(resolution: int) -> dict:
    """The ``config.json`` of pytorch-pretrained-biggan's released ``biggan-deep-<resolution>`` (128, 256 or 512)."""
    return {
        "output_dim": resolution,
        "z_dim": 128,
        "class_embed_dim": 128,
        "channel_width": 128,
        "num_classes": 1000,
        "layers": BIGGAN_DEEP_LAYERS[resolution],
        "attention_layer_position": 8,
        "eps": 1e-4,
        "n_stats": 51,
    }


def biggan_deep_generator(resolution: int) -> BigGANDeepGenerator:
    """The released BigGAN-deep-``resolution`` architecture (its config translated as `tron build` translates a
    checkpoint's), random weights."""
    return BigGANDeepGenerator(**biggan_deep_config_from_pytorch_pretrained(biggan_deep_config(resolution))).eval()


def _random_clip(
    projection_dim: int, image_size: int, patch_size: int, hidden_size: int, layers: int, heads: int
) -> CLIPModel:
    config = CLIPConfig(
        text_config=CLIPTextConfig(
            vocab_size=64,
            hidden_size=hidden_size,
            intermediate_size=4 * hidden_size,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=16,
        ).to_dict(),
        vision_config=CLIPVisionConfig(
            hidden_size=hidden_size,
            intermediate_size=4 * hidden_size,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            image_size=image_size,
            patch_size=patch_size,
        ).to_dict(),
        projection_dim=projection_dim,
    )
    return CLIPModel(config).eval()


def _condition_pool(pipe: TronPipeline, size: int, seed: int) -> torch.Tensor:
    """CLIP embeddings of the generator's own images: conditions G can actually satisfy."""
    with torch.no_grad():
        latents = pipe.generator.sample_latents(size, generator=torch.Generator().manual_seed(seed))
        return pipe.encoder_adapter.encode_generated(pipe.generator.generate(latents))


def biggan_tiny_workload(seed: int = 0) -> Workload:
    """BigGAN (32 px, 4 residual blocks of 32-64 channels, self-attention at 16 px) + a 2-layer CLIP ViT on 32 px.

    Random weights: the architecture of TR0N's BigGAN + CLIP setting at a size a CPU runs in milliseconds.
    """
    torch.manual_seed(seed)
    generator = BigGANGenerator(
        latent_dim=40,
        class_embed_dim=32,
        num_classes=10,
        channel_width=16,
        channel_multipliers=(4, 4, 2, 1),
        attention_resolution=16,
    ).eval()
    _calibrate_frozen_batch_norm(generator)
    encoder = _random_clip(projection_dim=64, image_size=32, patch_size=8, hidden_size=64, layers=2, heads=4)
    translator = TranslatorModel(
        condition_dim=64, latent_dim=40, num_components=10, latent_threshold=2.0, auxiliary_latent_dims={"y": 32}
    ).eval()
    pipe = _biggan_clip_pipeline(translator, generator, encoder)
    return Workload(
        "biggan-tiny",
        pipe,
        "embeds",
        "BigGAN 32px + CLIP ViT (2 layers), random weights",
        condition_pool=_condition_pool(pipe, 64, seed + 1),
    )


def biggan_deep_256_clip_workload(seed: int = 0) -> Workload:
    """Full-size BigGAN-deep-256 (the released config) + CLIP ViT-B/32 (transformers' default config), random weights.

    Conditions are random unit vectors scaled like CLIP embeddings; encoding generated images at full size would
    cost more than the benchmark itself on a CPU.
    """
    torch.manual_seed(seed)
    generator = biggan_deep_generator(256)
    encoder = clip_vit_b32()
    translator = TranslatorModel(
        condition_dim=512, latent_dim=128, num_components=10, latent_threshold=2.0, auxiliary_latent_dims={"y": 128}
    ).eval()
    pipe = _biggan_clip_pipeline(translator, generator, encoder)
    pool = (
        torch.nn.functional.normalize(torch.randn(64, 512, generator=torch.Generator().manual_seed(seed + 1)), dim=1)
        * 10
    )
    return Workload(
        "biggan-deep-256-clip", pipe, "embeds", "BigGAN-deep-256 + CLIP ViT-B/32, random weights", condition_pool=pool
    )


# The published configs of `google/ddpm-cifar10-32` (Ho et al.'s CIFAR-10 model: 128 base channels, multipliers 1, 2,
# 2, 2, two residual blocks per resolution, self-attention at 16 px; 35,746,307 parameters) and of its DDPM schedule.
DDPM_CIFAR10_UNET = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (128, 256, 256, 256),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "norm_eps": 1e-6,
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "mid_block_scale_factor": 1,
    "attention_head_dim": None,
}
DDPM_CIFAR10_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "clip_sample": True,
}


def ddpm_cifar10_32_clip_workload(seed: int = 0, num_sampler_steps: int = 10) -> Workload:
    """`google/ddpm-cifar10-32`'s UNet sampled by DDIM (eta 0) for ``num_sampler_steps`` steps as G, + CLIP ViT-B/32
    (transformers' default config), random weights; conditions are random unit vectors scaled like CLIP embeddings."""
    torch.manual_seed(seed)
    generator = DiffusionSamplerGenerator(
        DDPM_CIFAR10_UNET, "DDIMScheduler", DDPM_CIFAR10_SCHEDULE, num_sampler_steps
    ).eval()
    encoder = clip_vit_b32()
    translator = TranslatorModel(condition_dim=512, latent_dim=generator.latent_dim, num_components=10).eval()
    pipe = assemble_pipeline(translator, generator, encoder, preset="diffusion")
    pool = (
        torch.nn.functional.normalize(torch.randn(64, 512, generator=torch.Generator().manual_seed(seed + 1)), dim=1)
        * 10
    )
    return Workload(
        "ddpm-cifar10-32-clip",
        pipe,
        "embeds",
        "DDPM CIFAR-10 UNet (DDIM) + CLIP ViT-B/32, random weights",
        condition_pool=pool,
    )


def _biggan_clip_pipeline(translator: TranslatorModel, generator, encoder) -> TronPipeline:
    """TR0N's BigGAN + CLIP sampling settings around the given models."""
    scheduler = LangevinScheduler(step_size=5.0, noise_std=0.01, momentum=0.99, max_grad_norm=1.0, clamp_threshold=2.0)
    return TronPipeline(
        translator, generator, encoder, scheduler, default_num_inference_steps=10, default_num_augmentations=8
    )


def _calibrate_frozen_batch_norm(generator: BigGANGenerator) -> None:
    """Give a random BigGAN's frozen batch norms the statistics of its own activations (fresh statistics make the
    output almost constant, so energies would hardly vary)."""

    def calibrate(norm, inputs):
        # Just before the norm runs, on its input: deeper norms then see the output of already calibrated ones, so
        # one pass calibrates them all front to back.
        hidden = inputs[0]
        norm.running_mean.copy_(hidden.mean(dim=(0, 2, 3)))
        norm.running_var.copy_(hidden.var(dim=(0, 2, 3)))

    norms = [m for m in generator.modules() if hasattr(m, "running_mean") and hasattr(m, "running_var")]
    hooks = [norm.register_forward_pre_hook(calibrate) for norm in norms]
    with torch.no_grad():
        generator.generate(generator.sample_latents(64, generator=torch.Generator().manual_seed(0)))
    for hook in hooks:
        hook.remove()


# Captioners ------------------------------------------------------------------------------------------------------
# BLIP base (Salesforce/blip-image-captioning-base): ViT-B/16 at 384 px, BERT-base decoder, 30,524 tokens.
BLIP_SIZES = {
    "tiny": {"vocab_size": 64, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "image_size": 28, "patch_size": 7},
    "base": {
        "vocab_size": 30524,
        "hidden_size": 768,
        "num_layers": 12,
        "num_heads": 12,
        "image_size": 384,
        "patch_size": 16,
    },
}
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def random_blip(
    folder: Path,
    words: list[str],
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    image_size: int,
    patch_size: int,
    seed: int = 0,
):
    """A random `BlipForConditionalGeneration` (ViT of ``num_layers`` on ``image_size`` px, BERT decoder of
    ``num_layers``) and its `BlipProcessor`, with a word-level tokenizer over ``words`` written to ``folder``."""
    # Imported here: without torchvision, transformers warns when `BlipImageProcessor` is imported, and only the
    # captioner benchmarks use it.
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
        BlipTextConfig,
        BlipVisionConfig,
    )

    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, "a", "picture", "of", *words, "[DEC]"]))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]", model_max_length=512)
    layers = {
        "hidden_size": hidden_size,
        "intermediate_size": 4 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
    }
    config = BlipConfig(
        text_config=BlipTextConfig(
            vocab_size=len(vocab),
            bos_token_id=vocab.index("[DEC]"),
            sep_token_id=3,
            eos_token_id=3,
            pad_token_id=0,
            encoder_hidden_size=hidden_size,
            **layers,
        ).to_dict(),
        vision_config=BlipVisionConfig(image_size=image_size, patch_size=patch_size, **layers).to_dict(),
    )
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    return model, BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def random_blip_of_size(size: str, folder: Path):
    """`random_blip` with the shapes of `BLIP_SIZES[size]` and made-up words filling its vocabulary."""
    settings = dict(BLIP_SIZES[size])
    words = [f"w{index}" for index in range(settings.pop("vocab_size") - len(SPECIAL_TOKENS) - 4)]
    return random_blip(folder, words, **settings)


# MNIST ------------------------------------------------------------------------------------------------------------
def import_mnist_data():
    """``examples/mnist/data.py`` (split, attribute measures, evaluation classifier, Fréchet distance)."""
    if str(MNIST_EXAMPLES) not in sys.path:
        sys.path.insert(0, str(MNIST_EXAMPLES))
    import data

    return data


def mnist_prompts() -> tuple[list[str], list[dict]]:
    """Prompts of the text benchmark and what each asks for: per digit one plain prompt, both stroke weights and
    both slants, in the phrasing the small CLIP was trained on (``examples/mnist/train_clip.py``).

    Returns ``(prompts, requests)`` with requests ``{"prompt", "label", "stroke_weight", "slant"}`` (attribute codes of
    `data.STROKE_WEIGHTS` / `data.SLANTS`, or `data.UNSPECIFIED`).
    """
    data = import_mnist_data()
    prompts, requests = [], []
    for label, word in enumerate(data.DIGIT_WORDS):
        article = "an" if word == "eight" else "a"
        asks = [
            (f"{article} {word}", data.UNSPECIFIED, data.UNSPECIFIED),
            (f"a thin {word}", data.STROKE_WEIGHTS.index("thin"), data.UNSPECIFIED),
            (f"a bold {word}", data.STROKE_WEIGHTS.index("bold"), data.UNSPECIFIED),
            (f"{article} {word} leaning left", data.UNSPECIFIED, data.SLANTS.index("left")),
            (f"{article} {word} leaning right", data.UNSPECIFIED, data.SLANTS.index("right")),
        ]
        for prompt, stroke, slant in asks:
            prompts.append(prompt)
            requests.append({"prompt": prompt, "label": label, "stroke_weight": stroke, "slant": slant})
    return prompts, requests


@dataclass
class Conditions:
    """One row of pipeline conditions per image, and what the metrics need to know about them."""

    call_kwargs: dict
    labels: np.ndarray
    requests: list[dict] | None = None
    names: list[str] = field(default_factory=list)

    def __len__(self):
        return len(self.labels)

    def subset(self, indices) -> dict:
        """Pipeline keyword arguments for the images at ``indices``."""
        indices = list(indices)
        return {key: [value[i] for i in indices] for key, value in self.call_kwargs.items()}


def make_conditions(workload: Workload, samples_per_condition: int, one_prompt_per_digit: bool = False) -> Conditions:
    """Every class (or benchmark prompt) ``samples_per_condition`` times, condition-major."""
    if workload.kind == "class":
        labels = np.repeat(np.arange(workload.num_classes), samples_per_condition)
        return Conditions(
            {"class_labels": labels.tolist()}, labels, names=[str(k) for k in range(workload.num_classes)]
        )
    if workload.kind == "text":
        prompts, requests = mnist_prompts()
        chosen = np.arange(len(prompts))
        if one_prompt_per_digit:
            kinds = len(prompts) // len({request["label"] for request in requests})
            chosen = np.array([digit * kinds + digit % kinds for digit in range(len(prompts) // kinds)])
        prompts, requests = [prompts[i] for i in chosen], [requests[i] for i in chosen]
        order = np.repeat(np.arange(len(prompts)), samples_per_condition)
        return Conditions(
            {"prompt": [prompts[i] for i in order]},
            np.array([requests[i]["label"] for i in order]),
            requests=[requests[i] for i in order],
            names=prompts,
        )
    raise ValueError(f"The quality benchmark needs a class or text pipeline, got a {workload.kind!r} workload.")


__all__ = [
    "Conditions",
    "make_conditions",
    "Workload",
    "load_workload",
    "biggan_tiny_workload",
    "biggan_deep_256_clip_workload",
    "biggan_deep_generator",
    "clip_vit_b32",
    "random_blip",
    "random_blip_of_size",
    "ddpm_cifar10_32_clip_workload",
    "import_mnist_data",
    "mnist_prompts",
    "SYNTHETIC_WORKLOADS",
]
