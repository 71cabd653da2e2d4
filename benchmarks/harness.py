"""The harness the sections of `run.py` share: one command line, one output folder, one report.

A section is a `Section`: its names on the command line, its options (an argument group of the one parser), its
sizes (``--quick`` or full) and the function that runs it. That function gets the parsed arguments, its sizes and
the `Report`; it prints and records its tables with `Report.emit`, writes ``<section>.json`` with
`Report.write_json` and puts plots in `Report.output_dir`. `parse_args` reads the command line and checks the named
sections' options before anything runs; `run_sections` runs them in the order `run.py` lists them and writes
``report.md`` (what produced the numbers, then every table) and ``environment.json``.
"""

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from common import write_json


BENCHMARKS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Section:
    """A part of the benchmark suite.

    Attributes:
        names: Its names on the command line. Several names share one run (the speed sections measure each workload
            in turn for all of them); the run reads which of them were asked from ``args.sections``.
        summary: One line for ``--help``.
        run: ``run(args, sizes, report)``: measures, emits its tables, writes its JSON.
        add_arguments: Adds its options to its argument group (names unique across sections).
        check: ``check(args)``: what is wrong with its options (a message), or None; run for every named section
            before any section runs, so a mistake in the last section does not surface after hours of the first.
        quick / full: Its sizes with and without ``--quick``; ``--repeats`` replaces a ``"repeats"`` entry.
        default: Run when no section is named (``python benchmarks/run.py [--quick]``).
    """

    names: tuple[str, ...]
    summary: str
    run: Callable[[argparse.Namespace, dict, "Report"], None]
    add_arguments: Callable[[argparse._ArgumentGroup], None] | None = None
    check: Callable[[argparse.Namespace], str | None] | None = None
    quick: dict = field(default_factory=dict)
    full: dict = field(default_factory=dict)
    default: bool = False


def build_parser(sections: tuple[Section, ...], description: str) -> argparse.ArgumentParser:
    """The one parser: the options every section shares, then one argument group per section."""
    names = [name for section in sections for name in section.names]
    defaults = [name for section in sections if section.default for name in section.names]
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "sections", nargs="*", help=f"Sections to run, of {', '.join(names)} (default: {', '.join(defaults)})."
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--quick", action="store_true", help="Small sizes: the default sections in under 10 minutes on 2 CPU cores."
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="Timed runs per measurement (default: by section and mode)."
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads.")
    parser.add_argument("--output_dir", default=str(BENCHMARKS_DIR / "results"))
    for section in sections:
        if section.add_arguments is not None:
            section.add_arguments(parser.add_argument_group(", ".join(section.names), section.summary))
    return parser


def parse_args(
    sections: tuple[Section, ...], argv=None, description: str = "", hidden_sections: tuple[str, ...] = ()
) -> argparse.Namespace:
    """Parsed arguments; ``args.sections`` are the named sections, or the default ones when none is named.
    ``hidden_sections`` are accepted without being listed (internal entry points such as a subprocess probe)."""
    parser = build_parser(sections, description)
    args = parser.parse_args(argv)
    names = [name for section in sections for name in section.names]
    unknown = set(args.sections) - set(names) - set(hidden_sections)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(names)}")
    args.sections = args.sections or [name for section in sections if section.default for name in section.names]
    for section in sections:
        if section.check is not None and any(name in args.sections for name in section.names):
            problem = section.check(args)
            if problem:
                parser.error(problem)
    return args


def environment(device: str) -> dict:
    """What produced the numbers: command, machine, versions, commit, load."""

    def git(*arguments):
        return subprocess.run(["git", *arguments], capture_output=True, text=True, cwd=BENCHMARKS_DIR).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " + uncommitted changes"
    info = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": commit,
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


class Report:
    """What a run writes to its output folder: ``<section>.json`` files, and on `close` ``report.md`` (the
    environment, every emitted table in order, the total time) and ``environment.json``."""

    def __init__(self, output_dir: Path, env: dict):
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.environment = env
        self.started = time.perf_counter()
        self.parts = [
            f"# TR0N benchmarks\n\n`{env['command']}` at commit {env['commit']}, {env['date']}, device {env['device']}, "
            f"torch {env['torch']}, {env['threads']} threads, load average at start {env['load_average_at_start']}.\n"
        ]

    def emit(self, title: str, text: str) -> None:
        """Print a titled block (markdown) now and keep it for ``report.md``."""
        print(f"\n## {title}\n\n{text}", flush=True)
        self.parts.append(f"## {title}\n\n{text}\n")

    def write_json(self, name: str, payload) -> Path:
        """``<output_dir>/<name>.json``."""
        path = self.output_dir / f"{name}.json"
        write_json(path, payload)
        return path

    def close(self) -> None:
        env = self.environment
        env["load_average_at_end"] = os.getloadavg()
        env["seconds"] = time.perf_counter() - self.started
        self.write_json("environment", env)
        self.parts.append(f"Total: {env['seconds']:.0f} s; load average at end {env['load_average_at_end']}.\n")
        (self.output_dir / "report.md").write_text("\n".join(self.parts))
        print(f"\nTotal {env['seconds']:.0f} s. Results in {self.output_dir}.")


def run_sections(sections: tuple[Section, ...], args: argparse.Namespace) -> Report:
    """Run every section with a name in ``args.sections`` (each once, in the order of ``sections``) into one report."""
    torch.set_num_threads(args.threads)
    report = Report(Path(args.output_dir), environment(args.device))
    for section in sections:
        if any(name in args.sections for name in section.names):
            sizes = dict(section.quick if args.quick else section.full)
            if args.repeats and "repeats" in sizes:
                sizes["repeats"] = args.repeats
            section.run(args, sizes, report)
    report.close()
    return report
