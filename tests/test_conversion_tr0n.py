"""Official TR0N translator checkpoints -> TranslatorModel, and the assembly scripts, on synthetic checkpoints."""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tron_pipelines import TronPipeline
from tron_pipelines import build as tron_build
from tron_pipelines.conversion.checkpoints import CheckpointMismatchError
from tron_pipelines.conversion.tr0n import convert_tr0n_translator, load_tr0n_translator


SCRIPTS = Path(__file__).resolve().parents[1] / "conversion_scripts"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_state_dict(prefix="z", condition_dim=512, latent_dim=128, num_components=10, with_y=True, seed=0):
    """Random tensors with the exact key names, order and shapes of the official translator."""
    g = torch.Generator().manual_seed(seed)
    hidden = 4 * condition_dim
    shapes = {
        f"{prefix}_log_stds": (1, 1, latent_dim),
        "shared1.weight": (hidden, condition_dim),
        "shared1.bias": (hidden,),
        "shared2.weight": (hidden, hidden),
        "shared2.bias": (hidden,),
        f"{prefix}_layer.weight": (num_components * latent_dim, hidden),
        f"{prefix}_layer.bias": (num_components * latent_dim,),
        f"{prefix}_mixture_logits.weight": (num_components, hidden),
        f"{prefix}_mixture_logits.bias": (num_components,),
    }
    if with_y:
        shapes.update({"y_layer.weight": (128, hidden), "y_layer.bias": (128,)})
    return {key: torch.randn(shape, generator=g) * 0.05 for key, shape in shapes.items()}


def original_forward(sd, condition, prefix, tau, num_components):
    """The official Translator's forward, written out from the method reference."""
    u = F.relu(F.linear(condition, sd["shared1.weight"], sd["shared1.bias"]))
    u = u + F.relu(F.linear(u, sd["shared2.weight"], sd["shared2.bias"]))
    means = F.linear(u, sd[f"{prefix}_layer.weight"], sd[f"{prefix}_layer.bias"])
    if tau is not None:
        means = tau * torch.tanh(means)
    logits = F.linear(u, sd[f"{prefix}_mixture_logits.weight"], sd[f"{prefix}_mixture_logits.bias"])
    y = F.linear(u, sd["y_layer.weight"], sd["y_layer.bias"]) if "y_layer.weight" in sd else None
    stds = sd[f"{prefix}_log_stds"].exp() + 1e-6
    return logits, means.view(condition.shape[0], num_components, -1), stds.view(-1), y


@pytest.mark.parametrize("prefix,tau,with_y", [("z", 2.0, True), ("w", None, False)])
def test_converted_translator_matches_the_original(prefix, tau, with_y):
    sd = official_state_dict(prefix, with_y=with_y)
    translator = convert_tr0n_translator(sd, latent_threshold=tau)
    assert translator.config.num_components == 10 and translator.config.latent_dim == 128
    assert translator.config.condition_dim == 512 and translator.config.hidden_dim == 2048
    condition = torch.randn(3, 512) * 3
    logits, means, stds, y = original_forward(sd, condition, prefix, tau, 10)
    with torch.no_grad():
        out = translator(condition)
    torch.testing.assert_close(out.mixture_logits, logits)
    torch.testing.assert_close(out.means, means)
    torch.testing.assert_close(out.stds[0, 0], stds)
    if with_y:
        torch.testing.assert_close(out.auxiliary_latents["y"], y)
    else:
        assert out.auxiliary_latents == {}


def test_checkpoint_file_round_trip(tmp_path):
    torch.save(
        {"translator_state_dict": official_state_dict(condition_dim=16, latent_dim=8, num_components=3)},
        tmp_path / "model_best.pth",
    )
    translator = load_tr0n_translator(tmp_path / "model_best.pth", 2.0)
    assert translator.config.auxiliary_latent_dims == {"y": 128}
    torch.save({"model": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointMismatchError, match="translator_state_dict"):
        load_tr0n_translator(tmp_path / "other.pth", 2.0)


def test_missing_and_misshaped_keys_are_listed():
    sd = official_state_dict(condition_dim=16, latent_dim=8, num_components=3)
    del sd["shared2.bias"]
    sd["y_layer.weight"] = torch.zeros(128, 5)
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as error:
        convert_tr0n_translator(sd, 2.0)
    message = str(error.value)
    assert "shared2.bias" in message and "y_layer.weight: expected (128, 64), found (128, 5)" in message
    assert "extra.weight" in message


def test_convert_script_builds_a_pipeline_that_samples(clip_components, tmp_path):
    components = clip_components
    components["generator"].save_pretrained(tmp_path / "generator")
    components["encoder"].save_pretrained(tmp_path / "clip")
    components["tokenizer"].save_pretrained(tmp_path / "clip")
    components["image_processor"].save_pretrained(tmp_path / "clip")
    checkpoint = {
        "translator_state_dict": official_state_dict(condition_dim=16, latent_dim=8, num_components=10, with_y=False)
    }
    torch.save(checkpoint, tmp_path / "model_best.pth")
    load_script("convert_tr0n_original_to_diffusers").main(
        [
            "--checkpoint_path",
            str(tmp_path / "model_best.pth"),
            "--generator",
            str(tmp_path / "generator"),
            "--encoder",
            str(tmp_path / "clip"),
            "--preset",
            "biggan",
            "--dump_path",
            str(tmp_path / "pipe"),
        ]
    )
    pipe = TronPipeline.from_pretrained(tmp_path / "pipe")
    assert pipe.scheduler.config.momentum == 0.99 and pipe.scheduler.config.step_size == 5.0
    assert pipe.config.default_num_inference_steps == 100 and pipe.config.default_num_augmentations == 50
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a red car", num_inference_steps=2, num_augmentations=2, generator=torch.Generator().manual_seed(0))
    assert out.images[0].size == (16, 16)
    assert not list(tmp_path.glob(".pipe.partial-*"))


def test_convert_script_rejects_a_translator_that_does_not_fit(clip_components, tmp_path):
    clip_components["generator"].save_pretrained(tmp_path / "generator")
    clip_components["encoder"].save_pretrained(tmp_path / "clip")
    clip_components["tokenizer"].save_pretrained(tmp_path / "clip")
    clip_components["image_processor"].save_pretrained(tmp_path / "clip")
    torch.save(
        {"translator_state_dict": official_state_dict(condition_dim=16, latent_dim=6, num_components=2)},
        tmp_path / "t.pth",
    )
    with pytest.raises(SystemExit, match=r"^convert_tr0n_original_to_diffusers\.py: error: .*6-dim latents"):
        load_script("convert_tr0n_original_to_diffusers").main(
            [
                "--checkpoint_path",
                str(tmp_path / "t.pth"),
                "--generator",
                str(tmp_path / "generator"),
                "--encoder",
                str(tmp_path / "clip"),
                "--dump_path",
                str(tmp_path / "pipe"),
            ]
        )
    assert not (tmp_path / "pipe").exists()


def test_build_script_pushes_folder_and_card(clip_components, tmp_path, monkeypatch):
    for name in ("generator", "translator"):
        clip_components[name].save_pretrained(tmp_path / name)
    for name in ("encoder", "tokenizer", "image_processor"):
        clip_components[name].save_pretrained(tmp_path / "clip")
    script = load_script("build_tron_pipeline")
    uploads = []
    # The script pushes through tron build's push stage; the Hub is out of reach in tests.
    monkeypatch.setattr(tron_build, "create_repo", lambda repo_id, **kwargs: type("Repo", (), {"repo_id": repo_id})())

    def fake_upload_folder(repo_id, folder_path, **kwargs):
        uploads.append(
            (repo_id, sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file()))
        )

    monkeypatch.setattr(tron_build, "upload_folder", fake_upload_folder)
    script.main(
        [
            "--generator",
            str(tmp_path / "generator"),
            "--encoder",
            str(tmp_path / "clip"),
            "--translator",
            str(tmp_path / "translator"),
            "--dump_path",
            str(tmp_path / "pipe"),
            "--generator_id",
            "deepmind/biggan-deep-256",
            "--generator_license",
            "apache-2.0",
            "--push_to_hub",
            "--hub_model_id",
            "org/tron-tiny",
        ]
    )
    ((repo_id, files),) = uploads
    assert repo_id == "org/tron-tiny"
    assert {
        "model_index.json",
        "README.md",
        "translator/config.json",
        "translator/diffusion_pytorch_model.safetensors",
        "generator/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    } <= set(files)
    card = (tmp_path / "pipe" / "README.md").read_text()
    assert "library_name: tron_pipelines" in card and "deepmind/biggan-deep-256" in card and "apache-2.0" in card
    assert 'TronPipeline.from_pretrained("org/tron-tiny")' in card and '"momentum": 0.99' in card


def test_build_script_needs_a_hub_id(tmp_path):
    with pytest.raises(SystemExit):
        load_script("build_tron_pipeline").parse_args(
            ["--generator", "g", "--encoder", "e", "--translator", "t", "--dump_path", "d", "--push_to_hub"]
        )
