"""Small helpers shared by the benchmark sections: timing, seeds, tables, JSON and plots."""

import json
import math
import statistics
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, object]:
    """``(seconds, result)`` of one call of ``fn``, GPU work included."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def median_seconds(fn, device: torch.device, repeats: int, warmup: int = 1) -> tuple[float, object]:
    """Median wall-clock seconds of ``repeats`` calls after ``warmup`` untimed ones (the machine is shared, so the
    median of several runs is the figure reported), and the result of the last call."""
    for _ in range(warmup):
        fn()
    seconds, result = [], None
    for _ in range(repeats):
        elapsed, result = timed(fn, device)
        seconds.append(elapsed)
    return statistics.median(seconds), result


class FlopCounter(TorchDispatchMode):
    """Counts the floating-point operations of the matrix products and convolutions run inside it, forward and
    backward, with the per-operator formulas of `torch.utils.flop_counter` (its own `FlopCounterMode` also tracks
    modules through backward hooks, which `torch.autograd.grad` refuses). Elementwise work is not counted, and
    neither is attention on CPU (its fused kernel has no formula there), so the count is a lower bound on the work
    done.

    Example: ``with FlopCounter() as counter: pipe(...)``, then ``counter.total``.
    """

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def matmul_gflops(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """This machine's float32 rate on one large square matrix product, in GFLOP/s (the best of ``repeats``): the
    practical ceiling for any float32 workload made of matrix products and convolutions."""
    generator = torch.Generator(device).manual_seed(0)
    left, right = (torch.randn(size, size, generator=generator, device=device) for _ in range(2))
    torch.mm(left, right)
    seconds = min(timed(lambda: torch.mm(left, right), device)[0] for _ in range(repeats))
    return 2 * size**3 / seconds / 1e9


def translator_train_step(translator, conditions, latents, auxiliary_latents=None):
    """A callable doing one AdamW step (lr 1e-4) of ``translator.loss`` on a fixed batch: one training step's work."""
    optimizer = torch.optim.AdamW(translator.parameters(), lr=1e-4)

    def step():
        loss = translator.loss(conditions, latents, auxiliary_latents).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def clip_langevin_step(generator, adapter, latents, num_augmentations: int):
    """A callable doing the gradient work of one Langevin step on CLIP's augmented cosine: G forward, DiffAugment to
    ``num_augmentations`` copies per image, CLIP forward, and the backward pass of both to the packed ``latents``."""
    from tron_pipelines.energies import DiffAugment, cosine_energy

    augment = DiffAugment()
    target = torch.randn(latents.shape[0], adapter.condition_dim, device=latents.device)

    def step():
        leaf = latents.detach().requires_grad_(True)
        copies = augment(generator.generate(leaf), num_augmentations)
        features = adapter.features(adapter.preprocess_generated(copies.flatten(0, 1)))
        energy = cosine_energy(features.view(latents.shape[0], num_augmentations, -1), target)
        torch.autograd.grad(energy.sum(), leaf)

    return step


def seeded_generators(seeds, device: torch.device) -> list[torch.Generator]:
    """One generator per image: the batched and the one-at-a-time paths then draw exactly the same numbers."""
    return [torch.Generator(device).manual_seed(int(seed)) for seed in seeds]


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Markdown table of ``rows``; ``columns`` are ``(key, header, format)`` with a `format` spec such as ``".3f"``."""

    def cell(row, key, spec):
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        return format(value, spec) if spec else str(value)

    lines = ["| " + " | ".join(header for _, header, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row, key, spec) for key, _, spec in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (torch.device, torch.dtype, Path)):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Cannot write {type(value).__name__} to JSON.")


def new_figure(num_panels: int, width: float = 4.2, height: float = 3.2):
    """A row of ``num_panels`` matplotlib axes (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, num_panels, figsize=(width * num_panels, height), squeeze=False)
    return figure, list(axes[0])


def save_figure(figure, path: Path) -> str:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path.name
