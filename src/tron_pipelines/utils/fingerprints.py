"""Fingerprints of weights: what pair caches, captioners, builds and feature caches record to tell models apart."""

import hashlib

import torch


def module_fingerprint(module: torch.nn.Module) -> str:
    """Short SHA-256 of a module's class and state dict: tells two sets of weights apart, whatever their config says."""
    digest = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


__all__ = ["module_fingerprint"]
