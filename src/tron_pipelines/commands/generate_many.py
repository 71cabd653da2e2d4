"""``tron generate --prompts_file FILE`` / ``--class_labels 0-9``: many conditions, batched, split over the processes of
``accelerate launch``, resumable.

    tron generate --pipeline tron-mnist --class_labels 0-9 --num_images 32 --out digits
    accelerate launch --multi_gpu --num_processes 8 -m tron_pipelines.cli generate --pipeline my-pipeline \\
        --prompts_file captions.txt --batch_size 32 --out coco-samples

The work is a fixed list of images: image ``k`` is image ``j`` of condition ``i`` (``k = i * num_images + j``), drawn
from the seed ``seed + k`` (or, for a JSON line with its own ``seed``, that seed ``+ j``), written as ``OUT/{k:06d}.png``.
The list is cut into fixed batches of ``--batch_size`` images, and batch ``b`` belongs to process ``b % num_processes``
(Accelerate's process index, as for the pair cache). A batch holds the same images whatever the number of processes,
and every image has its own generator, so 1 and N processes write identical files.

Files in OUT:

* ``run.json``: the settings and a hash of the conditions. A rerun with other settings is refused while any image is
  recorded, so an OUT never mixes two runs.
* ``000000.png`` ...: written under a temporary name and renamed (a killed run leaves no half-written image; stray
  temporary files are removed by the next run).
* ``manifest.part-00000.jsonl`` ...: while running, process p appends one JSON line per image of each finished batch
  to its own part, in one ``write`` after the batch's PNGs are in place. Own files, not one shared file: appends from
  several writers to one file are only safe on local file systems with ``O_APPEND``, and clusters write to network
  file systems from several nodes. A kill can cut the last line of a part; readers ignore a line that does not end
  in a newline or is not JSON, and the owner trims it before appending again.
* ``manifest.jsonl``: once every image is written, the main process merges the parts into this file (one line per
  image, in image order, each image exactly once), writes it under a temporary name, renames it, and deletes the parts.

An image counts as done when its manifest line exists (its PNG was renamed into place before the line was written)
and its file is there. A rerun redoes every batch that is not entirely done, whole, so that its images come out of the
same batch as in an uninterrupted run, and finishes only the remaining batches.
"""

import argparse
import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..utils.files import replace_atomically, write_json_atomically
from .common import (
    CommandError,
    in_cli_terms,
    load_pipeline,
    reward_call_options,
    rewards_per_image,
    writable_folder,
)


MANIFEST_NAME = "manifest.jsonl"
RUN_NAME = "run.json"
RUN_FORMAT = "tron-generate-run"
PART_GLOB = "manifest.part-*.jsonl"
CONDITION_KINDS = ("prompt", "class_label", "image")
# Fields of a manifest line; a JSON line's other fields (e.g. a COCO image_id) are copied next to them.
RESERVED_FIELDS = {"index", "condition", "line", "seed", "energy", "rewards", "file", "process", *CONDITION_KINDS}


@dataclass(frozen=True)
class Condition:
    """One condition of a run: ``kind`` (``"prompt"``, ``"class_label"`` or ``"image"``) and its value, the seed of its
    first image when the JSON line gives one, the line of the prompts file it came from and the line's other fields."""

    kind: str
    value: str | int
    seed: int | None = None
    line: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Item:
    """Image ``index`` of the run: image ``j`` of condition ``condition``, drawn from ``seed``, saved as ``file``."""

    index: int
    condition: int
    seed: int
    file: str


# Reading conditions --------------------------------------------------------------------------------------------
def read_prompts_file(path: str) -> list[Condition]:
    """Conditions of a prompts file: one prompt per line, or, for a ``.jsonl`` file, one JSON object per line with one of
    ``prompt`` / ``class_label`` / ``image`` (a path, relative to the file's folder) and an optional ``seed``. Blank
    lines are skipped. Raises `CommandError` naming the line of the first bad entry."""
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"--prompts_file {path}: no such file.")
    is_json = file.suffix.lower() == ".jsonl"
    conditions = []
    with open(file, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            where = f"--prompts_file {path} line {number}"
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise CommandError(f"{where} is not UTF-8 text.") from None
            if not text:
                continue
            conditions.append(
                _json_condition(text, where, number, file.parent)
                if is_json
                else Condition("prompt", text, line=number)
            )
    if not conditions:
        raise CommandError(f"--prompts_file {path} holds no conditions (it is empty or has only blank lines).")
    return conditions


def _json_condition(text: str, where: str, number: int, folder: Path) -> Condition:
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as error:
        raise CommandError(f"{where} is not valid JSON ({error.msg} at column {error.colno}).") from None
    if not isinstance(entry, dict):
        raise CommandError(
            f'{where}: expected a JSON object like {{"prompt": "a red car"}}, got {type(entry).__name__}.'
        )
    kinds = [kind for kind in CONDITION_KINDS if kind in entry]
    if len(kinds) != 1:
        raise CommandError(f'{where}: give exactly one of "prompt", "class_label" or "image", got {kinds or "none"}.')
    kind, value = kinds[0], entry[kinds[0]]
    if kind == "prompt" and not (isinstance(value, str) and value.strip()):
        raise CommandError(f'{where}: "prompt" must be a non-empty string, got {value!r}.')
    if kind == "class_label" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        raise CommandError(f'{where}: "class_label" must be an integer >= 0, got {value!r}.')
    if kind == "image":
        value = _check_image_path(value, where, folder)
    seed = entry.get("seed")
    if seed is not None and not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise CommandError(f'{where}: "seed" must be an integer >= 0, got {seed!r}.')
    extra = {key: item for key, item in entry.items() if key not in (kind, "seed")}
    clashing = sorted(RESERVED_FIELDS & extra.keys())
    if clashing:
        raise CommandError(f"{where}: {clashing} are fields of the manifest; rename them.")
    return Condition(kind, value.strip() if kind == "prompt" else value, seed, number, extra)


def _check_image_path(value, where: str, folder: Path) -> str:
    from PIL import Image, UnidentifiedImageError

    if not isinstance(value, str) or not value:
        raise CommandError(f'{where}: "image" must be a path, got {value!r}.')
    path = folder / value
    if not path.is_file():
        raise CommandError(f"{where}: image {value!r} does not exist (looked for {path}).")
    try:
        with Image.open(path):  # reads the header only
            pass
    except (UnidentifiedImageError, OSError) as error:
        raise CommandError(f"{where}: {value!r} is not an image ({error}).") from None
    return value


def check_conditions(conditions: list[Condition], pipe, source: str) -> None:
    """Refuse, before any sampling, conditions the loaded pipeline cannot take: prompts without a CLIP encoder and
    tokenizer, class labels without a classifier or out of its range. ``source`` names the option they came from."""
    adapter = pipe.encoder_adapter
    for condition in conditions:
        where = f"{source} line {condition.line}" if condition.line is not None else source
        if condition.kind == "prompt" and (adapter.kind != "clip" or pipe.tokenizer is None):
            raise CommandError(
                f"{where}: prompts need a text (CLIP) pipeline; this one is class-conditional: give class labels."
            )
        if condition.kind == "class_label":
            if adapter.kind != "classifier":
                raise CommandError(f"{where}: class labels need a class-conditional pipeline; this one takes prompts.")
            if not condition.value < adapter.num_classes:
                raise CommandError(
                    f"{where}: class label {condition.value} out of range: the pipeline has classes 0..{adapter.num_classes - 1}."
                )


def plan_items(conditions: list[Condition], num_images: int, seed: int) -> list[Item]:
    """Every image of the run in order: ``num_images`` per condition, image ``k`` seeded by ``seed + k`` (or by the
    condition's own seed ``+ j``)."""
    items = []
    for position, condition in enumerate(conditions):
        for image in range(num_images):
            index = position * num_images + image
            item_seed = seed + index if condition.seed is None else condition.seed + image
            items.append(Item(index, position, item_seed, f"{index:06d}.png"))
    return items


# Run record and manifest --------------------------------------------------------------------------------------
def run_record(
    args: argparse.Namespace,
    conditions: list[Condition],
    num_inference_steps: int,
    num_candidates: int,
    call_options: dict | None = None,
) -> dict:
    """What makes the images of a run: pipeline, sampling settings, seeds, batches and the conditions themselves;
    ``call_options`` (`reward_call_options`) only where they are not the defaults, so that the records of earlier
    runs still match."""
    listed = [[c.kind, c.value, c.seed] for c in conditions]
    given = {name: value for name, value in (call_options or {}).items() if value}
    return {
        "format": RUN_FORMAT,
        "pipeline": args.pipeline,
        "num_conditions": len(conditions),
        "conditions_sha256": hashlib.sha256(json.dumps(listed).encode()).hexdigest(),
        "num_images_per_condition": args.num_images,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "num_inference_steps": num_inference_steps,
        "num_candidates": num_candidates,
        "initialization": args.init,
        **given,
    }


def read_manifest_lines(path: Path) -> list[dict]:
    """The complete JSON lines of ``path`` (none if it does not exist): a last line cut by a kill, without its newline,
    or anything that is not a JSON object is skipped."""
    if not path.is_file():
        return []
    entries = []
    for line in path.read_bytes().split(b"\n")[:-1]:  # what follows the last newline is incomplete
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(entry, dict) and isinstance(entry.get("index"), int):
            entries.append(entry)
    return entries


def recorded_entries(folder: Path) -> dict[int, dict]:
    """Manifest lines of every image recorded in ``folder``, merged and parts, the latest line per image."""
    entries = {}
    for path in [folder / MANIFEST_NAME, *sorted(folder.glob(PART_GLOB))]:
        for entry in read_manifest_lines(path):
            entries[entry["index"]] = entry
    return entries


def trim_to_last_line(path: Path) -> None:
    """Cut what follows the last newline of ``path`` (a line half-written by a killed process), so appends start on a
    fresh line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        with open(path, "r+b") as file:
            file.truncate(complete)


def append_lines(path: Path, entries: list[dict]) -> None:
    """Append ``entries`` as JSON lines in one ``write`` to a file only this process writes."""
    data = "".join(json.dumps(entry) + "\n" for entry in entries).encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(descriptor, data)
        if written != len(data):
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
    finally:
        os.close(descriptor)


# The run -------------------------------------------------------------------------------------------------------
def generate_many(args: argparse.Namespace) -> None:
    """``tron generate`` with ``--prompts_file`` or ``--class_labels``: see the module docstring."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    if args.prompts_file is not None:
        conditions, source = read_prompts_file(args.prompts_file), f"--prompts_file {args.prompts_file}"
    else:
        conditions, source = [Condition("class_label", label) for label in args.class_labels], "--class_labels"
    call_options = reward_call_options(args)
    folder = writable_folder(args.out)
    # Several CPU processes need cpu=True; `Accelerator` reads it from the same variable (docs/training.md).
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    pipe = load_pipeline(args.pipeline, args.device or str(state.device))
    pipe.set_progress_bar_config(disable=True)
    check_conditions(conditions, pipe, source)

    num_inference_steps = pipe.config.default_num_inference_steps if args.steps is None else args.steps
    num_candidates = pipe.default_num_candidates_for(args.init) if args.candidates is None else args.candidates
    record = run_record(args, conditions, num_inference_steps, num_candidates, call_options)
    items = plan_items(conditions, args.num_images, args.seed)

    # Every process checks the folder before the main process changes it.
    recorded = recorded_entries(folder)
    _check_run_record(folder, record, recorded)
    state.wait_for_everyone()
    if state.is_main_process:
        write_json_atomically(folder / RUN_NAME, record)
        for leftover in folder.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)  # written by a process killed mid-file
    own_part = folder / f"manifest.part-{state.process_index:05d}.jsonl"
    trim_to_last_line(own_part)
    state.wait_for_everyone()

    batches = [items[start : start + args.batch_size] for start in range(0, len(items), args.batch_size)]
    own = batches[state.process_index :: state.num_processes]
    done = {index for index, entry in recorded.items() if (folder / entry.get("file", "")).is_file()}
    pending = [batch for batch in own if not all(item.index in done for item in batch)]

    from tqdm.auto import tqdm

    own_images = sum(len(batch) for batch in own)
    progress = tqdm(
        total=own_images,
        initial=own_images - sum(len(batch) for batch in pending),
        unit="image",
        desc="Sampling" if state.num_processes == 1 else f"Sampling (process 1/{state.num_processes})",
        disable=not state.is_main_process,
    )
    started = time.perf_counter()
    for batch in pending:
        entries = _sample_batch(
            pipe,
            batch,
            conditions,
            folder,
            args,
            num_inference_steps,
            num_candidates,
            state.process_index,
            call_options,
        )
        append_lines(own_part, entries)
        progress.update(len(batch))
    progress.close()
    elapsed = time.perf_counter() - started

    counts = [(sum(len(batch) for batch in pending), elapsed)]
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        counts = gather_object(counts)
    state.wait_for_everyone()
    if state.is_main_process:
        _merge_manifest(folder, items)
        generated, slowest = sum(count for count, _ in counts), max(seconds for _, seconds in counts)
        skipped = len(items) - generated
        if generated:
            print(
                f"Sampled {generated} images in {slowest:.1f}s with {state.num_processes} process(es): "
                f"{generated / max(slowest, 1e-9):.2f} images/s"
                + (f" ({skipped} were already in {folder})" if skipped else "")
                + f". {folder / MANIFEST_NAME} lists all {len(items)}."
            )
        else:
            print(f"Nothing to do: all {len(items)} images are already in {folder} ({folder / MANIFEST_NAME}).")
    state.wait_for_everyone()


def _check_run_record(folder: Path, record: dict, recorded: dict) -> None:
    path = folder / RUN_NAME
    if not path.is_file() or not recorded:
        return  # nothing recorded yet: this run's settings apply
    try:
        existing = json.loads(path.read_text())
    except json.JSONDecodeError:
        existing = {}
    differences = [
        f"{key} {existing.get(key)!r} -> {record.get(key)!r}"
        for key in dict.fromkeys([*record, *existing])
        if existing.get(key) != record.get(key)
    ]
    if differences:
        raise CommandError(
            f"--out {folder} holds {len(recorded)} images of a run with other settings ({'; '.join(differences)}): "
            "repeat that run's command to finish it, or choose another --out."
        )


def _sample_batch(
    pipe,
    batch: list[Item],
    conditions: list[Condition],
    folder: Path,
    args,
    num_inference_steps: int,
    num_candidates: int,
    process_index: int,
    call_options: dict,
) -> list[dict]:
    """Sample one batch (one pipeline call per run of conditions of one kind), write its PNGs, return its manifest lines."""
    import torch

    entries = []
    for kind, group in itertools.groupby(batch, key=lambda item: conditions[item.condition].kind):
        group = list(group)
        values = [conditions[item.condition].value for item in group]
        if kind == "image":
            values = [_open_image(conditions[item.condition], args.prompts_file) for item in group]
        argument = {"prompt": "prompt", "class_label": "class_labels", "image": "image"}[kind]
        try:
            out = pipe(
                **{argument: values},
                num_inference_steps=num_inference_steps,
                initialization=args.init,
                num_candidates=num_candidates,
                generator=[torch.Generator().manual_seed(item.seed) for item in group],
                **call_options,
            )
        except (ValueError, TypeError) as error:
            raise CommandError(in_cli_terms(str(error))) from None
        rewards = rewards_per_image(out) or [None] * len(group)
        for item, image, energy, image_rewards in zip(group, out.images, out.energies.tolist(), rewards):
            replace_atomically(folder / item.file, lambda path, image=image: image.save(path, format="PNG"))
            condition = conditions[item.condition]
            entry = {"index": item.index, "condition": item.condition}
            if condition.line is not None:
                entry["line"] = condition.line
            entry.update(
                {
                    condition.kind: condition.value,
                    **condition.extra,
                    "seed": item.seed,
                    "energy": float(energy),
                    **({"rewards": image_rewards} if image_rewards is not None else {}),
                    "file": item.file,
                    "process": process_index,
                }
            )
            entries.append(entry)
    return entries


def _open_image(condition: Condition, prompts_file: str):
    from PIL import Image

    with Image.open(Path(prompts_file).parent / condition.value) as image:
        return image.convert("RGB")


def _merge_manifest(folder: Path, items: list[Item]) -> None:
    """Write ``manifest.jsonl``: every image's line once, in image order; then delete the parts."""
    recorded = recorded_entries(folder)
    missing = [item.index for item in items if item.index not in recorded or not (folder / item.file).is_file()]
    if missing:
        raise CommandError(
            f"images {missing[:10]}{' ...' if len(missing) > 10 else ''} are missing after sampling; run the same command again."
        )
    lines = "".join(json.dumps(recorded[item.index]) + "\n" for item in items)
    replace_atomically(folder / MANIFEST_NAME, lambda path: path.write_text(lines))
    for part in folder.glob(PART_GLOB):
        part.unlink()


__all__ = [
    "Condition",
    "Item",
    "check_conditions",
    "generate_many",
    "plan_items",
    "read_manifest_lines",
    "read_prompts_file",
]
