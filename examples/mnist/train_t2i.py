"""Train the text-conditional diffusion model of `tron-mnist-t2i`: a small diffusers `UNet2DConditionModel` on the
MNIST digits, conditioned through cross-attention on the hidden states of `tron-mnist-text`'s CLIP text tower (frozen).

Data and captions: the 4,000 training digits of the shared split (`data.load_split`; the 1,000 held-out digits stay
unseen, so the Fréchet distance to them is honest), each step captioned afresh by `captions.sample_captions` as
`train_clip.py` captioned them (the digit, and each pixel-measured attribute named with chance 0.6, in several
phrasings). With chance ``--caption_dropout`` (0.1) a caption is replaced by the empty prompt, so the empty prompt
gives an unconditional model too and classifier-free guidance is possible; 0.1 is what Ho & Salimans (2022) and
Stable Diffusion use, and keeps 90% of the steps on the conditional task.

Recipe: diffusers' (`diffusion_training.py`, shared with `train_ddpm.py`): Accelerate, AdamW, `get_scheduler`, EMA,
checkpoints and exact resume (every draw of a step, caption choices included, is seeded by the step); the cosine
schedule with v-prediction and "trailing" spacing, for 1-4 deterministic DDIM steps. The default learning rate is
constant after a warm-up (diffusers' text-to-image default), so that a run can be stopped at any checkpoint and
finished there (``--resume_from_checkpoint latest --max_train_steps <its step>`` saves and evaluates it).

Architecture, from measured costs. One AdamW step of the loss at batch 64, 28 px unless said, float32, one thread:
CPU seconds of the process (`time.process_time`) on this 2-core machine while several other jobs ran (wall time was
2-5x that; two threads were far slower under that load, 11 CPU s and 54 s wall for the 0.53 M row):

| UNet (channels, cross-attention levels, layers per block) | parameters | CPU s / step |
|---|---|---|
| 16/32/32, no attention, 2 layers (`tron-mnist-ddim`'s) | 0.38 M | 0.90-1.08 |
| **16/32/32, cross-attention at 7 px (+ mid block), 1 layer** | **0.36 M** | **0.85-1.01** |
| 16/32/32, cross-attention at 7 px (+ mid block), 2 layers | 0.53 M | 1.03-1.48 |
| 8/16/32, cross-attention at 7 px, 2 layers | 0.38 M | 0.98 |
| 16/32/32, cross-attention at 14 and 7 px, 2 layers | 0.66 M | 2.22 |
| 32/64/64, cross-attention at 7 px, 1 / 2 layers | 1.41 / 2.07 M | 2.18 / 2.86 |
| 16/32/32 at 16 px, cross-attention at 4 px, 2 layers | 0.53 M | 0.47-0.56 |

Cross-attention at the lowest level (49 queries) costs little over the unconditional UNet; a second level (14 px, 196
queries) nearly doubles the step. Narrower channels save little (the step is dominated by per-operation overheads
and full-resolution activations, not by convolution arithmetic); layers per block and resolution are what cost. 16 px
would be 2x cheaper but makes G's images 16 px, while the evaluation classifier, the attribute measures, the CLIP f
and every other embedded pipeline work at 28 px: it would need an upsampling stage in G and blur the digits. So:
28 px (three levels, 28 -> 14 -> 7), channels 16/32/32, one layer per block (two up), cross-attention (4 heads of
8 channels) at 7 px and in the mid block. The frozen text tower costs 0.03-0.05 CPU s per batch of 64 prompts (3-5%
of a step), so captions are encoded on the fly rather than cached.

The result, ``<output_dir>/model``, is a set of diffusers / transformers component folders (a
`StableDiffusionPipeline` without a VAE, which no diffusers pipeline class is):

    model_index.json  the component classes (`load_diffusers_generator` reads the folder as a pixel-space model)
    unet/          UNet2DConditionModel (EMA weights), 1 x 28 x 28 samples in [-1, 1]
    scheduler/     DDIMScheduler of the training schedule (cosine, v-prediction, trailing spacing, no clipping)
    text_encoder/  CLIPTextModel: the text tower of tron-mnist-text's CLIP, unchanged
    tokenizer/     its CLIPTokenizer (model_max_length 32)

Prompts are encoded as `StableDiffusionPipeline.encode_prompt` does (`encode_prompts`): padded to the tokenizer's
``model_max_length`` (32) with its pad token (the end-of-text token), truncated there, and the text encoder's
``last_hidden_state`` (B, 32, 64) is the UNet's ``encoder_hidden_states``, with no attention mask. G(z) is the
package's `TextToImageGenerator` on these parts (`Sampler`; `load_diffusers_generator` reads the saved folder the same
way): x_T = z (prior N(0, I), 784 values, 1 x 28 x 28), then DDIM with eta = 0; ``guidance_scale`` 1 is plain
conditional sampling, above 1 classifier-free guidance against the empty prompt.

At the end the saved model's conditional samples are scored on the text benchmark's prompts and evaluation seeds with
the benchmark's own measures (`benchmarks/metrics.py`): `evaluate`, also on its own with ``--evaluate_only``.

    nice -n 10 python examples/mnist/train_t2i.py --output_dir outputs/mnist/t2i --seed 0 \
        --tune_guidance_scales 1.5 2 3
"""

import json
import sys
import time
from pathlib import Path

import diffusers
import numpy as np
import torch
from captions import ATTRIBUTE_PROBABILITY, attribute_codes, sample_captions
from data import load_split
from diffusers import DDIMScheduler, UNet2DConditionModel
from diffusion_training import (
    DiffusionTrainer,
    build_noise_scheduler,
    check_unet_arguments,
    recipe_parser,
    seconds_per_gradient_pass,
)
from train_generator import save_sample_grid
from transformers import CLIPTextModel, CLIPTokenizer

from tron_pipelines.evaluation import frechet_distance_with_std
from tron_pipelines.models import TextToImageGenerator
from tron_pipelines.pretrained import EMBEDDED_ROOT
from tron_pipelines.utils.files import write_folder_atomically


REPO_ROOT = Path(__file__).resolve().parents[2]
# The benchmark's prompts, seeds and measures (benchmarks/ is a folder of scripts, not a package).
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from common import seeded_generators  # noqa: E402
from metrics import DEFAULT_EVAL_CLASSIFIER, MnistEvaluator  # noqa: E402
from workloads import EVALUATION_SEED, TUNING_SEED, Workload, make_conditions  # noqa: E402


IMAGE_SIDE = 28
COMPONENTS = ("unet", "scheduler", "text_encoder", "tokenizer")


def parse_args(argv=None):
    parser = recipe_parser(
        __doc__.split("\n\n")[0],
        output_dir="outputs/mnist/t2i",
        max_train_steps=4000,
        learning_rate=2e-3,
        lr_scheduler="constant_with_warmup",
        lr_warmup_steps=100,
        layers_per_block=1,
        checkpointing_steps=200,
        validation_steps=500,
        validation_sampler_steps=2,
        logging_steps=50,
        num_threads=1,
    )
    parser.add_argument(
        "--clip",
        default=str(EMBEDDED_ROOT / "tron-mnist-text"),
        help="The CLIP whose text tower conditions the UNet: a text pipeline folder (encoder/, tokenizer/) or "
        "train_clip.py's output folder.",
    )
    parser.add_argument(
        "--caption_dropout", type=float, default=0.1, help="Chance that a caption is replaced by the empty prompt."
    )
    parser.add_argument(
        "--attribute_probability",
        type=float,
        default=ATTRIBUTE_PROBABILITY,
        help="Chance that each defined attribute of a digit is named in its caption.",
    )
    parser.add_argument(
        "--cross_attention_levels",
        type=int,
        default=1,
        help="How many of the lowest-resolution levels get cross-attention (the mid block always has it).",
    )
    parser.add_argument("--attention_heads", type=int, default=4)
    parser.add_argument("--sampler_steps", type=int, nargs="+", default=[1, 2, 4], help="DDIM steps evaluated.")
    parser.add_argument(
        "--guidance_scales",
        type=float,
        nargs="+",
        default=[1.0],
        help="Classifier-free guidance scales evaluated on the evaluation seeds (1 = none).",
    )
    parser.add_argument(
        "--tune_guidance_scales",
        type=float,
        nargs="*",
        default=[],
        help="Guidance scales compared on the tuning seeds first; the best one (accuracy, then FD) is added to "
        "--guidance_scales.",
    )
    parser.add_argument("--samples_per_prompt", type=int, default=32, help="Evaluation images per benchmark prompt.")
    parser.add_argument("--num_unconditional", type=int, default=1000, help="Empty-prompt images evaluated.")
    parser.add_argument("--eval_classifier_dir", default=str(DEFAULT_EVAL_CLASSIFIER))
    parser.add_argument("--evaluate_only", action="store_true", help="Evaluate <output_dir>/model without training.")
    args = parser.parse_args(argv)
    check_unet_arguments(parser, args, IMAGE_SIDE)
    if not 1 <= args.cross_attention_levels <= len(args.block_out_channels):
        parser.error(f"--cross_attention_levels must be 1 to {len(args.block_out_channels)}.")
    if not 2 <= args.num_unconditional <= 3000:
        # 3000 keeps the real baseline's balanced classes within the training split (at least 387 digits a class).
        parser.error(f"--num_unconditional must be 2 to 3000, got {args.num_unconditional}.")
    if not 0 <= args.caption_dropout < 1:
        parser.error(f"--caption_dropout must be in [0, 1), got {args.caption_dropout}.")
    return args


def build_unet(args, cross_attention_dim: int) -> UNet2DConditionModel:
    """The UNet: `args.block_out_channels` levels, cross-attention on the text at the lowest
    `args.cross_attention_levels` of them and in the mid block."""
    levels = len(args.block_out_channels)
    down = tuple(
        "CrossAttnDownBlock2D" if level >= levels - args.cross_attention_levels else "DownBlock2D"
        for level in range(levels)
    )
    return UNet2DConditionModel(
        sample_size=IMAGE_SIDE,
        in_channels=1,
        out_channels=1,
        block_out_channels=tuple(args.block_out_channels),
        layers_per_block=args.layers_per_block,
        norm_num_groups=args.norm_num_groups,
        down_block_types=down,
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=tuple(block.replace("Down", "Up") for block in reversed(down)),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=args.attention_heads,  # diffusers' historical name for the number of heads
    )


def load_text_tower(clip_folder: str | Path) -> tuple[CLIPTextModel, CLIPTokenizer]:
    """The frozen text encoder (the text tower of a `CLIPModel`) and its tokenizer, from a text pipeline folder
    (``encoder/``, ``tokenizer/``) or from one folder holding both (`train_clip.py`'s output)."""
    clip_folder = Path(clip_folder)
    in_pipeline = (clip_folder / "encoder").is_dir()
    text_encoder = CLIPTextModel.from_pretrained(clip_folder / "encoder" if in_pipeline else clip_folder)
    tokenizer = CLIPTokenizer.from_pretrained(clip_folder / "tokenizer" if in_pipeline else clip_folder)
    return text_encoder.eval().requires_grad_(False), tokenizer


def encode_prompts(text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, prompts: list[str]) -> torch.Tensor:
    """The UNet's condition for ``prompts``: the last hidden states ``(B, model_max_length, hidden)`` of the prompts
    padded to the tokenizer's ``model_max_length``, without attention mask (as `StableDiffusionPipeline`)."""
    input_ids = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return text_encoder(input_ids.to(text_encoder.device)).last_hidden_state


class CaptionedDigits:
    """The training digits ``(N, 1, 28, 28)`` in ``[-1, 1]``, their labels and measured attribute codes, and the
    batches of one training step: images and the hidden states of their captions."""

    def __init__(self, args, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer):
        split = load_split()
        self.images = torch.from_numpy(split.train_images).unsqueeze(1) * 2 - 1
        self.labels = split.train_labels
        self.codes = attribute_codes(split.train_images, split.train_labels)
        self.args, self.text_encoder, self.tokenizer = args, text_encoder, tokenizer

    def captions(self, step: int, indices: np.ndarray, dropped: np.ndarray) -> list[str]:
        """The captions of step ``step`` for the digits at ``indices``, empty where ``dropped``."""
        rng = np.random.default_rng([self.args.seed, step])
        captions, _ = sample_captions(self.labels[indices], self.codes[indices], self.args.attribute_probability, rng)
        return ["" if drop else caption for caption, drop in zip(captions, dropped)]

    def batch(self, step: int, draws: torch.Generator, device: torch.device) -> tuple[torch.Tensor, dict]:
        """`DiffusionTrainer.train`'s ``make_batch``."""
        indices = torch.randint(len(self.images), (self.args.train_batch_size,), generator=draws)
        dropped = torch.rand(len(indices), generator=draws) < self.args.caption_dropout
        captions = self.captions(step, indices.numpy(), dropped.numpy())
        hidden_states = encode_prompts(self.text_encoder, self.tokenizer, captions)
        return self.images[indices].to(device), {"encoder_hidden_states": hidden_states.to(device)}


def save_model(folder: Path, unet, noise_scheduler, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer) -> Path:
    """Write the component folders (see the module docstring) under a temporary name, then rename to ``folder``."""

    def write(staging: Path) -> None:
        unet.save_pretrained(staging / "unet", safe_serialization=True)
        DDIMScheduler.from_config(noise_scheduler.config).save_pretrained(staging / "scheduler")
        text_encoder.save_pretrained(staging / "text_encoder", safe_serialization=True)
        tokenizer.save_pretrained(staging / "tokenizer")
        write_model_index(staging)

    return write_folder_atomically(folder, write)


def write_model_index(folder: Path) -> None:
    """The folder's ``model_index.json``: what each component folder holds, so that diffusers' config loader and
    `load_diffusers_generator` read the folder as a pixel-space text-to-image model."""
    index = {
        "_class_name": "TextToImagePipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    }
    (Path(folder) / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def load_model(folder: str | Path):
    """``(unet, scheduler, text_encoder, tokenizer)`` of a saved model folder, in eval mode, frozen."""
    folder = Path(folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval().requires_grad_(False)
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder").eval().requires_grad_(False)
    scheduler = DDIMScheduler.from_pretrained(folder / "scheduler")
    return unet, scheduler, text_encoder, CLIPTokenizer.from_pretrained(folder / "tokenizer")


# Evaluation -------------------------------------------------------------------------------------------------------
class Sampler:
    """A saved (or in-training) model with its text tower as the package's G (`TextToImageGenerator`, sharing the
    weights), making images for prompts on per-image seeds: G(z | prompt) is DDIM (eta = 0) from ``x_T = z``, with
    classifier-free guidance against the empty prompt above guidance scale 1, exactly what `tron-mnist-t2i` samples."""

    def __init__(self, unet, scheduler, text_encoder, tokenizer, batch_size: int = 200):
        self.generator = TextToImageGenerator.from_components(unet, text_encoder, tokenizer, scheduler)
        self.batch_size = batch_size

    def latents(self, seeds: list[int]) -> torch.Tensor:
        """x_T per seed ``(B, 784)``, drawn as TR0N draws a generator's prior latents (one generator per image)."""
        return self.generator.sample_latents(len(seeds), generator=seeded_generators(seeds, "cpu"))

    def conditioned(self, prompts: list[str], num_steps: int, guidance_scale: float = 1.0):
        """G with ``num_steps`` DDIM steps and ``guidance_scale``, conditioned on ``prompts`` (one per image)."""
        generator = self.generator.with_config(num_sampler_steps=num_steps, guidance_scale=guidance_scale)
        return generator.conditioned_on(prompts)

    def render(self, latents, prompts: list[str], num_steps: int, guidance_scale: float) -> torch.Tensor:
        return self.conditioned(prompts, num_steps, guidance_scale).generate(latents)

    @torch.no_grad()
    def images(self, prompts: list[str], seeds: list[int], num_steps: int, guidance_scale: float = 1.0):
        """Images ``(B, 1, 28, 28)`` in ``[-1, 1]`` and the wall-clock seconds per image."""
        start = time.perf_counter()
        chunks = []
        for first in range(0, len(prompts), self.batch_size):
            part = slice(first, first + self.batch_size)
            chunks.append(self.render(self.latents(seeds[part]), prompts[part], num_steps, guidance_scale))
        return torch.cat(chunks), (time.perf_counter() - start) / len(prompts)


def to_grey01(images: torch.Tensor) -> np.ndarray:
    """Images ``(B, 1, H, W)`` in ``[-1, 1]`` -> grey ``(B, H, W)`` in ``[0, 1]`` (what the measures take)."""
    return ((images[:, 0] + 1) / 2).clamp(0, 1).numpy()


def score_prompts(evaluator: MnistEvaluator, sampler: Sampler, conditions, seeds, num_steps, guidance_scale):
    """The text benchmark's measures of images for ``conditions`` (`quality.make_conditions`), and the images."""
    prompts = conditions.call_kwargs["prompt"]
    images, seconds = sampler.images(prompts, seeds, num_steps, guidance_scale)
    scores = evaluator.score_prompts(to_grey01(images), conditions.requests)
    scores["seconds_per_image"] = seconds
    return scores, images


def text_conditions(samples_per_prompt: int):
    """The text benchmark's 50 prompts, ``samples_per_prompt`` images each, prompt-major."""
    # make_conditions reads only the workload's kind: the model here is not a TronPipeline.
    return make_conditions(Workload("t2i", None, "text", "t2i"), samples_per_prompt)


def choose_guidance(evaluator, sampler, scales: list[float], num_steps: int) -> tuple[float, list[dict]]:
    """The guidance scale with the highest accuracy (ties: lower FD) on the tuning seeds, 8 images per prompt."""
    conditions = text_conditions(8)
    seeds = [TUNING_SEED + i for i in range(len(conditions))]
    rows = []
    for scale in scales:
        scores, _ = score_prompts(evaluator, sampler, conditions, seeds, num_steps, scale)
        rows.append({"guidance_scale": scale, "sampler_steps": num_steps, **summary(scores)})
    best = max(rows, key=lambda row: (row["accuracy"], -row["frechet_distance"]))
    return best["guidance_scale"], rows


SUMMARY_KEYS = (
    "accuracy",
    "worst_class",
    "worst_class_accuracy",
    "worst_prompt",
    "worst_prompt_accuracy",
    "stroke_weight_obeyed",
    "slant_obeyed",
    "diversity_ratio",
    "diversity_ratio_correct",
    "frechet_distance",
    "frechet_distance_std",
    "seconds_per_image",
    "num_images",
)


def summary(scores: dict) -> dict:
    return {key: scores[key] for key in SUMMARY_KEYS if key in scores}


def evaluate(model_dir: Path, args, output_dir: Path) -> dict:
    """Score the saved model: for every DDIM step count and guidance scale, the text benchmark's prompts on its
    evaluation seeds (digit accuracy by the evaluation classifier, the worst digit and prompt, stroke weight and slant
    obeyed, diversity as a fraction of real digits', Fréchet distance, seconds per image); the empty prompt's class
    histogram and Fréchet distance; G's forward + backward seconds at batch 32. Writes a sample grid per setting
    (8 images of each of the 50 prompts, a row per prompt) and ``evaluation.json``."""
    evaluator = MnistEvaluator(args.eval_classifier_dir)
    sampler = Sampler(*load_model(model_dir))
    conditions = text_conditions(args.samples_per_prompt)
    seeds = [EVALUATION_SEED + i for i in range(len(conditions))]
    result = {
        "samples_per_prompt": args.samples_per_prompt,
        "seeds": f"{EVALUATION_SEED}..{EVALUATION_SEED + len(conditions) - 1}",
        "real_digits": summary(evaluator.real_baseline(conditions.labels)),
        "num_parameters_unet": sum(p.numel() for p in sampler.generator.unet.parameters()),
        "settings": [],
    }
    scales = list(dict.fromkeys(args.guidance_scales))
    if args.tune_guidance_scales:
        tuning_steps = sorted(args.sampler_steps)[len(args.sampler_steps) // 2]
        best, rows = choose_guidance(evaluator, sampler, args.tune_guidance_scales, tuning_steps)
        result["guidance_tuning"] = {"rows": rows, "chosen": best, "seeds": f"{TUNING_SEED}.., 8 per prompt"}
        scales = list(dict.fromkeys(scales + [best]))
    shown = [i for i in range(len(conditions)) if i % args.samples_per_prompt < 8]
    for num_steps in args.sampler_steps:
        seconds_gradient = seconds_per_gradient_pass(
            sampler.conditioned(["a bold seven leaning right"] * 32, num_steps).generate, sampler.latents([0] * 32)
        )
        for scale in scales:
            scores, images = score_prompts(evaluator, sampler, conditions, seeds, num_steps, scale)
            row = {"sampler_steps": num_steps, "guidance_scale": scale, **summary(scores)}
            row["accuracy_by_prompt"] = scores["accuracy_by_prompt"]
            row["accuracy_by_class"] = scores["accuracy_by_class"]
            row["seconds_forward_backward_batch_32"] = seconds_gradient if scale == 1.0 else None
            grid = output_dir / f"samples_{num_steps}_steps_guidance_{scale:g}.png"
            save_sample_grid(images[shown], grid, columns=8)
            row["grid"] = str(grid)
            result["settings"].append(row)
            print(json.dumps({k: v for k, v in row.items() if not k.startswith("accuracy_by")}), flush=True)

        unconditional_seeds = [EVALUATION_SEED + i for i in range(args.num_unconditional)]
        images, seconds = sampler.images([""] * args.num_unconditional, unconditional_seeds, num_steps)
        grey = to_grey01(images)
        features = evaluator.classifier.features(grey)
        predicted = evaluator.classifier.logits_from_features(features).argmax(axis=1)
        distance, distance_std = frechet_distance_with_std(features, evaluator.real_statistics)
        # The empty prompt's Fréchet distance is to all held-out digits, so its floor is that of as many real digits
        # in the real (balanced) class proportions, not in the model's: those may ask for more digits of one class
        # than the training split holds.
        real = evaluator.real_baseline(np.arange(args.num_unconditional) % 10)
        row = {
            "sampler_steps": num_steps,
            "predicted_class_histogram": np.bincount(predicted, minlength=10).tolist(),
            "frechet_distance": distance,
            "frechet_distance_std": distance_std,
            "real_digits_frechet_distance_same_size": real["frechet_distance"],
            "seconds_per_image": seconds,
            "num_images": args.num_unconditional,
        }
        save_sample_grid(images[:100], output_dir / f"samples_{num_steps}_steps_empty_prompt.png")
        result.setdefault("empty_prompt", []).append(row)
        print(json.dumps(row), flush=True)
    (output_dir / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    output_dir = Path(args.output_dir)
    model_dir = output_dir / "model"
    if args.evaluate_only:
        return evaluate(model_dir, args, output_dir)

    text_encoder, tokenizer = load_text_tower(args.clip)
    noise_scheduler = build_noise_scheduler(args)
    trainer = DiffusionTrainer(args, lambda: build_unet(args, text_encoder.config.hidden_size), noise_scheduler)
    text_encoder.to(trainer.device)
    digits = CaptionedDigits(args, text_encoder, tokenizer)
    trainer.resume()

    evaluator = MnistEvaluator(args.eval_classifier_dir) if Path(args.eval_classifier_dir).is_dir() else None
    validation = text_conditions(2)
    validation_seeds = [TUNING_SEED + i for i in range(len(validation))]

    def validate(unet) -> str:
        sampler = Sampler(unet, DDIMScheduler.from_config(noise_scheduler.config), text_encoder, tokenizer)
        scores, _ = score_prompts(evaluator, sampler, validation, validation_seeds, args.validation_sampler_steps, 1.0)
        return (
            f"EMA samples ({args.validation_sampler_steps} DDIM steps, {len(validation)} on tuning seeds): accuracy "
            f"{scores['accuracy']:.3f}, stroke {scores['stroke_weight_obeyed']:.3f}, "
            f"slant {scores['slant_obeyed']:.3f}, diversity {scores['diversity_ratio']:.3f}, "
            f"FD {scores['frechet_distance']:.1f}"
        )

    training_seconds = trainer.train(digits.batch, validate if evaluator is not None else None)
    if not trainer.accelerator.is_main_process:
        return {}
    final = trainer.final_model()
    save_model(model_dir, final, noise_scheduler, text_encoder.cpu(), tokenizer)
    metrics = {
        "steps": trainer.global_step,
        "num_parameters": sum(p.numel() for p in final.parameters()),
        "training_seconds_this_run": round(training_seconds, 1),
        "seconds_per_step_this_run": round(training_seconds / max(1, trainer.steps_this_run), 3),
        "model_bytes": {
            part: sum(f.stat().st_size for f in (model_dir / part).rglob("*") if f.is_file()) for part in COMPONENTS
        },
    }
    if evaluator is not None:
        metrics["evaluation"] = evaluate(model_dir, args, output_dir)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({key: value for key, value in metrics.items() if key != "evaluation"}, indent=2))
    return metrics


if __name__ == "__main__":
    main()
