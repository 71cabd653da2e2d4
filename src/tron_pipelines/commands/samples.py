"""A folder of generated samples: ``0.png``, ``1.png``, ..., ``grid.png`` and ``manifest.json``.

One format for everything that hands images to a user (``tron generate``, ``tron build``'s model-card grid, the
demo's download), so a folder is read the same way whichever wrote it. Every file is written under a temporary name
and renamed: a folder is never left with a half-written image or manifest.
"""

import os
from pathlib import Path

from ..utils.files import replace_atomically, write_json_atomically


MANIFEST_NAME = "manifest.json"
GRID_NAME = "grid.png"


def image_grid(images, columns: int):
    """One PIL grid, ``columns`` wide; a short last row is filled with black."""
    from diffusers.utils import make_image_grid
    from PIL import Image

    blank = Image.new(images[0].mode, images[0].size)
    padded = list(images) + [blank] * (-len(images) % columns)
    return make_image_grid(padded, rows=len(padded) // columns, cols=columns)


def write_samples(
    folder: str | os.PathLike,
    images: list,
    energies: list[float],
    conditions: list[dict],
    seeds: list[int | None],
    settings: dict,
    grid_columns: int = 8,
    rewards: list[dict[str, float]] | None = None,
) -> dict:
    """Write ``images`` (PIL) as ``folder/0.png ...``, their grid and the manifest; return the manifest.

    Args:
        folder: An existing, writable folder.
        images / energies / conditions / seeds: One entry per image: the PIL image, its final energy, its condition
            (e.g. ``{"prompt": "a seven"}`` or ``{"class_label": 3}``) and the seed of its generator (or ``None``).
        settings: How the images were made (pipeline, steps, initialisation, candidates, ...), the manifest's top
            level.
        grid_columns: Width of ``grid.png`` in images (fewer when there are fewer images).
        rewards: For a pipeline with reward models, each image's ``{reward name: value}`` (``out.rewards``).

    The manifest is ``{**settings, "images": [{"file", **condition, "seed", "energy"[, "rewards"]}, ...]}``.
    """
    if not len(images) == len(energies) == len(conditions) == len(seeds) == len(rewards or images):
        raise ValueError(
            f"One energy, condition, seed (and rewards) per image: got {len(images)}, {len(energies)}, "
            f"{len(conditions)}, {len(seeds)}{f', {len(rewards)}' if rewards is not None else ''}."
        )
    folder = Path(folder)
    entries = []
    for index, (image, energy, condition, seed) in enumerate(zip(images, energies, conditions, seeds)):
        name = f"{index}.png"
        replace_atomically(folder / name, lambda path, image=image: image.save(path, format="PNG"))
        entries.append({"file": name, **condition, "seed": seed, "energy": float(energy)})
        if rewards is not None:
            entries[-1]["rewards"] = rewards[index]
    grid = image_grid(images, min(len(images), grid_columns))
    replace_atomically(folder / GRID_NAME, lambda path: grid.save(path, format="PNG"))
    manifest = {**settings, "images": entries}
    write_json_atomically(folder / MANIFEST_NAME, manifest)
    return manifest


__all__ = ["GRID_NAME", "MANIFEST_NAME", "image_grid", "write_samples"]
