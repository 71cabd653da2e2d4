"""Which route to a text-conditional image, on one text-to-image G and one f: plain conditional sampling, reward-based
noise optimisation (ReNO), TR0N on the unconditional G, and the translator as the start of noise optimisation.

Every arm uses the same G weights (the text-to-image diffusion model of the embedded `tron-mnist-t2i`, sampled by its
DDIM steps) and the same tiny CLIP as f (`tron-mnist-text`'s); they differ in what G is given and how z is chosen:

* ``conditional G``: G given the prompt, z from the prior, no optimisation (the model's own conditional samples);
  also with classifier-free guidance at the scale `train_t2i.py` chose on tuning seeds;
* ``noise optimisation``: G given the prompt, z from the prior, then `NoiseOptimizationScheduler` at ReNO's defaults
  (lr 5, Nesterov momentum 0.9, gradient clipping 0.1, norm regulariser 0.01, best iterate kept) against
  `ClipScoreReward` on the same CLIP at ReNO's CLIP weight (0.01), no augmentation; 10 and 50 reward evaluations
  (``num_inference_steps`` 9 and 49, as ReNO counts iterations);
* ``TR0N``: G rendering the empty prompt (an unconditional pushforward), the translator's proposal and Langevin on
  the CLIP energy, at the pipeline's shipped settings;
* ``translator + noise optimisation``: G given the prompt, z from the translator (trained for the unconditional G),
  then 10 reward evaluations of noise optimisation as above;
* ``tron-mnist-text``: the GAN pipeline at its shipped settings, for reference.

All are scored by the independent evaluation classifier and the pixel measures of `metrics.MnistEvaluator` on the
text benchmark's prompts and evaluation seeds, never by f. Seconds per image are the wall-clock time of the pipeline
calls (batches of ``batch_size`` images) on this machine, rendering included, after one untimed warm-up call per arm.
"""

import time
from dataclasses import dataclass, field

import numpy as np
from common import format_table, seeded_generators
from metrics import MnistEvaluator
from workloads import EVALUATION_SEED, Conditions, Workload, make_conditions

from tron_pipelines import ClipScoreReward, NoiseOptimizationScheduler, RewardModels, TronPipeline


# The guidance scale train_t2i.py chose for tron-mnist-t2i's model on tuning seeds (its evaluation.json, "chosen").
TUNED_GUIDANCE_SCALE = 1.5
# Of plain conditional sampling's diversity, what an arm must keep to count as beating it on attributes.
DIVERSITY_KEPT = 0.9


@dataclass
class HeadToHeadSettings:
    """Sizes of the head-to-head.

    Attributes:
        images_per_prompt: Evaluation images per benchmark prompt (50 prompts).
        noise_optimization_iterations: Reward evaluations of the ReNO arms (ReNO's ``n_iters``).
        translator_start_iterations: Reward evaluations of the translator-started arm.
        batch_size: Images per pipeline call.
    """

    images_per_prompt: int = 4
    noise_optimization_iterations: list[int] = field(default_factory=lambda: [10, 50])
    translator_start_iterations: int = 10
    batch_size: int = 50


@dataclass
class Arm:
    """A pipeline and the call options of one route; a ``reference`` arm runs another G and stays out of the
    conclusions."""

    name: str
    pipe: TronPipeline
    call: dict
    reference: bool = False


def reward_pipeline(pipe: TronPipeline) -> TronPipeline:
    """``pipe`` with ReNO's noise optimisation against the CLIP score of its own CLIP (f), on the same modules."""
    reward = ClipScoreReward.from_clip(
        pipe.encoder,
        pipe.tokenizer,
        # The CLIP's own input normalisation (its image processor's), not OpenAI CLIP's default.
        image_mean=tuple(pipe.image_processor.image_mean),
        image_std=tuple(pipe.image_processor.image_std),
    )
    return TronPipeline.from_pipe(
        pipe,
        scheduler=NoiseOptimizationScheduler(),
        rewards=RewardModels({"clip": reward}),
        default_num_augmentations=0,
    )


def make_arms(t2i: TronPipeline, text: TronPipeline | None, settings: HeadToHeadSettings) -> list[Arm]:
    """The arms, in the order of the table."""
    conditional = {"condition_generator_on_prompt": True, "num_candidates": 1, "num_augmentations": 0}
    guided = TronPipeline.from_pipe(t2i, generator=t2i.generator.with_config(guidance_scale=TUNED_GUIDANCE_SCALE))
    reno = reward_pipeline(t2i)
    for pipe in (guided, reno):
        pipe.set_progress_bar_config(disable=True)
    arms = [
        Arm(
            "conditional G (no optimisation)",
            t2i,
            {**conditional, "initialization": "prior", "num_inference_steps": 0},
        ),
        Arm(
            f"conditional G, guidance {TUNED_GUIDANCE_SCALE:g}",
            guided,
            {**conditional, "initialization": "prior", "num_inference_steps": 0},
        ),
    ]
    for iterations in settings.noise_optimization_iterations:
        arms.append(
            Arm(
                f"noise optimisation (ReNO, CLIP reward), {iterations} it.",
                reno,
                {**conditional, "initialization": "prior", "num_inference_steps": iterations - 1},
            )
        )
    steps, candidates = t2i.config.default_num_inference_steps, t2i.config.default_num_candidates
    arms.append(Arm(f"TR0N: translator (best of {candidates}) + {steps} Langevin, unconditional G", t2i, {}))
    iterations = settings.translator_start_iterations
    arms.append(
        Arm(
            f"translator + noise optimisation, {iterations} it.",
            reno,
            {**conditional, "initialization": "translator", "num_inference_steps": iterations - 1},
        )
    )
    if text is not None:
        arms.append(Arm("reference: tron-mnist-text (GAN G, shipped)", text, {}, reference=True))
    return arms


def run_arm(arm: Arm, conditions: Conditions, seeds: list[int], batch_size: int) -> tuple[np.ndarray, float]:
    """Images ``(B, 28, 28, 1)`` in [0, 1] for every condition, and the seconds they took after an untimed call on
    one image (the first backward pass through a model pays one-time costs: measured 0.28 s per image for 10 noise
    optimisation evaluations when that arm ran first, 0.16-0.19 s in later rounds)."""
    arm.pipe(
        **conditions.subset([0]),
        **arm.call,
        generator=seeded_generators([seeds[0]], arm.pipe._execution_device),
        output_type="latent",
    )
    images, started = [], time.perf_counter()
    for first in range(0, len(conditions), batch_size):
        indices = range(first, min(first + batch_size, len(conditions)))
        out = arm.pipe(
            **conditions.subset(indices),
            **arm.call,
            generator=seeded_generators([seeds[i] for i in indices], arm.pipe._execution_device),
            output_type="np",
        )
        images.append(out.images)
    return np.concatenate(images), time.perf_counter() - started


def head_to_head(
    t2i: Workload, text: Workload | None, settings: HeadToHeadSettings, evaluator: MnistEvaluator
) -> dict:
    """Run and score every arm; the comparisons the issue asks for (`conclusions`)."""
    started = time.perf_counter()
    conditions = make_conditions(t2i, settings.images_per_prompt)
    seeds = [EVALUATION_SEED + i for i in range(len(conditions))]
    rows = []
    for arm in make_arms(t2i.pipe, text.pipe if text is not None else None, settings):
        images, seconds = run_arm(arm, conditions, seeds, settings.batch_size)
        scores = evaluator.score_prompts(images, conditions.requests)
        row = {"arm": arm.name, "reference": arm.reference, "seconds_per_image": seconds / len(conditions), **scores}
        row["worst_prompt_correct"] = round(scores["worst_prompt_accuracy"] * settings.images_per_prompt)
        row["attributes_obeyed"] = (scores["stroke_weight_obeyed"] + scores["slant_obeyed"]) / 2
        rows.append(row)
        print(f"{arm.name}: {format_table([row], HEAD_TO_HEAD_COLUMNS).splitlines()[-1]}", flush=True)
    real = evaluator.real_baseline(conditions.labels)
    return {
        "pipeline": t2i.description,
        "reference": text.description if text is not None else None,
        "num_images": len(conditions),
        "images_per_prompt": settings.images_per_prompt,
        "seeds": f"{seeds[0]}..{seeds[-1]}",
        "settings": vars(settings),
        "rows": rows,
        "real_digits": real,
        "conclusions": conclusions(rows),
        "seconds": time.perf_counter() - started,
    }


def conclusions(rows: list[dict]) -> dict:
    """Among the arms on the same G (not the references): the best arms for their cost (no other arm is at most as slow and at least as good on digit accuracy and
    attributes obeyed, and faster or better on one of them), and the arms that beat plain conditional sampling on attributes obeyed (mean of stroke
    weight and slant obeyed) while keeping ``DIVERSITY_KEPT`` of its diversity."""

    def dominates(other, row):
        keys = ("accuracy", "attributes_obeyed")
        cheaper = other["seconds_per_image"] < row["seconds_per_image"]
        return (
            other["seconds_per_image"] <= row["seconds_per_image"]
            and all(other[k] >= row[k] for k in keys)
            and (cheaper or any(other[k] > row[k] for k in keys))
        )

    rows = [row for row in rows if not row.get("reference")]
    frontier = [row["arm"] for row in rows if not any(dominates(other, row) for other in rows if other is not row)]
    plain = rows[0]
    beating = [
        row["arm"]
        for row in rows[1:]
        if row["attributes_obeyed"] > plain["attributes_obeyed"]
        and row["diversity_ratio"] >= DIVERSITY_KEPT * plain["diversity_ratio"]
    ]
    return {"best_for_their_cost": frontier, "beat_plain_on_attributes_keeping_diversity": beating}


HEAD_TO_HEAD_COLUMNS = [
    ("arm", "arm", ""),
    ("seconds_per_image", "s / image", ".3f"),
    ("accuracy", "digit accuracy", ".3f"),
    ("stroke_weight_obeyed", "stroke obeyed", ".3f"),
    ("slant_obeyed", "slant obeyed", ".3f"),
    ("worst_prompt", "worst prompt", ""),
    ("worst_prompt_correct", "its correct images", "d"),
    ("diversity_ratio", "diversity / real", ".3f"),
    ("frechet_distance", "FD", ".1f"),
    ("frechet_distance_std", "FD bootstrap std", ".1f"),
]


def head_to_head_tables(result: dict) -> str:
    """The table, the real digits' reference and the two conclusions, as markdown."""
    real = dict(result["real_digits"], arm="real training digits (same digit counts)", seconds_per_image=None)
    real.update(worst_prompt=None, worst_prompt_correct=None, stroke_weight_obeyed=None, slant_obeyed=None)
    found = result["conclusions"]
    plain = result["rows"][0]
    return "\n".join(
        [
            f"{result['num_images']} images ({result['images_per_prompt']} per benchmark prompt, evaluation seeds "
            f"{result['seeds']}); G of `{result['pipeline']}`; scored by the evaluation classifier and pixel measures.",
            format_table(result["rows"] + [real], HEAD_TO_HEAD_COLUMNS),
            f"\nOn the same G, best for their cost (no arm as fast or faster is as good on digit accuracy and attributes "
            f"obeyed): "
            f"{', '.join(found['best_for_their_cost'])}.",
            f"Arms beating plain conditional sampling on attributes obeyed (mean of stroke and slant, "
            f"{plain['attributes_obeyed']:.3f}) with at least {DIVERSITY_KEPT:g} of its diversity "
            f"({plain['diversity_ratio']:.3f}): {', '.join(found['beat_plain_on_attributes_keeping_diversity']) or 'none'}.",
        ]
    )


__all__ = ["HeadToHeadSettings", "head_to_head", "head_to_head_tables", "make_arms"]
