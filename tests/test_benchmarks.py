"""The benchmark suite's scoring and claim logic, and a tiny end-to-end quality run on the embedded class pipeline
(the suite itself is run by `python benchmarks/run.py`, not by the tests)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from common import FlopCounter  # noqa: E402
from head_to_head import conclusions  # noqa: E402
from metrics import MnistEvaluator  # noqa: E402
from quality import (  # noqa: E402
    CANDIDATE_SEED,
    QualitySettings,
    energy_ranking_latents,
    make_conditions,
    paper_claim,
    quality,
    quality_tables,
)
from workloads import load_workload  # noqa: E402


@pytest.fixture(scope="module")
def evaluator():
    return MnistEvaluator()


def test_real_digits_score_as_real(evaluator):
    split = evaluator.split
    scores = evaluator.score(split.held_out_images[:200], split.held_out_labels[:200])
    assert scores["accuracy"] > 0.95
    assert 0.85 < scores["diversity_ratio"] < 1.15
    assert 0 < scores["frechet_distance_std"] < scores["frechet_distance"]
    collapsed = evaluator.score(
        np.repeat(split.held_out_images[:1], 20, axis=0), np.repeat(split.held_out_labels[:1], 20)
    )
    assert collapsed["accuracy"] in (0.0, 1.0) and collapsed["diversity_ratio"] == 0.0


def _row(arm, steps, energy, accuracy, diversity, frechet, frechet_std=1.0):
    return {
        "arm": arm,
        "steps": steps,
        "energy": energy,
        "accuracy": accuracy,
        "diversity_ratio": diversity,
        "diversity_ratio_correct": diversity,
        "frechet_distance": frechet,
        "frechet_distance_std": frechet_std,
    }


def test_real_baseline_takes_the_counts_the_split_holds_and_says_when_it_cannot(evaluator):
    counts = np.bincount(evaluator.split.train_labels, minlength=10)
    # Every training digit of a class is available, one more is not.
    assert evaluator.real_baseline(np.full(counts[1], 1))["accuracy"] > 0.9
    too_many = np.full(counts[1] + 1, 1)
    with pytest.raises(ValueError, match=rf"{counts[1] + 1} real digits of class 1.*only {counts[1]}"):
        evaluator.real_baseline(too_many)


def test_head_to_head_conclusions_follow_cost_and_the_diversity_bar():
    def row(arm, seconds, accuracy, attributes, diversity):
        return {
            "arm": arm,
            "seconds_per_image": seconds,
            "accuracy": accuracy,
            "attributes_obeyed": attributes,
            "diversity_ratio": diversity,
        }

    rows = [
        row("plain", 0.01, 0.99, 0.80, 0.60),
        row("slower, better attributes, diverse", 0.5, 0.99, 0.85, 0.55),
        row("slower, better attributes, collapsed", 0.4, 1.00, 0.90, 0.50),
        row("slower and worse", 0.3, 0.98, 0.80, 0.70),
        row("slowest, no better", 2.0, 1.00, 0.90, 0.60),
        # Another G: shown, never part of the conclusions.
        {**row("reference", 0.001, 1.0, 1.0, 1.0), "reference": True},
    ]
    found = conclusions(rows)
    # "slower and worse" is dominated by plain; "slowest" by the 0.4 s arm (as good on both, cheaper); the 0.5 s arm
    # is beaten on attributes by the cheaper 0.4 s arm.
    assert found["best_for_their_cost"] == ["plain", "slower, better attributes, collapsed"]
    # 0.55 >= 0.9 * 0.60 keeps enough diversity; 0.50 does not.
    assert found["beat_plain_on_attributes_keeping_diversity"] == [
        "slower, better attributes, diverse",
        "slowest, no better",
    ]


def test_claim_judges_diversity_by_distance_from_real_digits_and_fd_within_noise():
    prior = _row("prior", 100, 0.1, 0.6, 1.2, 40.0)  # more "diverse" than real digits because it is often wrong
    rows = [
        prior,
        _row("translator", 10, 0.05, 0.9, 0.95, 41.0),
        _row("translator_mean", 10, 0.01, 1.0, 0.3, 40.0),
        _row("translator_search", 10, 0.05, 0.9, 0.95, 45.0),
    ]
    claim = paper_claim(rows, 10, 100, real_diversity=1.0)
    assert claim["translator@10 vs prior@100"]["holds"]  # FD 41 vs 40 is within sqrt(2) of bootstrap noise
    assert claim["translator_mean@10 vs prior@100"]["checks"]["diversity_gap"] is False  # collapse is not diversity
    assert claim["translator_search@10 vs prior@100"]["checks"]["frechet_distance"] is False
    assert claim["translator@10 vs prior@100"]["fewest_steps_matching_prior_energy_and_accuracy"] == 10


def test_worst_digit_and_worst_prompt_are_reported(evaluator):
    # Real digits, with the labels of a quarter of the sevens and of one prompt's images swapped: the independent
    # count of what the evaluation classifier gets right must single them out.
    split = evaluator.split
    images, labels = split.held_out_images[:300], split.held_out_labels[:300].copy()
    predicted = evaluator.classifier.predict(images)
    sevens = np.flatnonzero(labels == 7)
    labels[sevens[: len(sevens) // 4]] = 1
    requests = [
        {"prompt": f"p{i % 3}", "label": int(label), "stroke_weight": -1, "slant": -1}
        for i, label in enumerate(labels)
    ]
    for i in range(0, 300, 3):
        requests[i]["label"] = (requests[i]["label"] + 1) % 10  # prompt "p0" asks for the wrong digit
    scores = evaluator.score_prompts(images, requests)
    asked = np.array([r["label"] for r in requests])
    correct = predicted == asked
    by_class = {k: correct[asked == k].mean() for k in range(10)}
    assert scores["accuracy_by_class"] == pytest.approx(by_class)
    assert scores["worst_class"] == min(by_class, key=by_class.get)
    assert scores["worst_prompt"] == "p0" and scores["worst_prompt_accuracy"] == pytest.approx(correct[::3].mean())
    assert scores["accuracy_by_prompt"]["p1"] == pytest.approx(correct[1::3].mean())


def test_attribute_shares_count_each_digits_slants_and_stroke_weights(evaluator):
    # Real digits, each mirrored left-right once: a mirrored digit leans the other way, so the shares of left and
    # right swap between the two halves, and each is counted here image by image with the slant measure itself.
    data = evaluator.data
    images, labels = evaluator.split.held_out_images[:400], evaluator.split.held_out_labels[:400]
    shares = evaluator.attribute_shares(images, labels)
    mirrored = evaluator.attribute_shares(images[:, :, ::-1], labels)
    for digit in range(10):
        mine = images[labels == digit]
        slants = np.array([data.slant(image[None])[0] for image in mine])
        assert shares[digit]["share"] == pytest.approx(len(mine) / len(images))
        assert shares[digit]["left"] == pytest.approx(np.mean(slants < data.SLANT_LEFT_BELOW))
        assert shares[digit]["right"] == pytest.approx(np.mean(slants > data.SLANT_RIGHT_ABOVE))
        assert shares[digit]["upright"] == pytest.approx(np.mean(np.abs(slants) <= data.SLANT_UPRIGHT_WITHIN))
        assert mirrored[digit]["left"] == pytest.approx(shares[digit]["right"])
        assert mirrored[digit]["thin"] == pytest.approx(shares[digit]["thin"])  # mirroring keeps the stroke
        assert (
            0 < shares[digit]["thin"]
            and 0 < shares[digit]["bold"]
            and shares[digit]["thin"] + shares[digit]["bold"] < 1
        )


def test_flop_counter_counts_forward_and_input_gradient_under_autograd_grad():
    layer = torch.nn.Linear(8, 4).requires_grad_(False)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1).requires_grad_(False)
    inputs = torch.randn(2, 8, requires_grad=True)
    images = torch.randn(2, 3, 6, 6, requires_grad=True)
    with FlopCounter() as counter, torch.enable_grad():
        torch.autograd.grad(layer(inputs).sum() + conv(images).sum(), [inputs, images])
    linear_macs = 2 * 8 * 4
    conv_macs = 2 * 5 * 6 * 6 * 3 * 3 * 3
    # Forward and input gradient only: the frozen weights get no gradient, so no weight-gradient products run.
    assert counter.total == 2 * (2 * linear_macs) + 2 * (2 * conv_macs)


def test_quality_section_runs_every_arm(evaluator, tmp_path):
    workload = load_workload("tron-mnist")
    settings = QualitySettings(
        samples_per_condition=2,
        step_counts=[0, 2],
        grid_step_sizes=[1.0],
        grid_noise_stds=[0.01],
        tuning_samples_per_condition=1,
        fusedream_candidates=3,
    )
    result = quality(workload, settings, evaluator, tmp_path)
    arms = {row["arm"] for row in result["rows"]}
    assert arms == {"translator", "translator_search", "translator_mean", "prior", "best_of_n_prior", "fusedream"}
    assert all(len([r for r in result["rows"] if r["arm"] == arm]) == 2 for arm in arms)
    assert result["defaults"]["num_images"] == 20
    assert any(name.startswith("pipeline defaults") for name in result["claim"])
    tables = quality_tables(result)
    assert "Claim pipeline defaults (translator, best of 4)@10 vs prior@2" in tables
    assert "| worst digit |" in tables and "Weakest conditions: " in tables and "Accuracy per digit: 0: " in tables
    assert all((tmp_path / name).is_file() for name in result["plots"] + result["sample_grids"])


def test_sampler_section_counts_every_sampler_step_and_the_recomputation():
    from speed import sampler_cost
    from test_diffusers_generators import classifier_tron_pipeline, gradient_generators
    from workloads import Workload

    pipe = classifier_tron_pipeline(gradient_generators()["ddim"].eval())
    workload = Workload("tiny-ddim", pipe, "class", "tiny random DDIM", num_classes=4)
    result = sampler_cost(workload, batch_size=2, sampler_steps=[1, 2], langevin_steps=1, repeats=1)
    rows = {(row["sampler_steps"], row["checkpointing"]): row for row in result["rows"]}
    assert set(rows) == {(1, False), (1, True), (2, False), (2, True)}
    one, two = rows[1, False]["generator_gflops"], rows[2, False]["generator_gflops"]
    # G's work is per sampler step: a forward pass and a backward pass to the input as costly as it (frozen weights
    # get no gradient); checkpointing adds a second forward pass of every step, a little less than a full one (the
    # recomputation stops once it has what the backward pass needs).
    assert two == pytest.approx(2 * one, rel=1e-6)
    assert 1.3 * one < rows[1, True]["generator_gflops"] <= 1.5 * one
    assert all(
        row["gflops_per_langevin_step"] > row["generator_gflops"] > 0 and row["seconds_per_langevin_step"] > 0
        for row in rows.values()
    )
    assert pipe.generator.config.num_sampler_steps == 3  # the pipeline's own G is put back


@torch.no_grad()
def test_energy_ranking_picks_the_lowest_energy_draws_of_the_pool_for_each_condition():
    workload = load_workload("tron-mnist")
    pipe = workload.pipe
    conditions = make_conditions(workload, samples_per_condition=3)
    chosen = energy_ranking_latents(workload, conditions, samples_per_condition=3, pool_size=50, chunk_size=16)
    assert chosen.shape == (30, pipe.generator.latent_dim)
    # Independently: the class energy is -log p(class) under f, from f's probabilities as training pairs label them.
    pool = pipe.generator.sample_latents(50, generator=torch.Generator().manual_seed(CANDIDATE_SEED))
    adapter = pipe.encoder_adapter
    energies = -adapter.encode_generated(pipe.generator(pool)).log()  # (50, 10)
    for label in range(10):
        expected = pool[energies[:, label].argsort()[:3]]
        picked = chosen[3 * label : 3 * label + 3]
        assert torch.equal(picked.sort(dim=0).values, expected.sort(dim=0).values), label
    with pytest.raises(ValueError, match="not blocks of 4"):
        energy_ranking_latents(workload, conditions, samples_per_condition=4, pool_size=50)


# The harness of run.py ------------------------------------------------------------------------------------------------
def recording_sections(calls: list) -> tuple:
    """Three sections that record how they were run: a default one with sizes by mode, a default pair sharing one
    run, and an optional one with an option and a check."""
    from harness import Section

    def section(names, **kwargs):
        def run(args, sizes, report):
            calls.append((names[0], [name for name in names if name in args.sections], sizes))
            report.emit(f"{names[0]} table", f"| {names[0]} |")
            report.write_json(names[0], sizes)

        return Section(names=names, summary=f"The {names[0]} section.", run=run, **kwargs)

    def add_arguments(group):
        group.add_argument("--optional_value", type=int, default=0)

    return (
        section(("first",), quick={"repeats": 1, "size": 2}, full={"repeats": 5, "size": 8}, default=True),
        section(("second", "third"), default=True),
        section(
            ("optional",),
            add_arguments=add_arguments,
            check=lambda args: "--optional_value must be >= 0" if args.optional_value < 0 else None,
        ),
    )


def test_harness_runs_the_named_sections_in_order_into_one_report(tmp_path, capsys):
    from harness import parse_args, run_sections

    calls = []
    sections = recording_sections(calls)
    args = parse_args(sections, ["--output_dir", str(tmp_path / "all")])
    assert args.sections == ["first", "second", "third"]  # the default sections
    run_sections(sections, args)
    assert calls == [("first", ["first"], {"repeats": 5, "size": 8}), ("second", ["second", "third"], {})]
    report = (tmp_path / "all" / "report.md").read_text()
    assert report.startswith("# TR0N benchmarks\n\n`python ") and " at commit " in report
    assert report.index("## first table\n\n| first |") < report.index("## second table") < report.index("Total: ")
    assert json.loads((tmp_path / "all" / "first.json").read_text()) == {"repeats": 5, "size": 8}
    assert json.loads((tmp_path / "all" / "environment.json").read_text())["seconds"] > 0

    # Listed order, not command-line order; one run for sections sharing one; --quick sizes; --repeats replaces.
    calls.clear()
    run_sections(
        sections,
        parse_args(
            sections,
            ["optional", "third", "first", "--quick", "--repeats", "3", "--output_dir", str(tmp_path / "some")],
        ),
    )
    assert calls == [
        ("first", ["first"], {"repeats": 3, "size": 2}),
        ("second", ["third"], {}),
        ("optional", ["optional"], {}),
    ]

    # Mistakes stop the run before any section runs.
    calls.clear()
    for argv, message in (
        (["first", "nope"], "unknown sections ['nope']"),
        (["first", "optional", "--optional_value", "-1"], "--optional_value must be >= 0"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(sections, argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert calls == []


def test_run_py_rejects_a_sections_mistake_before_running_any(capsys):
    import run

    assert run.parse_args(run.SECTIONS, []).sections == ["quality", "throughput", "overhead", "memory", "features"]
    for argv, message in (
        (["quality", "compare"], "needs --compare_pipelines"),
        (["eval-cost", "--eval_cost_steps", "2", "2"], "at least two different T values"),
        (["cost", "--cost_workloads", "biggan-deep-64"], "invalid choice: 'biggan-deep-64'"),
        (
            ["cost", "--cost_workloads", "stylegan-xl-256", "nvae-ffhq-256", "--cost_gradient_checkpointing"],
            "the generators of nvae-ffhq-256 do not support it",
        ),
        (["demo-examples", "--images_per_prompt", "1"], "--images_per_prompt must be at least 2"),
        (["nope"], "unknown sections ['nope']"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            run.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_run_py_takes_the_text_to_image_section_on_request_with_its_options(capsys):
    import bench_text_to_image
    import run

    assert "text-to-image" not in run.parse_args(run.SECTIONS, []).sections  # heavy: only when named
    args = run.parse_args(
        run.SECTIONS,
        ["text-to-image", "--text_to_image_parts", "steps", "--text_to_image_configurations", "taesd-blocks"]
        + ["--memory_limit_gib", "6"],
    )
    assert args.sections == ["text-to-image"] and bench_text_to_image.SECTION in run.SECTIONS
    assert (args.text_to_image_parts, args.text_to_image_configurations) == (["steps"], ["taesd-blocks"])
    assert args.memory_limit_gib == 6 and args.weight_storage_variants == list(
        bench_text_to_image.WEIGHT_STORAGE_VARIANTS
    )
    for argv, message in (
        (["text-to-image", "--memory_limit_gib", "0"], "--memory_limit_gib must be positive"),
        (["text-to-image", "--text_to_image_configurations", "vae-fast"], "invalid choice: 'vae-fast'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            run.parse_args(run.SECTIONS, argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert "text-to-image" in run.__doc__


def test_text_to_image_section_writes_its_head_table_through_run_py(tmp_path):
    import run

    run.main(["text-to-image", "--text_to_image_parts", "heads", "--output_dir", str(tmp_path), "--threads", "1"])
    heads = json.loads((tmp_path / "text-to-image.json").read_text())["heads"]
    assert [(row["condition_dim"], row["mean_rank"]) for row in heads][:3] == [(768, "full"), (768, 256), (768, 64)]
    report = (tmp_path / "report.md").read_text()
    assert "## Text-to-image: translator mean head" in report and "| 768 | full | 503.5 |" in report


def test_eval_cost_section_through_run_py(tmp_path):
    import run

    run.main(
        [
            "eval-cost",
            "--eval_cost_workload",
            "tron-mnist",
            "--eval_cost_batch_size",
            "2",
            "--eval_cost_steps",
            "0",
            "2",
        ]
        + ["--target_steps", "10", "--num_images", "100", "--threads", "1", "--output_dir", str(tmp_path)]
    )
    result = json.loads((tmp_path / "eval-cost.json").read_text())
    per_image = {int(steps): seconds for steps, seconds in result["seconds_per_image"].items()}
    assert sorted(per_image) == [0, 2] and result["batch_size"] == 2 and result["num_candidates"] == 4
    # Two points: the line through them, extrapolated to T = 10 and 100 images.
    slope = (per_image[2] - per_image[0]) / 2
    assert result["target"]["seconds_per_image"] == pytest.approx(per_image[0] + 10 * slope)
    assert result["target"]["hours"] == pytest.approx(result["target"]["seconds_per_image"] * 100 / 3600)
    report = (tmp_path / "report.md").read_text()
    assert "## Eval cost: tron-mnist, batch 2" in report and "| 10 (fit a + b T) |" in report


def test_demo_examples_section_chooses_again_from_the_stored_scores_without_writing_them(tmp_path):
    import demo_examples
    import run

    stored = demo_examples.EXAMPLES_FILE.read_bytes()
    run.main(
        ["demo-examples", "--reuse_measurements", "--dry_run", "--min_accuracy", "1.0", "--output_dir", str(tmp_path)]
    )
    assert demo_examples.EXAMPLES_FILE.read_bytes() == stored
    measured = json.loads(stored)["tron-mnist-text"]
    chosen = json.loads((tmp_path / "demo-examples.json").read_text())
    assert chosen["all_prompts"] == measured["all_prompts"] and chosen["settings"]["min_accuracy"] == 1.0
    # The stricter bar, applied by hand: per digit, a prompt with every image read as the digit.
    perfect = {
        row["digit"]
        for row in measured["all_prompts"]
        if row["digit_accuracy"] == 1.0 and (row["attribute_obeyed"] or 1.0) >= 0.9
    }
    assert sorted(example["digit"] for example in chosen["examples"]) == sorted(perfect)
    assert all(example["digit_accuracy"] == 1.0 for example in chosen["examples"])
    assert "written to" not in (tmp_path / "report.md").read_text()


# The cost section -----------------------------------------------------------------------------------------------------
def test_cost_stages_count_the_work_of_each_stage():
    from cost import STAGES, stage_costs, stages_of
    from torch.utils.flop_counter import FlopCounterMode
    from workloads import _random_clip, biggan_tiny_workload

    from tron_pipelines.encoders import EncoderAdapter
    from tron_pipelines.models import StyleGAN2Generator

    torch.manual_seed(0)
    generator = StyleGAN2Generator(z_dim=16, w_dim=24, block_channels=(32, 16, 16), mapping_layers=3)
    generator = generator.eval().requires_grad_(False)
    encoder = _random_clip(projection_dim=32, image_size=16, patch_size=8, hidden_size=32, layers=1, heads=2)
    encoder = encoder.requires_grad_(False)
    assert stages_of(generator) == STAGES
    stages = stage_costs(generator, encoder, list(STAGES), 1, pair_batch=2, mapping_batch=3, num_augmentations=1)
    stages = stages["stages"]
    assert [stages[name]["units"] for name in STAGES] == [3, 2, 2, 1, 1]
    # The mapping network by hand: 3 rows through a 16 -> 24 layer and two 24 -> 24 layers, 2 FLOPs per multiply-add.
    assert stages["mapping"]["flops"] == 2 * 3 * (16 * 24 + 2 * 24 * 24)
    # torch's own counter (the per-module one the BigGAN stage script used) on the same work.
    latents = generator.sample_latents(2)
    adapter = EncoderAdapter(encoder)
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        images = generator.generate(latents)
    with FlopCounterMode(display=False) as pairs, torch.no_grad():
        adapter.encode_generated(generator.generate(latents))
    assert stages["synthesis_forward"]["flops"] == forward.get_total_flops() > 0
    assert stages["pairs"]["flops"] == pairs.get_total_flops() > forward.get_total_flops()
    assert images.shape == (2, 3, 16, 16)
    # Each augmented copy adds one pass of f forward and backward to the Langevin step, nothing else.
    langevin = [stages["langevin"]["flops"]] + [
        stage_costs(generator, encoder, ["langevin"], 1, num_augmentations=n)["stages"]["langevin"]["flops"]
        for n in (2, 3)
    ]
    assert langevin[2] - langevin[1] == langevin[1] - langevin[0] > 0
    assert stages["train"]["flops"] > 0 and all(stage["seconds"] > 0 for stage in stages.values())

    # A generator without a mapping network (BigGAN, with its class embedding as an auxiliary latent to train).
    biggan = biggan_tiny_workload().pipe
    assert stages_of(biggan.generator) == STAGES[1:]
    costs = stage_costs(biggan.generator, biggan.encoder, ["train"], 1)
    # Sized as the workload's own translator (the hand-sized one of the BigGAN + CLIP setting).
    translator_parameters = sum(p.numel() for p in biggan.translator.parameters())
    assert costs["parameters_M"]["translator"] == translator_parameters / 1e6
    with pytest.raises(ValueError, match=r"has no stage \['mapping'\]"):
        stage_costs(biggan.generator, biggan.encoder, ["mapping"], 1)


def test_cost_stages_of_stylegan_xl_map_with_a_class_and_checkpoint_each_synthesis_layer():
    from common import FlopCounter
    from cost import COST_WORKLOADS, stage_costs
    from workloads import _random_clip

    from tron_pipelines.models import StyleGANXLGenerator
    from tron_pipelines.models.stylegan_xl import stylegan_xl_synthesis_layers

    torch.manual_seed(0)
    layers = stylegan_xl_synthesis_layers(stem_num_layers=3, superres_stages=[], channel_base=256, channel_max=16)
    generator = StyleGANXLGenerator(z_dim=8, w_dim=16, num_classes=5, class_embed_dim=6, synthesis_layers=layers)
    generator = generator.eval().requires_grad_(False)
    encoder = _random_clip(projection_dim=32, image_size=16, patch_size=8, hidden_size=32, layers=1, heads=2)
    encoder = encoder.requires_grad_(False)
    stages = ["mapping", "synthesis_forward", "langevin"]
    plain = stage_costs(generator, encoder, stages, 1, pair_batch=1, mapping_batch=3, num_augmentations=1, warmup=0)
    plain = plain["stages"]
    # The class-conditional mapping by hand, 3 rows: the class row projected (6 -> 8), then [z, projection] through
    # 16 -> 16 and 16 -> 16, 2 FLOPs per multiply-add.
    assert plain["mapping"]["flops"] == 2 * 3 * (6 * 8 + 16 * 16 + 16 * 16)
    assert all(stage["cpu_seconds"] > 0 for stage in plain.values())
    # Checkpointed, the backward pass runs the synthesis layers again (up to the last activation it needs): more
    # than nothing, at most their forward pass (the synthesis forward of one image without its Fourier input).
    generator.enable_gradient_checkpointing()
    checkpointed = stage_costs(generator, encoder, ["langevin"], 1, num_augmentations=1, warmup=0)["stages"]
    with FlopCounter() as fourier, torch.no_grad():
        generator.fourier_input(generator.latents_to_ws(generator.sample_latents(1))[:, 0])
    recomputed = checkpointed["langevin"]["flops"] - plain["langevin"]["flops"]
    assert 0 < recomputed <= plain["synthesis_forward"]["flops"] - fourier.total
    # The full-size workloads: TR0N's imagenet512.pkl has 37 ws, NVAE's top latent 1280 values.
    with torch.device("meta"):
        assert COST_WORKLOADS["stylegan-xl-512"].generator().num_ws == 37
        assert COST_WORKLOADS["nvae-ffhq-256"].generator().latent_dim == 1280


def test_biggan_deep_configs_are_the_released_ones():
    from pytorch_pretrained_biggan import BigGANConfig
    from workloads import biggan_deep_config

    from tron_pipelines.conversion.biggan import biggan_deep_config_from_pytorch_pretrained

    assert biggan_deep_config(128) == BigGANConfig().__dict__  # the package's defaults are biggan-deep-128's
    for resolution in (128, 256, 512):
        # The converter checks that the layers make `output_dim` pixels.
        assert biggan_deep_config_from_pytorch_pretrained(biggan_deep_config(resolution))["latent_dim"] == 128


def test_text_to_image_translator_head_sizes_follow_the_head_formula():
    from bench_text_to_image import translator_head_sizes

    rows = {(row["condition_dim"], row["mean_rank"]): row for row in translator_head_sizes(latent_dim=16384)}
    hidden, k, d = 3072, 10, 16384
    assert rows[(768, "full")]["mean_head_M"] * 1e6 == hidden * k * d + k * d
    assert rows[(768, 64)]["mean_head_M"] * 1e6 == hidden * k * 64 + k * 64 + 64 * d + d
    assert rows[(1024, "full")]["training_GiB"] == 4 * rows[(1024, "full")]["weights_GiB"]


def test_cast_on_access_weight_storage_survives_the_backward_pass_where_diffusers_hooks_fail():
    import copy

    from bench_text_to_image import store_weights_cast_on_access
    from test_text_to_image_generators import tiny_conditional_unet

    unet = tiny_conditional_unet().to(torch.bfloat16)
    unet.requires_grad_(False)
    sample, context = torch.randn(1, 4, 8, 8).bfloat16(), torch.randn(1, 4, 16).bfloat16()

    def gradient(model):
        leaf = sample.clone().requires_grad_(True)
        output = model(leaf, torch.tensor(10), encoder_hidden_states=context).sample
        return torch.autograd.grad(output.float().square().sum(), leaf)[0]

    hooked = copy.deepcopy(unet)
    hooked.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="Float8"):
        gradient(hooked)
    # Cast on access: the gradient of the model whose linear and convolution weights were rounded to float8.
    stored = copy.deepcopy(unet)
    store_weights_cast_on_access(stored, torch.float8_e4m3fn, torch.bfloat16)
    rounded = copy.deepcopy(unet)
    for module in rounded.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            module.weight.data = module.weight.data.to(torch.float8_e4m3fn).to(torch.bfloat16)
    assert torch.equal(gradient(stored), gradient(rounded))
    assert stored.conv_in.parametrizations.weight.original.dtype == torch.float8_e4m3fn
