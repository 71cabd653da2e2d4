"""Every script of ``conversion_scripts/`` refuses a source it cannot read (missing, empty, random bytes, random bytes
that look like a pickle) with one error line naming the option and the path, and a non-zero exit status: the line
`tron build` gives for the same file (`conversion.formats`), never a traceback."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tron_pipelines.cli import main


SCRIPTS = Path(__file__).resolve().parents[1] / "conversion_scripts"
# Each script and the arguments that make it read ``source`` first (the other sources need not exist).
SCRIPT_ARGUMENTS = {
    "convert_stylegan_to_diffusers": ("--checkpoint_path", ["--dump_path", "{out}/p"]),
    "convert_biggan_deep_to_diffusers": ("--checkpoint_path", ["--dump_path", "{out}/p"]),
    "convert_biggan_pytorch_to_diffusers": ("--checkpoint_path", ["--dump_path", "{out}/p"]),
    "convert_tr0n_original_to_diffusers": (
        "--checkpoint_path",
        ["--generator", "{out}/g", "--encoder", "{out}/e", "--dump_path", "{out}/p"],
    ),
    "build_tron_pipeline": (
        "--generator",
        ["--encoder", "{out}/e", "--translator", "{out}/t", "--dump_path", "{out}/p"],
    ),
}
SOURCES = ("missing", "empty", "random_bytes", "random_pickle_bytes")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bad_source(kind: str, folder: Path) -> Path:
    """A source no converter can read: a path that does not exist, an empty file, random bytes, or random bytes after
    the PROTO opcode a pickle starts with (so that it is read as an NVIDIA network pickle)."""
    path = folder / f"{kind}.pkl"
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random_bytes":
        path.write_bytes(b"\x00" + noise)
    elif kind == "random_pickle_bytes":
        path.write_bytes(b"\x80" + noise)
    return path


def script_error(name: str, source: Path, out: Path) -> str:
    option, rest = SCRIPT_ARGUMENTS[name]
    argv = [option, str(source), *(word.format(out=out) for word in rest)]
    with pytest.raises(SystemExit) as exit_info:
        load_script(name).main(argv)
    message = exit_info.value.code
    assert isinstance(message, str), message  # a message is exit status 1
    return message


def build_error(source: Path, out: Path) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "--generator", str(source), "--encoder", str(out / "e"), "--output", str(out / "build")])
    return str(exit_info.value.code)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("name", sorted(SCRIPT_ARGUMENTS))
def test_a_source_that_cannot_be_read_is_one_line(name, kind, tmp_path):
    source = bad_source(kind, tmp_path)
    message = script_error(name, source, tmp_path)
    option = SCRIPT_ARGUMENTS[name][0]
    assert message.startswith(f"{name}.py: error: {option} {source} ") and "\n" not in message, message
    if kind == "missing":
        assert message.endswith(f"{source} does not exist."), message
    elif kind == "random_pickle_bytes" and name == "convert_stylegan_to_diffusers":
        assert "(NVIDIA StyleGAN2-ADA / StyleGAN3 network pickle (.pkl)) could not be converted: " in message, message
    assert not list(tmp_path.glob("**/*.partial*")) and not (tmp_path / "p").exists()


@pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")
@pytest.mark.parametrize("kind", ("missing", "empty", "random_bytes"))
def test_scripts_say_what_tron_build_says_for_the_same_file(kind, tmp_path):
    source = bad_source(kind, tmp_path)
    build = build_error(source, tmp_path)
    assert build.startswith("tron build: error: --generator ") and "\n" not in build, build
    # The script that takes any generator format gives the same line; the single-format ones the same reason.
    same_option = script_error("build_tron_pipeline", source, tmp_path)
    assert same_option.split(": error: ", 1)[1] == build.split(": error: ", 1)[1]
    reason = build.split(f"{source} ", 1)[1].split(" Known formats:")[0]
    for name in ("convert_stylegan_to_diffusers", "convert_biggan_pytorch_to_diffusers"):
        assert f"{source} {reason}" in script_error(name, source, tmp_path)


def test_the_script_run_as_a_program_exits_with_one_line_and_no_traceback(tmp_path):
    empty = bad_source("empty", tmp_path)
    run = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "convert_stylegan_to_diffusers.py"),
            "--checkpoint_path",
            str(empty),
            "--dump_path",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"convert_stylegan_to_diffusers.py: error: --checkpoint_path {empty} is in no known "), line
    assert not (tmp_path / "x").exists()
