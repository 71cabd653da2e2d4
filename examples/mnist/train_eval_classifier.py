"""Train the evaluation classifier used only to score generated MNIST digits: HOG features + a scikit-learn MLP.

It is deliberately a different kind of model from the CNN auxiliary model f (hand-made features, no convolutions), so
samples that merely exploit f do not score well. The MLP is exported to plain arrays (`tron_pipelines.evaluation.HogMlpClassifier`:
safetensors + JSON, no pickle) and reloaded in numpy; its last hidden layer gives features for a Fréchet distance.

    python examples/mnist/train_eval_classifier.py --output_dir outputs/mnist/eval_classifier --seed 0
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from data import IMAGE_SIDE, HogMlpClassifier, hog_features, load_split
from scipy import ndimage
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/mnist/eval_classifier")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_epochs", type=int, default=60, help="Upper bound on MLP passes over the data.")
    parser.add_argument(
        "--augmented_copies", type=int, default=4, help="Randomly distorted copies per training digit."
    )
    parser.add_argument("--hidden_sizes", type=int, nargs="+", default=[512, 128])
    parser.add_argument("--weight_decay", type=float, default=1e-3, help="L2 penalty (scikit-learn's `alpha`).")
    parser.add_argument("--num_threads", type=int, default=2)
    return parser.parse_args(argv)


def random_distortions(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each digit rotated (+-12 deg), sheared (+-0.15), scaled (0.9-1.1) and shifted (+-1.5 px) about its centre.

    With only 4,000 training digits these copies are what lifts the HOG-MLP from ~97% to ~98% held-out accuracy.
    """
    centre = np.full(2, (IMAGE_SIDE - 1) / 2)
    distorted = []
    for image in images:
        angle = np.deg2rad(rng.uniform(-12, 12))
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shear = np.array([[1.0, 0.0], [rng.uniform(-0.15, 0.15), 1.0]])
        # affine_transform maps output coordinates to input coordinates, so this is the inverse distortion.
        matrix = rotation @ shear / rng.uniform(0.9, 1.1)
        offset = centre - matrix @ centre + rng.uniform(-1.5, 1.5, size=2)
        distorted.append(ndimage.affine_transform(image, matrix, offset=offset, order=1))
    return np.stack(distorted).astype(np.float32)


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    split = load_split()

    train_images = np.concatenate(
        [split.train_images] + [random_distortions(split.train_images, rng) for _ in range(args.augmented_copies)]
    )
    train_labels = np.tile(split.train_labels, args.augmented_copies + 1)
    train_features = hog_features(train_images)
    feature_mean = train_features.mean(axis=0)
    # Border cells are nearly constant; the floor keeps their standardised values bounded.
    feature_std = train_features.std(axis=0) + 1e-3

    mlp = MLPClassifier(
        hidden_layer_sizes=tuple(args.hidden_sizes),
        alpha=args.weight_decay,
        max_iter=args.max_epochs,
        random_state=args.seed,
    )
    with threadpool_limits(args.num_threads), warnings.catch_warnings():
        # A short --max_epochs budget (smoke tests) stops before convergence on purpose.
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit((train_features - feature_mean) / feature_std, train_labels)

    classifier = HogMlpClassifier(feature_mean, feature_std, mlp.coefs_, mlp.intercepts_)
    classifier.save_pretrained(args.output_dir)
    reloaded = HogMlpClassifier.from_pretrained(args.output_dir)
    with threadpool_limits(args.num_threads):
        held_out_predictions = reloaded.predict(split.held_out_images)
        train_predictions = reloaded.predict(split.train_images)
    metrics = {
        "held_out_accuracy": float((held_out_predictions == split.held_out_labels).mean()),
        "train_accuracy": float((train_predictions == split.train_labels).mean()),
        "epochs": int(mlp.n_iter_),
        "feature_dim": reloaded.feature_dim,
        "num_parameters": int(sum(w.size + b.size for w, b in zip(reloaded.weights, reloaded.biases))),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (Path(args.output_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
