"""Old import paths of modules that moved, kept working: importing one gives the module at its new path (the same
object, not a copy) and a `FutureWarning` that names the new path.

Installed once by ``tron_pipelines/__init__.py``, which runs before any of its submodules is imported.
"""

import importlib
import importlib.machinery
import sys
import warnings


# Plain classes rather than importlib.abc's (which would import `inspect` and cost `tron --help` 0.1 s): the import
# system needs only these methods.
class _AliasLoader:
    def __init__(self, new_name: str):
        self.new_name = new_name
        self.spec = None

    def create_module(self, spec):
        module = importlib.import_module(self.new_name)
        # The import machinery stamps the alias's spec on the module it gets: keep the module's own.
        self.spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self.spec


class MovedModuleFinder:
    """Finds ``{old dotted name: new dotted name}`` entries; every other name is left to the other finders."""

    def __init__(self, moved: dict[str, str]):
        self.moved = moved

    def find_spec(self, fullname, path=None, target=None):
        new_name = self.moved.get(fullname)
        if new_name is None:
            return None
        warnings.warn(
            f"`{fullname}` moved to `{new_name}`; import it from there (the old path will be removed in a future "
            "release).",
            FutureWarning,
            stacklevel=2,
        )
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new_name))


def alias_moved_modules(moved: dict[str, str]) -> None:
    """Make each old dotted module name in ``moved`` import the module at its new name (once per process)."""
    if not any(isinstance(finder, MovedModuleFinder) and finder.moved == moved for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder(moved))


__all__ = ["MovedModuleFinder", "alias_moved_modules"]
