"""Speed sections: throughput against the one-at-a-time loop, overhead against the bare forward+backward passes with
a per-step breakdown, memory against batch size and steps, and the optional speed features.

Every timing is the median of several runs (the machine is shared); batched and one-at-a-time runs use one
generator per image with the same seeds, so they do exactly the same work and give the same images.
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from common import (
    FlopCounter,
    format_table,
    matmul_gflops,
    median_seconds,
    new_figure,
    save_figure,
    seeded_generators,
    timed,
)
from harness import Section
from workloads import SYNTHETIC_WORKLOADS, Workload, load_workload

from tron_pipelines.energies import FEATURE_ENERGIES, ConditionTerm, TronEnergy
from tron_pipelines.models.batch_norm_folding import foldable_pairs


BENCHMARKS_DIR = Path(__file__).resolve().parent


# Speed features ---------------------------------------------------------------------------------------------------
# name -> (pipeline call keyword arguments, model setup). Setups: `TronPipeline.fuse_batch_norm`, channels_last
# memory format for G and f, and `TronPipeline.enable_energy_compile`.
FEATURES = {
    "float32 eager": ({}, ()),
    "bf16 autocast": ({"autocast_dtype": torch.bfloat16}, ()),
    "fp16 autocast": ({"autocast_dtype": torch.float16}, ()),
    "channels_last": ({}, ("channels_last",)),
    "channels_last + bf16 autocast": ({"autocast_dtype": torch.bfloat16}, ("channels_last",)),
    "fused batch norm": ({}, ("fuse_batch_norm",)),
    "fused batch norm + channels_last": ({}, ("fuse_batch_norm", "channels_last")),
    "torch.compile": ({}, ("compile",)),
    "torch.compile + channels_last + bf16 autocast": (
        {"autocast_dtype": torch.bfloat16},
        ("compile", "channels_last"),
    ),
}


def applicable_features(workload: Workload, include_compile: bool = True) -> list[str]:
    """The `FEATURES` that can change anything on this workload and device: fp16 autocast only on GPUs, BatchNorm
    folding only where G or f has a BatchNorm to fold, compile only when asked for."""
    pipe = workload.pipe
    has_folds = any(foldable_pairs(model) for model in (pipe.generator, pipe.encoder))
    return [
        name
        for name in FEATURES
        if ("fp16" not in name or workload.device.type == "cuda")
        and ("fused batch norm" not in name or has_folds)
        and ("compile" not in name or include_compile)
    ]


@contextmanager
def speed_feature(workload: Workload, name: str):
    """Apply feature ``name`` to the workload's pipeline for the block; yields the extra call keyword arguments."""
    call_kwargs, setups = FEATURES[name]
    pipe = workload.pipe
    if "fuse_batch_norm" in setups:
        pipe.fuse_batch_norm()
    models = (pipe.generator, pipe.encoder)
    if "channels_last" in setups:
        for model in models:
            model.to(memory_format=torch.channels_last)
    if "compile" in setups:
        pipe.enable_energy_compile()
    try:
        yield call_kwargs
    finally:
        if "channels_last" in setups:
            for model in models:
                model.to(memory_format=torch.contiguous_format)
        if "compile" in setups:
            pipe.disable_energy_compile()
        if "fuse_batch_norm" in setups:
            pipe.unfuse_batch_norm()


# Calls ------------------------------------------------------------------------------------------------------------
def batched_call(workload: Workload, batch_size: int, steps: int, seed: int = 0, **call_kwargs):
    """One pipeline call for ``batch_size`` images, image ``i`` seeded with ``seed + i``."""
    generators = seeded_generators(range(seed, seed + batch_size), workload.device)
    return workload.pipe(
        **workload.condition_kwargs(batch_size),
        num_inference_steps=steps,
        generator=generators,
        output_type="pt",
        **call_kwargs,
    )


def one_at_a_time(workload: Workload, batch_size: int, steps: int, seed: int = 0, **call_kwargs) -> dict:
    """The official implementation's approach: one pipeline call per image, in sequence, with the same conditions
    and seeds as `batched_call`. Returns the stacked ``images``, ``latents`` and ``energies``."""
    outputs = [
        workload.pipe(
            **workload.condition_kwargs(1, start=index),
            num_inference_steps=steps,
            generator=seeded_generators([seed + index], workload.device),
            output_type="pt",
            **call_kwargs,
        )
        for index in range(batch_size)
    ]
    return {name: torch.cat([getattr(out, name) for out in outputs]) for name in ("images", "latents", "energies")}


def bare_inputs(workload: Workload, batch_size: int, seed: int = 0) -> dict:
    """What the bare passes need: the call's conditions, its initial packed latents, the feature energy."""
    pipe, device = workload.pipe, workload.device
    adapter = pipe.encoder_adapter
    kwargs = workload.condition_kwargs(batch_size)
    conditions = pipe.encode_condition(adapter, device=device, **kwargs)
    initial = pipe(
        **kwargs, num_inference_steps=0, generator=torch.Generator(device).manual_seed(seed), output_type="latent"
    )
    return {
        "adapter": adapter,
        "conditions": conditions,
        "latents": initial.latents,
        "feature_energy": FEATURE_ENERGIES[adapter.feature_energy],
        "augment": pipe.augmentation,
    }


def bare_forward_backward(workload: Workload, inputs: dict, steps: int, num_augmentations: int, seed: int = 0):
    """The floor the pipeline is measured against, the passes through G and f a call needs with no pipeline around
    them: the forwards that score the pipeline's ``default_num_candidates`` initial draws (none for a single draw);
    ``steps`` times G forward, augmentations, f's preprocessing and forward, the energy and
    ``torch.autograd.grad``; and the forward that renders the final images and scores their energies."""
    pipe, device = workload.pipe, workload.device
    adapter, conditions, feature_energy = inputs["adapter"], inputs["conditions"], inputs["feature_energy"]
    augment, generator = inputs["augment"], torch.Generator(device).manual_seed(seed)
    latents = inputs["latents"]

    def energy(latents, num_copies):
        images = pipe.generator.generate(latents)
        copies = augment(images, num_copies, generator) if num_copies else images.unsqueeze(1)
        features = adapter.features(adapter.preprocess_generated(copies.flatten(0, 1)))
        return feature_energy(features.float().view(len(latents), copies.shape[1], -1), conditions), images

    num_candidates = pipe.config.default_num_candidates
    with torch.no_grad():
        for _ in range(num_candidates if num_candidates > 1 else 0):
            energy(latents, 0)
    with torch.enable_grad():
        for _ in range(steps):
            leaf = latents.detach().requires_grad_(True)
            torch.autograd.grad(energy(leaf, num_augmentations)[0].sum(), leaf)
    with torch.no_grad():
        return energy(latents, num_augmentations)


# Throughput -------------------------------------------------------------------------------------------------------
def throughput(
    workload: Workload,
    batch_sizes: list[int],
    steps: int,
    repeats: int,
    loop_batch: int = 32,
    num_augmentations: int | None = None,
    feature: str = "float32 eager",
) -> dict:
    """Images per second of one batched call for each batch size, against the one-at-a-time loop over
    ``loop_batch`` images (its rate does not depend on the batch size), and how far their images differ. Both sides
    run with the same speed ``feature``. The matrix-product and convolution work of one image (`FlopCounter`) turns
    each rate into GFLOP/s, to compare with what the machine can do at all (`common.matmul_gflops`).

    The measurement runs in ``repeats`` rounds of one loop and one batched call per batch size, back to back; each
    speed-up is the median of its per-round ratios, so a change of machine speed between rounds (other tenants of a
    shared machine) moves both sides of a ratio alike. The rates are the medians over the rounds."""
    device = workload.device
    with speed_feature(workload, feature) as extra:
        if num_augmentations is not None:
            extra = {**extra, "num_augmentations": num_augmentations}
        one_at_a_time(workload, 1, steps, **extra)  # warm-up: one image is enough
        for batch_size in batch_sizes:
            batched_call(workload, batch_size, steps, **extra)
        loop_times, batched_times, outputs = [], {batch_size: [] for batch_size in batch_sizes}, {}
        for _ in range(repeats):
            seconds, single = timed(lambda: one_at_a_time(workload, loop_batch, steps, **extra), device)
            loop_times.append(seconds)
            for batch_size in batch_sizes:
                seconds, outputs[batch_size] = timed(
                    lambda: batched_call(workload, batch_size, steps, **extra), device
                )
                batched_times[batch_size].append(seconds)
        loop_seconds = statistics.median(loop_times)
        loop_rate = loop_batch / loop_seconds
        rows = []
        for batch_size, times in batched_times.items():
            seconds = statistics.median(times)
            ratios = [batch_size * loop / (loop_batch * batched) for loop, batched in zip(loop_times, times)]
            rows.append(
                {
                    "batch_size": batch_size,
                    "batched_seconds": seconds,
                    "batched_images_per_second": batch_size / seconds,
                    "loop_images_per_second": loop_rate,
                    "speedup": statistics.median(ratios),
                    "speedup_per_round": ratios,
                }
            )
        batched = outputs[loop_batch] if loop_batch in outputs else batched_call(workload, loop_batch, steps, **extra)
        sensitivity = perturbation_sensitivity(workload, loop_batch, steps, **extra)
        # The same work per image at any batch size, so one image is enough to count it.
        with FlopCounter() as counter:
            batched_call(workload, 1, steps, **extra)
    gflops_per_image = counter.total / 1e9
    for row in rows:
        row["batched_gflops_per_second"] = row["batched_images_per_second"] * gflops_per_image
        row["loop_gflops_per_second"] = loop_rate * gflops_per_image
    # Float rounding differs with the batch size (different kernels), and Langevin amplifies it for the odd sample
    # whose gradient direction is unstable; `sensitivity` shows the same amplification of a 1e-6 change of the
    # initial latents within one path.
    return {
        "workload": workload.name,
        "feature": feature,
        "steps": steps,
        "num_augmentations": workload.pipe.config.default_num_augmentations
        if num_augmentations is None
        else num_augmentations,
        "loop_batch": loop_batch,
        "loop_seconds": loop_seconds,
        "gflops_per_image": gflops_per_image,
        "rows": rows,
        "agreement": {
            **image_differences(batched.images, single["images"]),
            "max_abs_energy_difference": (batched.energies - single["energies"]).abs().max().item(),
        },
        "sensitivity_to_1e-6_latent_change": sensitivity,
    }


def perturbation_sensitivity(workload: Workload, batch_size: int, steps: int, seed: int = 0, **call_kwargs) -> dict:
    """How much the batched path itself moves when the initial latents move by 1e-6: the scale below which
    batched-vs-one-at-a-time differences are float rounding amplified by the dynamics, not a coupling of samples."""
    device = workload.device
    initial = batched_call(workload, batch_size, 0, seed, **call_kwargs).latents
    nudge = 1e-6 * torch.randn(initial.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    runs = [
        batched_call(workload, batch_size, steps, seed, latents=latents, **call_kwargs).images
        for latents in (initial, initial + nudge)
    ]
    return image_differences(*runs)


def image_differences(images: torch.Tensor, others: torch.Tensor) -> dict:
    """Per image, the largest pixel difference between two runs ``(B, ...)``; summarised by the median, the maximum
    and a count under 1e-3, because Langevin amplifies rounding for the odd sample only."""
    differences = (images - others).flatten(1).abs().amax(dim=1)
    return {
        "median_max_abs_image_difference": differences.median().item(),
        "max_abs_image_difference": differences.max().item(),
        "images_within_1e-3": int((differences < 1e-3).sum()),
    }


def best_settings_speedup(results: list[dict], batch_size: int, matmul_gflops: float) -> dict:
    """Fastest batched setting vs fastest one-at-a-time setting at ``batch_size``, over the `throughput` results of
    one workload with the pipeline's own number of augmentations (speed features help the two sides differently).
    The two settings were timed in different rounds, so this speed-up is a ratio of median rates; the default
    settings' speed-up is, like every row's, the median of back-to-back ratios.

    Also how the default (float32 eager) batched call uses the machine: its GFLOP/s as a share of the float32
    matrix-product rate ``matmul_gflops``, and the speed-up over the loop that a batched call running at that full
    rate would have (the float32 ceiling of batching on this machine)."""
    default_augmentations = max(result["num_augmentations"] for result in results)
    candidates = [
        (result, row)
        for result in results
        if result["num_augmentations"] == default_augmentations
        for row in result["rows"]
        if row["batch_size"] == batch_size
    ]
    batched_result, batched_row = max(candidates, key=lambda pair: pair[1]["batched_images_per_second"])
    loop_result, loop_row = max(candidates, key=lambda pair: pair[1]["loop_images_per_second"])
    default = next(row for result, row in candidates if result["feature"] == "float32 eager")
    return {
        "workload": results[0]["workload"],
        "batch_size": batch_size,
        "num_augmentations": default_augmentations,
        "batched_feature": batched_result["feature"],
        "batched_images_per_second": batched_row["batched_images_per_second"],
        "loop_feature": loop_result["feature"],
        "loop_images_per_second": loop_row["loop_images_per_second"],
        "speedup": batched_row["batched_images_per_second"] / loop_row["loop_images_per_second"],
        "default_speedup": default["speedup"],
        "matmul_gflops": matmul_gflops,
        "default_batched_gflops_per_second": default["batched_gflops_per_second"],
        "default_share_of_matmul_rate": default["batched_gflops_per_second"] / matmul_gflops,
        "default_loop_gflops_per_second": default["loop_gflops_per_second"],
        "float32_ceiling_speedup": matmul_gflops / default["loop_gflops_per_second"],
    }


# Overhead and per-step breakdown ------------------------------------------------------------------------------------
def overhead(workload: Workload, batch_size: int, steps: int, repeats: int) -> dict:
    """Pipeline call time over the bare forward+backward time of the same batch and steps, interleaved so that both
    see the same machine load, and the per-step time of each stage."""
    pipe, device = workload.pipe, workload.device
    num_augmentations = pipe.config.default_num_augmentations
    kwargs = workload.condition_kwargs(batch_size)
    inputs = bare_inputs(workload, batch_size)

    def pipeline_call(num_steps):
        return pipe(
            **kwargs, num_inference_steps=num_steps, generator=torch.Generator(device).manual_seed(0), output_type="pt"
        )

    pipeline_call(steps), bare_forward_backward(workload, inputs, steps, num_augmentations)  # warm-up
    pipeline_times, bare_times, zero_step_times, bare_zero_step_times = [], [], [], []
    for _ in range(repeats):
        pipeline_times.append(timed(lambda: pipeline_call(steps), device)[0])
        bare_times.append(timed(lambda: bare_forward_backward(workload, inputs, steps, num_augmentations), device)[0])
        zero_step_times.append(timed(lambda: pipeline_call(0), device)[0])
        bare_zero_step_times.append(
            timed(lambda: bare_forward_backward(workload, inputs, 0, num_augmentations), device)[0]
        )
    pipeline_seconds, bare_seconds = statistics.median(pipeline_times), statistics.median(bare_times)
    zero_step_seconds, bare_zero_step_seconds = (
        statistics.median(zero_step_times),
        statistics.median(bare_zero_step_times),
    )
    stages = step_breakdown(workload, inputs, batch_size, num_augmentations, steps, repeats)
    per_step_pipeline = (pipeline_seconds - zero_step_seconds) / steps
    stages["pipeline bookkeeping"] = max(per_step_pipeline - sum(stages.values()), 0.0)
    return {
        "workload": workload.name,
        "batch_size": batch_size,
        "steps": steps,
        "num_augmentations": num_augmentations,
        "pipeline_seconds": pipeline_seconds,
        "bare_seconds": bare_seconds,
        "overhead_ratio": pipeline_seconds / bare_seconds,
        "median_pairwise_ratio": statistics.median(p / b for p, b in zip(pipeline_times, bare_times)),
        "fixed_seconds": zero_step_seconds,
        "bare_fixed_seconds": bare_zero_step_seconds,
        "per_step_seconds": per_step_pipeline,
        "bare_per_step_seconds": (bare_seconds - bare_zero_step_seconds) / steps,
        "stage_seconds_per_step": stages,
        "host_syncs_in_call": count_host_syncs(lambda: pipeline_call(steps), device),
    }


def step_breakdown(
    workload: Workload, inputs: dict, batch_size: int, num_augmentations: int, steps: int, repeats: int
) -> dict[str, float]:
    """Median seconds per Langevin step of each stage, timed one by one (with a GPU sync between stages) in a loop
    that does what the pipeline's loop does."""
    pipe, device = workload.pipe, workload.device
    adapter = inputs["adapter"]
    energy = TronEnergy(
        pipe.generator,
        adapter,
        inputs["feature_energy"],
        [ConditionTerm(inputs["conditions"], 1.0)],
        num_augmentations=num_augmentations,
        augment=inputs["augment"],
    )
    scheduler = copy.deepcopy(pipe.scheduler)
    generator = torch.Generator(device).manual_seed(0)
    samples = {name: [] for name in ("generator", "augmentation", "encoder + energy", "backward", "scheduler")}

    def clock(name, fn):
        seconds, result = timed(fn, device)
        samples[name].append(seconds)
        return result

    state = pipe.prepare_latent_state(inputs["conditions"], "translator", generator, None, device)
    for _ in range(max(1, repeats)):
        scheduler.set_timesteps(steps, device=device)
        for t in scheduler.timesteps:
            with torch.enable_grad():
                leaves = [state.langevin.detach().requires_grad_(True)]
                if state.auxiliary is not None:
                    leaves.append(state.auxiliary.detach().requires_grad_(True))
                packed = state.packed(*leaves)
                images = clock("generator", lambda: pipe.generator.generate(packed))
                copies = clock(
                    "augmentation",
                    lambda: (
                        energy.augment.apply(images, energy.sample_augmentations(packed, generator))
                        if num_augmentations
                        else images.unsqueeze(1)
                    ),
                )

                def encode():
                    features = adapter.features(adapter.preprocess_generated(copies.flatten(0, 1)))
                    return energy.feature_energy(
                        features.float().view(batch_size, copies.shape[1], -1), inputs["conditions"]
                    )

                energies = clock("encoder + energy", encode)
                grads = clock("backward", lambda: torch.autograd.grad(energies.sum(), leaves))
            step = clock(
                "scheduler",
                lambda: scheduler.step(
                    grads[0],
                    t,
                    state.langevin,
                    generator=generator,
                    auxiliary_output=grads[1] if len(grads) > 1 else None,
                    auxiliary_sample=state.auxiliary,
                ),
            )
            state = type(state)(step.prev_sample, step.prev_auxiliary_sample, state.num_components)
    return {name: statistics.median(values) for name, values in samples.items()}


def count_host_syncs(fn, device: torch.device) -> int | None:
    """Host-device synchronisations during ``fn`` (CUDA's sync debug mode); ``None`` on CPU, where there are none."""
    if device.type != "cuda":
        return None
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


# Memory -----------------------------------------------------------------------------------------------------------
def peak_memory_of_call(workload: Workload, batch_size: int, steps: int) -> dict:
    """Peak memory of one call above what the process held before it: resident set size on CPU (the kernel's
    high-water mark, reset through ``/proc/self/clear_refs``), max allocated on GPU."""
    device = workload.device
    batched_call(workload, 1, 1)  # lazy initialisation is not the call's memory
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        batched_call(workload, batch_size, steps)
        torch.cuda.synchronize()
        return {
            "batch_size": batch_size,
            "steps": steps,
            "peak_MiB": (torch.cuda.max_memory_allocated() - before) / 2**20,
        }
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _proc_status_kib("VmRSS")
    batched_call(workload, batch_size, steps)
    return {"batch_size": batch_size, "steps": steps, "peak_MiB": (_proc_status_kib("VmHWM") - before) / 1024}


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}.")


def memory_probe_in_subprocess(workload_name: str, device: str, batch_size: int, steps: int, threads: int) -> dict:
    """`peak_memory_of_call` in a fresh process: memory a process already holds (freed but cached by the
    allocator) would otherwise hide part of the next measurement."""
    command = [
        sys.executable,
        str(BENCHMARKS_DIR / "run.py"),
        "memory-probe",
        "--pipeline",
        workload_name,
        "--device",
        device,
        "--probe_batch",
        str(batch_size),
        "--probe_steps",
        str(steps),
        "--threads",
        str(threads),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if result.returncode != 0:
        raise RuntimeError(f"Memory probe failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def memory_per_step(workload: Workload, batch_size: int, steps: int) -> dict:
    """Memory after every step of one long call (RSS on CPU, allocated on GPU): flat when no autograd graph or
    other state is kept from step to step. The slope is fitted over the second half of the steps."""
    device = workload.device
    trace = []
    batched_call(workload, batch_size, 2)  # the allocator's first growth at this batch size is not per-step memory

    def record(pipe, step, timestep, tensors):
        if device.type == "cuda":
            torch.cuda.synchronize()
            trace.append(torch.cuda.memory_allocated() / 2**20)
        else:
            trace.append(_proc_status_kib("VmRSS") / 1024)
        return {}

    batched_call(workload, batch_size, steps, callback_on_step_end=record)
    half = np.arange(len(trace) // 2, len(trace))
    slope = float(np.polyfit(half, np.asarray(trace)[half], 1)[0]) if len(half) > 1 else float("nan")
    return {
        "batch_size": batch_size,
        "steps": steps,
        "MiB_per_step": trace,
        "growth_MiB_per_step_second_half": slope,
        "growth_first_to_last_MiB": trace[-1] - trace[0],
        "measure": "allocated" if device.type == "cuda" else "RSS",
    }


def memory(
    workload: Workload,
    batch_sizes: list[int],
    step_counts: list[int],
    reference_batch: int,
    reference_steps: int,
    trace_steps: int,
    threads: int,
) -> dict:
    """Peak memory of a call vs batch size (at ``reference_steps``) and vs steps (at ``reference_batch``), each in a
    fresh process, and the per-step memory trace of one long call."""
    device = str(workload.device)
    probes = {}

    def probe(batch_size, steps):
        # The two sweeps meet at (reference_batch, reference_steps): one fresh process is enough for it.
        if (batch_size, steps) not in probes:
            probes[batch_size, steps] = memory_probe_in_subprocess(
                workload.name_or_path, device, batch_size, steps, threads
            )
        return probes[batch_size, steps]

    by_batch = [probe(b, reference_steps) for b in batch_sizes]
    by_steps = [probe(reference_batch, s) for s in step_counts]
    return {
        "workload": workload.name,
        "measure": "max allocated (GPU)" if device.startswith("cuda") else "peak RSS above the pre-call RSS (CPU)",
        "by_batch": by_batch,
        "by_steps": by_steps,
        "per_step": memory_per_step(workload, reference_batch, trace_steps),
    }


# Diffusion sampler cost ---------------------------------------------------------------------------------------------
def sampler_cost(
    workload: Workload, batch_size: int, sampler_steps: list[int], langevin_steps: int, repeats: int
) -> dict:
    """What one Langevin step costs when G is a diffusion sampler, for each number of sampler steps, with and without
    gradient checkpointing: seconds (median over ``repeats`` of a ``langevin_steps``-step call minus a 0-step call,
    per step), GFLOP of matrix products and convolutions (`FlopCounter`, forward and backward, the recomputation
    included; G's share counted on its own forward + backward), and the call's peak memory above what the process held
    before it (`peak_memory_of_call`, in this process)."""
    pipe, device = workload.pipe, workload.device
    base = pipe.generator
    rows = []
    try:
        for num_steps in sampler_steps:
            for checkpointing in (False, True):
                generator = base.with_num_sampler_steps(num_steps)
                if checkpointing:
                    generator.enable_gradient_checkpointing()
                pipe.generator = generator
                seconds, zero_step_seconds = (
                    median_seconds(lambda steps=steps: batched_call(workload, batch_size, steps), device, repeats)[0]
                    for steps in (langevin_steps, 0)
                )
                flops = []
                for steps in (1, 0):
                    with FlopCounter() as counter:
                        batched_call(workload, batch_size, steps)
                    flops.append(counter.total)
                latents = generator.sample_latents(
                    batch_size, generator=torch.Generator(device).manual_seed(0), device=device
                )
                with FlopCounter() as generator_counter:
                    leaf = latents.requires_grad_(True)
                    torch.autograd.grad(generator.generate(leaf).sum(), leaf)
                rows.append(
                    {
                        "sampler_steps": num_steps,
                        "checkpointing": checkpointing,
                        "seconds_per_langevin_step": (seconds - zero_step_seconds) / langevin_steps,
                        "gflops_per_langevin_step": (flops[0] - flops[1]) / 1e9,
                        "generator_gflops": generator_counter.total / 1e9,
                        "peak_MiB": peak_memory_of_call(workload, batch_size, 1)["peak_MiB"],
                    }
                )
    finally:
        pipe.generator = base
    return {
        "workload": workload.name,
        "batch_size": batch_size,
        "num_augmentations": pipe.config.default_num_augmentations,
        "langevin_steps": langevin_steps,
        "parameters_M": sum(p.numel() for p in base.parameters()) / 1e6,
        "measure": "max allocated (GPU)"
        if device.type == "cuda"
        else "peak RSS above the pre-call RSS (CPU, in-process)",
        "rows": rows,
    }


# Speed features section -------------------------------------------------------------------------------------------
def speed_features(workload: Workload, batch_size: int, steps: int, repeats: int, include_compile: bool) -> dict:
    """Images per second at ``batch_size`` for each optional speed feature, its speed-up over float32 eager, and how
    far its energies move from the float32 eager run with the same seeds (autocast changes numerics; channels_last,
    fused batch norm and compile only rounding).

    Features are timed in interleaved rounds (one call of each per round, after a first round that is not counted and
    gives the first-call seconds), and a speed-up is the median of per-round ratios to float32 eager: drift of a shared
    machine then hits both sides alike. Compiled features run after the others, one warm-up and ``repeats`` calls each
    (a fresh compile every round would measure compilation); their ratios use float32 eager's median.
    """
    device = workload.device
    names = applicable_features(workload, include_compile)
    interleaved = [name for name in names if "compile" not in name]
    compiled = [name for name in names if "compile" in name]

    def call(name: str):
        with speed_feature(workload, name) as call_kwargs:
            return timed(lambda: batched_call(workload, batch_size, steps, **call_kwargs), device)

    seconds, outputs, first_call_seconds = {name: [] for name in names}, {}, {}
    for round_index in range(repeats + 1):
        for name in interleaved:
            elapsed, outputs[name] = call(name)
            if round_index == 0:
                first_call_seconds[name] = elapsed
            else:
                seconds[name].append(elapsed)
    for name in compiled:
        with speed_feature(workload, name) as call_kwargs:
            first_call_seconds[name], _ = timed(
                lambda: batched_call(workload, batch_size, steps, **call_kwargs), device
            )
            for _ in range(repeats):
                elapsed, outputs[name] = timed(
                    lambda: batched_call(workload, batch_size, steps, **call_kwargs), device
                )
                seconds[name].append(elapsed)
    base = interleaved[0]
    reference = outputs[base].energies
    rows = []
    for name in names:
        if name in interleaved:
            ratios = [baseline / elapsed for baseline, elapsed in zip(seconds[base], seconds[name])]
        else:
            ratios = [statistics.median(seconds[base]) / elapsed for elapsed in seconds[name]]
        changes = (outputs[name].energies - reference).abs()
        rows.append(
            {
                "feature": name,
                "images_per_second": batch_size / statistics.median(seconds[name]),
                "speedup": statistics.median(ratios),
                "speedup_per_round": ratios,
                "interleaved": name in interleaved,
                "mean_energy": outputs[name].energies.mean().item(),
                "median_abs_energy_change": changes.median().item(),
                "max_abs_energy_change": changes.max().item(),
                "first_call_seconds": first_call_seconds[name],
            }
        )
    return {"workload": workload.name, "batch_size": batch_size, "steps": steps, "rows": rows}


# Plots ------------------------------------------------------------------------------------------------------------
def plot_throughput(results: list[dict], path: Path) -> str:
    figure, axes = new_figure(len(results))
    for axis, result in zip(axes, results):
        batch_sizes = [row["batch_size"] for row in result["rows"]]
        axis.plot(
            batch_sizes, [row["batched_images_per_second"] for row in result["rows"]], "o-", label="batched pipeline"
        )
        axis.plot(batch_sizes, [row["loop_images_per_second"] for row in result["rows"]], "s--", label="one at a time")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("batch size")
        axis.set_ylabel("images / s")
        axis.set_title(f"{result['workload']}, {result['steps']} steps, N={result['num_augmentations']}", fontsize=9)
        axis.legend(fontsize=8)
    return save_figure(figure, path)


def plot_overhead(results: list[dict], path: Path) -> str:
    figure, axes = new_figure(len(results))
    for axis, result in zip(axes, results):
        stages = result["stage_seconds_per_step"]
        bottom = 0.0
        for name, seconds in stages.items():
            axis.bar(["pipeline step"], [seconds * 1e3], bottom=bottom, label=name)
            bottom += seconds * 1e3
        axis.bar(["bare fwd+bwd step"], [result["bare_per_step_seconds"] * 1e3], color="grey")
        axis.set_ylabel("ms per step")
        axis.set_title(
            f"{result['workload']}, batch {result['batch_size']}: ratio {result['overhead_ratio']:.2f}", fontsize=9
        )
        axis.legend(fontsize=7)
    return save_figure(figure, path)


def plot_memory(results: list[dict], path: Path) -> str:
    figure, axes = new_figure(3)
    for result in results:
        axes[0].plot(
            [r["batch_size"] for r in result["by_batch"]],
            [r["peak_MiB"] for r in result["by_batch"]],
            "o-",
            label=result["workload"],
        )
        axes[1].plot(
            [r["steps"] for r in result["by_steps"]],
            [r["peak_MiB"] for r in result["by_steps"]],
            "o-",
            label=result["workload"],
        )
        trace = result["per_step"]["MiB_per_step"]
        axes[2].plot(
            range(1, len(trace) + 1), trace, label=f"{result['workload']} (batch {result['per_step']['batch_size']})"
        )
    axes[0].set(xlabel="batch size", ylabel="peak MiB above pre-call", title="peak vs batch size")
    axes[1].set(xlabel="Langevin steps", ylabel="peak MiB above pre-call", title="peak vs steps")
    axes[2].set(xlabel="step", ylabel=f"{results[0]['per_step']['measure']} MiB", title="memory after each step")
    for axis in axes:
        axis.legend(fontsize=7)
    return save_figure(figure, path)


# The sections of run.py ---------------------------------------------------------------------------------------------
SPEED_SECTIONS = ("throughput", "overhead", "memory", "features")


def add_speed_arguments(group) -> None:
    group.add_argument(
        "--speed_workloads",
        nargs="+",
        default=None,
        help=f"Workloads of the speed sections: pipelines or {SYNTHETIC_WORKLOADS} "
        "(default: --pipeline and biggan-tiny).",
    )
    group.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Benchmark torch.compile in `features` (default: on, off with --quick: the first compile "
        "takes minutes on 2 cores).",
    )
    group.add_argument(
        "--batch_sizes", type=int, nargs="+", default=None, help="Throughput batch sizes (default: by mode)."
    )
    # The memory probe's subprocess (`memory_probe_in_subprocess`).
    group.add_argument("--probe_batch", type=int, default=32, help=argparse.SUPPRESS)
    group.add_argument("--probe_steps", type=int, default=10, help=argparse.SUPPRESS)


def add_sampler_arguments(group) -> None:
    group.add_argument(
        "--sampler_workload",
        default="ddpm-cifar10-32-clip",
        help="Workload of the sampler section: a pipeline whose G is a diffusers sampler, or ddpm-cifar10-32-clip.",
    )
    group.add_argument(
        "--sampler_batch_size", type=int, default=None, help="Batch of the sampler section (default: by mode)."
    )


def run_speed(args, sizes: dict, report) -> None:
    """The speed sections asked for, each workload in turn (loaded once for all of them)."""
    sections = [name for name in SPEED_SECTIONS if name in args.sections]
    names = args.speed_workloads or [args.pipeline, "biggan-tiny"]
    include_compile = (not args.quick) if args.compile is None else args.compile
    sizes["batch_sizes"] = args.batch_sizes or sizes["batch_sizes"]
    repeats, results = sizes["repeats"], {section: [] for section in sections}
    if "throughput" in sections:
        matmul_rate = matmul_gflops(torch.device(args.device))
    for name in names:
        workload = load_workload(name, args.device)
        steps = workload.pipe.config.default_num_inference_steps
        if "throughput" in sections:
            # The default configuration at every batch size; then batch 32 only: without augmentations where the
            # pipeline uses some (one image is then a batch of one for f), and with speed features on both sides.
            variants = [(sizes["batch_sizes"], None, "float32 eager"), ([32], None, "channels_last + bf16 autocast")]
            if not args.quick:
                variants[1:1] = [
                    ([32], None, feature)
                    for feature in ("channels_last", "fused batch norm + channels_last")
                    if feature in applicable_features(workload)
                ]
                if workload.pipe.config.default_num_augmentations:
                    variants.insert(1, ([32], 0, "float32 eager"))
            workload_results = []
            for batch_sizes, num_augmentations, feature in variants:
                result = throughput(
                    workload, batch_sizes, steps, repeats, num_augmentations=num_augmentations, feature=feature
                )
                workload_results.append(result)
                report.emit(
                    f"Throughput: {workload.name}, {feature}, N={result['num_augmentations']} augmentations, {steps} steps",
                    format_table(
                        [
                            dict(row, rounds=" ".join(f"{r:.2f}" for r in row["speedup_per_round"]))
                            for row in result["rows"]
                        ],
                        [
                            ("batch_size", "batch", "d"),
                            ("batched_images_per_second", "batched img/s", ".1f"),
                            ("loop_images_per_second", "one-at-a-time img/s", ".1f"),
                            ("speedup", "speed-up", ".2f"),
                            ("rounds", "speed-up per round", ""),
                            ("batched_gflops_per_second", "batched GFLOP/s", ".1f"),
                        ],
                    )
                    + f"\n\nBatched vs one-at-a-time at batch {result['loop_batch']}, same seeds: {result['agreement']}; "
                    f"batched run vs itself with the initial latents moved by 1e-6: {result['sensitivity_to_1e-6_latent_change']}",
                )
            summary = best_settings_speedup(workload_results, 32, matmul_rate)
            report.emit(
                f"Throughput summary: {workload.name}, batch 32",
                f"fastest batched setting `{summary['batched_feature']}` {summary['batched_images_per_second']:.1f} img/s vs fastest "
                f"one-at-a-time setting `{summary['loop_feature']}` {summary['loop_images_per_second']:.1f} img/s: "
                f"**{summary['speedup']:.2f}x** (a ratio of median rates; default settings: {summary['default_speedup']:.2f}x, median of back-to-back ratios).\n\n"
                f"Work per image: {workload_results[0]['gflops_per_image']:.3f} GFLOP of matrix products and convolutions. "
                f"Default settings: batched {summary['default_batched_gflops_per_second']:.1f} GFLOP/s "
                f"(**{summary['default_share_of_matmul_rate']:.0%}** of this machine's float32 matrix-product rate, "
                f"{summary['matmul_gflops']:.1f} GFLOP/s), one-at-a-time {summary['default_loop_gflops_per_second']:.1f} GFLOP/s; "
                f"a batched call at the full matrix-product rate would be **{summary['float32_ceiling_speedup']:.2f}x** the loop.",
            )
            results["throughput"].extend(workload_results)
            results.setdefault("throughput_summary", []).append(summary)
        if "overhead" in sections:
            result = overhead(workload, 32, steps, repeats)
            results["overhead"].append(result)
            stages = [{"stage": k, "ms": v * 1e3} for k, v in result["stage_seconds_per_step"].items()]
            report.emit(
                f"Overhead: {workload.name}, batch 32, {steps} steps",
                f"pipeline {result['pipeline_seconds']:.3f} s / bare forward+backward {result['bare_seconds']:.3f} s = "
                f"**{result['overhead_ratio']:.3f}** (median of per-run ratios {result['median_pairwise_ratio']:.3f}); "
                f"fixed cost (0-step call: candidates, final render) {result['fixed_seconds']:.3f} s, bare {result['bare_fixed_seconds']:.3f} s; "
                f"host syncs in a call: {result['host_syncs_in_call']}.\n\n"
                + format_table(
                    stages
                    + [
                        {"stage": "bare fwd+bwd step", "ms": result["bare_per_step_seconds"] * 1e3},
                        {"stage": "pipeline step", "ms": result["per_step_seconds"] * 1e3},
                    ],
                    [("stage", "per-step stage", ""), ("ms", "ms", ".2f")],
                ),
            )
        if "memory" in sections:
            result = memory(
                workload, sizes["memory_batches"], sizes["memory_steps"], 32, steps, sizes["trace_steps"], args.threads
            )
            results["memory"].append(result)
            trace = result["per_step"]
            report.emit(
                f"Memory: {workload.name} ({result['measure']})",
                format_table(
                    result["by_batch"] + result["by_steps"],
                    [("batch_size", "batch", "d"), ("steps", "steps", "d"), ("peak_MiB", "peak MiB", ".1f")],
                )
                + f"\n\nAfter each of {trace['steps']} steps at batch {trace['batch_size']}: first {trace['MiB_per_step'][0]:.1f} MiB, "
                f"last {trace['MiB_per_step'][-1]:.1f} MiB, slope over the second half {trace['growth_MiB_per_step_second_half']:.3f} MiB/step.",
            )
        if "features" in sections:
            result = speed_features(workload, 32, steps, max(2, repeats - 1), include_compile)
            results["features"].append(result)
            rows = [dict(row, rounds=" ".join(f"{r:.2f}" for r in row["speedup_per_round"])) for row in result["rows"]]
            report.emit(
                f"Speed features: {workload.name}, batch 32, {steps} steps",
                format_table(
                    rows,
                    [
                        ("feature", "feature", ""),
                        ("images_per_second", "img/s", ".1f"),
                        ("speedup", "speed-up", ".2f"),
                        ("rounds", "speed-up per round", ""),
                        ("mean_energy", "mean E", ".4f"),
                        ("median_abs_energy_change", "median |ΔE|", ".1e"),
                        ("max_abs_energy_change", "max |ΔE|", ".1e"),
                        ("first_call_seconds", "first call s", ".1f"),
                    ],
                )
                + "\n\nSpeed-up: median of per-round ratios to float32 eager (features timed in interleaved rounds; compiled "
                "features after the others, against float32 eager's median). ΔE: change of each image's final energy "
                "against float32 eager with the same seeds.",
            )
        del workload
    plots = {"throughput": plot_throughput, "overhead": plot_overhead, "memory": plot_memory}
    if "throughput_summary" in results:
        report.write_json("throughput_summary", results.pop("throughput_summary"))
    for section, result in results.items():
        if section in plots and result:
            plots[section](
                result if section != "throughput" else [r for r in result if len(r["rows"]) > 1],
                report.output_dir / f"{section}.png",
            )
        report.write_json(section, result)


def run_sampler(args, sizes: dict, report) -> None:
    workload = load_workload(args.sampler_workload, args.device)
    batch_size = args.sampler_batch_size or sizes["batch_size"]
    result = sampler_cost(workload, batch_size, sizes["sampler_steps"], sizes["langevin_steps"], sizes["repeats"])
    report.write_json("sampler", result)
    report.emit(
        f"Sampler cost: {workload.name} ({result['parameters_M']:.1f} M parameters in G), batch {batch_size}, "
        f"N={result['num_augmentations']} augmentations",
        format_table(
            result["rows"],
            [
                ("sampler_steps", "sampler steps", "d"),
                ("checkpointing", "checkpointing", ""),
                ("seconds_per_langevin_step", "s / Langevin step", ".2f"),
                ("gflops_per_langevin_step", "GFLOP / Langevin step", ".1f"),
                ("generator_gflops", "of which G fwd+bwd", ".1f"),
                ("peak_MiB", "peak MiB", ".0f"),
            ],
        )
        + f"\n\nPeak memory: {result['measure']}. GFLOP: matrix products and convolutions, forward and backward "
        "(attention is not counted on CPU).",
    )


SPEED_SECTION = Section(
    names=SPEED_SECTIONS,
    summary="Batched vs one at a time (throughput), pipeline vs bare forward+backward with a per-step breakdown "
    "(overhead), peak memory vs batch size and steps (memory), bf16/fp16 autocast, channels_last, torch.compile "
    "(features).",
    run=run_speed,
    add_arguments=add_speed_arguments,
    quick={
        "batch_sizes": [1, 8, 32],
        "repeats": 3,
        "memory_batches": [1, 32],
        "memory_steps": [50],
        "trace_steps": 50,
    },
    full={
        "batch_sizes": [1, 2, 4, 8, 16, 32, 64],
        "repeats": 5,
        "memory_batches": [1, 8, 32, 64],
        "memory_steps": [1, 10, 50, 100],
        "trace_steps": 100,
    },
    default=True,
)
SAMPLER_SECTION = Section(
    names=("sampler",),
    summary="A diffusion-sampler G: seconds, GFLOP and peak memory of a Langevin step at 1, 5 and 10 sampler steps, "
    "with and without gradient checkpointing.",
    run=run_sampler,
    add_arguments=add_sampler_arguments,
    quick={"batch_size": 1, "sampler_steps": [1, 5, 10], "langevin_steps": 1, "repeats": 1},
    full={"batch_size": 2, "sampler_steps": [1, 5, 10], "langevin_steps": 2, "repeats": 2},
)
