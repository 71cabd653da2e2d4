"""Regenerate the README's sample images with the README's own commands (the embedded pipelines' shipped defaults).

    python examples/mnist/make_readme_images.py

Each image is the ``grid.png`` that ``tron generate ... --num_images 8 --seed 0`` writes: the README's text prompt
(`TEXT_PROMPT`) on `tron-mnist-text` and class 3 on `tron-mnist`. Run it after rebuilding an embedded pipeline, so
that the README shows what its command gives.
"""

import shutil
import tempfile
from pathlib import Path

from tron_pipelines.cli import main as tron


REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES = REPO_ROOT / "docs" / "images"
TEXT_PROMPT = "a bold seven leaning right"
TEXT_IMAGE = "tron-mnist-text-bold-seven-right.png"
CLASS_LABEL = 3
CLASS_IMAGE = "tron-mnist-class-3.png"


def generate_grid(arguments: list[str], name: str) -> Path:
    """Run ``tron generate <arguments> --num_images 8 --seed 0`` and copy its grid to ``docs/images/<name>``."""
    with tempfile.TemporaryDirectory() as folder:
        tron(["generate", *arguments, "--num_images", "8", "--seed", "0", "--out", folder])
        target = IMAGES / name
        shutil.copyfile(Path(folder) / "grid.png", target)
    print(f"wrote {target}")
    return target


def main():
    generate_grid([TEXT_PROMPT], TEXT_IMAGE)
    generate_grid(["--pipeline", "tron-mnist", "--class_label", str(CLASS_LABEL)], CLASS_IMAGE)


if __name__ == "__main__":
    main()
