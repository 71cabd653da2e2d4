"""diffusers' training recipe for the MNIST diffusion models, shared by `train_ddpm.py` (unconditional `UNet2DModel`)
and `train_t2i.py` (text-conditional `UNet2DConditionModel`).

The recipe is that of diffusers' `train_unconditional.py` / `train_text_to_image.py` examples: Accelerate, AdamW with
`get_scheduler`'s warm-up and decay, an EMA of the weights (`EMAModel` with warm-up), checkpoints written by
`accelerator.save_state` (each holding a loadable ``unet/`` folder) and ``--resume_from_checkpoint``.

Every random draw of step ``s`` (batch, caption choices, noise, timesteps) comes from a generator seeded by
``(seed, s)``, so a resumed run sees the data and noise of an uninterrupted one and ends with the same weights.

Noise schedule defaults, chosen for samplers of 1-5 deterministic steps: the cosine schedule (``squaredcos_cap_v2``)
with v-prediction, whose predicted x_0 stays bounded at the pure-noise end, so no clipping is needed (clipping would
stop TR0N's gradients through the clipped pixels); "trailing" timestep spacing, so that the first DDIM step starts
from pure noise, t = 999.
"""

import argparse
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from tron_pipelines.training.train import CHECKPOINT_PATTERN, resolve_resume_checkpoint, save_checkpoint


def recipe_parser(description: str, **defaults) -> argparse.ArgumentParser:
    """An argument parser with the recipe's options (optimiser, EMA, noise schedule, UNet widths, checkpoints,
    logging); ``defaults`` override the shared defaults for one script (e.g. ``output_dir``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--output_dir", required="output_dir" not in defaults)
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
    parser.add_argument("--num_threads", type=int, default=2)
    parser.set_defaults(**defaults)
    return parser


def check_unet_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, image_side: int) -> None:
    """``parser.error`` unless the UNet widths fit ``image_side`` px images and the group norm."""
    if len(args.block_out_channels) < 2 or image_side % 2 ** (len(args.block_out_channels) - 1):
        parser.error(
            f"--block_out_channels {args.block_out_channels}: {image_side} px must halve evenly at every block "
            "after the first."
        )
    if min(args.block_out_channels) % args.norm_num_groups:
        parser.error(f"--norm_num_groups {args.norm_num_groups} must divide every entry of --block_out_channels.")


def build_noise_scheduler(args: argparse.Namespace) -> DDPMScheduler:
    """The training schedule (also what the DDIM sampler of the saved model is configured from)."""
    return DDPMScheduler(
        num_train_timesteps=args.num_train_timesteps,
        beta_schedule=args.beta_schedule,
        prediction_type=args.prediction_type,
        clip_sample=False,
        timestep_spacing=args.timestep_spacing,
    )


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of every random draw of training step ``step``."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def diffusion_target(noise_scheduler: DDPMScheduler, clean, noise, timesteps) -> torch.Tensor:
    """What the network learns to predict for ``prediction_type``: the noise, the velocity or the clean sample."""
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return noise_scheduler.get_velocity(clean, noise, timesteps)
    return clean


# A batch: clean images (B, C, H, W) in [-1, 1] and the network's extra keyword arguments (e.g. the text condition).
BatchFunction = Callable[[int, torch.Generator, torch.device], tuple[torch.Tensor, dict]]


class DiffusionTrainer:
    """The recipe around one UNet: Accelerate, AdamW + `get_scheduler`, EMA, checkpoints and exact resume.

    Args:
        args: The options of `recipe_parser`.
        build_model: Makes the UNet to train (a diffusers `ModelMixin`; its class is what checkpoints reload), called
            after seeding, so that its initial weights follow ``--seed``.
        noise_scheduler: The training schedule (`build_noise_scheduler`).
    """

    def __init__(self, args: argparse.Namespace, build_model: Callable, noise_scheduler: DDPMScheduler):
        self.args = args
        self.noise_scheduler = noise_scheduler
        self.output_dir = Path(args.output_dir)
        self.accelerator = accelerator = Accelerator(
            mixed_precision=args.mixed_precision,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")
            ),
        )
        set_seed(args.seed)
        model = build_model()
        self.model_class = type(model)
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
        self.model, self.optimizer, self.lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
        self.ema = None
        if args.use_ema:
            self.ema = EMAModel(
                self.model.parameters(),
                decay=args.ema_max_decay,
                use_ema_warmup=True,
                inv_gamma=args.ema_inv_gamma,
                power=args.ema_power,
                model_cls=self.model_class,
                model_config=self.unwrapped.config,
            )
            self.ema.to(accelerator.device)
            accelerator.register_for_checkpointing(self.ema)
        accelerator.register_save_state_pre_hook(self._save_model_hook)
        accelerator.register_load_state_pre_hook(self._load_model_hook)
        self.global_step = 0
        self.steps_this_run = 0

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    def _save_model_hook(self, models, weights, hook_output_dir):
        # Checkpoints hold a loadable UNet folder rather than an anonymous state dict.
        if self.accelerator.is_main_process:
            for saved in models:
                self.accelerator.unwrap_model(saved).save_pretrained(Path(hook_output_dir) / "unet")
        weights.clear()

    def _load_model_hook(self, models, hook_input_dir):
        while models:
            self.accelerator.unwrap_model(models.pop()).load_state_dict(
                self.model_class.from_pretrained(hook_input_dir, subfolder="unet").state_dict()
            )

    def resume(self) -> None:
        """Load ``--resume_from_checkpoint`` (if given) and continue from its step."""
        resume_path = resolve_resume_checkpoint(self.args.resume_from_checkpoint, self.output_dir)
        if resume_path is None:
            return
        self.accelerator.print(f"Resuming from {resume_path}")
        self.accelerator.load_state(str(resume_path))
        if self.ema is not None:
            self.ema.to(self.device)
        self.global_step = int(CHECKPOINT_PATTERN.match(resume_path.name).group(1))

    def with_ema_weights(self, function):
        """``function(unet)`` with the EMA weights swapped in and the UNet in eval mode; restored afterwards."""
        unet = self.unwrapped
        if self.ema is not None:
            self.ema.store(unet.parameters())
            self.ema.copy_to(unet.parameters())
        unet.eval()
        try:
            return function(unet)
        finally:
            unet.train()
            if self.ema is not None:
                self.ema.restore(unet.parameters())

    def train(self, make_batch: BatchFunction, validate: Callable | None = None) -> float:
        """Run from the current step to ``--max_train_steps``; returns the seconds it took.

        ``make_batch(step, draws, device)`` gives the clean images and the network's extra keyword arguments, drawing
        every random choice from ``draws`` (or from its own generator seeded by the step); noise and timesteps are
        drawn after it from the same ``draws``. ``validate(unet)`` (EMA weights, eval mode) returns a line to log
        every ``--validation_steps``.
        """
        args, accelerator, model = self.args, self.accelerator, self.model
        started = time.perf_counter()
        first_step, running_loss = self.global_step, []
        model.train()
        progress = tqdm(
            range(self.global_step, args.max_train_steps),
            initial=self.global_step,
            total=args.max_train_steps,
            disable=not accelerator.is_local_main_process,
            desc="steps",
            mininterval=30,
        )
        for step in progress:
            draws = step_generator(args.seed, step)
            clean, model_kwargs = make_batch(step, draws, self.device)
            noise = torch.randn(clean.shape, generator=draws).to(self.device)
            timesteps = torch.randint(args.num_train_timesteps, (len(clean),), generator=draws).to(self.device)
            noisy = self.noise_scheduler.add_noise(clean, noise, timesteps)
            target = diffusion_target(self.noise_scheduler, clean, noise, timesteps)
            with accelerator.accumulate(model):
                prediction = model(noisy, timesteps, **model_kwargs).sample
                loss = F.mse_loss(prediction.float(), target.float())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                self.optimizer.step()
                self.lr_scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.step(model.parameters())
            self.global_step = global_step = step + 1
            running_loss.append(loss.item())

            if global_step % args.logging_steps == 0 or global_step == args.max_train_steps:
                rate = (global_step - first_step) / (time.perf_counter() - started)
                ema = self.ema
                decay = f" ema_decay {ema.cur_decay_value:.5f}" if ema is not None and ema.cur_decay_value else ""
                accelerator.print(
                    f"step {global_step}/{args.max_train_steps} loss {sum(running_loss) / len(running_loss):.4f} "
                    f"lr {self.lr_scheduler.get_last_lr()[0]:.2e}{decay} ({rate:.2f} steps/s)",
                    flush=True,
                )
                running_loss = []
            if global_step % args.checkpointing_steps == 0 and global_step < args.max_train_steps:
                save_checkpoint(
                    accelerator, self.output_dir, global_step, args.checkpoints_total_limit, {"seed": args.seed}
                )
            if validate is not None and global_step % args.validation_steps == 0 and accelerator.is_main_process:
                accelerator.print(f"step {global_step}: {self.with_ema_weights(validate)}", flush=True)
        progress.close()
        self.steps_this_run = self.global_step - first_step
        return time.perf_counter() - started

    def final_model(self):
        """A fresh copy of the UNet holding the EMA weights (the plain weights without EMA), in eval mode."""
        trained = self.unwrapped
        final = self.model_class.from_config(trained.config)
        final.load_state_dict(trained.state_dict())
        if self.ema is not None:
            self.ema.copy_to(final.parameters())
        return final.eval()


def seconds_per_gradient_pass(render: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor, repeats: int = 3):
    """Median seconds of ``render(latents)`` forward + backward to the latents (what one Langevin or noise-optimisation
    step pays for the generator), after one untimed warm-up pass."""
    times = []
    for _ in range(repeats + 1):
        leaf = latents.clone().requires_grad_(True)
        start = time.perf_counter()
        torch.autograd.grad(render(leaf).square().sum(), leaf)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[repeats // 2]
