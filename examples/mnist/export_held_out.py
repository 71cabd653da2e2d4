"""Write the 1,000 held-out MNIST digits of the shared split as 8-bit PNGs with a manifest of their labels: the
reference images of `tron evaluate` on the embedded MNIST pipelines (docs/evaluation.md).

    python examples/mnist/export_held_out.py --out mnist-held-out
    tron evaluate --images digits --reference mnist-held-out --features classifier \
        --classifier benchmarks/assets/mnist-eval-classifier

The bundled digits are whole numbers / 255, so the PNGs hold them exactly: features of the files equal the features
the benchmarks compute from the arrays. The manifest (``manifest.jsonl``, as `tron generate` writes) gives each file's
``class_label``, so ``tron evaluate --images mnist-held-out --classifier ...`` scores the real digits too.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from data import load_split
from PIL import Image

from tron_pipelines.commands.generate_many import MANIFEST_NAME
from tron_pipelines.utils.files import replace_atomically


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="Folder to write (created if needed).")
    args = parser.parse_args()
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    split = load_split()
    lines = []
    for index, (image, label) in enumerate(zip(split.held_out_images, split.held_out_labels)):
        name = f"{index:06d}.png"
        pixels = Image.fromarray(np.round(image * 255).astype(np.uint8))  # mode L
        replace_atomically(folder / name, lambda path, pixels=pixels: pixels.save(path, format="PNG"))
        lines.append(json.dumps({"index": index, "class_label": int(label), "file": name}) + "\n")
    replace_atomically(folder / MANIFEST_NAME, lambda path: path.write_text("".join(lines)))
    print(f"Wrote {len(lines)} held-out digits and {MANIFEST_NAME} to {folder}")


if __name__ == "__main__":
    main()
