"""Where a saved TronPipeline comes from, and the files that let diffusers' generic loader open it.

`TronPipeline.from_pretrained` accepts a local folder, an embedded name or a Hub repo id; `locate_pipeline` turns each
into a folder, or one clear error. `DiffusionPipeline.from_pretrained` (the generic loader, and the Hub's "Use this
model" snippet) knows only diffusers' own classes, so `TronPipeline.save_pretrained` also writes small re-export files
through diffusers' custom-code mechanism (see `write_generic_loader_files`):

    pipeline.py                                    from tron_pipelines import TronPipeline
    translator/tron_pipelines.models.translator.py from tron_pipelines.models.translator import TranslatorModel
    ...                                            (one per component defined in tron_pipelines)

and records ``"_class_name": ["pipeline", "TronPipeline"]`` in ``model_index.json``. The generic loader then needs
``trust_remote_code=True``; `TronPipeline.from_pretrained` trusts those files only when they are exactly what this
module writes (they import nothing but the installed package).
"""

import importlib
import json
import os
from pathlib import Path

from filelock import FileLock
from huggingface_hub.errors import (
    EntryNotFoundError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..pretrained import embedded_pipelines, resolve_pretrained_path


PACKAGE = "tron_pipelines"
PIPELINE_FILE = "pipeline"
MODEL_INDEX = "model_index.json"
_HEADER = (
    "# Written by tron_pipelines' TronPipeline.save_pretrained. It only re-exports a class of the installed package, so\n"
    "# that diffusers' generic loader finds it: DiffusionPipeline.from_pretrained(<this repo>, trust_remote_code=True).\n"
)


class PipelineNotFoundError(OSError):
    """``from_pretrained`` was given a name that is no folder, no embedded pipeline and no reachable Hub repo."""


def locate_pipeline(name_or_path: str | os.PathLike, download, download_kwargs: dict) -> str:
    """The local folder of a pipeline: ``name_or_path`` itself, the embedded pipeline of that name, or the Hub repo
    downloaded by ``download(repo_id, **download_kwargs)``. Raises `PipelineNotFoundError` in one sentence when it is
    none of them."""
    resolved = resolve_pretrained_path(name_or_path)
    if os.path.isdir(resolved):
        return str(resolved)
    try:
        return download(str(resolved), **download_kwargs)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
        reason = f"offline and not in the local Hub cache ({type(error).__name__})"
    except RepositoryNotFoundError:
        reason = "no such repo on the Hub (or a private one: log in with `hf auth login`)"
    except RevisionNotFoundError:
        reason = f"the revision {download_kwargs.get('revision')!r} does not exist on the Hub"
    except EntryNotFoundError:
        reason = "that Hub repo has no model_index.json"
    except HFValidationError:
        reason = "not a valid Hub repo id either"
    raise PipelineNotFoundError(
        f"{str(name_or_path)!r} is neither a local folder, nor an embedded pipeline ({', '.join(embedded_pipelines())}), "
        f"nor a pipeline on the Hub: {reason}."
    ) from None


def read_model_index(folder: str | os.PathLike) -> dict:
    return json.loads((Path(folder) / MODEL_INDEX).read_text(encoding="utf-8"))


def package_components(model_index: dict) -> dict[str, tuple[str, str]]:
    """``{component: (module, class)}`` of the components defined in this package."""
    return {
        name: (entry[0], entry[1])
        for name, entry in model_index.items()
        if not name.startswith("_")
        and isinstance(entry, list)
        and isinstance(entry[0], str)
        and entry[0].startswith(f"{PACKAGE}.")
    }


def import_component_modules(folder: str | os.PathLike) -> None:
    """Import this package's modules that ``folder``'s ``model_index.json`` names (only modules of the installed
    tron_pipelines: the names come from a file, and other modules are not imported on its say)."""
    for module, _ in package_components(read_model_index(folder)).values():
        importlib.import_module(module)


# Libraries whose classes `load_components` loads (besides this package's): those of the components a TronPipeline has.
COMPONENT_LIBRARIES = ("transformers", "diffusers")


def load_components(folder: str | os.PathLike, names: tuple[str, ...]) -> list:
    """Some components of the saved pipeline in ``folder``, without the others: each loaded from its subfolder with
    the class that ``model_index.json`` records (``None`` for a component the pipeline does not have), models in eval
    mode. Only classes of this package, transformers and diffusers are loaded (the names come from a file)."""
    model_index = read_model_index(folder)
    ours = package_components(model_index)
    components = []
    for name in names:
        entry = model_index.get(name)
        if not isinstance(entry, list) or entry[0] is None:  # absent, or saved as [null, null]: the pipeline has none
            components.append(None)
            continue
        library, class_name = ours.get(name, entry)
        if name not in ours and library not in COMPONENT_LIBRARIES:
            raise ValueError(
                f"{Path(folder) / MODEL_INDEX}: the {name} is a {library}.{class_name}; only classes of {PACKAGE}, "
                f"{' and '.join(COMPONENT_LIBRARIES)} are loaded."
            )
        component = getattr(importlib.import_module(library), class_name).from_pretrained(Path(folder) / name)
        components.append(component.eval() if hasattr(component, "eval") else component)
    return components


def modules_cache_lock() -> FileLock:
    """A lock, across processes and threads, on diffusers' modules cache (``HF_MODULES_CACHE``).

    On every load diffusers copies a folder's ``pipeline.py`` and component re-export files into one shared
    ``diffusers_modules/local`` folder (truncating, then writing) and imports them from there, so a load running beside
    another (the ranks of ``accelerate launch``, the processes of ``tron generate``) can import a half-written file.
    """
    from diffusers.utils.constants import HF_MODULES_CACHE

    os.makedirs(HF_MODULES_CACHE, exist_ok=True)
    return FileLock(os.path.join(HF_MODULES_CACHE, f"{PACKAGE}.lock"))


def pipeline_file_text() -> str:
    return _HEADER + f"from {PACKAGE} import TronPipeline  # noqa: F401\n"


def component_file_text(module: str, class_name: str) -> str:
    return _HEADER + f"from {module} import {class_name}  # noqa: F401\n"


def _expected_files(model_index: dict) -> dict[str, str]:
    files = {f"{PIPELINE_FILE}.py": pipeline_file_text()}
    for name, (module, class_name) in package_components(model_index).items():
        files[f"{name}/{module}.py"] = component_file_text(module, class_name)
    return files


def write_generic_loader_files(folder: str | os.PathLike) -> None:
    """Make a folder written by `DiffusionPipeline.save_pretrained` loadable by the generic loader: the re-export files
    and ``"_class_name": ["pipeline", "TronPipeline"]`` (each file written under a temporary name and renamed)."""
    folder = Path(folder)
    model_index = read_model_index(folder)
    for relative, text in _expected_files(model_index).items():
        _write_atomically(folder / relative, text)
    model_index["_class_name"] = [PIPELINE_FILE, "TronPipeline"]
    _write_atomically(folder / MODEL_INDEX, json.dumps(model_index, indent=2, sort_keys=True) + "\n")


def has_only_our_code(folder: str | os.PathLike) -> bool:
    """True when every ``.py`` file diffusers would run from ``folder`` is one `write_generic_loader_files` writes,
    byte for byte (so trusting them imports nothing but the installed package)."""
    folder = Path(folder)
    model_index = read_model_index(folder)
    expected = _expected_files(model_index)
    class_name = model_index.get("_class_name")
    runnable = {f"{class_name[0]}.py"} if isinstance(class_name, list) else set()
    runnable |= {
        f"{name}/{entry[0]}.py"
        for name, entry in model_index.items()
        if isinstance(entry, list) and isinstance(entry[0], str)
    }
    present = [relative for relative in runnable if (folder / relative).is_file()]
    return all(
        relative in expected and (folder / relative).read_text(encoding="utf-8") == expected[relative]
        for relative in present
    )


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


__all__ = [
    "PipelineNotFoundError",
    "has_only_our_code",
    "import_component_modules",
    "load_components",
    "locate_pipeline",
    "modules_cache_lock",
    "write_generic_loader_files",
]
