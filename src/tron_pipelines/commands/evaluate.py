"""``tron evaluate``: score a folder of generated images: Fréchet distance to reference images, CLIP score against
their prompts, accuracy of their class labels.

    tron evaluate --images coco-samples --reference val2014 --save_reference coco-val2014.npz --clip openai/clip-vit-base-patch32
    tron evaluate --images digits --reference mnist-held-out --features classifier --classifier benchmarks/assets/mnist-eval-classifier

The metric code is `tron_pipelines.evaluation`'s, the same the benchmarks run.
"""

import argparse
import json
import sys
from pathlib import Path

from ..utils.files import write_json_atomically
from ..utils.options import positive_int
from .common import CommandError, disable_loading_progress_bars
from .samples import MANIFEST_NAME as SAMPLES_MANIFEST_NAME


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
FEATURE_KINDS = ("inception", "clip", "classifier")


def register_evaluate(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="Score generated images: Fréchet distance (FID, FD_CLIP, classifier features), CLIP score, accuracy.",
        description="Score a folder of images (a tron generate output, or any images): Fréchet distance to --reference "
        "(a folder of images or saved statistics), CLIP score against the prompts of its manifest (--clip), accuracy of "
        "its class labels (--classifier). Prints a table and writes metrics.json.",
    )
    parser.add_argument(
        "--images", required=True, help="Folder of generated images (its manifest gives prompts and class labels)."
    )
    parser.add_argument(
        "--reference",
        default=None,
        help="Real images for the Fréchet distance: a folder, or an .npz written by --save_reference.",
    )
    parser.add_argument(
        "--save_reference", default=None, help="Write the reference folder's feature statistics to this .npz."
    )
    parser.add_argument(
        "--features",
        default="inception",
        choices=FEATURE_KINDS,
        help="Features of the Fréchet distance: inception (FID, via torch-fidelity), clip (FD_CLIP, the "
        "--clip model) or classifier (last hidden layer of --classifier). Default inception.",
    )
    parser.add_argument(
        "--clip",
        default=None,
        help="CLIP for the CLIP score and --features clip: a CLIP pipeline (folder or embedded name) or a "
        "transformers CLIP folder or Hub id, e.g. openai/clip-vit-base-patch32.",
    )
    parser.add_argument(
        "--classifier",
        default=None,
        help="Classifier folder for accuracy and --features classifier (a HOG evaluation classifier such "
        "as benchmarks/assets/mnist-eval-classifier, or a ConvClassifier).",
    )
    parser.add_argument("--batch_size", type=positive_int, default=64, help="Images encoded at once (default 64).")
    parser.add_argument(
        "--num_workers", type=positive_int, default=4, help="Threads decoding and resizing images (default 4)."
    )
    parser.add_argument("--device", default=None, help="torch device (default cuda when available, else cpu).")
    parser.add_argument("--output", default=None, help="Where to write the metrics (default IMAGES/metrics.json).")
    parser.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> None:
    try:
        _evaluate(args)
    except CommandError as error:
        raise SystemExit(f"tron evaluate: error: {error}") from None


def list_images(folder: Path, option: str) -> list[dict]:
    """One entry per image of ``folder``: ``{"path", **fields}``, with the prompt / class label of its manifest line
    (``manifest.jsonl`` of a many-condition run, ``manifest.json`` of a single one); without a manifest, every image
    file, sorted by name."""
    from .generate_many import MANIFEST_NAME, PART_GLOB, read_manifest_lines  # kept out of `tron --help`'s imports

    if not folder.is_dir():
        raise CommandError(f"{option} {folder}: no such folder.")
    if (folder / MANIFEST_NAME).is_file():
        entries = read_manifest_lines(folder / MANIFEST_NAME)
    elif any(folder.glob(PART_GLOB)):
        raise CommandError(
            f"{option} {folder} holds an unfinished tron generate run (manifest parts, no {MANIFEST_NAME}): run the same tron generate command again to finish it."
        )
    elif (folder / SAMPLES_MANIFEST_NAME).is_file():
        entries = json.loads((folder / SAMPLES_MANIFEST_NAME).read_text()).get("images", [])
    else:
        entries = [
            {"file": path.name}
            for path in sorted(folder.iterdir())
            if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
        ]
    for entry in entries:
        entry["path"] = folder / entry["file"]
        if not entry["path"].is_file():
            raise CommandError(f"{option} {folder}: its manifest lists {entry['file']}, which is missing.")
    if not entries:
        raise CommandError(f"{option} {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return entries


def encode_images(paths: list[Path], extractors: list, batch_size: int, num_workers: int, description: str) -> list:
    """Features of ``paths`` from each extractor: a list of ``(N, D)`` arrays, one per extractor. Images are decoded
    and prepared in ``num_workers`` threads (PIL releases the GIL while decoding and resizing)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image, UnidentifiedImageError
    from tqdm.auto import tqdm

    def load(path: Path) -> tuple:
        try:
            with Image.open(path) as image:
                image.load()
                return tuple(extractor.prepare(image) for extractor in extractors)
        except (UnidentifiedImageError, OSError) as error:
            raise CommandError(f"{path} could not be read as an image ({error}).") from None

    outputs = [[] for _ in extractors]
    with ThreadPoolExecutor(num_workers) as pool, tqdm(total=len(paths), desc=description, unit="image") as progress:
        for start in range(0, len(paths), batch_size):
            prepared = list(pool.map(load, paths[start : start + batch_size]))
            for position, extractor in enumerate(extractors):
                outputs[position].append(extractor.features([item[position] for item in prepared]))
            progress.update(len(prepared))
    return [np.concatenate(chunks) for chunks in outputs]


def _evaluate(args: argparse.Namespace) -> None:
    images_folder = Path(args.images)
    entries = list_images(images_folder, "--images")
    prompted = [index for index, entry in enumerate(entries) if isinstance(entry.get("prompt"), str)]
    labelled = [index for index, entry in enumerate(entries) if isinstance(entry.get("class_label"), int)]
    reference = Path(args.reference) if args.reference is not None else None
    reference_is_statistics = reference is not None and reference.suffix.lower() == ".npz"
    if reference is not None and not (reference.is_file() if reference_is_statistics else reference.is_dir()):
        raise CommandError(f"--reference {reference}: no such {'file' if reference_is_statistics else 'folder'}.")
    if args.save_reference is not None and (reference is None or reference_is_statistics):
        raise CommandError("--save_reference needs --reference to be a folder of images.")
    if args.features == "clip" and reference is not None and args.clip is None:
        raise CommandError("--features clip needs --clip (a CLIP pipeline, folder or Hub id).")
    if args.features == "classifier" and reference is not None and args.classifier is None:
        raise CommandError("--features classifier needs --classifier (a classifier folder).")
    if args.clip is not None and not prompted and not (reference is not None and args.features == "clip"):
        raise CommandError(
            f"--clip: the images in {images_folder} have no prompts in a manifest, so there is no CLIP score to compute."
        )
    if args.classifier is not None and not labelled and not (reference is not None and args.features == "classifier"):
        raise CommandError(
            f"--classifier: the images in {images_folder} have no class labels in a manifest, so there is no accuracy to compute."
        )
    if reference is None and args.clip is None and args.classifier is None:
        raise CommandError(
            "nothing to compute: give --reference (Fréchet distance), --clip (CLIP score of prompted images) "
            "or --classifier (accuracy of class-labelled images)."
        )
    if reference is not None and len(entries) < 2:
        raise CommandError(
            f"--images {images_folder}: a Fréchet distance needs at least 2 images, found {len(entries)}."
        )
    output = Path(args.output) if args.output is not None else images_folder / "metrics.json"

    import torch

    from ..evaluation import (
        FRECHET_BOOTSTRAP_RESAMPLES,
        FeatureStatistics,
        classification_accuracy,
        clip_score,
        frechet_distance_with_std,
        frechet_sample_size_warning,
    )
    from ..evaluation.features import (
        ClassifierFeatures,
        ClipFeatures,
        ExtractorUnavailableError,
        load_feature_extractor,
    )

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    disable_loading_progress_bars()
    try:
        clip = ClipFeatures(args.clip, device) if args.clip is not None else None
        classifier = ClassifierFeatures(args.classifier, device) if args.classifier is not None else None
        distance_extractor = None
        if reference is not None:
            distance_extractor = {"clip": clip, "classifier": classifier}.get(args.features) or load_feature_extractor(
                args.features, device
            )
    except (ExtractorUnavailableError, ValueError) as error:
        raise CommandError(str(error)) from None
    if classifier is not None:
        bad = sorted(
            {entries[i]["class_label"] for i in labelled if entries[i]["class_label"] >= classifier.num_classes}
        )
        if bad:
            raise CommandError(
                f"--classifier {args.classifier} has {classifier.num_classes} classes; the images ask for {bad}."
            )

    reference_statistics = None
    if reference_is_statistics:
        try:
            reference_statistics = FeatureStatistics.load(reference)
        except ValueError as error:
            raise CommandError(f"--reference {error}") from None
        if reference_statistics.extractor != distance_extractor.identity:
            raise CommandError(
                f"--reference {reference} holds statistics of other features ({reference_statistics.extractor}); "
                f"--features {args.features} gives {distance_extractor.identity}."
            )

    extractors = [
        extractor for extractor in dict.fromkeys([distance_extractor, clip, classifier]) if extractor is not None
    ]
    features = dict(
        zip(
            extractors,
            encode_images(
                [entry["path"] for entry in entries], extractors, args.batch_size, args.num_workers, "Encoding images"
            ),
        )
    )
    if reference is not None and reference_statistics is None:
        reference_paths = [entry["path"] for entry in list_images(reference, "--reference")]
        if len(reference_paths) < 2:
            raise CommandError(
                f"--reference {reference}: a Fréchet distance needs at least 2 images, found {len(reference_paths)}."
            )
        (reference_features,) = encode_images(
            reference_paths, [distance_extractor], args.batch_size, args.num_workers, "Encoding reference"
        )
        reference_statistics = FeatureStatistics.from_features(reference_features, distance_extractor.identity)
        if args.save_reference is not None:
            reference_statistics.save(args.save_reference)

    metrics = {"images": str(images_folder), "num_images": len(entries)}
    rows = []
    if reference_statistics is not None:
        distance, distance_std = frechet_distance_with_std(features[distance_extractor], reference_statistics)
        too_few = frechet_sample_size_warning(
            len(entries), reference_statistics.num_samples, reference_statistics.mean.shape[0]
        )
        if too_few is not None:
            print(f"tron evaluate: warning: {too_few}", file=sys.stderr)
            metrics["frechet_distance_warning"] = too_few
        metrics.update(
            {
                "frechet_distance": distance,
                "frechet_distance_std": distance_std,
                "bootstrap_resamples": FRECHET_BOOTSTRAP_RESAMPLES,
                "features": args.features,
                "feature_extractor": distance_extractor.identity,
                "reference": str(reference),
                "num_reference_images": reference_statistics.num_samples,
            }
        )
        label = {"inception": "FID", "clip": "FD_CLIP", "classifier": "Fréchet distance (classifier features)"}[
            args.features
        ]
        rows.append(
            (
                label,
                f"{distance:.4f}",
                len(entries),
                f"± {distance_std:.4f} bootstrap std; reference {reference_statistics.num_samples} images",
            )
        )
    if clip is not None and prompted:
        prompts = [entries[i]["prompt"] for i in prompted]
        score = clip_score(features[clip][prompted], clip.text_features(prompts, args.batch_size))
        metrics.update({"clip_score": score, "num_prompted_images": len(prompted), "clip": args.clip})
        rows.append(
            ("CLIP score", f"{score:.4f}", len(prompted), f"100 x mean cosine (image, its prompt); {args.clip}")
        )
    if classifier is not None and labelled:
        logits = classifier.logits_from_features(features[classifier][labelled])
        accuracy = classification_accuracy(logits, [entries[i]["class_label"] for i in labelled])
        metrics.update({"accuracy": accuracy, "num_labelled_images": len(labelled), "classifier": args.classifier})
        rows.append(("accuracy", f"{accuracy:.4f}", len(labelled), f"classifier {args.classifier}"))

    write_json_atomically(output, metrics)
    print(format_rows(rows))
    print(f"Wrote {output}" + (f" and {args.save_reference}" if args.save_reference else ""))


def format_rows(rows: list[tuple]) -> str:
    """A plain-text table: metric, value, images, notes."""
    table = [("metric", "value", "images", "notes"), *[tuple(str(cell) for cell in row) for row in rows]]
    widths = [max(len(row[column]) for row in table) for column in range(3)]
    return "\n".join(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}" for row in table)


__all__ = ["encode_images", "list_images", "register_evaluate", "run_evaluate"]
