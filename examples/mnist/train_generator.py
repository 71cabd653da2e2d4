"""Train the frozen unconditional generator G of the MNIST pipelines: `tron_pipelines.ConvGenerator` as a GAN.

Recipe: DCGAN, i.e. a non-saturating loss, a BatchNorm discriminator and Adam(2e-4, betas 0.5/0.999) for both
networks; in 2,000-3,000-step trials on these 5,000 digits it learned faster than a hinge loss with a spectrally
normalised discriminator, and faster than with random translations of the discriminator's inputs. The saved model
is an exponential moving average (EMA) of G's weights. No labels are used. At the end the EMA generator's BatchNorm
running statistics are recomputed over many prior samples (cumulative average), so G in eval mode draws what it
drew in train mode.

If an evaluation classifier (`train_eval_classifier.py`) is available, 2,000 prior samples are scored with it: the
predicted-class histogram shows whether all ten digits are drawn in balanced proportions, and the fraction classified
with probability > 0.9 shows how recognisable they are.

    python examples/mnist/train_generator.py --output_dir outputs/mnist/generator --seed 0
"""

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from data import (
    NUM_CLASSES,
    HogMlpClassifier,
    frechet_distance,
    load_mnist,
    load_split,
    recompute_batchnorm_statistics,
)
from PIL import Image

from tron_pipelines import ConvGenerator


CONFIDENT_PROBABILITY = 0.9


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/mnist/generator")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max_steps", type=int, default=6000, help="Generator updates, one discriminator update each."
    )
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--latent_dim", type=int, default=32)
    parser.add_argument("--base_channels", type=int, default=48)
    parser.add_argument("--discriminator_channels", type=int, default=32)
    parser.add_argument("--ema_decay", type=float, default=0.995)
    parser.add_argument(
        "--bn_recompute_samples", type=int, default=20000, help="Prior draws for BatchNorm statistics."
    )
    parser.add_argument("--eval_classifier_dir", default="outputs/mnist/eval_classifier")
    parser.add_argument("--num_eval_samples", type=int, default=2000)
    parser.add_argument("--log_every", type=int, default=250)
    parser.add_argument("--num_threads", type=int, default=2)
    return parser.parse_args(argv)


class Discriminator(nn.Module):
    """DCGAN discriminator: 28 -> 14 -> 7 -> 4 strided convolutions (BatchNorm after the first), then a linear score."""

    def __init__(self, channels: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),
            nn.BatchNorm2d(2 * channels),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * channels, 4 * channels, 3, stride=2, padding=1),
            nn.BatchNorm2d(4 * channels),
            nn.LeakyReLU(0.2),
        )
        self.score = nn.Linear(4 * channels * 4 * 4, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(images).flatten(1)).squeeze(1)


@torch.no_grad()
def update_ema(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters; buffers are recomputed at the end anyway."""
    for ema_parameter, parameter in zip(ema_model.parameters(), model.parameters()):
        ema_parameter.lerp_(parameter, 1.0 - decay)


def save_sample_grid(images: torch.Tensor, path: Path, columns: int = 10) -> None:
    """Write images ``(N, 1, H, W)`` in ``[-1, 1]`` as a PNG grid with a 2-pixel dark border."""
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0].numpy()
    rows = math.ceil(len(pixels) / columns)
    side = pixels.shape[-1] + 2
    grid = np.zeros((rows * side, columns * side), dtype=np.uint8)
    for index, image in enumerate(pixels):
        top, left = (index // columns) * side + 1, (index % columns) * side + 1
        grid[top : top + image.shape[0], left : left + image.shape[1]] = image
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


def score_samples(generator: ConvGenerator, eval_classifier: HogMlpClassifier, num_samples: int, seed: int) -> dict:
    """Evaluation-classifier statistics of `num_samples` prior samples of `generator`, next to the held-out digits."""
    noise = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        samples = torch.cat([generator.sample(500, generator=noise) for _ in range(math.ceil(num_samples / 500))])
    samples01 = ((samples[:num_samples, 0] + 1) / 2).numpy()
    probabilities = eval_classifier.predict_proba(samples01)
    predicted = probabilities.argmax(axis=1)
    histogram = np.bincount(predicted, minlength=NUM_CLASSES)
    held_out = load_split().held_out_images
    held_out_probabilities = eval_classifier.predict_proba(held_out)
    return {
        "predicted_class_histogram": histogram.tolist(),
        "class_fraction_min_max": [float(histogram.min() / num_samples), float(histogram.max() / num_samples)],
        "confident_fraction": float((probabilities.max(axis=1) > CONFIDENT_PROBABILITY).mean()),
        "held_out_confident_fraction": float((held_out_probabilities.max(axis=1) > CONFIDENT_PROBABILITY).mean()),
        "frechet_distance_to_held_out": frechet_distance(
            eval_classifier.features(samples01), eval_classifier.features(held_out)
        ),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    torch.manual_seed(args.seed)
    noise = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    output_dir = Path(args.output_dir)

    # An unconditional model: all 5,000 digits, no labels.
    real_images = torch.from_numpy(load_mnist()[0]).unsqueeze(1) * 2 - 1
    generator = ConvGenerator(
        latent_dim=args.latent_dim, out_channels=1, base_channels=args.base_channels, channel_multipliers=(2, 1)
    )
    discriminator = Discriminator(args.discriminator_channels)
    ema_generator = copy.deepcopy(generator)
    betas = (0.5, 0.999)
    generator_optimizer = torch.optim.Adam(generator.parameters(), lr=args.learning_rate, betas=betas)
    discriminator_optimizer = torch.optim.Adam(discriminator.parameters(), lr=args.learning_rate, betas=betas)

    generator.train()
    discriminator.train()
    for step in range(1, args.max_steps + 1):
        real = real_images[torch.randint(len(real_images), (args.batch_size,), generator=noise)]
        latents = generator.sample_latents(args.batch_size, generator=noise)
        fake = generator(latents)

        # Non-saturating GAN loss: softplus(-s) = -log sigmoid(s) on real, softplus(s) on fake.
        discriminator_loss = F.softplus(-discriminator(real)).mean() + F.softplus(discriminator(fake.detach())).mean()
        discriminator_optimizer.zero_grad(set_to_none=True)
        discriminator_loss.backward()
        discriminator_optimizer.step()

        generator_loss = F.softplus(-discriminator(fake)).mean()
        generator_optimizer.zero_grad(set_to_none=True)
        generator_loss.backward()
        generator_optimizer.step()
        # Plain copies for the first steps, so the average does not drag in the random initialisation.
        update_ema(ema_generator, generator, args.ema_decay if step > 100 else 0.0)

        if step % args.log_every == 0 or step == args.max_steps:
            losses = f"d_loss {discriminator_loss.item():.3f} g_loss {generator_loss.item():.3f}"
            print(f"step {step}/{args.max_steps} {losses}", flush=True)

    # Prior samples in batches of the training batch size, so the per-batch statistics G was trained with are what
    # gets averaged.
    noise = torch.Generator().manual_seed(args.seed)
    num_batches = math.ceil(args.bn_recompute_samples / args.batch_size)
    recompute_batchnorm_statistics(
        ema_generator, (ema_generator.sample_latents(args.batch_size, generator=noise) for _ in range(num_batches))
    )
    ema_generator.save_pretrained(output_dir)
    reloaded = ConvGenerator.from_pretrained(output_dir).eval()
    grid_samples = reloaded.sample(100, generator=torch.Generator().manual_seed(args.seed))
    save_sample_grid(grid_samples, output_dir / "samples.png")

    metrics = {
        "steps": args.max_steps,
        "num_parameters": sum(p.numel() for p in reloaded.parameters()),
        "training_seconds": round(time.perf_counter() - started, 1),
    }
    eval_classifier_dir = Path(args.eval_classifier_dir)
    if (eval_classifier_dir / HogMlpClassifier.config_name).exists():
        eval_classifier = HogMlpClassifier.from_pretrained(eval_classifier_dir)
        metrics.update(score_samples(reloaded, eval_classifier, args.num_eval_samples, args.seed + 1))
    else:
        print(f"No evaluation classifier in {eval_classifier_dir}; run train_eval_classifier.py to score samples.")
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
