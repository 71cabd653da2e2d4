"""Quality vs steps and vs seconds for the initialisations sharing one Langevin sampler (the paper's central claim).

Arms, each for T in the step list:

* ``translator``: a draw from the translator's mixture, then T Langevin steps;
* ``translator_search``: the lowest-energy of the pipeline's ``default_num_candidates`` translator draws, then T
  steps (the shipped default; only when that setting is above 1);
* ``translator_mean``: all K translator means mixed per dimension (the method's initialisation), then T steps;
* ``prior``: z ~ p(z), then T steps (optimisation-only, no translator);
* ``best_of_n_prior``: random search, N = T + 1 prior draws scored by the energy, keep the lowest, no Langevin
  (the same number of G and f forward passes as T steps, without the backward passes);
* ``fusedream``: the lowest-energy of many prior draws, then T steps (FuseDream's recipe: search, then optimise).

The Langevin step size and noise are chosen by a grid for the ``prior`` arm first (on seeds not used for the
evaluation) and reused by every arm, so the optimisation-only baseline is not handicapped. With a constant step
size, the latents after T steps of a longer run equal those of a T-step run (same draws, same order), so each arm
runs once for the largest T and snapshots the latents on the way.

All snapshots are scored the same way: the energy with the same augmentation draws for every arm, and, with an
evaluation model, accuracy, within-class diversity and Fréchet distance (`metrics.MnistEvaluator`).

The section also runs `head_to_head.py` on ``--t2i_pipeline`` (the embedded `tron-mnist-t2i` by default; '' skips
it): plain conditional sampling, ReNO's noise optimisation, TR0N and the translator-started noise optimisation on one
text-to-image G, with ``--t2i_reference`` (`tron-mnist-text`) as the reference arm.
"""

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from common import format_table, new_figure, save_figure, seeded_generators
from harness import Section
from head_to_head import HeadToHeadSettings, head_to_head, head_to_head_tables
from metrics import DEFAULT_EVAL_CLASSIFIER, MnistEvaluator
from workloads import (
    CANDIDATE_SEED,
    EVALUATION_SEED,
    SCORING_SEED,
    TUNING_SEED,
    Conditions,
    Workload,
    load_workload,
    make_conditions,
)

from tron_pipelines import LangevinScheduler
from tron_pipelines.evaluation import to_grey01
from tron_pipelines.pipelines.pipeline_tron import INITIALIZATIONS


ARMS = ("translator", "translator_search", "translator_mean", "prior", "best_of_n_prior", "fusedream")
TRANSLATOR_ARMS = ("translator", "translator_search", "translator_mean")


@dataclass
class QualitySettings:
    """Sizes of the quality benchmark.

    Attributes:
        samples_per_condition: Images per class (class pipelines) or per prompt (text pipelines).
        step_counts: The T values; the largest is the length of every Langevin run.
        grid_step_sizes / grid_noise_stds: The tuning grid of the ``prior`` arm.
        tuning_samples_per_condition: Images per condition for each grid point.
        fusedream_candidates: Prior draws searched by the ``fusedream`` arm.
        one_prompt_per_digit: Text pipelines: one prompt per digit, cycling through the plain, thin, bold, left and
            right prompts, instead of all five per digit.
    """

    samples_per_condition: int = 32
    step_counts: list[int] = field(default_factory=lambda: [0, 5, 10, 25, 50, 100])
    grid_step_sizes: list[float] = field(default_factory=lambda: [0.1, 0.3, 1.0, 3.0])
    grid_noise_stds: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.03, 0.1])
    tuning_samples_per_condition: int = 4
    fusedream_candidates: int = 101
    one_prompt_per_digit: bool = False


# Running the arms -------------------------------------------------------------------------------------------------
def langevin_snapshots(
    workload: Workload,
    conditions: Conditions,
    seeds: list[int],
    step_counts: list[int],
    initialization: str = "translator",
    latents: torch.Tensor | None = None,
    num_candidates: int | None = 1,
) -> dict:
    """Latents after each T in ``step_counts`` and the seconds it took to get them (rendering included).

    ``num_candidates`` initial draws per image (``None``: the pipeline's default); the arms use 1, so that each
    initialisation is measured on its own.

    Returns ``{T: {"latents": (B, total_latent_dim), "seconds": float}}``.
    """
    pipe, device = workload.pipe, workload.device
    common = dict(
        conditions.call_kwargs,
        initialization=initialization,
        latents=latents,
        output_type="latent",
        num_candidates=num_candidates,
    )
    snapshots = {}
    start = time.perf_counter()
    initial = pipe(**common, num_inference_steps=0, generator=seeded_generators(seeds, device))
    snapshots[0] = {"latents": initial.latents, "seconds": time.perf_counter() - start}
    positive = sorted(t for t in step_counts if t > 0)
    if not positive:
        return snapshots
    if pipe.scheduler.config.get("annealing", "constant") != "constant":
        # Annealed schedules depend on the run length: one run per T.
        for steps in positive:
            start = time.perf_counter()
            out = pipe(**common, num_inference_steps=steps, generator=seeded_generators(seeds, device))
            snapshots[steps] = {"latents": out.latents, "seconds": time.perf_counter() - start}
        return snapshots
    wanted, elapsed = set(positive), {}

    def snapshot(pipeline, step_index, timestep, tensors):
        if step_index + 1 in wanted:
            elapsed[step_index + 1] = time.perf_counter() - start
            snapshots[step_index + 1] = {"latents": tensors["latents"].clone()}
        return {}

    start = time.perf_counter()
    pipe(
        **common,
        num_inference_steps=positive[-1],
        generator=seeded_generators(seeds, device),
        callback_on_step_end=snapshot,
    )
    # The time after the last step is rendering and final scoring; every T would pay it once.
    rendering = time.perf_counter() - start - elapsed[positive[-1]]
    for steps in positive:
        snapshots[steps]["seconds"] = elapsed[steps] + rendering
    return snapshots


def prior_candidates(workload: Workload, conditions: Conditions, seeds: list[int], num_candidates: int) -> dict:
    """``num_candidates`` prior draws per image and their energies (the same energy Langevin follows).

    Returns ``{"latents": (B, M, total_latent_dim), "energies": (B, M), "seconds": float}``.
    """
    pipe, device = workload.pipe, workload.device
    start = time.perf_counter()
    latents, energies = [], []
    for index, seed in enumerate(seeds):
        draws = pipe.generator.sample_latents(
            num_candidates, generator=torch.Generator(device).manual_seed(CANDIDATE_SEED + seed), device=device
        )
        # One condition, num_candidates images: the condition is repeated for each candidate.
        out = pipe(
            **conditions.subset([index]),
            num_images_per_prompt=num_candidates,
            latents=draws,
            num_inference_steps=0,
            output_type="latent",
            generator=torch.Generator(device).manual_seed(seed),
        )
        latents.append(draws)
        energies.append(out.energies)
    return {"latents": torch.stack(latents), "energies": torch.stack(energies), "seconds": time.perf_counter() - start}


def energy_ranking_latents(
    workload: Workload, conditions: Conditions, samples_per_condition: int, pool_size: int, chunk_size: int = 2000
) -> torch.Tensor:
    """What the energy alone would pick: for each condition, the ``samples_per_condition`` lowest-energy latents of
    one shared pool of ``pool_size`` prior draws (random search on f in the limit: no translator, no Langevin). Where
    these are the wrong digit, f itself prefers the wrong digit among what G makes, and no sampler following the
    energy can do better there. The energy is taken without augmentations (a pool is scored once per condition).

    ``conditions`` must be condition-major with ``samples_per_condition`` rows per condition (`make_conditions`).
    Returns latents ``(len(conditions), total_latent_dim)``.
    """
    if len(conditions) % samples_per_condition or pool_size < samples_per_condition:
        raise ValueError(
            f"{len(conditions)} conditions are not blocks of {samples_per_condition}, or the pool "
            f"({pool_size}) is smaller than a block."
        )
    pipe, device = workload.pipe, workload.device
    pool = pipe.generator.sample_latents(
        pool_size, generator=torch.Generator(device).manual_seed(CANDIDATE_SEED), device=device
    )
    chosen = []
    for first in range(0, len(conditions), samples_per_condition):
        energies = torch.cat(
            [
                pipe(
                    **conditions.subset([first]),
                    num_images_per_prompt=len(chunk),
                    latents=chunk,
                    num_inference_steps=0,
                    num_augmentations=0,
                    output_type="latent",
                ).energies
                for chunk in pool.split(chunk_size)
            ]
        )
        chosen.append(pool[energies.topk(samples_per_condition, largest=False).indices])
    return torch.cat(chosen)


def best_of_n_snapshots(candidates: dict, step_counts: list[int]) -> dict:
    """Random search: for each T, the lowest-energy of the first T + 1 candidates of every image."""
    snapshots = {}
    total = candidates["energies"].shape[1]
    for steps in step_counts:
        count = min(steps + 1, total)
        best = candidates["energies"][:, :count].argmin(dim=1)
        snapshots[steps] = {
            "latents": candidates["latents"][torch.arange(len(best)), best],
            "seconds": candidates["seconds"] * count / total,
        }
    return snapshots


def run_arms(workload: Workload, conditions: Conditions, seeds: list[int], settings: QualitySettings) -> dict:
    """``{arm: {T: {"latents", "seconds"}}}`` for every arm."""
    step_counts = settings.step_counts
    # One arm per initialisation of the pipeline, named after it.
    runs = {
        initialization: langevin_snapshots(workload, conditions, seeds, step_counts, initialization)
        for initialization in INITIALIZATIONS
    }
    if workload.pipe.config.default_num_candidates > 1:
        runs["translator_search"] = langevin_snapshots(
            workload, conditions, seeds, step_counts, "translator", num_candidates=None
        )
    num_candidates = max(max(step_counts) + 1, settings.fusedream_candidates)
    candidates = prior_candidates(workload, conditions, seeds, num_candidates)
    runs["best_of_n_prior"] = best_of_n_snapshots(candidates, step_counts)
    # Random search with T + 1 = fusedream_candidates draws is FuseDream's search.
    searched = best_of_n_snapshots(candidates, [settings.fusedream_candidates - 1])[settings.fusedream_candidates - 1]
    fusedream = langevin_snapshots(workload, conditions, seeds, step_counts, latents=searched["latents"])
    for snapshot in fusedream.values():
        snapshot["seconds"] += searched["seconds"]
    runs["fusedream"] = fusedream
    return runs


# Scoring ----------------------------------------------------------------------------------------------------------
def render_and_score(
    workload: Workload, conditions: Conditions, latents: torch.Tensor, evaluator: MnistEvaluator | None
) -> tuple[dict, np.ndarray]:
    """Images of ``latents``, their mean energy (augmentations drawn from fixed seeds, the same for every arm) and
    the evaluation metrics. Returns ``(metrics, images (B, H, W, C) in [0, 1])``."""
    pipe, device = workload.pipe, workload.device
    seeds = [SCORING_SEED + i for i in range(len(conditions))]
    out = pipe(
        **conditions.call_kwargs,
        latents=latents,
        num_inference_steps=0,
        output_type="np",
        generator=seeded_generators(seeds, device),
    )
    metrics = {"energy": out.energies.mean().item()}
    if evaluator is not None:
        if conditions.requests is not None:
            metrics.update(evaluator.score_prompts(out.images, conditions.requests))
        else:
            metrics.update(evaluator.score(out.images, conditions.labels))
    return metrics, out.images


def score_runs(
    workload: Workload, conditions: Conditions, runs: dict, evaluator: MnistEvaluator | None, keep_images_at: set[int]
) -> tuple[list[dict], dict]:
    """One row per (arm, T) with the metrics and seconds; the images of the T in ``keep_images_at``."""
    rows, images = [], {}
    for arm, snapshots in runs.items():
        for steps, snapshot in sorted(snapshots.items()):
            metrics, rendered = render_and_score(workload, conditions, snapshot["latents"], evaluator)
            rows.append(
                {
                    "arm": arm,
                    "steps": steps,
                    "seconds": snapshot["seconds"],
                    "seconds_per_image": snapshot["seconds"] / len(conditions),
                    **metrics,
                }
            )
            if steps in keep_images_at:
                images[(arm, steps)] = rendered
    return rows, images


# Tuning -----------------------------------------------------------------------------------------------------------
@contextmanager
def swapped_scheduler(workload: Workload, **settings):
    """Run the block with the pipeline's scheduler rebuilt with ``settings``; yields that scheduler and puts the
    original back afterwards."""
    original = workload.pipe.scheduler
    workload.pipe.scheduler = LangevinScheduler.from_config(original.config, **settings)
    try:
        yield workload.pipe.scheduler
    finally:
        workload.pipe.scheduler = original


def tune_prior_baseline(workload: Workload, settings: QualitySettings, evaluator: MnistEvaluator | None) -> dict:
    """Grid over step size and noise for the ``prior`` arm at the largest T, on tuning seeds. The best point has the
    highest evaluation accuracy (the baseline's best case for the claim), ties broken by the lower energy; without
    an evaluation model, the lowest energy."""
    # Text: one prompt per digit (all five prompt kinds still appear) keeps the grid affordable.
    conditions = make_conditions(workload, settings.tuning_samples_per_condition, one_prompt_per_digit=True)
    seeds = [TUNING_SEED + i for i in range(len(conditions))]
    steps = max(settings.step_counts)
    base_config = workload.pipe.scheduler.config
    rows = []
    for step_size in settings.grid_step_sizes:
        for noise_std in settings.grid_noise_stds:
            with swapped_scheduler(workload, step_size=step_size, noise_std=noise_std):
                snapshots = langevin_snapshots(workload, conditions, seeds, [steps], "prior")
                metrics, _ = render_and_score(workload, conditions, snapshots[steps]["latents"], evaluator)
            rows.append({"step_size": step_size, "noise_std": noise_std, "steps": steps, **metrics})
    if evaluator is not None:
        best = max(rows, key=lambda row: (row["accuracy"], -row["energy"]))
        criterion = "highest accuracy of the prior arm at the largest T, ties to the lower energy"
    else:
        best = min(rows, key=lambda row: row["energy"])
        criterion = "lowest energy of the prior arm at the largest T"
    return {
        "rows": rows,
        "best": {"step_size": best["step_size"], "noise_std": best["noise_std"]},
        "criterion": criterion,
        "num_images": len(conditions),
        "base_config": dict(base_config),
    }


# Section ----------------------------------------------------------------------------------------------------------
def quality(
    workload: Workload,
    settings: QualitySettings,
    evaluator: MnistEvaluator | None,
    output_dir: Path,
    label: str | None = None,
) -> dict:
    """Tune, run the arms, score every (arm, T), and the pipeline's own defaults; write grids and plots, named
    ``quality_<label>_*`` (``label`` defaults to the workload's kind)."""
    pipe = workload.pipe
    started = time.perf_counter()
    tuning = tune_prior_baseline(workload, settings, evaluator)
    conditions = make_conditions(workload, settings.samples_per_condition, settings.one_prompt_per_digit)
    seeds = [EVALUATION_SEED + i for i in range(len(conditions))]
    default_steps = pipe.config.default_num_inference_steps

    # The pipeline as shipped: its own scheduler settings, default initialisation, candidates and steps.
    defaults_run = langevin_snapshots(workload, conditions, seeds, [default_steps], "translator", num_candidates=None)
    defaults, _ = render_and_score(workload, conditions, defaults_run[default_steps]["latents"], evaluator)
    defaults.update(
        {
            "arm": f"pipeline defaults (translator, best of {pipe.config.default_num_candidates})",
            "steps": default_steps,
            "seconds": defaults_run[default_steps]["seconds"],
            "seconds_per_image": defaults_run[default_steps]["seconds"] / len(conditions),
        }
    )

    with swapped_scheduler(workload, **tuning["best"]) as tuned:
        runs = run_arms(workload, conditions, seeds, settings)
    keep = {0, default_steps, max(settings.step_counts)}
    rows, images = score_runs(workload, conditions, runs, evaluator, keep)

    result = {
        "workload": workload.name,
        "pipeline": workload.description,
        "kind": workload.kind,
        "num_images": len(conditions),
        "settings": vars(settings),
        "tuning": tuning,
        "tuned_scheduler": dict(tuned.config),
        "defaults": defaults,
        "rows": rows,
        "seconds": None,
    }
    if evaluator is not None:
        result["real_digits"] = evaluator.real_baseline(conditions.labels)
        result["real_digits"]["held_out_accuracy"] = evaluator.real_accuracy
        # The shipped defaults too: their sampler was tuned on other seeds, as the prior arm's was.
        result["claim"] = paper_claim(
            rows + [defaults],
            default_steps,
            max(settings.step_counts),
            result["real_digits"]["diversity_ratio"],
            (*TRANSLATOR_ARMS, defaults["arm"]),
        )
    prefix = f"quality_{label or workload.kind}"
    result["plots"] = [
        plot_quality(rows, output_dir / f"{prefix}_vs_steps.png", "steps"),
        plot_quality(rows, output_dir / f"{prefix}_vs_seconds.png", "seconds"),
    ]
    result["sample_grids"] = save_sample_grids(images, conditions, output_dir, prefix)
    result["seconds"] = time.perf_counter() - started
    return result


def paper_claim(
    rows: list[dict],
    translator_steps: int,
    prior_steps: int,
    real_diversity: float,
    arms: tuple[str, ...] = TRANSLATOR_ARMS,
) -> dict:
    """Translator initialisation after ``translator_steps`` vs prior initialisation after ``prior_steps``: lower or
    equal energy and Fréchet distance, higher or equal accuracy, and within-class diversity at least as close to that
    of real digits (``real_diversity``, the ratio real digits score at this sample size). The Fréchet distance
    counts as matched within one combined bootstrap standard deviation of the two arms (its sampling noise at this
    sample size); the other metrics are compared as they are.

    Diversity is judged by its distance from real digits, not by its size: pairwise distance also grows with wrong
    and malformed digits, so the prior arm, which leaves many images off-class, is "more diverse" than real digits.
    Also returns the fewest steps after which each translator arm matches the prior's energy and accuracy.
    """
    lookup = {(row["arm"], row["steps"]): row for row in rows}
    prior = lookup[("prior", prior_steps)]

    def with_gap(row):
        return dict(row, diversity_gap=abs(row["diversity_ratio"] - real_diversity))

    prior = with_gap(prior)
    # Lower is better for all but accuracy.
    compared, higher_is_better = ("energy", "accuracy", "diversity_gap", "frechet_distance"), {"accuracy"}
    claim = {}
    for arm in arms:
        ours = lookup.get((arm, translator_steps))
        if ours is None:
            continue
        ours = with_gap(ours)
        allowance = {"frechet_distance": float(np.hypot(ours["frechet_distance_std"], prior["frechet_distance_std"]))}
        checks = {
            key: ours[key] >= prior[key]
            if key in higher_is_better
            else ours[key] <= prior[key] + allowance.get(key, 0.0)
            for key in compared
        }
        matching = [
            row["steps"]
            for row in rows
            if row["arm"] == arm and row["energy"] <= prior["energy"] and row["accuracy"] >= prior["accuracy"]
        ]
        shown = [*checks, "diversity_ratio", "diversity_ratio_correct", "frechet_distance_std"]
        claim[f"{arm}@{translator_steps} vs prior@{prior_steps}"] = {
            "holds": all(checks.values()),
            "checks": checks,
            "ours": {key: ours[key] for key in shown},
            "prior": {key: prior[key] for key in shown},
            "real_diversity_ratio": real_diversity,
            "fewest_steps_matching_prior_energy_and_accuracy": min(matching, default=None),
        }
    return claim


# Output -----------------------------------------------------------------------------------------------------------
METRIC_LABELS = {
    "energy": "energy E (lower is better)",
    "accuracy": "evaluation accuracy",
    "diversity_ratio": "within-class diversity / real",
    "diversity_ratio_correct": "diversity / real, correct digits only",
    "frechet_distance": "Fréchet distance",
    "stroke_weight_obeyed": "stroke weight obeyed",
    "slant_obeyed": "slant obeyed",
}


def plot_quality(rows: list[dict], path: Path, x_key: str) -> str:
    metrics = [m for m in METRIC_LABELS if m in rows[0]]
    figure, axes = new_figure(len(metrics), width=3.6)
    for axis, metric in zip(axes, metrics):
        for arm in ARMS:
            points = sorted((row[x_key], row[metric]) for row in rows if row["arm"] == arm)
            if points:
                axis.plot(*zip(*points), "o-", markersize=3, label=arm)
        axis.set_xlabel("Langevin steps T" if x_key == "steps" else "wall-clock seconds (whole batch)")
        if x_key == "seconds":
            axis.set_xscale("log")
        axis.set_title(METRIC_LABELS[metric], fontsize=9)
    axes[0].legend(fontsize=7)
    return save_figure(figure, path)


def save_sample_grids(
    images: dict, conditions: Conditions, output_dir: Path, prefix: str, max_rows: int = 10, max_columns: int = 8
) -> list[str]:
    """One PNG per T with a panel per arm: a row per class (or per prompt, ``max_rows`` spread over the prompts),
    up to ``max_columns`` samples each."""
    keys = list(dict.fromkeys(conditions.names))
    per_condition = len(conditions) // len(keys)
    shown = keys[:max_rows] if conditions.requests is None else _spread(keys, max_rows)
    columns = min(per_condition, max_columns)
    names = []
    for steps in sorted({steps for _, steps in images}):
        arms = [arm for arm in ARMS if (arm, steps) in images]
        figure, axes = new_figure(
            len(arms), width=columns * 0.42 + (1.6 if conditions.requests else 0.6), height=len(shown) * 0.42 + 0.5
        )
        for axis, arm in zip(axes, arms):
            rendered = to_grey01(images[(arm, steps)])
            rows = []
            for name in shown:
                start = keys.index(name) * per_condition
                rows.append(np.concatenate(list(rendered[start : start + columns]), axis=1))
            axis.imshow(np.concatenate(rows, axis=0), cmap="gray", vmin=0, vmax=1)
            side = rendered.shape[1]
            axis.set_yticks(
                [side * (i + 0.5) for i in range(len(shown))], shown if axis is axes[0] else [], fontsize=7
            )
            axis.set_xticks([])
            axis.set_title(arm, fontsize=8)
        figure.suptitle(f"T = {steps} Langevin steps (best-of-N: N = T + 1 draws)", fontsize=9)
        names.append(save_figure(figure, output_dir / f"{prefix}_samples_T{steps}.png"))
    return names


def _spread(items: list, count: int) -> list:
    indices = np.linspace(0, len(items) - 1, min(count, len(items))).round().astype(int)
    return [items[i] for i in indices]


QUALITY_COLUMNS = [
    ("arm", "arm", ""),
    ("steps", "T", "d"),
    ("seconds", "seconds", ".1f"),
    ("seconds_per_image", "s / image", ".3f"),
    ("energy", "energy", ".3f"),
    ("accuracy", "accuracy", ".3f"),
    ("worst_class_accuracy", "worst digit", ".3f"),
    ("diversity_ratio", "diversity / real", ".3f"),
    ("diversity_ratio_correct", "diversity / real (correct only)", ".3f"),
    ("frechet_distance", "FD", ".1f"),
    ("frechet_distance_std", "FD bootstrap std", ".1f"),
]
TEXT_COLUMNS = QUALITY_COLUMNS + [
    ("worst_prompt_accuracy", "worst prompt", ".3f"),
    ("stroke_weight_obeyed", "stroke obeyed", ".3f"),
    ("slant_obeyed", "slant obeyed", ".3f"),
]


def weakest_conditions(row: dict, count: int = 5) -> str:
    """The ``count`` conditions (prompts, else digits) with the lowest evaluation accuracy in ``row``."""
    by_condition = row.get("accuracy_by_prompt") or row.get("accuracy_by_class")
    if not by_condition:
        return ""
    weakest = sorted(by_condition.items(), key=lambda item: item[1])[:count]
    digits = ", ".join(f"{k}: {v:.3f}" for k, v in sorted(row["accuracy_by_class"].items()))
    return (
        f"Weakest conditions: {', '.join(f'{name!r} {value:.3f}' for name, value in weakest)}. "
        f"Accuracy per digit: {digits}."
    )


def quality_tables(result: dict) -> str:
    """Markdown tables of a quality result: tuning grid, pipeline defaults, every (arm, T), real digits, claim."""
    columns = TEXT_COLUMNS if result["kind"] == "text" else QUALITY_COLUMNS
    has_metrics = "accuracy" in result["rows"][0]
    columns = columns if has_metrics else columns[:5]
    grid_columns = [("step_size", "step size", "g"), ("noise_std", "noise std", "g")] + columns[4:]
    parts = [
        f"Tuning grid (prior arm, T={result['tuning']['rows'][0]['steps']}, {result['tuning']['num_images']} images; "
        f"chosen: {result['tuning']['best']}, by {result['tuning']['criterion']}):",
        format_table(result["tuning"]["rows"], grid_columns),
        f"\nPipeline as shipped ({result['num_images']} images):",
        format_table([result["defaults"]], columns),
        weakest_conditions(result["defaults"]),
        f"\nAll arms with the tuned sampler ({result['num_images']} images):",
        format_table(result["rows"], columns),
    ]
    if "real_digits" in result:
        real = dict(
            result["real_digits"],
            arm="real training digits (same class counts)",
            steps=None,
            seconds=None,
            seconds_per_image=None,
            energy=None,
        )
        parts += ["\nReference:", format_table([real], columns)]
        for name, claim in result["claim"].items():
            gaps = f"diversity gap to real digits {claim['ours']['diversity_gap']:.3f} vs prior {claim['prior']['diversity_gap']:.3f}"
            parts.append(
                f"\nClaim {name}: {'holds' if claim['holds'] else 'does not hold'} {claim['checks']} ({gaps}); "
                f"fewest steps matching prior@{name.split('@')[-1]} on energy and accuracy: "
                f"{claim['fewest_steps_matching_prior_energy_and_accuracy']}"
            )
    return "\n".join(parts)


# The section of run.py ----------------------------------------------------------------------------------------------
def add_arguments(group) -> None:
    group.add_argument(
        "--pipeline",
        default="tron-mnist",
        help="Class pipeline: embedded name or folder ('' skips it in the quality section; also the default "
        "workload of the speed sections).",
    )
    group.add_argument(
        "--text_pipeline",
        default="tron-mnist-text",
        help="Text pipeline for the quality section ('' to skip it); skipped with a note when it cannot be loaded.",
    )
    group.add_argument(
        "--diffusion_pipeline",
        default="tron-mnist-ddim",
        help="Class pipeline with a diffusion G for the quality section (smaller sizes: every Langevin step "
        "runs the sampler; '' to skip it); skipped with a note when it cannot be loaded.",
    )
    group.add_argument(
        "--t2i_pipeline",
        default="tron-mnist-t2i",
        help="Pipeline with a text-to-image G for the head-to-head of conditional sampling, noise optimisation and "
        "TR0N on that G (`head_to_head.py`; '' to skip it).",
    )
    group.add_argument(
        "--t2i_reference",
        default="tron-mnist-text",
        help="The head-to-head's reference arm, a text pipeline at its shipped settings ('' for none).",
    )
    group.add_argument(
        "--eval_classifier",
        default=None,
        help="Evaluation classifier folder of the sections that score digits (quality, compare, demo-examples; "
        "default: benchmarks/assets/mnist-eval-classifier, committed).",
    )


def run(args, sizes: dict, report) -> None:
    """Every pipeline of the quality section: class, text and diffusion, each skipped when named ''."""
    evaluator_dir = args.eval_classifier or DEFAULT_EVAL_CLASSIFIER
    evaluator = MnistEvaluator(evaluator_dir) if Path(evaluator_dir).is_dir() else None
    results = {}
    # Labels name the results and files: the class and text pipelines by their kind, the diffusion one apart.
    for name, overrides, label in (
        (args.pipeline, {}, None),
        (args.text_pipeline, sizes["text"], None),
        (args.diffusion_pipeline, sizes["diffusion"], "diffusion"),
    ):
        if not name:
            continue
        try:
            workload = load_workload(name, args.device)
        except (OSError, ValueError) as error:
            report.emit(
                f"Quality: {name}", f"Skipped: cannot load `{name}` ({type(error).__name__}: {str(error)[:200]})."
            )
            continue
        settings = QualitySettings(**{**sizes["quality"], **overrides})
        result = quality(workload, settings, evaluator, report.output_dir, label)
        results[label or workload.kind] = result
        report.emit(f"Quality: {workload.name} ({workload.kind}, {result['seconds']:.0f} s)", quality_tables(result))
    if args.t2i_pipeline:
        result = run_head_to_head(args, sizes["head_to_head"], evaluator)
        results["head_to_head"] = result
        title = f"Head to head on one text-to-image G: {args.t2i_pipeline}"
        if "skipped" in result:
            report.emit(title, result["skipped"])
        else:
            report.emit(f"{title} ({result['seconds']:.0f} s)", head_to_head_tables(result))
    report.write_json("quality", results)


def run_head_to_head(args, sizes: dict, evaluator: MnistEvaluator | None) -> dict:
    """`head_to_head.head_to_head` on ``--t2i_pipeline`` with ``--t2i_reference`` as the reference arm, or
    ``{"skipped": why}``."""
    if evaluator is None:
        return {"skipped": "Skipped: the head-to-head is scored by the evaluation classifier, and there is none."}
    try:
        t2i = load_workload(args.t2i_pipeline, args.device)
        reference = load_workload(args.t2i_reference, args.device) if args.t2i_reference else None
    except (OSError, ValueError) as error:
        return {"skipped": f"Skipped: cannot load a pipeline ({type(error).__name__}: {str(error)[:200]})."}
    return head_to_head(t2i, reference, HeadToHeadSettings(**sizes), evaluator)


SECTION = Section(
    names=("quality",),
    summary="Initialisations x T Langevin steps against the baselines, scored by the evaluation classifier.",
    run=run,
    add_arguments=add_arguments,
    quick={
        "quality": {
            "samples_per_condition": 3,
            "grid_step_sizes": [0.3, 1.0],
            "grid_noise_stds": [0.01, 0.05],
            "tuning_samples_per_condition": 1,
        },
        "text": {"samples_per_condition": 2, "one_prompt_per_digit": True},
        "diffusion": {
            "samples_per_condition": 2,
            "step_counts": [0, 5, 10],
            "grid_step_sizes": [0.3, 1.0],
            "grid_noise_stds": [0.01],
            "tuning_samples_per_condition": 1,
            "fusedream_candidates": 21,
        },
        "head_to_head": {"images_per_prompt": 1, "noise_optimization_iterations": [10]},
    },
    full={
        "quality": {},
        "text": {"samples_per_condition": 8},
        "diffusion": {
            "samples_per_condition": 8,
            "step_counts": [0, 5, 10, 25],
            "grid_step_sizes": [0.3, 1.0, 3.0],
            "grid_noise_stds": [0.01, 0.1],
            "tuning_samples_per_condition": 2,
            "fusedream_candidates": 51,
        },
        # 4 images per prompt (200 in all) keeps the section under 30 minutes on 2 shared cores: the 50-iteration
        # noise optimisation costs about 2 s per image.
        "head_to_head": {"images_per_prompt": 4},
    },
    default=True,
)


__all__ = ["QualitySettings", "quality", "quality_tables", "ARMS", "SECTION"]
