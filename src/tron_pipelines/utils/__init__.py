"""Small pieces every layer of the package uses: atomic files, weight fingerprints, one-line error text, option
spelling, shared constants and the lazy exports of the packages. Nothing here imports the rest of the package.

Names are imported on first use, so that ``tron --help`` (which needs only the option helpers) imports no torch.
"""

from .lazy import lazy_exports


_EXPORTS = {
    "constants": ("CLIP_MEAN", "CLIP_STD", "DIFFUSERS_PREFIX"),
    "files": ("replace_atomically", "save_pretrained_atomically", "write_folder_atomically", "write_json_atomically"),
    "fingerprints": ("module_fingerprint",),
    "lazy": ("lazy_exports",),
    "messages": ("first_line",),
    "options": ("non_negative_int", "normalize_option_spelling", "positive_int"),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
