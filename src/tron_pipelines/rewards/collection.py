"""`RewardModels`: the named reward models of a pipeline, one ``rewards`` component however many there are."""

import importlib
import os
import re
import sys

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin
from torch import nn

from .base import RewardModel


REWARD_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class RewardModels(ModelMixin, ConfigMixin):
    """Reward models by name, e.g. ``RewardModels({"pickscore": PickScoreReward(...), "hps": HPSv2Reward(...)})``.

    The pipeline's ``rewards`` component. Saved as one folder with ``config.json`` (each name's class) and one
    subfolder per reward (its own `save_pretrained`: weights, config, tokenizer); `from_pretrained` loads each back
    with its class's `from_pretrained`. How much each reward counts is the pipeline's ``reward_weights`` setting, not
    part of this component, so one set of models serves any mix.

    Args:
        rewards: ``{name: RewardModel}``; names are lower-case identifiers (they are folder names and keys of the
            pipeline's ``reward_weights`` and of ``TronPipelineOutput.rewards``).
    """

    def __init__(self, rewards: dict[str, RewardModel]):
        super().__init__()
        if not rewards:
            raise ValueError("`rewards` must name at least one reward model.")
        for name, model in rewards.items():
            if not isinstance(name, str) or not REWARD_NAME.match(name):
                raise ValueError(f"Reward name {name!r} must be a lower-case identifier like 'pickscore'.")
            if not isinstance(model, RewardModel):
                raise TypeError(f"Reward {name!r} must be a RewardModel, got {type(model).__name__}.")
        self.models = nn.ModuleDict(rewards)
        self.register_to_config(
            rewards={name: [type(model).__module__, type(model).__name__] for name, model in rewards.items()}
        )

    @property
    def names(self) -> list[str]:
        return list(self.models)

    @property
    def needs_prompt(self) -> bool:
        return any(model.needs_prompt for model in self.models.values())

    def default_weights(self) -> dict[str, float]:
        """Each reward's ReNO weighting (HPSv2 5.0, ImageReward 1.0, PickScore 0.05, CLIP 0.01, aesthetic 0)."""
        return {name: type(model).default_weight for name, model in self.models.items()}

    def encode_prompts(self, prompts: list[str], device: torch.device | None = None) -> dict[str, torch.Tensor | None]:
        """Every reward's prompt encodings ``(B, ...)`` for ``prompts`` (``None`` for rewards that read no text),
        moved to ``device``."""
        encoded = {}
        for name, model in self.models.items():
            embeds = model.encode_prompt(prompts) if model.needs_prompt else None
            encoded[name] = embeds if embeds is None or device is None else embeds.to(device)
        return encoded

    def forward(
        self, images: torch.Tensor, prompt_embeds: dict[str, torch.Tensor | None], names: list[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """``{name: (B,) rewards}`` of images ``(B, C, H, W)`` in ``[-1, 1]``, given `encode_prompts`' output
        (rows matching the images); ``names`` picks the rewards (all by default)."""
        names = self.names if names is None else names
        return {name: self.models[name](images, prompt_embeds.get(name)) for name in names}

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """One subfolder per reward plus ``config.json`` naming each reward's class."""
        os.makedirs(save_directory, exist_ok=True)
        for name, model in self.models.items():
            model.save_pretrained(os.path.join(save_directory, name), *args, **kwargs)
        self.save_config(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "RewardModels":
        """Load the folder `save_pretrained` wrote (or a Hub repo, with ``subfolder=``); other keyword arguments go
        to each reward's `from_pretrained` (``dtype``, ``cache_dir``, ...).

        A reward class outside this package loads once its module is imported, as diffusers requires for
        pipeline components.
        """
        subfolder = kwargs.pop("subfolder", None)
        config_kwargs = {
            key: kwargs[key] for key in ("cache_dir", "revision", "token", "local_files_only") if key in kwargs
        }
        config = cls.load_config(pretrained_model_name_or_path, subfolder=subfolder, **config_kwargs)
        rewards = {}
        for name, (module_name, class_name) in config["rewards"].items():
            if module_name not in sys.modules and not module_name.startswith("tron_pipelines."):
                raise ImportError(
                    f"Reward {name!r} is a {module_name}.{class_name}: import {module_name} before loading."
                )
            reward_class = getattr(importlib.import_module(module_name), class_name)
            reward_subfolder = "/".join(part for part in (subfolder, name) if part)
            rewards[name] = reward_class.from_pretrained(
                pretrained_model_name_or_path, subfolder=reward_subfolder, **kwargs
            )
        return cls(rewards).eval()


__all__ = ["RewardModels"]
