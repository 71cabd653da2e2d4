"""The ``tron`` command line: --help/--version, lazy imports, and the training subcommands."""

import ast
import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from accelerate.state import AcceleratorState, GradientState

import tron_pipelines
from tron_pipelines import TronPipeline
from tron_pipelines.cli import main
from tron_pipelines.training.arguments import parse_train_args


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def pipeline_dir(clip_components, tmp_path):
    TronPipeline(**clip_components).save_pretrained(tmp_path / "pipeline")
    return tmp_path / "pipeline"


def test_console_script_points_at_main():
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "tron"]
    assert script.value == "tron_pipelines.commands.tron_cli:main"


def fresh_process(code: str) -> str:
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_help_imports_no_model_code():
    out = fresh_process(
        "import sys\n"
        "from tron_pipelines.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers', 'tron_pipelines')))\n"
    )
    assert "train-translator" in out and "generate-pairs" in out
    # Argument definitions only: no torch, no diffusers, no pair, training, converter or model module.
    commands = ["build", "common", "demo", "evaluate", "generate", "generate_pairs", "samples"]
    commands += ["train_translator", "tron_cli"]
    utils = ["files", "lazy", "messages", "moved_modules", "options"]
    assert ast.literal_eval(out.split("LOADED ")[1].strip()) == sorted(
        [
            "tron_pipelines",
            "tron_pipelines.cli",
            "tron_pipelines.commands",
            *(f"tron_pipelines.commands.{name}" for name in commands),
            "tron_pipelines.training",
            "tron_pipelines.training.arguments",
            "tron_pipelines.utils",
            *(f"tron_pipelines.utils.{name}" for name in utils),
            "tron_pipelines.version",
        ]
    )


def test_package_import_is_lazy_and_every_name_resolves():
    out = fresh_process(
        "import sys\n"
        "import tron_pipelines\n"
        "print('TORCH', 'torch' in sys.modules)\n"
        "from tron_pipelines import ConvGenerator\n"
        "print('BIGGAN', 'tron_pipelines.models.biggan' in sys.modules)\n"
        "missing = [name for name in tron_pipelines.__all__ if getattr(tron_pipelines, name, None) is None]\n"
        "print('MISSING', missing)\n"
        "print('DIR', set(tron_pipelines.__all__) <= set(dir(tron_pipelines)))\n"
    )
    assert "TORCH False" in out and "BIGGAN False" in out and "MISSING []" in out and "DIR True" in out
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchName'"):
        tron_pipelines.NoSuchName  # noqa: B018


def test_training_options_accept_dashes():
    args = parse_train_args(["--pipeline", "p", "--num-pairs", "8", "--train-batch-size=4"])
    assert (args.num_pairs, args.train_batch_size) == (8, 4)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tron_pipelines {tron_pipelines.__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "train-translator" in capsys.readouterr().out


def test_train_translator_help_has_the_diffusers_style_flags(capsys):
    with pytest.raises(SystemExit):
        main(["train-translator", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--pipeline",
        "--pairs_dir",
        "--num_pairs",
        "--output_dir",
        "--num_components",
        "--condition_noise",
        "--condition_noise_scale",
        "--learning_rate",
        "--lr_scheduler",
        "--lr_warmup_steps",
        "--train_batch_size",
        "--num_train_epochs",
        "--max_train_steps",
        "--mixed_precision",
        "--checkpointing_steps",
        "--checkpoints_total_limit",
        "--resume_from_checkpoint",
        "--validation_steps",
        "--seed",
        "--push_to_hub",
        "--hub_model_id",
    ):
        assert flag in text, flag


def test_python_module_entry_is_the_same_command():
    import tron_pipelines.train as module_entry
    from tron_pipelines.training import train

    assert module_entry.main is train.main


def test_generate_pairs_then_train_translator(pipeline_dir, tmp_path, capsys):
    pairs_dir, output_dir = tmp_path / "pairs", tmp_path / "out"
    pair_args = [
        "--pipeline",
        str(pipeline_dir),
        "--pairs_dir",
        str(pairs_dir),
        "--num_pairs",
        "48",
        "--pairs_per_shard",
        "16",
    ]
    assert main(["generate-pairs", *pair_args]) == 0
    assert "Generated 48 pairs" in capsys.readouterr().out
    AcceleratorState._reset_state(reset_partial_state=True)
    assert main(["generate-pairs", *pair_args]) == 0  # complete already: nothing is generated again
    assert "Generated" not in capsys.readouterr().out

    AcceleratorState._reset_state(reset_partial_state=True)
    assert (
        main(
            [
                "train-translator",
                "--pipeline",
                str(pipeline_dir),
                "--pairs_dir",
                str(pairs_dir),
                "--output_dir",
                str(output_dir),
                "--num_components",
                "2",
                "--train_batch_size",
                "8",
                "--max_train_steps",
                "4",
                "--num_validation_pairs",
                "16",
                "--num_validation_conditions",
                "2",
                "--report_to",
                "none",
            ]
        )
        == 0
    )
    summary = capsys.readouterr().out
    assert "Trained 4 steps" in summary and "steps/s" in summary and "pairs/s" in summary
    assert (output_dir / "translator" / "config.json").is_file() and (output_dir / "README.md").is_file()


def test_generate_pairs_needs_a_folder_and_a_count(pipeline_dir):
    with pytest.raises(ValueError, match="--pairs_dir"):
        main(["generate-pairs", "--pipeline", str(pipeline_dir), "--num_pairs", "8"])
    with pytest.raises(ValueError, match="--num_pairs"):
        main(["generate-pairs", "--pipeline", str(pipeline_dir), "--pairs_dir", "x", "--num_pairs", "0"])
