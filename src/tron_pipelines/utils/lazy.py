"""Lazy package exports, as diffusers and transformers do: a name is imported from its module on first use.

``import tron_pipelines`` then costs almost nothing, so ``tron --help`` starts at once and each command imports only what
it runs. diffusers' own ``_LazyModule`` is not used because importing ``diffusers.utils`` already imports torch.
"""

import importlib


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]):
    """``(__getattr__, __dir__, __all__)`` for a package whose public names live in submodules.

    Args:
        package: The package's ``__name__``.
        exports: ``{submodule (relative, dotted): names it defines}``.
    """
    module_of = {name: submodule for submodule, names in exports.items() for name in names}

    def __getattr__(name: str):
        if name in module_of:
            return getattr(importlib.import_module(f"{package}.{module_of[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(module_of) | set(importlib.import_module(package).__dict__))

    return __getattr__, __dir__, sorted(module_of)
