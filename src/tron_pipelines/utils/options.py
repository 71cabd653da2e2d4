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


__all__ = ["non_negative_int", "normalize_option_spelling", "positive_int"]
