"""TronPipeline: zero-shot conditional generation from an unconditional generator, a translator and Langevin dynamics.

One call: encode the condition with f (text, image or class) -> the translator proposes latents -> a few Langevin steps
on E(z, c) refine them -> G renders the images.
"""

import copy
import os
import re
import threading
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor
from diffusers.utils import logging, replace_example_docstring
from diffusers.utils.hub_utils import load_or_create_model_card, populate_model_card
from huggingface_hub import create_repo, snapshot_download

from ..encoders import EncoderAdapter
from ..energies import AUGMENTATIONS, ConditionTerm, DiffAugment, RewardEnergy, TronEnergy
from ..models.batch_norm_folding import fold_batch_norms, folds_of, refold_batch_norms, unfold_batch_norms
from ..models.generator import TronGenerator
from ..models.translator import TranslatorModel
from .loading import (
    has_only_our_code,
    import_component_modules,
    locate_pipeline,
    modules_cache_lock,
    write_generic_loader_files,
)
from .pipeline_output import TronPipelineOutput


EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers.utils import make_image_grid
        >>> from tron_pipelines import TronPipeline

        >>> pipe = TronPipeline.from_pretrained("tron-mnist-text")  # embedded, offline
        >>> out = pipe("a bold seven leaning right", num_images_per_prompt=8, generator=torch.Generator().manual_seed(0))
        >>> make_image_grid(out.images, rows=1, cols=8).save("sevens.png")
        >>> out.energies  # final E(z, c) per image, lower is better
        ```
"""

logger = logging.get_logger(__name__)

INITIALIZATIONS = ("translator", "translator_mean", "prior")
# `from_pretrained` arguments that say where a Hub repo comes from (the rest say how to load it).
_DOWNLOAD_KWARGS = ("cache_dir", "force_download", "local_files_only", "revision", "token")
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class LangevinState:
    """The free variables of one call.

    ``langevin`` is G's main latent ``(B, D)``, or all K translator means ``(B, K, D)`` in the method's mean-mixing
    initialisation, where the first ``K * D`` columns of ``auxiliary`` are per-dimension mixture logits. The remaining
    columns of ``auxiliary`` are G's auxiliary latents (``None`` when there are neither).
    """

    langevin: torch.Tensor
    auxiliary: torch.Tensor | None
    num_components: int = 0

    @property
    def mixture_size(self) -> int:
        return self.num_components * self.langevin.shape[-1] if self.num_components else 0

    def packed(self, langevin: torch.Tensor | None = None, auxiliary: torch.Tensor | None = None) -> torch.Tensor:
        """Effective packed latents ``(B, total_latent_dim)`` for the given (or current) variables."""
        langevin = self.langevin if langevin is None else langevin
        auxiliary = self.auxiliary if auxiliary is None else auxiliary
        if self.num_components:
            logits = auxiliary[:, : self.mixture_size].view_as(langevin)
            # Softmax over the K components, separately for every latent dimension.
            main = (logits.softmax(dim=1) * langevin).sum(dim=1)
            rest = auxiliary[:, self.mixture_size :]
        else:
            main, rest = langevin, auxiliary
        return main if rest is None or rest.shape[1] == 0 else torch.cat([main, rest], dim=1)

    def with_packed(self, latents: torch.Tensor, latent_dim: int) -> "LangevinState":
        """State whose effective latents are ``latents``; mixture logits are kept (all K means become equal)."""
        main, rest = latents[:, :latent_dim].float(), latents[:, latent_dim:].float()
        if self.num_components:
            langevin = main.unsqueeze(1).expand(-1, self.num_components, -1).clone()
            return LangevinState(
                langevin, torch.cat([self.auxiliary[:, : self.mixture_size], rest], 1), self.num_components
            )
        return LangevinState(main, rest if rest.shape[1] else None)


# diffusers' names of its per-layer memory hooks (`ModelMixin.enable_layerwise_casting`, `enable_group_offload`).
PER_LAYER_MEMORY_HOOKS = ("layerwise_casting", "group_offloading")
_PER_LAYER_HOOK_REASON = (
    "Langevin backpropagates through the generator and the encoder, and these hooks change a layer's weights (cast them "
    "back to the storage dtype, or move them off the device) right after its forward pass, before the backward pass "
    "needs them."
)


def per_layer_memory_hooks(model) -> list[str]:
    """Which of diffusers' per-layer memory hooks are installed anywhere in ``model`` (an ``nn.Module``)."""
    found = set()
    for module in model.modules() if isinstance(model, torch.nn.Module) else ():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None:
            found.update(name for name in PER_LAYER_MEMORY_HOOKS if registry.get_hook(name) is not None)
    return sorted(found)


def _select_rows(mask: torch.Tensor, new: torch.Tensor | None, old: torch.Tensor | None) -> torch.Tensor | None:
    """Rows of ``new`` where ``mask`` ``(B,)`` is true, else rows of ``old`` (``None`` stays ``None``)."""
    return None if new is None else torch.where(mask.view(-1, *[1] * (new.ndim - 1)), new, old)


def as_prompt_list(prompts: str | list[str]) -> list[str]:
    """A call's ``prompt`` or ``negative_prompt`` as a list: one string becomes ``[string]``."""
    return [prompts] if isinstance(prompts, str) else list(prompts)


def _evaluate_energy(energy: TronEnergy, latents: torch.Tensor, augmentations: torch.Tensor | None):
    # What `enable_energy_compile` compiles: the `evaluate` of whichever energy the call builds (TronEnergy or
    # RewardEnergy), as one graph.
    return energy.evaluate(latents, augmentations)


def prompt_words(text: str) -> list[str]:
    """The words of a prompt as `TronPipeline`'s ``prompt_vocabulary`` counts them: lower-case letters and digits."""
    return re.findall(r"[a-z0-9]+", text.lower())


def slerp(weight: float, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of raw vectors ``(E,)``: the angle comes from the normalised vectors, the weights are
    applied to the raw ones (as the method does for CLIP embeddings)."""
    cos = torch.dot(start / start.norm(), end / end.norm()).clamp(-1.0, 1.0)
    angle = torch.arccos(cos)
    if angle.abs() < 1e-6:
        return (1 - weight) * start + weight * end
    return (torch.sin((1 - weight) * angle) * start + torch.sin(weight * angle) * end) / torch.sin(angle)


class TronPipeline(DiffusionPipeline):
    r"""TR0N sampling: translator initialisation + Langevin refinement of a frozen generator's latents.

    Components:
        translator ([`TranslatorModel`]): q(z | c), a Gaussian mixture over G's main latent.
        generator ([`TronGenerator`]): the frozen generator G (packed latents -> images in [-1, 1]).
        encoder: the frozen auxiliary model f: a transformers `CLIPModel` (or anything with ``get_text_features`` and
            ``get_image_features``) for text/image conditions, or a classifier returning ``logits`` for classes.
        scheduler ([`LangevinScheduler`], [`GradientDescentScheduler`] or [`NoiseOptimizationScheduler`]): the
            refinement dynamics and its settings.
        tokenizer (`CLIPTokenizer`, optional): needed for prompts.
        image_processor (`CLIPImageProcessor`, optional): preprocessing of real-image conditions.
        rewards ([`RewardModels`], optional): reward models (PickScore, HPSv2, CLIP score, aesthetic). When present
            the energy is minus their weighted sum, ``E = -sum_i w_i r_i(G(z), prompt)``, in place of the encoder's
            cosine (the encoder still makes the translator's condition), and every call reports each reward per
            image (``TronPipelineOutput.rewards``).

    Settings saved in ``model_index.json`` (override them in ``from_pretrained(..., name=value)``):
        default_num_inference_steps: Langevin steps when the call gives none (10 unless set).
        default_num_augmentations: Augmented copies per image in the energy when the call gives none (8 unless set).
        default_num_candidates: Initial draws per image when the call gives none (1 unless set; the lowest-energy one
            is refined).
        augmentation_policy: The `DiffAugment` operations of the energy, comma-separated, from ``"color"``,
            ``"translation"``, ``"resize"``, ``"cutout"`` (the method uses all four for CLIP on natural images; small
            digits keep only translation). A string, because diffusers reads two-item lists in ``model_index.json``
            as components.
        prompt_vocabulary: For a text encoder trained on a small, known set of captions (the embedded
            ``tron-mnist-text``): its words, space-separated. A prompt with other words gets a warning naming them,
            since the encoder makes some embedding of any text and the images look just as confident. Empty (the
            default, e.g. for CLIP trained on the web): no check.
        reward_weights: ``{name: w_i}`` for the ``rewards``; a reward not named gets its ReNO weighting (HPSv2 5.0,
            PickScore 0.05, CLIP score 0.01, aesthetic 0: reported, not optimised). A call's ``reward_weights``
            overrides it.
        preview_num_inference_steps / preview_num_augmentations: Quicker settings for a first look where the
            defaults above are the method's (100 steps with 50 augmented copies for a GAN take minutes on a CPU): those
            of the sample grid of ``tron build`` (``--sample_steps``, ``--sample_augmentations``). Interactive front
            ends start from them (the sliders of ``tron demo``); calls keep the defaults. ``None`` (the default): the
            defaults.
    """

    # Rewards before the generator: each model call offloads the one before it in this chain, and the generator must
    # stay on the device between its forward and its backward pass, which runs through the rewards.
    model_cpu_offload_seq = "encoder->rewards->translator->generator"
    _optional_components = ["tokenizer", "image_processor", "rewards"]
    _callback_tensor_inputs = ["latents", "condition_embeds", "energies"]

    def __init__(
        self,
        translator: TranslatorModel,
        generator: TronGenerator,
        encoder,
        scheduler,
        tokenizer=None,
        image_processor=None,
        rewards=None,
        default_num_inference_steps: int = 10,
        default_num_augmentations: int = 8,
        default_num_candidates: int = 1,
        augmentation_policy: str = ",".join(AUGMENTATIONS),
        prompt_vocabulary: str = "",
        reward_weights: dict[str, float] | None = None,
        preview_num_inference_steps: int | None = None,
        preview_num_augmentations: int | None = None,
    ):
        super().__init__()
        self.register_modules(
            translator=translator,
            generator=generator,
            encoder=encoder,
            scheduler=scheduler,
            tokenizer=tokenizer,
            image_processor=image_processor,
            rewards=rewards,
        )
        self.register_to_config(
            default_num_inference_steps=default_num_inference_steps,
            default_num_augmentations=default_num_augmentations,
            default_num_candidates=default_num_candidates,
            augmentation_policy=",".join(DiffAugment(policy=tuple(augmentation_policy.split(","))).policy),
            prompt_vocabulary=" ".join(sorted(set(prompt_words(prompt_vocabulary)))),
            reward_weights={**(rewards.default_weights() if rewards is not None else {}), **(reward_weights or {})},
            preview_num_inference_steps=preview_num_inference_steps,
            preview_num_augmentations=preview_num_augmentations,
        )
        # Turns G's [-1, 1] output into PIL / numpy / torch images; a helper, not a component.
        self.postprocessor = VaeImageProcessor(do_resize=False)
        # Set by `enable_energy_compile`: a compiled `_evaluate_energy`, or None to run the energy eagerly.
        self._compiled_energy = None

    # Loading ---------------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load a pipeline from a local folder, an embedded name (``"tron-mnist"``, ``"tron-mnist-text"``) or a Hub
        repo id, in that order of precedence. Keyword arguments are those of `DiffusionPipeline.from_pretrained`.

        Raises `PipelineNotFoundError` (an ``OSError``) in one sentence when the name is none of the three. The
        re-export files that `save_pretrained` writes for diffusers' generic loader are trusted only when they are
        exactly this package's own (see `tron_pipelines.pipelines.loading`). Concurrent loads, from threads or
        processes, take turns (diffusers rewrites those files in one shared modules cache on every load).
        """
        download_kwargs = {key: kwargs[key] for key in _DOWNLOAD_KWARGS if key in kwargs}
        folder = locate_pipeline(pretrained_model_name_or_path, cls.download, download_kwargs)
        import_component_modules(folder)
        if has_only_our_code(folder):
            kwargs.setdefault("trust_remote_code", True)
        # diffusers resolves each component's class from its re-export file while it loads the weights, so the
        # whole load holds the lock.
        with modules_cache_lock():
            pipe = super().from_pretrained(
                folder, **{key: value for key, value in kwargs.items() if key not in _DOWNLOAD_KWARGS}
            )
        pipe.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        return pipe

    @classmethod
    def download(cls, pretrained_model_name, **kwargs) -> str:
        """Download a whole pipeline repo from the Hub (``revision``, ``cache_dir``, ``token``, ``local_files_only``,
        ``force_download`` as in `huggingface_hub.snapshot_download`) and return its local folder.

        A plain snapshot is all the loader needs; diffusers' own `download` also computes which files to fetch from
        the repo's listing, which a TR0N repo gains nothing from.
        """
        return snapshot_download(
            pretrained_model_name,
            revision=kwargs.get("revision"),
            cache_dir=kwargs.get("cache_dir"),
            token=kwargs.get("token"),
            local_files_only=bool(kwargs.get("local_files_only")),
            force_download=bool(kwargs.get("force_download")),
        )

    @classmethod
    def from_pipe(
        cls,
        pipeline: DiffusionPipeline,
        dtype: torch.dtype | None = None,
        torch_dtype: torch.dtype | None = None,
        **kwargs,
    ) -> "TronPipeline":
        """A new `TronPipeline` sharing ``pipeline``'s components: the same model, tokenizer and scheduler objects, no
        weights copied. Keyword arguments replace components (``scheduler=``, ``translator=``, ...) or settings
        (``default_num_inference_steps=``, ...); ``dtype`` (or diffusers' older ``torch_dtype``) casts the (shared) models,
        which otherwise stay as they are.

        diffusers' own `from_pipe` carries a model over only when its class equals the annotation exactly (every
        TronGenerator subclass and any encoder would be dropped) and casts the shared models, and so the source
        pipeline's, to float32 unless told otherwise; this one does neither.

        Example:
            ```py
            >>> greedy = TronPipeline.from_pipe(pipe, scheduler=LangevinScheduler.from_config(pipe.scheduler.config, noise_std=0.0))
            >>> greedy.generator is pipe.generator
            True
            ```
        """
        expected, optional = cls._get_signature_keys(cls)
        unknown = sorted(set(kwargs) - set(expected) - set(optional))
        if unknown:
            raise TypeError(f"`from_pipe` got {unknown}, which are neither components nor settings of {cls.__name__}.")
        components = {name: kwargs.get(name, getattr(pipeline, name, None)) for name in expected}
        missing = [
            name
            for name, component in components.items()
            if component is None and name not in cls._optional_components
        ]
        if missing:
            raise ValueError(
                f"`pipeline` ({type(pipeline).__name__}) has no {missing}: give them as keyword arguments."
            )
        # The call's value first: the source (any pipeline with the components) may not have the setting at all.
        settings = {name: kwargs[name] for name in optional if name in kwargs}
        settings.update(
            {name: pipeline.config[name] for name in optional if name not in kwargs and name in pipeline.config}
        )
        new = cls(**components, **settings)
        if "_name_or_path" in pipeline.config:
            new.register_to_config(_name_or_path=pipeline.config._name_or_path)
        dtype = dtype or torch_dtype
        return new.to(dtype=dtype) if dtype is not None else new

    def enable_sequential_cpu_offload(self, *args, **kwargs):
        raise NotImplementedError(
            "Sequential CPU offload is not supported by TronPipeline: Langevin backpropagates through the generator and "
            "the encoder, and accelerate's per-layer hooks move a layer's weights off the device right after its forward "
            "pass, before the backward pass needs them. Use `enable_model_cpu_offload()` (whole models) instead."
        )

    def enable_group_offload(self, *args, **kwargs):
        raise NotImplementedError(
            "Group offloading is not supported by TronPipeline: " + _PER_LAYER_HOOK_REASON + " Use "
            "`enable_model_cpu_offload()` (whole models) instead."
        )

    # Speed ------------------------------------------------------------------------------------------------------
    def enable_energy_compile(self, **compile_kwargs):
        r"""Compile the energy path, G -> augmentations -> f -> E(z, c), with `torch.compile` for later calls.

        The whole path becomes one graph (and its backward one more), so operations are fused across the generator,
        the augmentations and the encoder; the random draws stay outside the graph, so results keep their seeds. The
        first call compiles (2-2.5 minutes on 2 CPU cores for the embedded MNIST pipelines, more for large models), and
        a new batch size or dtype may compile again; later calls reuse the graphs. Energies agree with the eager path
        up to float rounding. Not saved with the pipeline; `disable_energy_compile` undoes it.

        Whether it pays depends on the models and the device: measured on a CPU at batch 32 (`python
        benchmarks/run.py features --compile`), later calls ran 0.9-1.2x the eager speed for `tron-mnist` and 0.34x
        (slower) for `tron-mnist-text`. Measure before turning it on.

        Args:
            **compile_kwargs: Passed to `torch.compile`, e.g. ``mode="max-autotune"``, ``backend="inductor"``,
                ``dynamic=False``.

        Example:
            ```py
            >>> pipe.enable_energy_compile(mode="max-autotune")
            >>> pipe(class_labels=[3] * 32, generator=torch.Generator().manual_seed(0))  # compiles
            >>> pipe(class_labels=[5] * 32)  # reuses the compiled graphs
            ```
        """
        self._compiled_energy = torch.compile(_evaluate_energy, **compile_kwargs)

    def disable_energy_compile(self):
        """Run the energy eagerly again (undoes `enable_energy_compile`)."""
        self._compiled_energy = None

    def fuse_batch_norm(self, generator: bool = True, encoder: bool = True) -> int:
        r"""Fold the frozen BatchNorm layers of G and f into the linear or convolution layer before each of them.

        G and f never train during sampling, so such a pair is one affine layer: folding it removes a pass over the
        activations from the forward and the backward pass of every Langevin step (embedded `tron-mnist`, batch 32 on
        2 CPU cores: about 1.1x the images per second alone, 1.4x with channels_last; see docs/benchmarks.md).
        Energies and images agree with the unfused models up to float rounding, which Langevin may amplify for a few
        images, so it is off by default. Only pairs that follow each other in an ``nn.Sequential`` are found;
        conditional BatchNorms (BigGAN's) and LayerNorms (CLIP's) are not fixed affine maps and stay as they are.

        The models are changed in place and remember their folds, so `unfuse_batch_norm` works from any pipeline
        holding them; their ``state_dict`` has the folded weights until then. `save_pretrained` (and `push_to_hub`)
        of a pipeline still write the original weights; a model's own ``save_pretrained`` does not: unfuse first.
        Changing G's or f's weights while folded is not supported either.

        Args:
            generator: Fold G's BatchNorms.
            encoder: Fold f's BatchNorms.

        Returns:
            The number of BatchNorm layers folded by this call (0, with a warning, when there are none left).

        Raises:
            ValueError: A chosen model, or a BatchNorm to fold, is in training mode or keeps no running statistics;
                nothing is folded then.

        Example:
            ```py
            >>> pipe = TronPipeline.from_pretrained("tron-mnist")
            >>> pipe.fuse_batch_norm()  # 6 for tron-mnist: 3 in G, 3 in f
            >>> images = pipe(class_labels=list(range(10))).images
            ```
        """
        models = {
            name: model
            for name, model, chosen in (("generator", self.generator, generator), ("encoder", self.encoder, encoder))
            if chosen
        }
        count = fold_batch_norms(*models.values())
        if not count:
            folded_already = [name for name, model in models.items() if folds_of(model)]
            reason = (
                f"{folded_already} folded already"
                if folded_already
                else "no BatchNorm directly after a linear or convolution layer"
            )
            logger.warning(f"fuse_batch_norm: nothing folded in {list(models)}: {reason}.")
        return count

    def unfuse_batch_norm(self):
        """Put back the BatchNorm layers folded by `fuse_batch_norm` (a no-op when none are folded)."""
        unfold_batch_norms(self.generator, self.encoder)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, push_to_hub: bool = False, **kwargs):
        """`DiffusionPipeline.save_pretrained`, plus the files that let diffusers' generic loader open the folder
        (``DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)``; see
        `tron_pipelines.pipelines.loading`). G's and f's original weights are written even while `fuse_batch_norm` is
        in effect (the folds are undone for the save and made again after it).
        """
        # diffusers would upload from inside its own save, before the generic loader's files exist: upload after them.
        hub = {
            key: kwargs.pop(key)
            for key in ("commit_message", "private", "create_pr", "token", "repo_id")
            if key in kwargs
        }
        folds = {model: folds_of(model) for model in (self.generator, self.encoder)}
        unfold_batch_norms(*folds)
        try:
            super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            for model, model_folds in folds.items():
                refold_batch_norms(model, model_folds)
        write_generic_loader_files(save_directory)
        if push_to_hub:
            repo_id = hub.get("repo_id", os.path.basename(os.path.normpath(save_directory)))
            repo_id = create_repo(repo_id, exist_ok=True, private=hub.get("private"), token=hub.get("token")).repo_id
            card = populate_model_card(load_or_create_model_card(repo_id, token=hub.get("token"), is_pipeline=True))
            card.save(os.path.join(save_directory, "README.md"))
            self._upload_folder(
                save_directory,
                repo_id,
                token=hub.get("token"),
                commit_message=hub.get("commit_message"),
                create_pr=hub.get("create_pr", False),
            )

    # Per-call state -----------------------------------------------------------------------------------------------
    # Several threads may call one pipeline at once (a web server does). What diffusers keeps on the pipeline during a
    # call (`_interrupt`, `_num_timesteps`) lives in thread-local storage here, and every call steps its own copy of
    # the scheduler, so concurrent calls never see each other's state. `pipe._interrupt = True` from a callback (the
    # diffusers convention) still stops the call that ran the callback, and only that one.
    @property
    def _call_state(self) -> threading.local:
        state = self.__dict__.get("_thread_local_call_state")
        if state is None:
            state = self.__dict__.setdefault("_thread_local_call_state", threading.local())
        return state

    def __getstate__(self):
        # Thread-local storage cannot be copied or pickled; a copy starts with fresh per-call state.
        return {k: v for k, v in self.__dict__.items() if k != "_thread_local_call_state"}

    @property
    def _interrupt(self) -> bool:
        return getattr(self._call_state, "interrupt", False)

    @_interrupt.setter
    def _interrupt(self, value: bool):
        self._call_state.interrupt = value

    @property
    def _num_timesteps(self) -> int | None:
        return getattr(self._call_state, "num_timesteps", None)

    @_num_timesteps.setter
    def _num_timesteps(self, value: int):
        self._call_state.num_timesteps = value

    # Properties mirroring diffusers' pipelines -------------------------------------------------------------------
    @property
    def num_timesteps(self) -> int | None:
        """Langevin steps of this thread's current (or last) call."""
        return self._num_timesteps

    @property
    def num_candidates(self) -> int | None:
        """Initial draws per image of this thread's current (or last) call (the pipeline's default when the call gave
        none)."""
        return getattr(self._call_state, "num_candidates", None)

    @property
    def interrupt(self) -> bool:
        """True once a callback of this thread's current call set ``pipe._interrupt = True``: the remaining Langevin
        steps are skipped and the images reached so far are returned."""
        return self._interrupt

    @property
    def encoder_adapter(self) -> EncoderAdapter:
        return EncoderAdapter(self.encoder, self.tokenizer, self.image_processor)

    @property
    def augmentation(self) -> DiffAugment:
        """The energy's augmentations, as the ``augmentation_policy`` setting names them."""
        return DiffAugment(policy=tuple(self.config.augmentation_policy.split(",")))

    # Input checks --------------------------------------------------------------------------------------------
    def check_components(self, adapter: EncoderAdapter):
        """Raise ``ValueError`` when translator, generator and encoder do not fit together, or when a model carries
        diffusers' per-layer memory hooks (layerwise casting, group offloading), which break the backward pass."""
        if not isinstance(self.generator, TronGenerator):
            raise ValueError(f"`generator` must be a TronGenerator, got {type(self.generator).__name__}.")
        for name in ("generator", "encoder", "translator", "rewards"):
            hooks = per_layer_memory_hooks(getattr(self, name))
            if hooks:
                raise ValueError(
                    f"`{name}` has diffusers' {' and '.join(hooks)} hooks: " + _PER_LAYER_HOOK_REASON + " Remove them "
                    "(reload the model), or save memory with `autocast_dtype=torch.bfloat16`, `pipe.to(torch.bfloat16)` "
                    "or `enable_model_cpu_offload()` (whole models)."
                )
        config = self.translator.config
        if config.condition_dim != adapter.condition_dim:
            raise ValueError(
                f"The translator takes {config.condition_dim}-dim conditions but the encoder makes {adapter.condition_dim}."
            )
        if config.latent_dim != self.generator.latent_dim:
            raise ValueError(
                f"The translator predicts {config.latent_dim}-dim latents; the generator needs {self.generator.latent_dim}."
            )
        expected = {spec.name: spec.dim for spec in self.generator.auxiliary_latents}
        if dict(config.auxiliary_latent_dims or {}) != expected:
            raise ValueError(
                f"The translator predicts auxiliary latents {config.auxiliary_latent_dims}; the generator needs {expected}."
            )

    def check_inputs(
        self,
        adapter,
        prompt,
        image,
        class_labels,
        negative_prompt,
        condition_embeds,
        num_images_per_prompt,
        num_inference_steps,
        num_augmentations,
        num_candidates,
        initialization,
        generator,
        latents,
        output_type,
        callback_on_step_end_tensor_inputs,
    ) -> int:
        """Validate a call before any model runs; returns the number of conditions."""
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "TronPipeline cannot run under `torch.inference_mode()`: Langevin needs gradients w.r.t. the latents. "
                "Use `torch.no_grad()` (or nothing): the pipeline enables gradients only for the latents."
            )
        given = [
            name
            for name, value in (
                ("prompt", prompt),
                ("image", image),
                ("class_labels", class_labels),
                ("condition_embeds", condition_embeds),
            )
            if value is not None
        ]
        if not given:
            raise ValueError("Give one condition: `prompt`, `image`, `class_labels` or `condition_embeds`.")
        if len(given) > 1:
            raise ValueError(f"Give only one condition; got {' and '.join(f'`{n}`' for n in given)}.")
        if prompt is not None:
            if adapter.kind != "clip":
                raise ValueError(
                    "`prompt` needs a text encoder (CLIP); this pipeline's encoder is a classifier: use `class_labels`."
                )
            if self.tokenizer is None:
                raise ValueError("`prompt` needs the pipeline's `tokenizer`, which is None.")
            if not (
                isinstance(prompt, str)
                or (isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt))
            ):
                raise TypeError(
                    f"`prompt` must be a string or a non-empty list of strings, got {type(prompt).__name__}."
                )
            batch_size = 1 if isinstance(prompt, str) else len(prompt)
        elif class_labels is not None:
            if adapter.kind != "classifier":
                raise ValueError(
                    "`class_labels` needs a classifier encoder; this pipeline's encoder is CLIP: use `prompt`."
                )
            labels = [class_labels] if isinstance(class_labels, int) else class_labels
            labels = labels.tolist() if isinstance(labels, torch.Tensor) else labels
            if not isinstance(labels, list) or not labels or not all(isinstance(c, int) for c in labels):
                raise TypeError(f"`class_labels` must be an int or a non-empty list of ints, got {class_labels!r}.")
            bad = [c for c in labels if not 0 <= c < adapter.num_classes]
            if bad:
                raise ValueError(
                    f"`class_labels` {bad} out of range: this encoder has classes 0..{adapter.num_classes - 1}."
                )
            batch_size = len(labels)
        elif image is not None:
            batch_size = 1 if not isinstance(image, (list, tuple)) and getattr(image, "ndim", 3) == 3 else len(image)
        else:
            if (
                not isinstance(condition_embeds, torch.Tensor)
                or condition_embeds.ndim != 2
                or condition_embeds.shape[1] != adapter.condition_dim
            ):
                raise ValueError(
                    f"`condition_embeds` must be a tensor of shape (batch, {adapter.condition_dim}), got "
                    f"{tuple(condition_embeds.shape) if isinstance(condition_embeds, torch.Tensor) else type(condition_embeds).__name__}."
                )
            batch_size = condition_embeds.shape[0]
        if negative_prompt is not None:
            if adapter.kind != "clip" or self.tokenizer is None:
                raise ValueError("`negative_prompt` needs a CLIP encoder and a tokenizer.")
            if isinstance(negative_prompt, list) and len(negative_prompt) not in (1, batch_size):
                raise ValueError(f"`negative_prompt` has {len(negative_prompt)} entries for {batch_size} conditions.")
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` must be an integer >= 1, got {num_images_per_prompt!r}.")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 0:
            raise ValueError(
                f"`num_inference_steps` must be an integer >= 0 (0 = translator only), got {num_inference_steps!r}."
            )
        if not isinstance(num_augmentations, int) or num_augmentations < 0:
            raise ValueError(f"`num_augmentations` must be an integer >= 0, got {num_augmentations!r}.")
        if initialization not in INITIALIZATIONS:
            raise ValueError(f"`initialization` must be one of {INITIALIZATIONS}, got {initialization!r}.")
        if not isinstance(num_candidates, int) or num_candidates < 1:
            raise ValueError(f"`num_candidates` must be an integer >= 1, got {num_candidates!r}.")
        if num_candidates > 1 and latents is not None:
            raise ValueError(
                "`num_candidates` > 1 draws initial latents, so it cannot be combined with given `latents`."
            )
        if num_candidates > 1 and initialization == "translator_mean":
            raise ValueError(
                "`num_candidates` > 1 needs a random initialisation: `initialization='translator_mean'` gives the same "
                "latents every draw. Use 'translator' or 'prior'."
            )
        total = batch_size * num_images_per_prompt
        if isinstance(generator, list) and len(generator) != total:
            raise ValueError(
                f"`generator` is a list of {len(generator)} generators, but {batch_size} condition(s) x "
                f"{num_images_per_prompt} image(s) per prompt = {total} images are requested."
            )
        if latents is not None:
            expected = (total, self.generator.total_latent_dim)
            if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != expected:
                raise ValueError(f"`latents` must have shape {expected}, got {tuple(getattr(latents, 'shape', ()))}.")
            if not latents.dtype.is_floating_point:
                raise ValueError(f"`latents` must be a floating-point tensor, got {latents.dtype}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        unknown = [k for k in callback_on_step_end_tensor_inputs or [] if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` has {unknown}; allowed: {self._callback_tensor_inputs}."
            )
        return batch_size

    def check_generator_prompt(self, prompt, condition_generator_on_prompt: bool) -> None:
        """Raise ``ValueError`` when ``condition_generator_on_prompt`` is set without a prompt or for a generator that
        takes none."""
        if not condition_generator_on_prompt:
            return
        if not self.generator.accepts_prompts:
            raise ValueError(
                f"`condition_generator_on_prompt=True` needs a generator that takes a prompt (a text-to-image model); "
                f"this pipeline's {type(self.generator).__name__} takes none."
            )
        if prompt is None:
            raise ValueError("`condition_generator_on_prompt=True` gives the call's `prompt` to G: give `prompt`.")

    def default_num_candidates_for(self, initialization: str, latents: torch.Tensor | None = None) -> int:
        """The candidates a call makes when not told: the saved ``default_num_candidates`` where there is something to
        search (random draws, no given ``latents``), else 1."""
        drawn = latents is None and initialization != "translator_mean"
        return self.config.default_num_candidates if drawn else 1

    def unknown_words(self, prompt: str) -> list[str]:
        """The words of ``prompt`` outside the pipeline's ``prompt_vocabulary``, each once, in order; ``[]`` when the
        pipeline has no vocabulary."""
        known = set(self.config.prompt_vocabulary.split())
        return [word for word in dict.fromkeys(prompt_words(prompt)) if word not in known] if known else []

    def warn_about_unknown_words(self, prompts: list[str], argument: str = "prompt") -> None:
        """Warn about the words of ``prompts`` outside the pipeline's ``prompt_vocabulary`` (nothing when it is empty)."""
        for index, prompt in enumerate(prompts):
            unknown = self.unknown_words(prompt)
            if unknown:
                warnings.warn(
                    f"`{argument}` {index} has words this pipeline's text encoder never saw in training: {unknown}. It "
                    "follows only the words it knows, and its images look just as confident; the phrasings it was "
                    "trained on are in the pipeline's model card.",
                    stacklevel=3,
                )

    # Steps of a call -------------------------------------------------------------------------------------------
    def encode_condition(
        self, adapter, prompt=None, image=None, class_labels=None, condition_embeds=None, device=None
    ):
        """Condition vectors ``(B, condition_dim)``, float32, for whichever condition is given."""
        if condition_embeds is not None:
            return condition_embeds.to(device=device, dtype=torch.float32)
        if prompt is not None:
            return adapter.encode_prompts(as_prompt_list(prompt), device)
        if class_labels is not None:
            labels = [class_labels] if isinstance(class_labels, int) else list(class_labels)
            return adapter.encode_class_labels(labels, device)
        return adapter.encode_images(image, device)

    def prepare_latent_state(self, condition_embeds, initialization, generator, latents, device) -> LangevinState:
        """Initial free variables for ``condition_embeds`` ``(B, E)``: from ``latents`` when given, else from the
        translator's mixture (a draw, or all K means mixed per dimension) or from G's prior."""
        latent_dim = self.generator.latent_dim
        if latents is not None:
            return LangevinState(None, None).with_packed(latents.to(device), latent_dim)
        if initialization == "prior":
            return LangevinState(None, None).with_packed(
                self.generator.sample_latents(condition_embeds.shape[0], generator=generator, device=device),
                latent_dim,
            )
        names = [spec.name for spec in self.generator.auxiliary_latents]
        if initialization == "translator":
            main, auxiliary = self.translator.sample(condition_embeds, generator=generator)
            rest = [auxiliary[name].float() for name in names]
            return LangevinState(main.float(), torch.cat(rest, dim=1) if rest else None)
        out = self.translator(condition_embeds)
        means = out.means.float()
        logits = out.mixture_logits.float().unsqueeze(-1).expand_as(means).flatten(1)
        rest = [out.auxiliary_latents[name].float() for name in names]
        return LangevinState(means, torch.cat([logits] + rest, dim=1), self.translator.config.num_components)

    def search_initial_state(
        self, energy_fn: TronEnergy, condition_embeds, initialization, generator, num_candidates, device
    ) -> LangevinState:
        """The lowest-energy of ``num_candidates`` initial draws per image (best-of-N search before Langevin).

        Candidates are scored on the plain images, without augmentations and without gradients, so each costs one
        forward pass through G and f (a Langevin step costs ``1 + num_augmentations`` of them plus the backward pass),
        and drawing them consumes no augmentation randomness. Candidates are drawn one batch at a time, so memory
        does not grow with ``num_candidates``.
        """
        best = self.prepare_latent_state(condition_embeds, initialization, generator, None, device)
        best_energy = energy_fn.unaugmented(best.packed())
        for _ in range(num_candidates - 1):
            candidate = self.prepare_latent_state(condition_embeds, initialization, generator, None, device)
            energy = energy_fn.unaugmented(candidate.packed())
            # A non-finite best is replaced by anything; a non-finite candidate never wins (NaN < x is False).
            better = (energy < best_energy) | ~torch.isfinite(best_energy)
            best = LangevinState(
                _select_rows(better, candidate.langevin, best.langevin),
                _select_rows(better, candidate.auxiliary, best.auxiliary),
            )
            best_energy = torch.where(better, energy, best_energy)
        return best

    def reward_weights_for(self, reward_weights: dict[str, float] | None = None) -> dict[str, float]:
        """The weight of every reward model in a call: the call's ``reward_weights``, else the pipeline's
        ``reward_weights`` setting, else the reward's ReNO weighting (``{}`` without rewards). Raises ``ValueError``
        for names that are not among the pipeline's rewards and ``TypeError`` for weights that are not numbers."""
        given = dict(reward_weights or {})
        if self.rewards is None:
            if given:
                raise ValueError("`reward_weights` needs reward models, and this pipeline's `rewards` is None.")
            return {}
        unknown = sorted(set(given) - set(self.rewards.names))
        if unknown:
            raise ValueError(f"`reward_weights` names {unknown}; this pipeline's rewards are {self.rewards.names}.")
        bad = {
            name: weight
            for name, weight in given.items()
            if isinstance(weight, bool) or not isinstance(weight, (int, float))
        }
        if bad:
            raise TypeError(f"`reward_weights` must map reward names to numbers, got {bad}.")
        saved = self.config.get("reward_weights") or {}
        defaults = self.rewards.default_weights()
        return {name: float(given.get(name, saved.get(name, defaults[name]))) for name in self.rewards.names}

    def reward_terms(
        self, prompt, negative_prompt, negative_prompt_weight, batch_size, num_images_per_prompt, device
    ) -> list[ConditionTerm]:
        """The prompts of a reward energy, one row per image: ``ConditionTerm({reward name: prompt encodings or
        None}, 1)`` for the prompt, and one with ``-negative_prompt_weight`` for a negative prompt."""

        def encoded(prompts):
            embeds = self.rewards.encode_prompts(prompts, device)
            return {
                name: None if value is None else value.repeat_interleave(num_images_per_prompt, dim=0)
                for name, value in embeds.items()
            }

        terms = [ConditionTerm(encoded(None if prompt is None else as_prompt_list(prompt)), 1.0)]
        if negative_prompt is not None:
            negatives = as_prompt_list(negative_prompt)
            terms.append(
                ConditionTerm(
                    encoded(negatives * batch_size if len(negatives) == 1 else negatives), -negative_prompt_weight
                )
            )
        return terms

    def energy_and_gradients(self, energy_fn: TronEnergy, state: LangevinState, generator):
        """Per-sample energy ``(B,)`` and its gradients w.r.t. the Langevin and auxiliary variables.

        Autograd is enabled only here, on fresh leaves, so no graph spans steps and no parameter gets a ``.grad``.
        """
        with torch.enable_grad():
            langevin = state.langevin.detach().requires_grad_(True)
            inputs = [langevin]
            auxiliary = None
            if state.auxiliary is not None:
                auxiliary = state.auxiliary.detach().requires_grad_(True)
                inputs.append(auxiliary)
            energies = energy_fn(state.packed(langevin, auxiliary), generator)
            # Sum, not mean: each sample's gradient must not depend on the batch size.
            grads = torch.autograd.grad(energies.sum(), inputs)
        return energies.detach(), grads[0], grads[1] if auxiliary is not None else None

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: PipelineImageInput | None = None,
        class_labels: int | list[int] | None = None,
        negative_prompt: str | list[str] | None = None,
        condition_embeds: torch.Tensor | None = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int | None = None,
        initialization: str = "translator",
        num_augmentations: int | None = None,
        num_candidates: int | None = None,
        negative_prompt_weight: float = 1.0,
        prior_weight: float = 0.0,
        reward_weights: dict[str, float] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        return_energy_trace: bool = False,
        autocast_dtype: torch.dtype | None = None,
        condition_generator_on_prompt: bool = False,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
    ) -> TronPipelineOutput | tuple:
        r"""Generate images satisfying a condition.

        Args:
            prompt: Text condition(s) (CLIP encoders). Prompts longer than the tokenizer's limit are truncated with a
                warning.
            image: Image condition(s) (image-semantic generation): PIL image(s), or arrays/tensors in [0, 1].
            class_labels: Class index or indices (classifier encoders), each in ``[0, num_classes)``.
            negative_prompt: Prompt(s) to move away from: adds ``-negative_prompt_weight * E(z, c_neg)`` to the energy.
            condition_embeds: Precomputed conditions ``(B, condition_dim)`` (raw CLIP embeddings or class
                probabilities), bypassing the encoder.
            num_images_per_prompt: Images per condition; the batch is conditions x images, sampled together.
            num_inference_steps: Langevin steps (0 returns the initialisation: the paper's no-Langevin ablation).
                Defaults to the pipeline's ``default_num_inference_steps``.
            initialization: ``"translator"`` (default): draw a component and a latent from the translator's mixture,
                so images of one condition differ from the start. ``"translator_mean"``: the method's initialisation,
                all K means mixed per dimension by softmax weights, refined jointly; deterministic per condition, so
                diversity comes only from Langevin noise (embedded `tron-mnist`: identical images before Langevin,
                within-class diversity 0.32 of real digits after 10 steps vs 1.00 for ``"translator"``; see
                docs/benchmarks.md).
                ``"prior"``: start from G's prior p(z), the baseline without a translator.
            num_augmentations: Augmented copies per image in the energy (the method uses 50 for CLIP); 0 scores the
                plain image. Defaults to the pipeline's ``default_num_augmentations``.
            num_candidates: Initial draws per image; the one with the lowest (un-augmented) energy is refined. Each
                extra candidate costs one forward pass of G and f, about as much as a tenth of a Langevin step with
                8 augmentations. Raises the share of on-condition images when the translator alone is a weak
                proposal (MNIST class pipeline: accuracy 0.90 -> 0.98 with 4 candidates at diversity 0.92 of real
                digits). With ``initialization="prior"`` this is FuseDream's search-then-optimise. Needs a random
                initialisation (not ``"translator_mean"``) and no ``latents``. Defaults to the pipeline's
                ``default_num_candidates`` for random initialisations, and to 1 with ``latents`` or
                ``"translator_mean"``.
            negative_prompt_weight: Weight of the negative prompt term.
            prior_weight: Weight of ``0.5 * ||z||^2`` in the energy (0 disables it).
            reward_weights: ``{name: weight}`` of the pipeline's ``rewards`` for this call (names not given keep the
                pipeline's ``reward_weights`` setting); weight 0 reports a reward without optimising it.
            generator: RNG(s) for the initial draw, the augmentations and the Langevin noise; a list gives one per
                image and makes each image reproducible on its own.
            latents: Initial packed latents ``(B * num_images_per_prompt, total_latent_dim)``; skips initialisation.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            return_dict: Return a [`TronPipelineOutput`] (default) or a tuple ``(images, latents, energies[, trace][,
                rewards])``.
            return_energy_trace: Also return the energy of every image before every step, ``(steps, B)``.
            autocast_dtype: Run G and f under ``torch.autocast`` in this dtype (``torch.bfloat16``; ``torch.float16``
                on GPU). Latents, energies and the scheduler stay in float32. Not always faster: on a CPU it sped up the
                convolutional `tron-mnist` 1.9x and slowed the CLIP-conditioned `tron-mnist-text` to 0.85x (README).
            condition_generator_on_prompt: Give the call's ``prompt`` to G too, for a G that takes a prompt of its own
                (a text-to-image diffusion model, ``generator.accepts_prompts``): image ``i`` is then G(z_i | its
                prompt) and the latents are optimised for that conditional G, the setting of reward-based noise
                optimisation (ReNO). ``False`` (default): G renders its own ``generator_prompt`` (``""``: an
                unconditional pushforward, the setting the translator is trained in). Needs ``prompt``.
            callback_on_step_end: Called after each step as ``callback(pipe, step, timestep, tensors)``; may return
                replacements for ``latents`` (packed, effective) and ``condition_embeds``.
            callback_on_step_end_tensor_inputs: Names passed to the callback, from ``_callback_tensor_inputs``.

        Examples:

        Returns:
            [`TronPipelineOutput`] or a tuple.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        num_inference_steps = (
            self.config.default_num_inference_steps if num_inference_steps is None else num_inference_steps
        )
        num_augmentations = self.config.default_num_augmentations if num_augmentations is None else num_augmentations
        if num_candidates is None:
            num_candidates = self.default_num_candidates_for(initialization, latents)
        adapter = self.encoder_adapter
        self.check_components(adapter)
        batch_size = self.check_inputs(
            adapter,
            prompt,
            image,
            class_labels,
            negative_prompt,
            condition_embeds,
            num_images_per_prompt,
            num_inference_steps,
            num_augmentations,
            num_candidates,
            initialization,
            generator,
            latents,
            output_type,
            callback_on_step_end_tensor_inputs,
        )
        reward_weights = self.reward_weights_for(reward_weights)
        if self.rewards is not None and self.rewards.needs_prompt and prompt is None:
            raise ValueError("This pipeline's `rewards` score images against a text: give `prompt`.")
        self.check_generator_prompt(prompt, condition_generator_on_prompt)
        self._interrupt = False
        self._call_state.num_candidates = num_candidates
        device = self._execution_device

        # 1. Conditions, one row per image.
        if prompt is not None:
            self.warn_about_unknown_words(as_prompt_list(prompt))
        if negative_prompt is not None:
            self.warn_about_unknown_words(as_prompt_list(negative_prompt), "negative_prompt")
        condition_embeds = self.encode_condition(adapter, prompt, image, class_labels, condition_embeds, device)
        condition_embeds = condition_embeds.repeat_interleave(num_images_per_prompt, dim=0)
        terms = [ConditionTerm(condition_embeds, 1.0)]
        if negative_prompt is not None:
            negatives = as_prompt_list(negative_prompt)
            negative_embeds = adapter.encode_prompts(negatives, device)
            negative_embeds = negative_embeds.expand(batch_size, -1) if len(negatives) == 1 else negative_embeds
            terms.append(
                ConditionTerm(negative_embeds.repeat_interleave(num_images_per_prompt, dim=0), -negative_prompt_weight)
            )

        # 2. The energy (the encoder's, or the rewards' when the pipeline has them), and the initial latents (the best
        # of `num_candidates` draws by that energy). A prompt for G makes a per-call view of it: the shared generator
        # is never changed.
        generator_model = self.generator
        if condition_generator_on_prompt:
            prompts = as_prompt_list(prompt)
            generator_model = self.generator.conditioned_on(prompts, num_images_per_prompt)
        energy_options = {
            "num_augmentations": num_augmentations,
            "augment": self.augmentation,
            "prior_weight": prior_weight,
            "autocast_dtype": autocast_dtype,
            "evaluate_fn": self._compiled_energy,
        }
        if self.rewards is None:
            energy_fn = TronEnergy(generator_model, adapter, adapter.feature_energy, terms, **energy_options)
        else:
            reward_terms = self.reward_terms(
                prompt, negative_prompt, negative_prompt_weight, batch_size, num_images_per_prompt, device
            )
            energy_fn = RewardEnergy(generator_model, self.rewards, reward_weights, reward_terms, **energy_options)
        if num_candidates > 1:
            state = self.search_initial_state(
                energy_fn, condition_embeds, initialization, generator, num_candidates, device
            )
        else:
            state = self.prepare_latent_state(condition_embeds, initialization, generator, latents, device)

        # 3. Langevin refinement, with this call's own copy of the scheduler (momentum and Adam state are per call).
        scheduler = copy.deepcopy(self.scheduler)
        # A scheduler that returns its best evaluated iterate (ReNO's rule) is told every evaluation.
        keeps_best = getattr(scheduler, "keeps_best_iterate", False)
        scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = scheduler.timesteps
        self._num_timesteps = len(timesteps)
        total = condition_embeds.shape[0]
        # Recorded on the device and checked once after the loop: no host sync per step.
        first_nonfinite_step = torch.full((total,), -1, dtype=torch.long, device=device)
        energy_trace = []
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                energies, langevin_grad, auxiliary_grad = self.energy_and_gradients(energy_fn, state, generator)
                if keeps_best:
                    scheduler.keep_best(energies, state.langevin, state.auxiliary)
                step = scheduler.step(
                    langevin_grad,
                    t,
                    state.langevin,
                    generator=generator,
                    auxiliary_output=auxiliary_grad,
                    auxiliary_sample=state.auxiliary,
                )
                finite = step.finite & torch.isfinite(energies)
                first_nonfinite_step = torch.where(~finite & (first_nonfinite_step < 0), i, first_nonfinite_step)
                state = LangevinState(step.prev_sample, step.prev_auxiliary_sample, state.num_components)
                if return_energy_trace:
                    energy_trace.append(energies)

                if callback_on_step_end is not None:
                    latents = state.packed()
                    callback_kwargs = {}
                    for name in callback_on_step_end_tensor_inputs:
                        callback_kwargs[name] = locals()[name]
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    new_latents = callback_outputs.pop("latents", latents)
                    if new_latents is not latents:
                        state = state.with_packed(new_latents.to(device), self.generator.latent_dim)
                    terms[0].condition = callback_outputs.pop("condition_embeds", terms[0].condition)
                progress_bar.update()

        if not scheduler.config.get("skip_nonfinite", False) and bool((first_nonfinite_step >= 0).any()):
            bad = (first_nonfinite_step >= 0).nonzero().flatten().tolist()
            raise FloatingPointError(
                f"The energy or its gradient became non-finite at Langevin step {int(first_nonfinite_step[bad[0]])} for "
                f"sample {bad[0]} (samples affected: {bad}). Lower the step size, check the inputs, or set "
                "`skip_nonfinite=True` in the scheduler config to skip such updates."
            )

        # 4. Final images and energies: of the last iterate, or of each image's best evaluated one.
        latents = state.packed().float()
        energies, images = energy_fn(latents, generator, return_images=True)
        if keeps_best:
            scheduler.keep_best(energies, state.langevin, state.auxiliary)
            best = LangevinState(scheduler.best_sample, scheduler.best_auxiliary_sample, state.num_components)
            best_latents = best.packed().float()
            earlier = (best_latents != latents).any(dim=1)
            if bool(earlier.any()):
                with energy_fn.autocast(best_latents.device):
                    rendered = energy_fn.render(best_latents)[0]
                images = torch.where(earlier.view(-1, 1, 1, 1), rendered.to(images.dtype), images)
            latents, energies = best_latents, scheduler.best_energies
        rewards = energy_fn.plain_rewards(images) if self.rewards is not None else None
        if not bool(torch.isfinite(images).all()):
            raise FloatingPointError("The generator produced non-finite images from finite latents.")
        if output_type == "latent":
            images = latents
        else:
            images = self.postprocessor.postprocess(images.float(), output_type=output_type)
        trace = torch.stack(energy_trace) if return_energy_trace and energy_trace else None
        self.maybe_free_model_hooks()

        if not return_dict:
            return (
                (images, latents, energies)
                + ((trace,) if return_energy_trace else ())
                + ((rewards,) if rewards is not None else ())
            )
        return TronPipelineOutput(
            images=images, latents=latents, energies=energies, energy_trace=trace, rewards=rewards
        )

    @torch.no_grad()
    def interpolate(
        self,
        prompt: list[str] | None = None,
        image: list | None = None,
        class_labels: list[int] | None = None,
        condition_embeds: torch.Tensor | None = None,
        num_frames: int = 8,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        **kwargs,
    ) -> TronPipelineOutput:
        """Frames between two conditions (the paper's semantic interpolation).

        The two conditions (two prompts, images, class labels, or a ``(2, condition_dim)`` tensor) are interpolated by
        `slerp` at ``num_frames`` evenly spaced weights from 0 to 1, and every frame is sampled with the same random
        draws (shared noise), so frames differ only through the condition. With ``output_type="pil"`` the frames are a
        list of PIL images, ready for ``diffusers.utils.export_to_gif`` or ``make_image_grid``. Other keyword arguments
        go to `__call__`; ``num_candidates`` defaults to 1 here, whatever the pipeline's default, so that every frame
        starts from the same draw.
        """
        if not isinstance(num_frames, int) or num_frames < 2:
            raise ValueError(f"`num_frames` must be an integer >= 2, got {num_frames!r}.")
        given = {"prompt": prompt, "image": image, "class_labels": class_labels, "condition_embeds": condition_embeds}
        given = {name: value for name, value in given.items() if value is not None}
        if len(given) != 1 or len(next(iter(given.values()))) != 2:
            raise ValueError(
                "Give exactly two conditions in one of `prompt`, `image`, `class_labels`, `condition_embeds`."
            )
        if isinstance(generator, list):
            raise ValueError(
                "`generator` must be a single torch.Generator for `interpolate` (frames share its noise)."
            )
        adapter = self.encoder_adapter
        self.check_components(adapter)
        self.check_inputs(
            adapter,
            prompt,
            image,
            class_labels,
            None,
            condition_embeds,
            1,
            0,
            0,
            1,
            "translator",
            None,
            None,
            output_type,
            [],
        )
        if prompt is not None:
            self.warn_about_unknown_words(prompt)
        ends = self.encode_condition(adapter, prompt, image, class_labels, condition_embeds, self._execution_device)
        frames = torch.stack([slerp(w, ends[0], ends[1]) for w in torch.linspace(0, 1, num_frames).tolist()])
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        device = generator.device if generator is not None else "cpu"
        shared = [torch.Generator(device).manual_seed(seed) for _ in range(num_frames)]
        # A candidate search would pick a different draw for neighbouring frames and make the sequence jump.
        kwargs.setdefault("num_candidates", 1)
        return self(condition_embeds=frames, generator=shared, output_type=output_type, **kwargs)


__all__ = ["TronPipeline", "TronPipelineOutput", "LangevinState", "prompt_words", "slerp"]
