"""Command-line option spelling and argparse types shared by ``tron`` and the ``python -m`` entry points.

Only argparse is needed here, so the command line can build its parser without importing torch.
"""

import argparse


def normalize_option_spelling(argv: list[str]) -> list[str]:
    """Options are spelled with underscores (``--num_images``, as in diffusers' and accelerate's scripts); the same
    names with dashes (``--num-images``) are accepted and rewritten here. Nothing after ``--`` is touched."""
    normalized = []
    for index, word in enumerate(argv):
        if word == "--":
            return normalized + argv[index:]
        if word.startswith("--") and len(word) > 2:
            name, equals, value = word.partition("=")
            word = "--" + name[2:].replace("-", "_") + equals + value
        normalized.append(word)
    return normalized


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (checked while parsing, before any model loads)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (checked while parsing, before any model loads)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def name_and_weight(text: str) -> tuple[str, float]:
    """argparse type: ``NAME=WEIGHT`` (a reward's weight, e.g. ``pickscore=0.05``), as ``("pickscore", 0.05)``."""
    name, equals, weight = text.partition("=")
    try:
        value = float(weight)
    except ValueError:
        value = None
    if not equals or not name or value is None:
        raise argparse.ArgumentTypeError(f"must be NAME=WEIGHT like pickscore=0.05, got {text!r}")
    return name, value


__all__ = ["name_and_weight", "non_negative_int", "normalize_option_spelling", "positive_int"]
