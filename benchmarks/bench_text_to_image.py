"""The ``text-to-image`` section of ``benchmarks/run.py``: the cost of reward-based noise optimisation with a
text-to-image G. One optimisation step (forward through an SD-Turbo UNet + VAE decode + a CLIP ViT-H/14 image
encoder, backward to the initial noise) at 512 px, batch 1, random weights (the cost does not depend on the weights),
with and without gradient checkpointing and with the tiny decoder; low-precision (fp8) weight storage for the UNet's
backward pass; and the translator's mean-head sizes for the 16,384-value noise latent, with the NLL trade-off of the
shared-basis head.

    python benchmarks/run.py text-to-image                                      # CPU (minutes per configuration)
    python benchmarks/run.py text-to-image --device cuda                        # the same on a GPU
    python benchmarks/run.py text-to-image --text_to_image_parts steps --text_to_image_configurations taesd-blocks
    python benchmarks/bench_text_to_image.py --configuration vae-none --device cpu   # one measured run, a JSON line

Every measured run is a fresh process (memory a process has freed but kept would hide part of the next
measurement; this file's own command line is that process's entry point), stopped when its resident memory passes
``--memory_limit_gib`` on a CPU. GFLOP are counted on the meta device, so they are reported even where a run is
stopped.

The architectures are those of ``stabilityai/sd-turbo`` (Stable Diffusion 2.1's UNet and VAE and its OpenCLIP ViT-H
text encoder, written from their published config.json values), ``madebyollin/taesd`` (AutoencoderTiny's defaults)
and CLIP ViT-H/14's image tower (PickScore's and HPSv2's backbone).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import FlopCounter, clip_langevin_step, format_table, synchronize
from harness import Section


# stabilityai/sd-turbo unet/config.json (Stable Diffusion 2.1 base: 512 px, 64 x 64 x 4 latent), 865.9 M parameters.
SD_TURBO_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "attention_head_dim": (5, 10, 20, 20),
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
    "norm_num_groups": 32,
}
# stabilityai/sd-turbo vae/config.json (Stable Diffusion's KL-f8 autoencoder), 83.7 M parameters (49.5 M decoder).
SD_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "norm_num_groups": 32,
    "sample_size": 768,
    "scaling_factor": 0.18215,
}
# stabilityai/sd-turbo text_encoder/config.json (OpenCLIP ViT-H/14's text tower without its last layer), 340 M.
SD_TURBO_TEXT_ENCODER = {
    "vocab_size": 49408,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 512,
}
# CLIP ViT-H/14's image tower (laion/CLIP-ViT-H-14-laion2B-s32B-b79K; PickScore and HPSv2 fine-tune it), 632 M.
CLIP_VIT_H_VISION = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "hidden_act": "gelu",
}
CLIP_VIT_H_PROJECTION = 1024
# (name, decoder, gradient checkpointing): "stage" recomputes each UNet pass and the decoder as a whole
# (`G.enable_gradient_checkpointing()`), "blocks" recomputes their blocks (`G.unet` / `G.decoder`
# `.enable_gradient_checkpointing()`).
CONFIGURATIONS = (
    ("vae-none", "vae", "none"),
    ("vae-stage", "vae", "stage"),
    ("vae-blocks", "vae", "blocks"),
    ("taesd-none", "taesd", "none"),
    ("taesd-blocks", "taesd", "blocks"),
)
# Translator head sizes: condition sizes of CLIP ViT-L/14 and ViT-H/14, the method's K and hidden = 4 x condition.
HEAD_CONDITION_DIMS = (768, 1024)
HEAD_RANKS = (None, 256, 64)
NUM_COMPONENTS = 10


def tiny_vocabulary_tokenizer(model_max_length: int = 77):
    """A CLIP tokenizer over single letters (the cost depends on the padded length only, not on the vocabulary)."""
    from transformers import CLIPTokenizer

    folder = Path(tempfile.mkdtemp())
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in letters + [c + "</w>" for c in letters]:
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=model_max_length)


def sd_turbo_generator(decoder: str = "vae", checkpointing: str = "none", device: str = "cpu"):
    """An SD-Turbo-sized `TextToImageGenerator` (1 Euler step, trailing spacing; random weights), its networks
    built on ``device`` (``"meta"``: shapes only, for counting)."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    from tron_pipelines.models import TextToImageGenerator

    with torch.device(device):
        unet = diffusers.UNet2DConditionModel(**SD_TURBO_UNET)
        vae = diffusers.AutoencoderKL(**SD_VAE) if decoder == "vae" else diffusers.AutoencoderTiny()
        text_encoder = CLIPTextModel(
            CLIPTextConfig(**SD_TURBO_TEXT_ENCODER, pad_token_id=1, bos_token_id=0, eos_token_id=1)
        )
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, timestep_spacing="trailing"
    )
    generator = TextToImageGenerator.from_components(
        unet, text_encoder, tiny_vocabulary_tokenizer(), scheduler, vae
    ).eval()
    generator.requires_grad_(False)
    if checkpointing == "stage":
        generator.enable_gradient_checkpointing()
    elif checkpointing == "blocks":
        generator.unet.enable_gradient_checkpointing()
        generator.decoder.enable_gradient_checkpointing()
    return generator


def clip_vit_h_adapter(device: str = "cpu"):
    """f: CLIP ViT-H/14's image tower (and a one-layer text tower, unused here) behind the pipeline's adapter."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    from tron_pipelines import EncoderAdapter

    config = CLIPConfig(
        text_config=CLIPTextConfig(hidden_size=64, intermediate_size=64, num_hidden_layers=1).to_dict(),
        vision_config=CLIPVisionConfig(**CLIP_VIT_H_VISION).to_dict(),
        projection_dim=CLIP_VIT_H_PROJECTION,
    )
    with torch.device(device):
        clip = CLIPModel(config).eval()
    clip.requires_grad_(False)
    return EncoderAdapter(clip)


class CastOnAccess(torch.nn.Module):
    """A parametrization that stores a weight in a low-precision dtype and hands the layer a copy cast to the compute
    dtype at every access: low-precision storage whose backward pass works (unlike diffusers' layerwise-casting hooks,
    which cast the weights back after the forward pass, before the backward pass reads them)."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return stored.to(self.dtype)


def store_weights_cast_on_access(model, storage_dtype: torch.dtype, compute_dtype: torch.dtype) -> None:
    """Store every linear and convolution weight of ``model`` in ``storage_dtype``, cast on access."""
    from torch.nn.utils import parametrize

    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            module.weight.data = module.weight.data.to(storage_dtype)
            parametrize.register_parametrization(module, "weight", CastOnAccess(compute_dtype), unsafe=True)


# Low-precision weight storage for a backward pass through the SD-Turbo UNet (64 x 64 latent, bfloat16 compute).
WEIGHT_STORAGE_VARIANTS = ("bf16", "fp8-diffusers-hooks", "fp8-cast-on-access", "fp8-cast-on-access-blocks")


def measure_weight_storage(variant: str, device: str) -> dict:
    """Peak memory of one forward + backward pass (to the input) of the SD-Turbo UNet, bfloat16 compute, with its
    weights stored in bfloat16 or float8 (e4m3): diffusers' layerwise casting, or a cast on access (with and without
    the UNet's block-level checkpointing, which recomputes the casts in the backward pass instead of keeping them)."""
    import diffusers
    from speed import _proc_status_kib

    device = torch.device(device)
    with torch.device(device):
        unet = diffusers.UNet2DConditionModel(**SD_TURBO_UNET).to(torch.bfloat16).eval()
    unet.requires_grad_(False)
    if variant == "fp8-diffusers-hooks":
        unet.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    elif variant.startswith("fp8-cast-on-access"):
        store_weights_cast_on_access(unet, torch.float8_e4m3fn, torch.bfloat16)
    if variant.endswith("blocks"):
        unet.enable_gradient_checkpointing()
    generator = torch.Generator(device).manual_seed(0)
    sample = torch.randn(1, 4, 64, 64, generator=generator, device=device, dtype=torch.bfloat16)
    context = torch.randn(1, 77, 1024, generator=generator, device=device, dtype=torch.bfloat16)
    weights_mib = sum(t.numel() * t.element_size() for t in unet.state_dict().values()) / 2**20

    def step():
        leaf = sample.clone().requires_grad_(True)
        output = unet(leaf, torch.tensor(999, device=device), encoder_hidden_states=context).sample
        torch.autograd.grad(output.float().square().sum(), leaf)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")
        before = _proc_status_kib("VmRSS") * 1024
    try:
        step()
    except RuntimeError as error:
        return {"weights_MiB": weights_mib, "backward": f"fails: {str(error).splitlines()[0]}"}
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = _proc_status_kib("VmHWM") * 1024 - before
    return {
        "weights_MiB": weights_mib,
        "backward": "works",
        "peak_MiB_above_weights": peak / 2**20,
        "weights_plus_peak_MiB": weights_mib + peak / 2**20,
    }


def parameters_millions(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def step_gflops(decoder: str, checkpointing: str) -> dict:
    """GFLOP of one optimisation step (matrix products and convolutions, forward and backward, recomputation
    included), counted on the meta device: exact, machine-independent and instant. Also G's share and the text
    encoder's (the generator prompt is encoded once per G call)."""
    generator = sd_turbo_generator(decoder, checkpointing, "meta")
    adapter = clip_vit_h_adapter("meta")
    latents = torch.zeros(1, generator.latent_dim, device="meta")
    counts = {}
    with FlopCounter() as counter:
        clip_langevin_step(generator, adapter, latents, num_augmentations=1)()
    counts["step"] = counter.total
    with FlopCounter() as counter:
        leaf = latents.clone().requires_grad_(True)
        torch.autograd.grad(generator.generate(leaf).sum(), leaf)
    counts["generator"] = counter.total
    with FlopCounter() as counter:
        leaf = torch.zeros(1, *generator.latent_shape, device="meta", requires_grad=True)
        torch.autograd.grad(generator._decode(leaf).sum(), leaf)
    counts["decoder"] = counter.total
    with FlopCounter() as counter:
        generator.encode_prompts([""])
    counts["text_encoder"] = counter.total
    return {f"{name}_gflop": value / 1e9 for name, value in counts.items()}


def measure_configuration(decoder: str, checkpointing: str, device: str) -> dict:
    """One optimisation step of this configuration in this process: seconds, and peak memory above what the process
    held before the step (the models' weights excluded): max allocated on a GPU, resident set size on a CPU."""
    from speed import _proc_status_kib

    device = torch.device(device)
    generator = sd_turbo_generator(decoder, checkpointing, device)
    adapter = clip_vit_h_adapter(device)
    latents = generator.sample_latents(1, generator=torch.Generator(device).manual_seed(0), device=device)
    step = clip_langevin_step(generator, adapter, latents, num_augmentations=1)
    weights_mib = (
        sum(p.numel() * p.element_size() for m in (generator, adapter.encoder) for p in m.parameters()) / 2**20
    )
    if device.type == "cuda":
        step()  # warm-up: kernels, allocator
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _proc_status_kib("VmRSS") * 1024
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = _proc_status_kib("VmHWM") * 1024 - before
    return {
        "seconds_per_step": seconds,
        "peak_MiB_above_weights": peak / 2**20,
        "weights_MiB": weights_mib,
        "generator_parameters_M": parameters_millions(generator),
        "decoder_parameters_M": parameters_millions(generator.decoder),
    }


def measure_in_subprocess(name: str, device: str, threads: int, memory_limit_gib: float) -> dict:
    """`measure_configuration` in a fresh process, stopped when its resident memory passes the limit (CPU)."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--configuration",
        name,
        "--device",
        device,
        "--threads",
        str(threads),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_rss_gib = 0.0
    while process.poll() is None:
        time.sleep(1)
        try:
            rss_kib = next(
                int(line.split()[1])
                for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:")
            )
        except (OSError, StopIteration):
            continue
        peak_rss_gib = max(peak_rss_gib, rss_kib / 2**20)
        if device == "cpu" and peak_rss_gib > memory_limit_gib:
            process.kill()
            process.wait()
            return {"stopped": f"resident memory passed {memory_limit_gib} GiB"}
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        return {"failed": stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {process.returncode}"}
    return {**json.loads(stdout.strip().splitlines()[-1]), "process_peak_RSS_GiB": peak_rss_gib}


def weight_storage_costs(device: str, threads: int, memory_limit_gib: float, variants=WEIGHT_STORAGE_VARIANTS):
    """One row per variant (of `WEIGHT_STORAGE_VARIANTS`), each measured in its own process."""
    rows = []
    for variant in variants:
        row = {"variant": variant, **measure_in_subprocess(variant, device, threads, memory_limit_gib)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def optimisation_step_costs(device: str, threads: int, memory_limit_gib: float, names=None) -> list[dict]:
    """One row per configuration: GFLOP (meta count) and the measured seconds and peak memory."""
    rows = []
    for name, decoder, checkpointing in CONFIGURATIONS:
        if names and name not in names:
            continue
        row = {"configuration": name, "decoder": decoder, "checkpointing": checkpointing}
        row.update(step_gflops(decoder, checkpointing))
        row.update(measure_in_subprocess(name, device, threads, memory_limit_gib))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def translator_head_sizes(latent_dim: int = 4 * 64 * 64) -> list[dict]:
    """Parameters and float32 memory (weights; weights + gradients + Adam's two moments for training) of
    `TranslatorModel` for the SD noise latent: the full mean head and shared-basis heads of a few ranks."""
    from tron_pipelines import TranslatorModel

    rows = []
    for condition_dim in HEAD_CONDITION_DIMS:
        for rank in HEAD_RANKS:
            with torch.device("meta"):
                translator = TranslatorModel(
                    condition_dim=condition_dim, latent_dim=latent_dim, num_components=NUM_COMPONENTS, mean_rank=rank
                )
            total = sum(p.numel() for p in translator.parameters())
            head = sum(p.numel() for name, p in translator.named_parameters() if name.startswith("mean_"))
            rows.append(
                {
                    "condition_dim": condition_dim,
                    "hidden_dim": 4 * condition_dim,
                    "mean_rank": rank or "full",
                    "mean_head_M": head / 1e6,
                    "translator_M": total / 1e6,
                    "weights_GiB": total * 4 / 2**30,
                    "training_GiB": total * 16 / 2**30,
                }
            )
    return rows


def translator_head_nll(num_pairs: int = 4096, steps: int = 1500, ranks=(None, 16, 4), seed: int = 0) -> list[dict]:
    """Held-out NLL (nats per latent dimension) of translators trained on pairs (z, f(G(z))) of a tiny random Stable
    Diffusion (4 x 8 x 8 noise, 1 Euler step) and a tiny random CLIP, with the full and shared-basis mean heads, against
    the prior N(0, I) (1.4189 nats per dimension). Random weights: what matters is the gap between the heads, not
    the absolute numbers."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel
    from workloads import _random_clip

    from tron_pipelines import EncoderAdapter, TranslatorModel
    from tron_pipelines.models import TextToImageGenerator

    torch.manual_seed(seed)
    tokenizer = tiny_vocabulary_tokenizer(16)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 16),
        norm_num_groups=4,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    scheduler = diffusers.EulerDiscreteScheduler(num_train_timesteps=100, timestep_spacing="trailing")
    generator = TextToImageGenerator.from_components(unet, text_encoder, tokenizer, scheduler, vae).eval()
    adapter = EncoderAdapter(
        _random_clip(projection_dim=16, image_size=16, patch_size=4, hidden_size=32, layers=2, heads=2)
    )
    with torch.no_grad():
        latents = generator.sample_latents(num_pairs, generator=torch.Generator().manual_seed(seed))
        conditions = torch.cat(
            [adapter.features(adapter.preprocess_generated(generator.generate(chunk))) for chunk in latents.split(256)]
        )
    split = num_pairs * 3 // 4
    rows = []
    for rank in ranks:
        torch.manual_seed(seed)
        translator = TranslatorModel(
            condition_dim=conditions.shape[1],
            latent_dim=generator.latent_dim,
            num_components=NUM_COMPONENTS,
            mean_rank=rank,
        )
        translator.initialize_spread(latents[:split])
        optimizer = torch.optim.Adam(translator.parameters(), lr=1e-3)
        batches = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            index = torch.randint(0, split, (64,), generator=batches)
            loss = translator.loss(conditions[index], latents[index]).nll
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            nll = -translator.log_prob(latents[split:], conditions[split:]).mean() / generator.latent_dim
        rows.append(
            {
                "mean_rank": rank or "full",
                "mean_head_parameters": sum(
                    p.numel() for name, p in translator.named_parameters() if name.startswith("mean_")
                ),
                "held_out_nll_per_dim": float(nll),
            }
        )
    return rows


# The section of run.py ----------------------------------------------------------------------------------------------
PARTS = ("heads", "steps", "weight-storage", "head-nll")


def add_arguments(group) -> None:
    group.add_argument(
        "--text_to_image_parts",
        nargs="+",
        default=list(PARTS),
        choices=PARTS,
        help="text-to-image: what to measure (default: all): translator head sizes, one optimisation step per "
        "configuration, low-precision weight storage, the full vs shared-basis head NLL.",
    )
    group.add_argument(
        "--text_to_image_configurations",
        nargs="+",
        default=[name for name, _, _ in CONFIGURATIONS],
        choices=[name for name, _, _ in CONFIGURATIONS],
        metavar="CONFIGURATION",
        help="text-to-image: decoder-checkpointing configurations of the steps part, of "
        f"{', '.join(name for name, _, _ in CONFIGURATIONS)} (default: all). GFLOP are counted for every one named "
        "even when its measured run is stopped.",
    )
    group.add_argument(
        "--weight_storage_variants",
        nargs="+",
        default=list(WEIGHT_STORAGE_VARIANTS),
        choices=WEIGHT_STORAGE_VARIANTS,
        help="text-to-image: weight storage variants of the weight-storage part (default: all).",
    )
    group.add_argument(
        "--memory_limit_gib",
        type=float,
        default=12.0,
        help="text-to-image: on a CPU, stop a configuration's process when its resident memory passes this "
        "(default 12; the row says it was stopped).",
    )


def check(args) -> str | None:
    if args.memory_limit_gib <= 0:
        return f"--memory_limit_gib must be positive, got {args.memory_limit_gib}"
    return None


STEP_COLUMNS = [
    ("configuration", "configuration", ""),
    ("step_gflop", "GFLOP / step", ".0f"),
    ("generator_gflop", "of which G", ".0f"),
    ("decoder_gflop", "of which decoder", ".0f"),
    ("seconds_per_step", "s / step", ".1f"),
    ("peak_MiB_above_weights", "peak MiB above weights", ".0f"),
    ("weights_MiB", "weights MiB", ".0f"),
    ("process_peak_RSS_GiB", "process peak RSS GiB", ".1f"),
    ("note", "note", ""),
]
HEAD_COLUMNS = [
    ("condition_dim", "condition", "d"),
    ("mean_rank", "mean head", ""),
    ("mean_head_M", "mean head M params", ".1f"),
    ("translator_M", "translator M params", ".1f"),
    ("weights_GiB", "weights GiB (fp32)", ".2f"),
    ("training_GiB", "+ grads + Adam GiB", ".2f"),
]
WEIGHT_STORAGE_COLUMNS = [
    ("variant", "weights stored as", ""),
    ("backward", "backward pass", ""),
    ("weights_MiB", "weights MiB", ".0f"),
    ("peak_MiB_above_weights", "peak MiB above weights", ".0f"),
    ("weights_plus_peak_MiB", "weights + peak MiB", ".0f"),
    ("note", "note", ""),
]
NLL_COLUMNS = [
    ("mean_rank", "mean head", ""),
    ("mean_head_parameters", "mean head params", "d"),
    ("held_out_nll_per_dim", "NLL nats / dim (prior 1.4189)", ".4f"),
]


def with_note(rows: list[dict]) -> list[dict]:
    """Rows with a ``note`` column saying why a measured run gave no numbers (stopped or failed)."""
    return [{**row, "note": row.get("stopped") or row.get("failed") or ""} for row in rows]


def run(args, sizes: dict, report) -> None:
    """Translator head sizes, the cost of an optimisation step per configuration, low-precision weight storage and
    the head NLL trade-off, as ``--text_to_image_parts`` asks; each measured run in a fresh process."""
    results = {}
    if "heads" in args.text_to_image_parts:
        results["heads"] = translator_head_sizes()
        report.emit(
            "Text-to-image: translator mean head for a 4 x 64 x 64 noise latent (K = 10, hidden = 4 x condition)",
            format_table(results["heads"], HEAD_COLUMNS),
        )
    if "steps" in args.text_to_image_parts:
        results["steps"] = optimisation_step_costs(
            args.device, args.threads, args.memory_limit_gib, args.text_to_image_configurations
        )
        report.emit(
            f"Text-to-image: one optimisation step, SD-Turbo UNet + decoder + CLIP ViT-H/14 at 512 px, batch 1, "
            f"float32, {args.device}, {args.threads} threads",
            format_table(with_note(results["steps"]), STEP_COLUMNS)
            + "\n\nGFLOP: matrix products and convolutions, forward and backward, recomputation included, counted on "
            "the meta device (exact, machine-independent). Peak memory above the weights: max allocated on a GPU, "
            "the process's resident high-water mark on a CPU.",
        )
    if "weight-storage" in args.text_to_image_parts:
        results["weight_storage"] = weight_storage_costs(
            args.device, args.threads, args.memory_limit_gib, args.weight_storage_variants
        )
        report.emit(
            f"Text-to-image: weight storage for a backward pass, SD-Turbo UNet forward + backward to its input, "
            f"bfloat16 compute, {args.device}",
            format_table(with_note(results["weight_storage"]), WEIGHT_STORAGE_COLUMNS),
        )
    if "head-nll" in args.text_to_image_parts:
        results["head_nll"] = translator_head_nll(num_pairs=sizes["nll_pairs"], steps=sizes["nll_steps"])
        report.emit(
            f"Text-to-image: full vs shared-basis mean head, held-out NLL on {sizes['nll_pairs']} pairs of a tiny "
            f"random SD (256-value noise) + tiny CLIP, {sizes['nll_steps']} Adam steps",
            format_table(results["head_nll"], NLL_COLUMNS),
        )
    report.write_json("text-to-image", results)


SECTION = Section(
    names=("text-to-image",),
    summary="A text-to-image G (SD-Turbo-sized UNet + VAE or TAESD, CLIP ViT-H/14 f, 512 px, random weights): "
    "GFLOP, seconds and peak memory of one optimisation step with and without checkpointing, fp8 weight storage, "
    "translator head sizes and the shared-basis head's NLL trade-off.",
    run=run,
    add_arguments=add_arguments,
    check=check,
    quick={"nll_pairs": 1024, "nll_steps": 300},
    full={"nll_pairs": 4096, "nll_steps": 1500},
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configuration",
        choices=[name for name, _, _ in CONFIGURATIONS] + list(WEIGHT_STORAGE_VARIANTS),
        required=True,
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.configuration in WEIGHT_STORAGE_VARIANTS:
        print(json.dumps(measure_weight_storage(args.configuration, args.device)))
        return
    _, decoder, checkpointing = next(c for c in CONFIGURATIONS if c[0] == args.configuration)
    print(json.dumps(measure_configuration(decoder, checkpointing, args.device)))


if __name__ == "__main__":
    main()
