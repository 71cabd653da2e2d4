"""The stages of ``tron build``: from a generator checkpoint and an encoder to a trained, documented (and pushed) TR0N
pipeline.

    tron build --generator biggan-deep-256 --encoder openai/clip-vit-base-patch32 --output tron-biggan
    accelerate launch --multi_gpu --num_processes 8 -m tron_pipelines.cli build ... --mixed_precision bf16

Stages, in order: convert (any format of `conversion.formats`) -> assemble (G, f, an untrained translator sized for
them, the preset's sampling settings) -> pairs (the sharded cache, all processes) -> train (`train_translator`, all
processes, resumed from its latest checkpoint) -> card (model card with the validation figures and a sample grid, in
the final folder) -> push (with ``--push_to_hub``). The main process converts, assembles and writes the card; all
processes make pairs and train; they meet between stages.

``OUTPUT/build.json`` records for each stage what it was built from (``inputs``: fingerprints of the files it reads,
of the earlier stages' outputs it uses, and its settings), what it produced (``outputs``: fingerprints of its folder)
and how long it took. A stage is skipped when its record is complete, its inputs equal the current ones and its output
is intact. A stage whose inputs changed starts over; the stages that read its output then see new inputs and follow.
An interrupted pair cache or training run with unchanged inputs resumes. File fingerprints are SHA-256 of the
contents, remembered by size and modification time, so checking a finished build reads only files that changed.

Layout of OUTPUT::

    build.json
    pipeline/          the result: a TronPipeline folder, README.md (model card) and samples/ (its grid)
    stages/convert/    the converted generator
    stages/assemble/   base pipeline: G, f, untrained translator, preset scheduler
    stages/pairs/      pair cache
    stages/train/      `tron train-translator` output: checkpoints, logs, trained pipeline, training card
"""

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from huggingface_hub import ModelCard, create_repo, upload_folder

from ..conversion.formats import SourceError, detect_generator_format, reading
from ..conversion.tr0n import (
    ENCODER_SOURCES,
    SAMPLING_PRESETS,
    assemble_pipeline,
    load_encoder,
    load_generator,
    pipeline_model_card,
)
from ..encoders import EncoderAdapter
from ..models.translator import TranslatorModel
from ..pipelines.pipeline_tron import TronPipeline
from ..pipelines.usage import DEFAULT_PROMPT
from ..pretrained import resolve_pretrained_path
from ..training.arguments import (
    BUILD_SETS,
    CAPTION_SETTINGS,
    build_build_parser,
    build_train_translator_parser,
    check_train_args,
    command_line,
)
from ..training.model_card import metrics_table
from ..training.pairs import generate_pairs_from_args
from ..training.train import new_translator, train_translator
from ..utils.files import replace_atomically, save_pretrained_atomically, write_folder_atomically
from ..utils.fingerprints import module_fingerprint
from ..utils.messages import first_line
from .samples import write_samples


MANIFEST_NAME = "build.json"
MANIFEST_FORMAT = "tron-build"
MANIFEST_FORMAT_VERSION = 1
PIPELINE_DIR = "pipeline"
STAGES_DIR = "stages"
SAMPLES_DIR = "samples"
# Options that change how training is logged or saved, not the translator: not inputs of the train stage (changing
# them trains nothing again) and not repeated in the card's command.
BOOKKEEPING_OPTIONS = (
    "checkpointing_steps",
    "checkpoints_total_limit",
    "validation_steps",
    "skip_pair_checksums",
    "logging_dir",
    "report_to",
)
PAIR_OPTIONS = (
    "num_pairs",
    "pairs_per_shard",
    "generation_batch_size",
    "pairs_dtype",
    "condition_route",
    "captioner",
    "caption_ratio",
    *CAPTION_SETTINGS,
    "seed",
)
TRANSLATOR_OPTIONS = ("num_components", "hidden_dim", "init_std", "mean_rank", "seed")
REQUIRED_OPTIONS = ("generator", "encoder", "output")
# Prompts of the card's sample grid for CLIP encoders, per preset (faces for StyleGAN's FFHQ), and otherwise.
SAMPLE_PROMPTS = {
    "stylegan": (
        "a smiling woman with red hair",
        "an old man with a grey beard",
        "a child wearing glasses",
        "a man with a moustache",
    ),
}
GENERIC_SAMPLE_PROMPTS = ("a photo of a dog", "a red car", "a photo of a cat", "a bowl of fruit")
NUM_SAMPLE_CLASSES = 8
HASH_CHUNK_BYTES = 16 << 20


class BuildError(Exception):
    """Bad input or a failed stage of `tron build`, said in a line (no traceback). ``echo`` is false on processes
    that only relay the main process's error."""

    def __init__(self, message: str, echo: bool = True):
        super().__init__(message)
        self.echo = echo


@dataclass
class StageReport:
    """What one stage did in this run: ``status`` is ``"ran"``, ``"resumed"`` or ``"skipped"``; ``seconds`` is this
    run's time, or the recorded time of a skipped stage."""

    name: str
    status: str
    seconds: float


@dataclass
class BuildResult:
    """Where the pipeline is, what each stage did, and the translator's validation metrics (`evaluate_translator`)."""

    pipeline_dir: str
    stages: list[StageReport]
    metrics: dict[str, float] = field(default_factory=dict)
    initial_metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One step of a build.

    Attributes:
        name: Its key in the manifest.
        folder: The folder it writes (under OUTPUT).
        inputs: ``inputs() -> dict`` (main process): what the stage is built from, JSON-serialisable.
        run: ``run() -> dict``: does the work and returns (on the main process) the record of its outputs.
        all_processes: Run on every process (pairs, training) rather than on the main process only.
        resumable: An interrupted run with unchanged inputs continues in ``folder``; otherwise ``folder`` is written
            atomically, and a stage that starts over replaces it.
    """

    name: str
    folder: Path
    inputs: Callable[[], dict]
    run: Callable[[], dict]
    all_processes: bool = False
    resumable: bool = False


class FileHashes:
    """SHA-256 fingerprints of files and folders, remembered by (size, mtime): ``known`` comes from the manifest,
    `used` is what this run looked at (the manifest keeps that)."""

    def __init__(self, known: dict[str, list]):
        self.known = known
        self.used: dict[str, list] = {}

    def file(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        entry = self.known.get(key)
        if entry is None or entry[:2] != [stat.st_size, stat.st_mtime_ns]:
            digest = hashlib.sha256()
            with open(path, "rb") as file:
                while chunk := file.read(HASH_CHUNK_BYTES):
                    digest.update(chunk)
            entry = [stat.st_size, stat.st_mtime_ns, digest.hexdigest()]
        self.used[key] = entry
        return entry[2]

    def tree(self, path: str | os.PathLike) -> str | None:
        """Fingerprint of a file, or of a folder's file names and contents (hidden files left out); ``None`` when
        ``path`` does not exist."""
        path = Path(path)
        if path.is_file():
            return self.file(path)[:16]
        if not path.is_dir():
            return None
        digest = hashlib.sha256()
        for file in sorted(path.rglob("*")):
            relative = file.relative_to(path)
            if file.is_file() and not any(part.startswith(".") for part in relative.parts):
                digest.update(f"{relative.as_posix()}\0{self.file(file)}\n".encode())
        return digest.hexdigest()[:16]


def _as_json(value):
    """``value`` as it reads back from JSON (tuples become lists), so that recorded and current inputs compare equal."""
    return json.loads(json.dumps(value))


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def hub_id(name_or_path: str | None) -> str | None:
    """``name_or_path`` when it names a Hub repo rather than a local folder or an embedded pipeline (a card's
    ``base_model`` must)."""
    return None if name_or_path is None or os.path.exists(resolve_pretrained_path(name_or_path)) else name_or_path


def pipeline_card(
    pipe: TronPipeline, args: argparse.Namespace, translator_notes: str, example_prompt: str = DEFAULT_PROMPT
) -> ModelCard:
    """The model card of ``pipe`` from the options of `add_model_card_arguments` and `add_hub_arguments` (plus
    ``args.encoder``): base models, licences, the usage snippet for ``--hub_model_id`` (with ``example_prompt`` for a
    text encoder)."""
    return pipeline_model_card(
        pipe,
        args.hub_model_id,
        base_models={"generator": args.generator_id, "encoder": hub_id(args.encoder)},
        licenses={"generator": args.generator_license, "encoder": args.encoder_license},
        translator_notes=translator_notes,
        example_prompt=example_prompt,
    )


def save_documented_pipeline(
    pipe: TronPipeline, folder: str | os.PathLike, card: ModelCard, write_extras: Callable[[Path], None] | None = None
) -> Path:
    """Write ``pipe`` (`save_pretrained`, safetensors), its card as README.md and ``write_extras(folder)``'s files into
    ``folder``, all at once: the folder is filled under a temporary name and renamed."""

    def write(staging: Path) -> None:
        pipe.save_pretrained(staging, safe_serialization=True)
        if write_extras is not None:
            write_extras(staging)
        card.save(staging / "README.md")

    return write_folder_atomically(folder, write)


def push_pipeline(folder: str | os.PathLike, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Upload a pipeline folder to the Hub repo ``repo_id`` (created if needed); returns the commit URL."""
    repo_id = create_repo(repo_id, exist_ok=True, private=private, token=token).repo_id
    commit = upload_folder(
        repo_id=repo_id, folder_path=str(folder), token=token, commit_message="Upload TR0N pipeline"
    )
    return str(getattr(commit, "commit_url", commit))


class Build:
    """One ``tron build`` run (``args`` from `parse_build_args`); `run` does it. Create it on every process of an
    ``accelerate launch``."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.output = Path(args.output).absolute()
        self.stages_dir = self.output / STAGES_DIR
        self.pipeline_dir = self.output / PIPELINE_DIR
        self.accelerator = Accelerator(mixed_precision=args.mixed_precision)
        # Main process only: the manifest, fingerprints, the detected format and the loaded encoder.
        self.manifest: dict = {}
        self.hashes = FileHashes({})
        self.generator_format = None
        self.preset = None
        self.encoder_parts = None
        self._encoder_fingerprint = None
        self._pending_inputs = None

    # ---------------------------------------------------------------------------------------------------------------
    # Running
    def run(self) -> BuildResult:
        """Check the input (`BuildError` before any stage), run or skip every stage, print the summary."""
        self._on_main(self._preflight)
        reports = [self._run_stage(stage) for stage in self._stages()]
        result = self._on_main(lambda: self._finish(reports))
        self.accelerator.end_training()
        return result

    def _stages(self) -> list[Stage]:
        stages = [
            Stage("convert", self.stages_dir / "convert", self._convert_inputs, self._convert),
            Stage("assemble", self.stages_dir / "assemble", self._assemble_inputs, self._assemble),
            Stage(
                "pairs",
                self.stages_dir / "pairs",
                self._pairs_inputs,
                self._make_pairs,
                all_processes=True,
                resumable=True,
            ),
            Stage(
                "train", self.stages_dir / "train", self._train_inputs, self._train, all_processes=True, resumable=True
            ),
            Stage("card", self.pipeline_dir, self._card_inputs, self._write_card),
        ]
        if self.args.push_to_hub:
            stages.append(Stage("push", self.pipeline_dir, self._push_inputs, self._push))
        return stages

    def _on_main(self, function: Callable):
        """Run ``function`` on the main process; every process returns its result, or raises its error (the main
        process the original, the others a silent `BuildError`, so that all of them stop)."""
        payload, failure = [None, None], None
        if self.accelerator.is_main_process:
            try:
                payload[0] = function()
            except BaseException as error:
                payload[1], failure = str(error) if isinstance(error, BuildError) else first_line(error), error
        if self.accelerator.num_processes > 1:
            broadcast_object_list(payload)
        if failure is not None:
            raise failure
        if payload[1] is not None:
            raise BuildError(payload[1], echo=False)
        return payload[0]

    def _run_stage(self, stage: Stage) -> StageReport:
        action, recorded_seconds = self._on_main(lambda: self._decide(stage))
        if action == "skip":
            self.accelerator.print(
                f"[{stage.name}] skipped: complete, and built from the same inputs ({recorded_seconds:.1f} s)"
            )
            return StageReport(stage.name, "skipped", recorded_seconds)
        self._on_main(lambda: self._start(stage, action))
        self.accelerator.print(f"[{stage.name}] {'resuming' if action == 'resume' else 'running'}")
        start = time.perf_counter()
        if stage.all_processes:
            outputs = stage.run()
            self.accelerator.wait_for_everyone()
        else:
            outputs = self._on_main(stage.run)
        seconds = time.perf_counter() - start
        self._on_main(lambda: self._complete(stage, outputs, seconds))
        return StageReport(stage.name, "resumed" if action == "resume" else "ran", seconds)

    def _decide(self, stage: Stage) -> tuple[str, float]:
        """``("skip", recorded seconds)``, ``("resume", 0)`` or ``("fresh", 0)``."""
        inputs = _as_json(stage.inputs())
        self._pending_inputs = inputs
        record = self.manifest["stages"].get(stage.name)
        if record is not None and record["inputs"] == inputs:
            if record["status"] == "complete" and self._intact(record["outputs"]):
                return "skip", record["seconds"]
            if stage.resumable:
                return "resume", 0.0
        return "fresh", 0.0

    def _intact(self, outputs: dict) -> bool:
        return all(
            self.hashes.tree(self.output / folder) == fingerprint
            for folder, fingerprint in outputs.get("folders", {}).items()
        )

    def _start(self, stage: Stage, action: str) -> None:
        # Leftovers of an atomic write that was killed; a stage that starts over drops its unfinished work.
        for leftover in stage.folder.parent.glob(f".{stage.folder.name}.*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if action == "fresh" and stage.resumable:
            shutil.rmtree(stage.folder, ignore_errors=True)
        self.manifest["stages"][stage.name] = {"status": "running", "inputs": self._pending_inputs}
        self._save_manifest()

    def _complete(self, stage: Stage, outputs: dict, seconds: float) -> None:
        record = self.manifest["stages"][stage.name]
        record.update(
            status="complete",
            outputs=_as_json(outputs),
            seconds=round(seconds, 3),
            processes=self.accelerator.num_processes,
        )
        self._save_manifest()

    def _save_manifest(self, file_hashes: dict | None = None) -> None:
        if file_hashes is None:
            file_hashes = {**self.hashes.known, **self.hashes.used}
        self.manifest["file_hashes"] = dict(sorted(file_hashes.items()))
        text = json.dumps(self.manifest, indent=2) + "\n"
        path = self.output / MANIFEST_NAME
        if not path.is_file() or path.read_text() != text:
            replace_atomically(path, lambda temporary: temporary.write_text(text))

    def _finish(self, reports: list[StageReport]) -> BuildResult:
        self._save_manifest(self.hashes.used)  # forget fingerprints of files no stage reads any more
        train = self.manifest["stages"]["train"]["outputs"]
        result = BuildResult(str(self.pipeline_dir), reports, train["metrics"], train["initial_metrics"])
        print(build_summary(result))
        return result

    def _recorded(self, stage: str, key: str = "folders") -> dict:
        return self.manifest["stages"][stage]["outputs"][key]

    def _folders(self, *folders: Path) -> dict:
        return {
            "folders": {folder.relative_to(self.output).as_posix(): self.hashes.tree(folder) for folder in folders}
        }

    # ---------------------------------------------------------------------------------------------------------------
    # Checks before any stage (main process)
    def _preflight(self) -> None:
        args = self.args
        if args.push_to_hub and not args.hub_model_id:
            raise BuildError("--push_to_hub needs --hub_model_id, the Hub repo to push to (e.g. org/tron-biggan).")
        try:
            check_train_args(self._training_args(num_pairs=args.num_pairs))
        except ValueError as error:
            raise BuildError(str(error)) from None
        pairs_per_step = args.train_batch_size * self.accelerator.num_processes * args.gradient_accumulation_steps
        if pairs_per_step > args.num_pairs:
            raise BuildError(
                f"--train_batch_size {args.train_batch_size} x {self.accelerator.num_processes} process(es) x "
                f"--gradient_accumulation_steps {args.gradient_accumulation_steps} needs {pairs_per_step} pairs per step, "
                f"but --num_pairs is {args.num_pairs}."
            )
        manifest = self._check_output()
        try:
            self.generator_format = detect_generator_format(args.generator, option="--generator")
        except SourceError as error:
            raise BuildError(str(error)) from None
        self.preset = args.preset or self.generator_format.default_preset(args.generator)
        if self.preset not in SAMPLING_PRESETS:
            given = (
                f"got {args.preset!r}" if args.preset else f"no default is known for the generator {args.generator}"
            )
            raise BuildError(f"--preset must be one of {', '.join(sorted(SAMPLING_PRESETS))}; {given}.")
        try:
            with reading(args.encoder, ENCODER_SOURCES, "--encoder", action="loaded"):
                self.encoder_parts = load_encoder(args.encoder)
        except SourceError as error:
            raise BuildError(str(error)) from None
        self._sample_conditions(EncoderAdapter(*self.encoder_parts))  # checks --sample_prompts / --sample_class_labels
        if args.push_to_hub:
            try:
                create_repo(args.hub_model_id, exist_ok=True, private=args.private, token=args.hub_token)
            except Exception as error:  # noqa: BLE001 - offline, no login, no rights: said before the work
                raise BuildError(
                    f"--hub_model_id {args.hub_model_id!r}: the Hub repo cannot be created ({first_line(error)})."
                ) from None
        try:
            self.output.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.output):
                pass
        except OSError as error:
            raise BuildError(f"--output {args.output}: cannot write there ({error.strerror or error}).") from None
        self.manifest = manifest
        self.hashes = FileHashes(manifest["file_hashes"])

    def _check_output(self) -> dict:
        """The manifest of an earlier build in ``--output`` (or a new one); `BuildError` for a folder that cannot be
        one."""
        output, given = self.output, self.args.output
        existing = next(path for path in (output, *output.parents) if path.exists())
        if not existing.is_dir():
            where = "is a file" if existing == output else f"cannot be created: {existing} is a file"
            raise BuildError(f"--output {given} {where}, not a folder.")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise BuildError(f"--output {given}: {existing} is not writable.")
        manifest_path = output / MANIFEST_NAME
        if manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text())
            except json.JSONDecodeError as error:
                raise BuildError(f"--output {given}: {MANIFEST_NAME} is not valid JSON ({error}).") from None
            if manifest.get("format") != MANIFEST_FORMAT or manifest.get("format_version") != MANIFEST_FORMAT_VERSION:
                raise BuildError(
                    f"--output {given}: {MANIFEST_NAME} is not a {MANIFEST_FORMAT} v{MANIFEST_FORMAT_VERSION} manifest."
                )
            return manifest
        if output.is_dir() and any(output.iterdir()):
            raise BuildError(
                f"--output {given} is not empty and holds no {MANIFEST_NAME}: give a new folder, or an earlier build's."
            )
        return {"format": MANIFEST_FORMAT, "format_version": MANIFEST_FORMAT_VERSION, "stages": {}, "file_hashes": {}}

    def _sample_conditions(self, adapter: EncoderAdapter) -> tuple[str, list]:
        """The conditions of the card's sample grid, checked against the encoder: ``("prompt", prompts)`` or
        ``("class_label", labels)``."""
        args = self.args
        if adapter.kind == "clip":
            if args.sample_class_labels is not None:
                raise BuildError(
                    f"--sample_class_labels needs a classifier --encoder; {args.encoder} is a CLIP model: give --sample_prompts."
                )
            return "prompt", list(args.sample_prompts or SAMPLE_PROMPTS.get(self.preset, GENERIC_SAMPLE_PROMPTS))
        if args.sample_prompts is not None:
            raise BuildError(
                f"--sample_prompts needs a CLIP --encoder; {args.encoder} is a classifier: give --sample_class_labels."
            )
        labels = args.sample_class_labels or list(range(min(NUM_SAMPLE_CLASSES, adapter.num_classes)))
        outside = [label for label in labels if not 0 <= label < adapter.num_classes]
        if outside:
            raise BuildError(
                f"--sample_class_labels {' '.join(map(str, outside))}: the classifier --encoder {args.encoder} has "
                f"{adapter.num_classes} classes (0 to {adapter.num_classes - 1})."
            )
        return "class_label", labels

    def _training_args(self, **overrides) -> argparse.Namespace:
        """``tron train-translator`` arguments of the train stage: the build's training options, the stages' folders,
        resumption from the latest checkpoint, no push (the push stage does it)."""
        defaults = vars(build_train_translator_parser().parse_args(["--pipeline", ""]))
        values = {name: getattr(self.args, name) for name in defaults if name not in BUILD_SETS}
        fixed = {
            "pipeline": str(self.stages_dir / "assemble"),
            "pairs_dir": str(self.stages_dir / "pairs"),
            "num_pairs": None,  # read the cache the pairs stage made
            "output_dir": str(self.stages_dir / "train"),
            "resume_from_checkpoint": "latest",
        }
        return argparse.Namespace(**{**defaults, **values, **fixed, **overrides})

    def _command(self) -> str:
        return command_line(self.args, "tron build", build_build_parser(), REQUIRED_OPTIONS, BOOKKEEPING_OPTIONS)

    def _encoder_identity(self) -> dict:
        if self._encoder_fingerprint is None:
            encoder, tokenizer, image_processor = self.encoder_parts
            vocabulary = (
                json.dumps([tokenizer.get_vocab(), tokenizer.model_max_length], sort_keys=True) if tokenizer else None
            )
            self._encoder_fingerprint = {
                "weights": module_fingerprint(encoder),
                "tokenizer": _text_digest(vocabulary) if tokenizer else None,
                "image_processor": _text_digest(image_processor.to_json_string()) if image_processor else None,
            }
        return self._encoder_fingerprint

    # ---------------------------------------------------------------------------------------------------------------
    # Stages
    def _convert_inputs(self) -> dict:
        source = self.args.generator
        return {
            "source": str(Path(source).absolute()) if os.path.exists(source) else source,
            "format": self.generator_format.name,
            "fingerprint": self.hashes.tree(source),
            "settings": dict(self.args.generator_config),
        }

    def _convert(self) -> dict:
        folder = self.stages_dir / "convert"
        try:
            generator = self.generator_format.convert(
                self.args.generator, "--generator", **dict(self.args.generator_config)
            )
        except SourceError as error:  # mismatched keys, unknown settings, a refused pickle global, a corrupt file
            raise BuildError(str(error)) from None
        save_pretrained_atomically(generator, folder)
        return self._folders(folder)

    def _assemble_inputs(self) -> dict:
        return {
            "generator": self._recorded("convert"),
            "encoder": self._encoder_identity(),
            "preset": {"name": self.preset, **SAMPLING_PRESETS[self.preset]},
            "translator": {name: getattr(self.args, name) for name in TRANSLATOR_OPTIONS},
        }

    def _assemble(self) -> dict:
        folder = self.stages_dir / "assemble"
        generator = load_generator(self.stages_dir / "convert")
        encoder, tokenizer, image_processor = self.encoder_parts
        torch.manual_seed(self.args.seed)  # the same untrained translator every time
        translator = new_translator(
            generator,
            EncoderAdapter(encoder, tokenizer, image_processor),
            self.args.num_components,
            self.args.hidden_dim,
            self.args.init_std,
            mean_rank=self.args.mean_rank,
        )
        pipe = assemble_pipeline(translator.eval(), generator, encoder, tokenizer, image_processor, self.preset)
        save_pretrained_atomically(pipe, folder)
        components = {
            name: self.hashes.tree(folder / name) for name in ("generator", "encoder", "tokenizer", "image_processor")
        }
        return {**self._folders(folder), "models": components}

    def _pairs_inputs(self) -> dict:
        return {
            "models": self._recorded("assemble", "models"),
            "mixed_precision": self.accelerator.mixed_precision,
            "settings": {name: getattr(self.args, name) for name in PAIR_OPTIONS},
        }

    def _make_pairs(self) -> dict | None:
        generate_pairs_from_args(self._training_args(num_pairs=self.args.num_pairs), self.accelerator)
        self.accelerator.wait_for_everyone()
        return self._folders(self.stages_dir / "pairs") if self.accelerator.is_main_process else None

    def _train_inputs(self) -> dict:
        # num_pairs is the cache's (its fingerprint is recorded), mixed_precision is recorded as resolved.
        left_out = (*BUILD_SETS, *BOOKKEEPING_OPTIONS, "num_pairs", "mixed_precision")
        return {
            "models": self._recorded("assemble", "models"),
            "pairs": self._recorded("pairs"),
            "mixed_precision": self.accelerator.mixed_precision,
            "settings": {name: value for name, value in vars(self._training_args()).items() if name not in left_out},
        }

    def _train(self) -> dict | None:
        result = train_translator(self._training_args(), end_training=False)  # the build's processes meet again
        if not self.accelerator.is_main_process:
            return None
        return {
            **self._folders(self.stages_dir / "train" / "translator"),
            "global_step": result.global_step,
            "metrics": result.metrics,
            "initial_metrics": result.initial_metrics,
        }

    def _card_inputs(self) -> dict:
        args = self.args
        return {
            "pipeline": self._recorded("assemble"),
            "translator": self._recorded("train"),
            "metrics": self._recorded("train", "metrics"),
            "card": {
                name: getattr(args, name)
                for name in ("generator_id", "generator_license", "encoder", "encoder_license", "hub_model_id")
            },
            "command": self._command(),
            "samples": None
            if args.no_samples
            else {
                "conditions": self._sample_conditions(EncoderAdapter(*self.encoder_parts)),
                "images_per_condition": args.sample_images,
                "steps": args.sample_steps,
                "augmentations": args.sample_augmentations,
                "seed": args.seed,
            },
        }

    def _write_card(self) -> dict:
        translator = TranslatorModel.from_pretrained(self.stages_dir / "train" / "translator")
        pipe = TronPipeline.from_pretrained(self.stages_dir / "assemble", translator=translator)
        images = None if self.args.no_samples else self._samples(pipe)
        kind, values = self._sample_conditions(pipe.encoder_adapter)
        example_prompt = values[0] if kind == "prompt" else DEFAULT_PROMPT  # a prompt the build chose for this G
        card = pipeline_card(pipe, self.args, self._translator_notes(), example_prompt)
        if images is not None:
            card.text += samples_section(images)
        card.data.num_pairs = self.args.num_pairs
        card.data.train_steps = self._recorded("train", "global_step")
        card.data.metrics = {
            name: round(float(value), 6) for name, value in self._recorded("train", "metrics").items()
        }
        write_extras = None if images is None else lambda folder: self._write_samples(folder / SAMPLES_DIR, images)
        save_documented_pipeline(pipe, self.pipeline_dir, card, write_extras)
        return self._folders(self.pipeline_dir)

    def _samples(self, pipe: TronPipeline) -> dict:
        """The card's sample images (made on the accelerator's device), with what made them: `write_samples`'s
        arguments."""
        args = self.args
        kind, values = self._sample_conditions(pipe.encoder_adapter)
        conditions = [{kind: value} for value in values for _ in range(args.sample_images)]
        seeds = [args.seed + index for index in range(len(conditions))]
        pipe.to(self.accelerator.device)
        pipe.set_progress_bar_config(desc="Samples (Langevin steps)")
        out = pipe(
            **{"prompt" if kind == "prompt" else "class_labels": values},
            num_images_per_prompt=args.sample_images,
            num_inference_steps=args.sample_steps,
            num_augmentations=args.sample_augmentations,
            generator=[torch.Generator().manual_seed(seed) for seed in seeds],
        )
        pipe.to("cpu")
        settings = {
            "steps": pipe.config.default_num_inference_steps if args.sample_steps is None else args.sample_steps,
            "augmentations": pipe.config.default_num_augmentations
            if args.sample_augmentations is None
            else args.sample_augmentations,
        }
        return {
            "images": out.images,
            "energies": out.energies.tolist(),
            "conditions": conditions,
            "seeds": seeds,
            "settings": settings,
        }

    def _write_samples(self, folder: Path, samples: dict) -> None:
        folder.mkdir()
        write_samples(
            folder,
            samples["images"],
            samples["energies"],
            samples["conditions"],
            samples["seeds"],
            samples["settings"],
            grid_columns=min(len(samples["images"]), 4 * self.args.sample_images),
        )

    def _translator_notes(self) -> str:
        train = self.manifest["stages"]["train"]["outputs"]
        return (
            f"Trained by `tron build` on {self.args.num_pairs:,} synthetic pairs (z ~ p(z), c = f(G(z))), "
            f"{train['global_step']:,} steps. Validation on held-out pairs:\n\n"
            f"{metrics_table(train['initial_metrics'], train['metrics'])}\n\n"
            f"Built with:\n\n```bash\n{self._command()}\n```"
        )

    def _push_inputs(self) -> dict:
        return {"pipeline": self._recorded("card"), "repo": self.args.hub_model_id, "private": self.args.private}

    def _push(self) -> dict:
        commit = push_pipeline(self.pipeline_dir, self.args.hub_model_id, self.args.hub_token, self.args.private)
        print(f"Pushed to {commit}")
        return {"commit": commit}


def samples_section(samples: dict) -> str:
    """The model card's section on its sample grid (``samples/grid.png``; `Build._samples` made the images)."""
    values = list(dict.fromkeys(value for condition in samples["conditions"] for value in condition.values()))
    settings = samples["settings"]
    return (
        f"\n## Samples\n\n![samples]({SAMPLES_DIR}/grid.png)\n\n"
        f"{len(samples['images']) // len(values)} images for each of {', '.join(f'`{value}`' for value in values)} "
        f"(in this order), {settings['steps']} Langevin steps with {settings['augmentations']} augmented copies, seeds "
        f"{samples['seeds'][0]}-{samples['seeds'][-1]}; each image's condition, seed and energy are in "
        f"`{SAMPLES_DIR}/manifest.json`.\n"
    )


def build_summary(result: BuildResult) -> str:
    """What ``tron build`` prints at the end: the pipeline, how to load it, the translator's fit, time per stage."""
    metrics, initial = result.metrics, result.initial_metrics
    lines = [
        f"Pipeline: {result.pipeline_dir}",
        f'Load it:  TronPipeline.from_pretrained("{result.pipeline_dir}")',
        f"Translator (held-out pairs): NLL {metrics['nll_per_dim']:.4f} nats/dim (before training: {initial.get('nll_per_dim', float('nan')):.4f}); "
        f"fitted spread {metrics['std_mean']:.4f} (the data asks for {metrics['residual_std']:.4f})",
        "Stages:",
    ]
    for report in result.stages:
        note = "skipped (recorded time)" if report.status == "skipped" else report.status
        lines.append(f"  {report.name:<9} {report.seconds:9.1f} s  {note}")
    lines.append(f"  {'total':<9} {sum(r.seconds for r in result.stages if r.status != 'skipped'):9.1f} s  this run")
    return "\n".join(lines)


def run_build(args: argparse.Namespace) -> BuildResult:
    """Run ``tron build`` (``args`` from `parse_build_args`): every process of an ``accelerate launch`` calls it."""
    return Build(args).run()


__all__ = [
    "BuildError",
    "BuildResult",
    "StageReport",
    "build_summary",
    "hub_id",
    "pipeline_card",
    "push_pipeline",
    "run_build",
    "save_documented_pipeline",
]
