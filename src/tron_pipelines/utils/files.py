"""Files that are either absent, old or complete: every write goes to a temporary name first and is then renamed.

A killed process never leaves a half-written image, manifest or model folder behind, and what a user had before is
replaced only once the new version is complete.
"""

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def replace_atomically(path: Path, write) -> None:
    """Write ``path`` through ``write(temporary_path)`` and rename, so ``path`` is never left half-written."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(temporary)
    os.replace(temporary, path)


def write_json_atomically(path: Path, data) -> None:
    """``data`` as indented JSON at ``path``, through `replace_atomically`."""
    replace_atomically(path, lambda temporary: temporary.write_text(json.dumps(data, indent=2) + "\n"))


def save_pretrained_atomically(model, dump_path: str | os.PathLike) -> Path:
    """`save_pretrained` (safetensors) into a temporary sibling folder, then rename it to ``dump_path``.

    ``dump_path`` is either absent or complete: `save_pretrained` writes in place, so a crash would otherwise leave a
    half-written folder. An existing ``dump_path`` folder is replaced (moved aside, then deleted once the new one is in
    place).
    """
    return write_folder_atomically(dump_path, lambda staging: model.save_pretrained(staging, safe_serialization=True))


def write_folder_atomically(dump_path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Fill a temporary sibling folder with ``write(staging)``, then rename it to ``dump_path`` (replacing an existing
    folder, as `save_pretrained_atomically` does). Leftovers of a killed write are named ``.{name}.partial-*``."""
    dump_path = Path(dump_path).absolute()
    if dump_path.exists() and not dump_path.is_dir():
        raise FileExistsError(f"{dump_path} exists and is not a folder.")
    dump_path.parent.mkdir(parents=True, exist_ok=True)
    suffix = os.urandom(4).hex()
    staging = dump_path.with_name(f".{dump_path.name}.partial-{suffix}")
    previous = dump_path.with_name(f".{dump_path.name}.previous-{suffix}")
    try:
        write(staging)
        if dump_path.exists():
            os.replace(dump_path, previous)
        os.replace(staging, dump_path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if previous.exists() and not dump_path.exists():
            os.replace(previous, dump_path)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    return dump_path


__all__ = ["replace_atomically", "save_pretrained_atomically", "write_folder_atomically", "write_json_atomically"]
