"""Train TR0N's translator on synthetic pairs with Accelerate: the same code on one CPU, one GPU or a multi-GPU node.

    accelerate launch -m tron_pipelines.train --pipeline <pipeline> --pairs_dir pairs --num_pairs 1000000 \\
        --output_dir tron-translator --mixed_precision bf16

Every random draw of a run is addressed by an index (pair chunk, micro-batch, epoch) rather than taken from a global
stream, so a run killed and resumed from a checkpoint sees exactly the data and noise of an uninterrupted run.
"""

import argparse
import json
import math
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, is_tensorboard_available, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from huggingface_hub import create_repo, upload_folder
from huggingface_hub.utils import filter_repo_objects
from tqdm.auto import tqdm

from ..encoders import EncoderAdapter
from ..models.generator import TronGenerator
from ..models.translator import TranslatorModel
from ..pipelines.pipeline_tron import TronPipeline
from ..pretrained import EMBEDDED_ROOT
from .arguments import caption_settings, check_train_args, command_line, parse_train_args, resolve_learning_rate
from .model_card import save_model_card
from .pairs import (
    ENERGY_STREAM,
    NOISE_STREAM,
    ONLINE_STREAM,
    SHUFFLE_STREAM,
    VALIDATION_STREAM,
    PairCache,
    PairCacheError,
    PairSource,
    check_cache_matches,
    derive_seed,
    generate_pairs,
    load_training_pipeline,
    open_pair_cache,
    read_manifest,
)
from .routes import load_condition_route


logger = get_logger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINING_STATE_NAME = "training_state.json"
UPLOAD_IGNORE_PATTERNS = ["checkpoint-*", "logs/*", "*.partial", "*.tmp"]


@dataclass
class TrainingResult:
    """What a run produced.

    Attributes:
        output_dir: Folder of the saved pipeline (its translator in ``translator/``) and model card.
        global_step: Optimisation steps done in total (resumed runs included).
        metrics / initial_metrics: Validation metrics after training and before it (see `evaluate_translator`).
        steps_per_second / pairs_per_second: Training throughput of this run (validation excluded).
    """

    output_dir: str
    global_step: int
    metrics: dict[str, float] = field(default_factory=dict)
    initial_metrics: dict[str, float] = field(default_factory=dict)
    steps_per_second: float = 0.0
    pairs_per_second: float = 0.0


class TranslatorObjective(nn.Module):
    """The translator's training loss as a module's ``forward``, so that DDP and Accelerate's autocast wrap it.

    Returns a plain dict of the `TranslatorLoss` fields: Accelerate rebuilds mapping outputs (to cast them to float32
    under mixed precision) by calling their type on a dict, which a dataclass output does not accept.
    """

    def __init__(self, translator: TranslatorModel, nll_weight: float):
        super().__init__()
        self.translator = translator
        self.nll_weight = nll_weight

    def forward(
        self, conditions: torch.Tensor, latents: torch.Tensor, auxiliary_latents: dict | None = None
    ) -> dict[str, torch.Tensor]:
        losses = self.translator.loss(conditions, latents, auxiliary_latents, nll_weight=self.nll_weight)
        return {"loss": losses.loss, "nll": losses.nll, "auxiliary_mse": losses.auxiliary_mse}


class ConditionNoise:
    """Training-only augmentation ``c~ = c + scale * n`` of the method, making image embeddings look like text ones.

    Modes: ``"none"``; ``"isotropic"``, ``n ~ N(0, I)``; ``"covariance"``, ``n ~ N(0, Sigma)`` with ``Sigma`` the
    covariance of the training conditions; ``"adaptive"``, ``n ~ N(0, I)`` rescaled per sample to the norm of ``c``.

    Args:
        mode: One of the modes above.
        scale: The scale s.
        covariance: ``(E, E)`` covariance for ``"covariance"``.
    """

    def __init__(self, mode: str = "none", scale: float = 0.0, covariance: torch.Tensor | None = None):
        if mode == "covariance" and covariance is None:
            raise ValueError("`covariance` is required for condition noise 'covariance'.")
        self.mode = mode
        self.scale = scale
        self.factor = None
        if mode == "covariance":
            # Sigma = V diag(l) V^T = L L^T with L = V diag(sqrt(l)); eigh tolerates the singular Sigma of few samples.
            eigenvalues, eigenvectors = torch.linalg.eigh(covariance.double())
            self.factor = (eigenvectors * eigenvalues.clamp(min=0).sqrt()).float()

    def __call__(self, conditions: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Noisy copy of ``conditions`` ``(B, E)``; the draw comes from the CPU ``generator`` (device-independent)."""
        if self.mode == "none":
            return conditions
        noise = torch.randn(conditions.shape, generator=generator, dtype=torch.float32).to(conditions.device)
        if self.mode == "covariance":
            if self.factor.device != conditions.device:
                self.factor = self.factor.to(conditions.device)
            noise = noise @ self.factor.T
        elif self.mode == "adaptive":
            noise = noise * (conditions.float().norm(dim=1, keepdim=True) / noise.norm(dim=1, keepdim=True))
        return conditions + self.scale * noise.to(conditions.dtype)


def estimate_condition_covariance(chunks, device: torch.device | str = "cpu") -> torch.Tensor:
    """Covariance ``(E, E)`` (float64) of condition chunks ``(n_i, E)``, accumulated in one streaming pass."""
    count, shift, total, outer = 0, None, None, None
    for chunk in chunks:
        chunk = chunk.to(device, torch.float32)
        if shift is None:
            # Centring on the first chunk's mean keeps the float32 products well conditioned.
            shift = chunk.mean(dim=0)
            total = torch.zeros(chunk.shape[1], dtype=torch.float64, device=device)
            outer = torch.zeros(chunk.shape[1], chunk.shape[1], dtype=torch.float64, device=device)
        centred = chunk - shift
        total += centred.sum(dim=0).double()
        outer += (centred.T @ centred).double()
        count += chunk.shape[0]
    if count < 2:
        raise ValueError(f"The condition covariance needs at least 2 conditions, got {count}.")
    mean = total / count
    return ((outer - count * torch.outer(mean, mean)) / (count - 1)).cpu()


class TrainingBatches:
    """The micro-batches of one process, addressed by ``(epoch, micro_batch)``.

    From a cache: epoch ``e`` reads the cache in the order of a permutation seeded by ``(seed, e)``; micro-batch ``m``
    is the ``m``-th block of ``batch_size * num_processes`` pairs, and process ``r`` takes the ``r``-th slice of it. On
    the fly: process ``r`` renders pair chunk ``(e * micro_batches_per_epoch + m) * num_processes + r``, seeded by its
    index, so the chunks are the same whatever the number of processes.
    """

    def __init__(
        self,
        cache: PairCache | None,
        source: PairSource,
        num_pairs: int,
        batch_size: int,
        accelerator: Accelerator,
        seed: int,
        generation_batch_size: int,
    ):
        self.cache = cache
        self.source = source
        self.batch_size = batch_size
        self.accelerator = accelerator
        self.seed = seed
        self.generation_batch_size = generation_batch_size
        self.num_pairs = num_pairs
        self.micro_batches_per_epoch = num_pairs // (batch_size * accelerator.num_processes)
        self._epoch, self._order = None, None

    def global_index(self, epoch: int, micro_batch: int) -> int:
        """Index of this process's part of a micro-batch among all parts of all processes."""
        return (
            epoch * self.micro_batches_per_epoch + micro_batch
        ) * self.accelerator.num_processes + self.accelerator.process_index

    def get(self, epoch: int, micro_batch: int) -> dict[str, torch.Tensor]:
        """``conditions`` ``(B, E)`` and packed ``latents`` ``(B, total_latent_dim)`` on the accelerator's device."""
        if self.cache is None:
            seed = derive_seed(self.seed, ONLINE_STREAM, self.global_index(epoch, micro_batch))
            return self.source.make_pairs(
                self.batch_size, seed, self.generation_batch_size, autocast=self.accelerator.autocast
            )
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, SHUFFLE_STREAM, epoch))
            self._epoch, self._order = epoch, torch.randperm(self.num_pairs, generator=generator)
        start = (micro_batch * self.accelerator.num_processes + self.accelerator.process_index) * self.batch_size
        batch = self.cache[self._order[start : start + self.batch_size]]
        return {name: tensor.to(self.accelerator.device, non_blocking=True) for name, tensor in batch.items()}


def split_packed_latents(
    latents: torch.Tensor, latent_specs: list[dict]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Main latent ``(B, D)`` and auxiliary latents ``{name: (B, dim)}`` of packed latents."""
    parts = torch.split(latents, [spec["dim"] for spec in latent_specs], dim=1)
    return parts[0], {spec["name"]: part for spec, part in zip(latent_specs[1:], parts[1:], strict=True)}


@torch.no_grad()
def evaluate_translator(
    translator: TranslatorModel,
    pipeline: TronPipeline,
    validation: dict[str, torch.Tensor],
    latent_specs: list[dict],
    nll_weight: float,
    num_energy_conditions: int,
    seed: int,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Validation metrics of ``translator`` on held-out pairs (clean conditions, never noised).

    Returns ``nll`` (nats per sample), ``nll_per_dim``, ``auxiliary_mse`` (when G has auxiliary latents),
    ``std_mean`` / ``std_min`` / ``std_max`` (the fitted component std), ``residual_std`` (RMS distance of z to the
    mean of its most likely component: the std the data asks for) and ``energy``, the mean E(z, c) of one translator
    sample for each of the first ``num_energy_conditions`` conditions, drawn with fixed seeds: the energy TR0N's
    Langevin dynamics starts from (through ``pipeline``, whose translator must be ``translator``).
    """
    was_training = translator.training
    translator.eval()
    conditions, packed = validation["conditions"], validation["latents"]
    count = conditions.shape[0]
    nll_sum = auxiliary_sum = residual_sum = 0.0
    for start in range(0, count, batch_size):
        batch_conditions = conditions[start : start + batch_size]
        latents, auxiliary = split_packed_latents(packed[start : start + batch_size], latent_specs)
        losses = translator.loss(batch_conditions, latents, auxiliary or None, nll_weight=nll_weight)
        nll_sum += losses.nll.item() * latents.shape[0]
        auxiliary_sum += losses.auxiliary_mse.item() * latents.shape[0]
        out = translator(batch_conditions)
        means, stds = out.means.float(), out.stds.float()
        # The std is shared by all components, so the most likely component is the one with the best weighted distance.
        scores = torch.log_softmax(out.mixture_logits.float(), dim=-1) - 0.5 * (
            ((latents.float().unsqueeze(1) - means) / stds) ** 2
        ).sum(-1)
        best = means[torch.arange(latents.shape[0], device=means.device), scores.argmax(dim=1)]
        residual_sum += (latents.float() - best).pow(2).sum().item()
    latent_dim = translator.config.latent_dim
    stds = translator.stds.float()
    metrics = {
        "nll": nll_sum / count,
        "nll_per_dim": nll_sum / count / latent_dim,
        "std_mean": stds.mean().item(),
        "std_min": stds.min().item(),
        "std_max": stds.max().item(),
        "residual_std": math.sqrt(residual_sum / (count * latent_dim)),
    }
    if len(latent_specs) > 1:
        metrics["auxiliary_mse"] = auxiliary_sum / count
    if num_energy_conditions:
        device = pipeline._execution_device
        generators = [
            torch.Generator(device).manual_seed(derive_seed(seed, ENERGY_STREAM, i))
            for i in range(num_energy_conditions)
        ]
        output = pipeline(
            condition_embeds=conditions[:num_energy_conditions],
            num_inference_steps=0,
            initialization="translator",
            generator=generators,
            output_type="latent",
        )
        metrics["energy"] = output.energies.float().mean().item()
    translator.train(was_training)
    return metrics


def format_metrics(metrics: dict[str, float]) -> str:
    parts = [
        f"nll/dim {metrics['nll_per_dim']:.4f}",
        f"std {metrics['std_mean']:.4f} (data: {metrics['residual_std']:.4f})",
    ]
    if "auxiliary_mse" in metrics:
        parts.append(f"aux mse {metrics['auxiliary_mse']:.4g}")
    if "energy" in metrics:
        parts.append(f"energy {metrics['energy']:.4f}")
    return ", ".join(parts)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints of ``output_dir``, oldest first (``checkpoint-<step>``; ``.partial`` ones are not)."""
    if not output_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := CHECKPOINT_PATTERN.match(p.name))
    ]
    return [path for _, path in sorted(found)]


def resolve_resume_checkpoint(resume_from_checkpoint: str | None, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``None`` for a fresh run (also for ``"latest"`` without checkpoints)."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    for candidate in (Path(resume_from_checkpoint), output_dir / resume_from_checkpoint):
        if candidate.is_dir() and CHECKPOINT_PATTERN.match(candidate.name):
            return candidate
    raise ValueError(
        f"`--resume_from_checkpoint` {resume_from_checkpoint!r} is not a checkpoint-<step> folder (looked in {str(output_dir)!r} too)."
    )


def check_output_dir(args: argparse.Namespace) -> None:
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"`--output_dir` {str(output_dir)!r} exists and is not a folder.")
    if (
        output_dir.is_dir()
        and any(output_dir.iterdir())
        and not (args.overwrite_output_dir or args.resume_from_checkpoint)
    ):
        raise ValueError(
            f"`--output_dir` {str(output_dir)!r} exists and is not empty. Pass --resume_from_checkpoint latest to continue "
            "its run, or --overwrite_output_dir to train a new translator into it."
        )


def new_translator(
    generator: TronGenerator,
    adapter: EncoderAdapter,
    num_components: int = 10,
    hidden_dim: int | None = None,
    init_std: float | None = None,
    mean_rank: int | None = None,
) -> TranslatorModel:
    """An untrained translator sized for ``generator``'s latents (main, its bound, auxiliary ones) and ``adapter``'s
    conditions (CLIP embeddings or class probabilities). ``init_std`` defaults to 1 (training then sets the spread of
    G's latents, see `--init_std`); ``mean_rank`` chooses a shared-basis mean head (`TranslatorModel`)."""
    auxiliary = {spec.name: spec.dim for spec in generator.auxiliary_latents}
    return TranslatorModel(
        condition_dim=adapter.condition_dim,
        latent_dim=generator.latent_dim,
        num_components=num_components,
        hidden_dim=hidden_dim,
        latent_threshold=generator.main_latent.threshold,
        auxiliary_latent_dims=auxiliary or None,
        init_std=init_std or 1.0,
        mean_rank=mean_rank,
    )


def build_translator(pipeline: TronPipeline, args: argparse.Namespace) -> TranslatorModel:
    """A new translator fitting the pipeline's generator and encoder, or ``--translator_name_or_path`` checked against them."""
    adapter, generator = pipeline.encoder_adapter, pipeline.generator
    if args.translator_name_or_path is None:
        return new_translator(
            generator, adapter, args.num_components, args.hidden_dim, args.init_std, mean_rank=args.mean_rank
        )
    auxiliary = {spec.name: spec.dim for spec in generator.auxiliary_latents}
    path = Path(args.translator_name_or_path)
    subfolder = "translator" if (path / "translator" / "config.json").is_file() else None
    try:
        translator = TranslatorModel.from_pretrained(path, subfolder=subfolder)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"`--translator_name_or_path` {str(path)!r} could not be loaded as a TranslatorModel: {error}"
        ) from error
    config = translator.config
    problems = []
    if config.condition_dim != adapter.condition_dim:
        problems.append(
            f"it takes {config.condition_dim}-dim conditions, the encoder makes {adapter.condition_dim}-dim ones"
        )
    if config.latent_dim != generator.latent_dim:
        problems.append(
            f"it predicts {config.latent_dim}-dim latents, the generator's main latent has {generator.latent_dim}"
        )
    if dict(config.auxiliary_latent_dims or {}) != auxiliary:
        problems.append(
            f"it predicts auxiliary latents {dict(config.auxiliary_latent_dims or {})}, the generator has {auxiliary}"
        )
    if problems:
        raise ValueError(
            f"`--translator_name_or_path` {str(path)!r} does not fit `--pipeline`: " + "; ".join(problems) + "."
        )
    return translator


def build_optimizer(translator: TranslatorModel, args: argparse.Namespace, learning_rate: float) -> torch.optim.AdamW:
    """AdamW with two parameter groups: the network (at ``learning_rate``, `resolve_learning_rate`'s), and the
    per-dimension log-std.

    The log-std has its own learning rate, its own (short) second-moment memory and no weight decay (decay would pull
    every std towards 1). Its gradient ``1 - residual^2 / std^2`` shrinks a hundredfold while the std grows from 0.01 to
    the data's spread; with beta2 = 0.999 Adam keeps dividing by the early, huge gradients, and the std stalls.
    """
    network_parameters = [parameter for name, parameter in translator.named_parameters() if name != "log_stds"]
    return torch.optim.AdamW(
        [
            {"params": network_parameters, "lr": learning_rate, "weight_decay": args.adam_weight_decay},
            {
                "params": [translator.log_stds],
                "lr": args.std_learning_rate,
                "betas": (args.adam_beta1, args.std_adam_beta2),
                "weight_decay": 0.0,
            },
        ],
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )


def _hub_base_model(pipeline: str) -> str | None:
    # Only a Hub repo id can be a card's base_model; local folders and embedded names are not.
    if os.path.isdir(pipeline) or (EMBEDDED_ROOT / pipeline / "model_index.json").is_file():
        return None
    return pipeline


def files_to_upload(folder: str | os.PathLike, ignore_patterns: list[str] = UPLOAD_IGNORE_PATTERNS) -> list[str]:
    """Relative paths of the files `upload_folder` sends from ``folder`` with ``ignore_patterns``."""
    folder = Path(folder)
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=ignore_patterns))


def save_checkpoint(
    accelerator: Accelerator, output_dir: Path, global_step: int, limit: int | None, state: dict
) -> None:
    """``accelerator.save_state`` into ``checkpoint-<step>.partial``, renamed once every process has written: a run
    killed while saving leaves no half checkpoint for ``--resume_from_checkpoint latest`` to pick."""
    final = output_dir / f"checkpoint-{global_step}"
    staging = output_dir / f"checkpoint-{global_step}.partial"
    if accelerator.is_main_process:
        if limit is not None:
            checkpoints = [path for path in list_checkpoints(output_dir) if path != final]
            for stale in checkpoints[: max(0, len(checkpoints) - (limit - 1))]:
                logger.info(f"Removing {stale} (more than --checkpoints_total_limit {limit}).")
                shutil.rmtree(stale)
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (staging / TRAINING_STATE_NAME).write_text(json.dumps(state, indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        logger.info(f"Saved {final}")
    accelerator.wait_for_everyone()


def _write_model_card(
    args,
    output_dir,
    repo_id,
    source,
    translator,
    cache,
    num_pairs,
    accelerator,
    global_step,
    steps_per_epoch,
    learning_rate,
    metrics,
    initial_metrics,
):
    num_processes = accelerator.num_processes
    launcher = (
        f"accelerate launch --num_processes {num_processes} -m tron_pipelines.train"
        if num_processes > 1
        else "tron train-translator"
    )
    save_model_card(
        output_dir,
        repo_id=repo_id or args.hub_model_id or output_dir.name,
        pipeline_source=args.pipeline,
        identity=source.identity(),
        pairs={
            "num_pairs": num_pairs,
            "source": f"cache of {len(cache)} pairs" if cache is not None else "made on the fly, fresh every epoch",
            "seed": args.seed,
            "condition_noise": args.condition_noise,
            "condition_noise_scale": args.condition_noise_scale,
        },
        training={
            "steps": global_step,
            "epochs": round(global_step / steps_per_epoch, 3),
            "processes": num_processes,
            "train batch size (per process)": args.train_batch_size,
            "gradient accumulation steps": args.gradient_accumulation_steps,
            "learning rate (network / log-std)": f"{learning_rate:g}"
            f"{' (chosen for the number of steps)' if args.learning_rate is None else ''} / {args.std_learning_rate}",
            "lr scheduler": f"{args.lr_scheduler}, {args.lr_warmup_steps} warmup steps",
            "mixed precision": accelerator.mixed_precision,
            "EMA": f"max decay {args.ema_max_decay}" if args.use_ema else "no",
            "mixture components": translator.config.num_components,
            "mean head": f"shared basis of rank {translator.config.mean_rank}"
            if translator.config.mean_rank
            else "full",
        },
        metrics=metrics,
        initial_metrics=initial_metrics,
        command=command_line(args, launcher),
        encoder_adapter=source.adapter,
        base_model=_hub_base_model(args.pipeline),
        on_hub=repo_id is not None,
    )


def _report_to(value: str) -> str | None:
    if value == "auto":
        return "tensorboard" if is_tensorboard_available() else None
    return None if value == "none" else value


def train_translator(args: argparse.Namespace, end_training: bool = True) -> TrainingResult:
    """Train a translator as ``tron train-translator`` does (``args`` from `parse_train_args`).

    Checks every argument, the pipeline, the translator's dimensions, the output folder and the pair cache before any
    pair is generated or any step taken, and raises ``ValueError`` naming the argument at fault. Saves the pipeline with
    the new translator and a model card in ``--output_dir``; returns a `TrainingResult`. With ``end_training=False``
    the trackers are finished but the processes' group is kept, for a caller with more work for them (``tron build``).
    """
    check_train_args(args)
    output_dir = Path(args.output_dir)
    check_output_dir(args)
    resume_path = resolve_resume_checkpoint(args.resume_from_checkpoint, output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=_report_to(args.report_to),
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / args.logging_dir)
        ),
    )
    num_processes, device = accelerator.num_processes, accelerator.device

    # Everything below up to the first write can only fail on bad input.
    set_seed(args.seed)  # the new translator's initialisation
    pipeline = load_training_pipeline(args.pipeline)
    route = load_condition_route(args.condition_route, args.captioner, args.caption_ratio, caption_settings(args))
    source = PairSource.from_pipeline(pipeline, route)
    translator = build_translator(pipeline, args)
    num_pairs = args.num_pairs
    if args.pairs_dir is not None:
        manifest = read_manifest(args.pairs_dir)
        if manifest is not None:
            check_cache_matches(manifest, source, args.pairs_dir)
        if num_pairs is None:
            if manifest is None or not manifest.get("complete"):
                raise PairCacheError(
                    f"`--pairs_dir` {args.pairs_dir!r} holds no complete pair cache; give --num_pairs to generate it."
                )
            num_pairs = manifest["num_pairs"]
    pairs_per_step = args.train_batch_size * num_processes
    micro_batches_per_epoch = num_pairs // pairs_per_step
    steps_per_epoch = micro_batches_per_epoch // args.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise ValueError(
            f"`--train_batch_size` {args.train_batch_size} x {num_processes} process(es) x --gradient_accumulation_steps "
            f"{args.gradient_accumulation_steps} needs {pairs_per_step * args.gradient_accumulation_steps} pairs per step, "
            f"but there are only {num_pairs} pairs (incomplete batches are dropped): lower the batch size or add pairs."
        )
    max_train_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    learning_rate, short_run_warning = resolve_learning_rate(args, max_train_steps)
    if short_run_warning is not None and accelerator.is_main_process:
        warnings.warn(short_run_warning, stacklevel=2)
    repo_id = None
    if args.push_to_hub and accelerator.is_main_process:
        repo_id = create_repo(
            repo_id=args.hub_model_id or output_dir.name, exist_ok=True, token=args.hub_token
        ).repo_id
    accelerator.wait_for_everyone()  # all processes have checked the output folder before it is written to

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        for stale in output_dir.glob("checkpoint-*.partial"):
            shutil.rmtree(stale)  # a save interrupted by a kill
        if args.overwrite_output_dir and resume_path is None:
            for old in list_checkpoints(output_dir):
                shutil.rmtree(old)  # checkpoints of another run must not be mixed with this one's

    pipeline.to(device)
    source.to(device)
    pipeline.register_modules(translator=translator.to(device))
    for module in (pipeline.generator, pipeline.encoder):
        module.requires_grad_(False).eval()
    latent_specs = source.latent_specs

    # Held-out pairs from their own random stream: never in the cache, identical in every process.
    validation = source.make_pairs(
        args.num_validation_pairs,
        derive_seed(args.seed, VALIDATION_STREAM, 0),
        args.generation_batch_size,
        autocast=accelerator.autocast,
    )
    if args.translator_name_or_path is None and args.init_std is None:
        main_latents, _ = split_packed_latents(validation["latents"], source.latent_specs)
        translator.initialize_spread(main_latents)
    cache = None
    if args.pairs_dir is not None:
        if args.num_pairs is not None:
            cache = generate_pairs(
                source,
                args.pairs_dir,
                num_pairs,
                args.pairs_per_shard,
                args.seed,
                args.generation_batch_size,
                args.pairs_dtype,
                accelerator=accelerator,
            )
        else:
            cache = open_pair_cache(
                args.pairs_dir, verify_checksums=not args.skip_pair_checksums, accelerator=accelerator
            )

    covariance = None
    if args.condition_noise == "covariance":
        if cache is not None:
            covariance = estimate_condition_covariance(cache.iter_chunks("conditions"), device)
        else:
            if args.num_validation_pairs < 2 * source.condition_dim:
                warnings.warn(
                    f"Pairs are made on the fly: the condition covariance is estimated from the {args.num_validation_pairs} "
                    f"validation pairs only ({source.condition_dim} dims). Use a --pairs_dir cache for a full estimate.",
                    stacklevel=2,
                )
            covariance = estimate_condition_covariance([validation["conditions"]], device)
    condition_noise = ConditionNoise(args.condition_noise, args.condition_noise_scale, covariance)
    batches = TrainingBatches(
        cache, source, num_pairs, args.train_batch_size, accelerator, args.seed, args.generation_batch_size
    )

    optimizer = build_optimizer(translator, args, learning_rate)
    # The prepared scheduler steps once per process at every step, hence the factors (as in diffusers' examples).
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=args.lr_warmup_steps * num_processes,
        num_training_steps=max_train_steps * num_processes,
    )
    objective = TranslatorObjective(translator, args.nll_weight)
    objective, optimizer, lr_scheduler = accelerator.prepare(objective, optimizer, lr_scheduler)
    ema = None
    if args.use_ema:
        ema = EMAModel(
            translator.parameters(),
            decay=args.ema_max_decay,
            use_ema_warmup=True,
            inv_gamma=args.ema_inv_gamma,
            power=args.ema_power,
            model_cls=TranslatorModel,
            model_config=translator.config,
        )
        ema.to(device)
        accelerator.register_for_checkpointing(ema)

    def save_model_hook(models, weights, hook_output_dir):
        # Checkpoints hold a loadable translator folder rather than an anonymous state dict.
        if accelerator.is_main_process:
            for model in models:
                accelerator.unwrap_model(model).translator.save_pretrained(os.path.join(hook_output_dir, "translator"))
        weights.clear()

    def load_model_hook(models, hook_input_dir):
        while models:
            saved = TranslatorModel.from_pretrained(hook_input_dir, subfolder="translator")
            accelerator.unwrap_model(models.pop()).translator.load_state_dict(saved.state_dict())

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)

    global_step, initial_metrics = 0, {}
    if resume_path is not None:
        accelerator.print(f"Resuming from {resume_path}")
        accelerator.load_state(str(resume_path))
        if ema is not None:
            ema.to(device)
        global_step = int(CHECKPOINT_PATTERN.match(resume_path.name).group(1))
        state_path = resume_path / TRAINING_STATE_NAME
        saved_state = json.loads(state_path.read_text()) if state_path.is_file() else {}
        initial_metrics = saved_state.get("initial_metrics", {})
        changed = [
            f"{name} {saved_state[name]} -> {value}"
            for name, value in (
                ("num_processes", num_processes),
                ("train_batch_size", args.train_batch_size),
                ("seed", args.seed),
            )
            if name in saved_state and saved_state[name] != value
        ]
        if changed:
            warnings.warn(
                f"Resuming with other settings ({', '.join(changed)}): the data order differs from the original run.",
                stacklevel=2,
            )
    elif args.resume_from_checkpoint:
        accelerator.print(f"No checkpoint found in {str(output_dir)!r}; starting a new run.")

    if accelerator.is_main_process:
        tracker_config = {
            k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool)) and k != "hub_token"
        }
        tracker_config["learning_rate"] = learning_rate
        accelerator.init_trackers("tron_translator", config=tracker_config)

    def validate() -> dict[str, float]:
        if ema is not None:
            ema.store(translator.parameters())
            ema.copy_to(translator.parameters())
        metrics = evaluate_translator(
            translator, pipeline, validation, latent_specs, args.nll_weight, args.num_validation_conditions, args.seed
        )
        if ema is not None:
            ema.restore(translator.parameters())
        accelerator.log({f"validation/{name}": value for name, value in metrics.items()}, step=global_step)
        progress.write(f"step {global_step}: validation {format_metrics(metrics)}")
        return metrics

    def training_state() -> dict:
        return {
            "global_step": global_step,
            "num_processes": num_processes,
            "train_batch_size": args.train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "seed": args.seed,
            "initial_metrics": initial_metrics,
        }

    accelerator.print(
        f"Training: {num_pairs} pairs ({'cache ' + str(args.pairs_dir) if cache is not None else 'made on the fly'}), "
        f"{num_processes} process(es) x {args.train_batch_size} pairs x {args.gradient_accumulation_steps} accumulation, "
        f"{steps_per_epoch} steps per epoch, steps {global_step} -> {max_train_steps}, learning rate {learning_rate:g}"
        f"{' (chosen for the number of steps)' if args.learning_rate is None else ''}."
    )
    progress = tqdm(
        total=max_train_steps, initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process
    )
    metrics, validated_step = {}, None
    if global_step == 0 and accelerator.is_main_process:
        initial_metrics = metrics = validate()
        validated_step = 0

    start_step, validation_seconds = global_step, 0.0
    start_time = time.perf_counter()
    objective.train()
    while global_step < max_train_steps:
        epoch, step_in_epoch = divmod(global_step, steps_per_epoch)
        for accumulation in range(args.gradient_accumulation_steps):
            micro_batch = step_in_epoch * args.gradient_accumulation_steps + accumulation
            batch = batches.get(epoch, micro_batch)
            noise_generator = torch.Generator().manual_seed(
                derive_seed(args.seed, NOISE_STREAM, batches.global_index(epoch, micro_batch))
            )
            with accelerator.accumulate(objective):
                conditions = condition_noise(batch["conditions"], noise_generator)
                latents, auxiliary = split_packed_latents(batch["latents"], latent_specs)
                losses = objective(conditions, latents, auxiliary or None)
                accelerator.backward(losses["loss"])
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(objective.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(translator.parameters())
        global_step += 1
        progress.update(1)
        logs = {
            "train/loss": losses["loss"].item(),
            "train/nll_per_dim": losses["nll"].item() / translator.config.latent_dim,
            "train/std_mean": translator.stds.mean().item(),
            "lr": lr_scheduler.get_last_lr()[0],
            "std_lr": lr_scheduler.get_last_lr()[1],
        }
        if auxiliary:
            logs["train/auxiliary_mse"] = losses["auxiliary_mse"].item()
        progress.set_postfix(loss=f"{logs['train/loss']:.4g}", std=f"{logs['train/std_mean']:.3g}")
        accelerator.log(logs, step=global_step)

        if global_step % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, output_dir, global_step, args.checkpoints_total_limit, training_state())
        if accelerator.is_main_process and (
            global_step % args.validation_steps == 0 or global_step == max_train_steps
        ):
            validation_start = time.perf_counter()
            metrics, validated_step = validate(), global_step
            validation_seconds += time.perf_counter() - validation_start
    train_seconds = max(time.perf_counter() - start_time - validation_seconds, 1e-9)
    progress.close()

    accelerator.wait_for_everyone()
    steps_done = global_step - start_step
    result = TrainingResult(
        output_dir=str(output_dir),
        global_step=global_step,
        steps_per_second=steps_done / train_seconds,
        pairs_per_second=steps_done * pairs_per_step * args.gradient_accumulation_steps / train_seconds,
    )
    if accelerator.is_main_process:
        if validated_step != global_step:
            metrics = validate()
        trained = accelerator.unwrap_model(objective).translator
        if ema is not None:
            ema.copy_to(trained.parameters())
        pipeline.register_modules(translator=trained)
        pipeline.save_pretrained(output_dir)
        _write_model_card(
            args,
            output_dir,
            repo_id,
            source,
            trained,
            cache,
            num_pairs,
            accelerator,
            global_step,
            steps_per_epoch,
            learning_rate,
            metrics,
            initial_metrics,
        )
        result.metrics, result.initial_metrics = metrics, initial_metrics
        if args.push_to_hub:
            uploaded = files_to_upload(output_dir)
            accelerator.print(f"Uploading {len(uploaded)} files to the Hub repo {repo_id}.")
            commit = upload_folder(
                repo_id=repo_id,
                folder_path=str(output_dir),
                commit_message="End of training",
                ignore_patterns=UPLOAD_IGNORE_PATTERNS,
                token=args.hub_token,
            )
            accelerator.print(f"Uploaded: {getattr(commit, 'commit_url', commit)}")
        accelerator.print(
            f"Trained {steps_done} steps ({steps_done * pairs_per_step * args.gradient_accumulation_steps} pairs) in "
            f"{train_seconds:.1f}s: {result.steps_per_second:.2f} steps/s, {result.pairs_per_second:.1f} pairs/s. "
            f"Final validation: {format_metrics(metrics)}. Saved to {str(output_dir)!r}."
        )
    if end_training:
        accelerator.end_training()
    else:
        for tracker in accelerator.trackers:
            tracker.finish()
    return result


def main(argv: list[str] | None = None) -> TrainingResult:
    return train_translator(parse_train_args(argv))


__all__ = [
    "train_translator",
    "TrainingResult",
    "TranslatorObjective",
    "ConditionNoise",
    "TrainingBatches",
    "estimate_condition_covariance",
    "evaluate_translator",
    "files_to_upload",
    "build_optimizer",
    "new_translator",
    "main",
]
