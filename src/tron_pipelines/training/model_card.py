"""Model card (README.md with YAML metadata) of a pipeline whose translator was trained by ``tron train-translator``."""

import os
from pathlib import Path

from diffusers.utils.hub_utils import load_or_create_model_card, populate_model_card
from huggingface_hub import ModelCard, ModelCardData

from ..encoders import EncoderAdapter
from ..pipelines.usage import pipeline_tags, usage_snippet


METRIC_DESCRIPTIONS = {
    "nll_per_dim": "held-out negative log-likelihood of z per latent dimension (nats)",
    "std_mean": "fitted component std (mean over latent dimensions)",
    "residual_std": "RMS distance of held-out z to its most likely component mean: the std the data asks for",
    "auxiliary_mse": "held-out MSE of the auxiliary latents",
    "energy": "mean energy E(z, c) of translator-only samples on fixed validation conditions (Langevin's start)",
}


def captioner_name(captioner: dict) -> str:
    """Short name of a captioner from its identity: model path or class, or the callable's name."""
    return captioner.get("name_or_path") or captioner.get("class") or captioner.get("callable") or "captioner"


def describe_route(condition: dict) -> str:
    """One line saying how the conditions of the training pairs were made (`PairSource.identity()["condition"]`)."""
    route, dim = condition["route"], condition["dim"]
    if "captioner" not in condition:
        what = "the encoder's embedding of G(z)" if route == "image" else "a custom condition function of G(z)"
        return f"`{route}`: {what} ({dim}-dim)"
    captioner = condition["captioner"]
    decoding = captioner.get("decoding")
    settings = f", {decoding} decoding" if decoding else ""
    captions = f"the text encoder's embedding of a caption of G(z) by `{captioner_name(captioner)}`{settings}"
    if route == "mix":
        return f"`mix`: for {condition['caption_ratio']:.0%} of the pairs (seeded draw), {captions}; for the others, the encoder's embedding of G(z) ({dim}-dim)"
    return f"`caption`: {captions} ({dim}-dim)"


def metrics_table(initial: dict, final: dict) -> str:
    """Markdown table of the validation metrics (`METRIC_DESCRIPTIONS`) before and after training."""
    rows = ["| metric | before training | after training |", "|---|---|---|"]
    for name, description in METRIC_DESCRIPTIONS.items():
        if name in final:
            before = f"{initial[name]:.4g}" if name in initial else "-"
            rows.append(f"| {name}: {description} | {before} | {final[name]:.4g} |")
    return "\n".join(rows)


def save_model_card(
    output_dir: str | os.PathLike,
    repo_id: str,
    pipeline_source: str,
    identity: dict,
    pairs: dict,
    training: dict,
    metrics: dict,
    initial_metrics: dict,
    command: str,
    encoder_adapter: EncoderAdapter,
    base_model: str | None = None,
    on_hub: bool = False,
) -> ModelCard:
    """Write ``output_dir/README.md`` and return the card.

    Args:
        output_dir: The trained pipeline's folder.
        repo_id: Hub repo id the card describes (the usage snippet loads it).
        pipeline_source: The ``--pipeline`` the generator and encoder came from.
        identity: `PairSource.identity()`: generator, encoder, condition route, latents.
        pairs: How the pairs were made (number, cache or on the fly, seed, condition noise).
        training: Training settings (steps, batch, processes, learning rates, ...).
        metrics / initial_metrics: Validation metrics after and before training.
        command: The command that trained the translator.
        encoder_adapter: The pipeline's encoder: the conditions it takes set the usage snippet and the tags.
        base_model: Hub id of the pipeline the generator and encoder come from, when it is on the Hub.
        on_hub: ``repo_id`` exists on the Hub (the run pushes there): start from the card it may already have.
    """
    generator_class = identity["generator"]["class"].rsplit(".", 1)[-1]
    encoder_class = identity["encoder"]["class"].rsplit(".", 1)[-1]
    kind = identity["encoder"]["kind"]
    description = f"""# TR0N pipeline: {generator_class} + {encoder_class}

A [TR0N](https://arxiv.org/abs/2304.13742) pipeline for `tron_pipelines`: the frozen generator and encoder of
`{pipeline_source}`, and a translator q(z | c) trained by `tron train-translator` on {pairs["num_pairs"]:,} synthetic pairs (z ~ p(z), c = f(G(z))) ({pairs["source"]}). Sampling starts from the translator
and refines the latents with Langevin dynamics on the energy E(z, c).

## Usage

{usage_snippet(repo_id, encoder_adapter)}

The translator alone: `TranslatorModel.from_pretrained("{repo_id}", subfolder="translator")`.

## Training

| setting | value |
|---|---|
| generator | `{identity["generator"]["class"]}` (weights {identity["generator"]["fingerprint"]}) |
| encoder | `{identity["encoder"]["class"]}` ({kind}, weights {identity["encoder"]["fingerprint"]}) |
| condition route | {describe_route(identity["condition"])} |
| pairs | {pairs["num_pairs"]:,} ({pairs["source"]}, seed {pairs["seed"]}) |
| condition noise | {pairs["condition_noise"]}{"" if pairs["condition_noise"] == "none" else f" (scale {pairs['condition_noise_scale']})"} |
"""
    description += "\n".join(f"| {name.replace('_', ' ')} | {value} |" for name, value in training.items())
    description += f"""

## Validation

{metrics_table(initial_metrics, metrics)}

## Command

```bash
{command}
```
"""
    if on_hub:
        # Keeps the metadata of a card the repo already has.
        card = load_or_create_model_card(
            repo_id, from_training=True, model_description=description, base_model=base_model
        )
    else:
        # A local run must not ask the Hub for a card (offline, that costs five retries of a failing request).
        card = ModelCard(f"---\n{ModelCardData(base_model=base_model).to_yaml()}\n---\n")
    # The diffusers training template around the description holds only placeholders: the card is the description.
    card.text = "\n" + description
    card.data.library_name = "tron_pipelines"
    card.data.base_generator = identity["generator"]["class"]
    card.data.encoder = identity["encoder"]["class"]
    card.data.condition_route = identity["condition"]["route"]
    if "captioner" in identity["condition"]:
        card.data.captioner = captioner_name(identity["condition"]["captioner"])
    if "caption_ratio" in identity["condition"]:
        card.data.caption_ratio = identity["condition"]["caption_ratio"]
    card.data.num_pairs = pairs["num_pairs"]
    card.data.train_steps = training["steps"]
    card.data.metrics = {name: round(float(value), 6) for name, value in metrics.items()}
    card.data.initial_metrics = {name: round(float(value), 6) for name, value in initial_metrics.items()}
    card.data.train_command = command
    card.data.pipeline_tag, condition_tags = pipeline_tags(encoder_adapter)
    populate_model_card(card, tags=["tron", "translator", *condition_tags])
    card.save(Path(output_dir) / "README.md")
    return card


__all__ = ["METRIC_DESCRIPTIONS", "metrics_table", "save_model_card"]
