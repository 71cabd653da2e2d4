"""Translator training: synthetic pairs, condition routes and captioners, the Accelerate training loop (with its
checkpoints, which the example training scripts share), the command-line settings and model cards.

``import tron_pipelines`` does not import this package, and this package imports its modules on first use, so the
``tron`` command line can register its arguments without loading the training stack.

    >>> from tron_pipelines.training import PairCache, generate_pairs, train_translator
"""

from ..utils.lazy import lazy_exports


_EXPORTS = {
    "arguments": (
        "build_train_translator_parser",
        "parse_train_args",
        "check_train_args",
        "command_line",
        "parse_build_args",
    ),
    "pairs": (
        "PairSource",
        "PairCache",
        "PairCacheError",
        "generate_pairs",
        "open_pair_cache",
        "ReencodingSource",
        "reencode_pairs",
        "read_shard_captions",
        "load_training_pipeline",
        "check_shard",
        "read_manifest",
        "derive_seed",
    ),
    "train": (
        "train_translator",
        "TrainingResult",
        "TranslatorObjective",
        "ConditionNoise",
        "TrainingBatches",
        "estimate_condition_covariance",
        "evaluate_translator",
        "files_to_upload",
        "new_translator",
        "resolve_resume_checkpoint",
        "save_checkpoint",
    ),
    "routes": ("ConditionRoute", "ImageRoute", "CaptionRoute", "FunctionRoute", "RouteOutput", "load_condition_route"),
    "model_card": ("save_model_card", "metrics_table"),
    "captioning": (
        "Captioner",
        "CallableCaptioner",
        "TransformersCaptioner",
        "check_caption_settings",
        "load_captioner",
        "seed_from",
    ),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
