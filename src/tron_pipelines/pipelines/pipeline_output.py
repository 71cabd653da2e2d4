from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput


@dataclass
class TronPipelineOutput(BaseOutput):
    """Output of `TronPipeline`.

    Args:
        images: ``output_type="pil"``: list of PIL images; ``"np"``: ``(B, H, W, C)`` float array in [0, 1];
            ``"pt"``: ``(B, C, H, W)`` tensor in [0, 1]; ``"latent"``: the packed latents ``(B, total_latent_dim)``.
        latents: Refined packed latents ``(B, total_latent_dim)``, float32: main latent first, then auxiliary ones.
        energies: Final energy E(z, c) per image ``(B,)``, float32 (lower is better; -1 is a perfect cosine match).
        energy_trace: ``(num_inference_steps, B)`` energy before each Langevin step, when ``return_energy_trace=True``.
        rewards: With reward models (the pipeline's ``rewards``): ``{name: (B,)}`` each reward of each returned image,
            float32, computed on the plain images (no augmentation), whatever its weight; ``None`` otherwise.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    latents: torch.Tensor | None = None
    energies: torch.Tensor | None = None
    energy_trace: torch.Tensor | None = None
    rewards: dict[str, torch.Tensor] | None = None
