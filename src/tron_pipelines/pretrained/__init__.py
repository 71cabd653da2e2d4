"""Pipelines embedded in the package, loadable offline by name (``TronPipeline.from_pretrained("tron-mnist")``)."""

import os
from pathlib import Path

EMBEDDED_ROOT = Path(__file__).parent


def embedded_pipelines() -> list[str]:
    """Names of the pipelines shipped inside the package."""
    return sorted(p.name for p in EMBEDDED_ROOT.iterdir() if (p / "model_index.json").is_file())


def resolve_pretrained_path(name_or_path: str | os.PathLike) -> str | os.PathLike:
    """A local folder wins, then an embedded pipeline name, then the name is returned unchanged (a Hub repo id)."""
    if os.path.isdir(name_or_path):
        return name_or_path
    embedded = EMBEDDED_ROOT / str(name_or_path)
    if (embedded / "model_index.json").is_file():
        return str(embedded)
    return name_or_path
