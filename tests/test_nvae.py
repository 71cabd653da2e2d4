"""NVAE's decoder as a TR0N generator, against upstream outputs; its converter and the safety of its checkpoint reader.

`tests/fixtures/nvae` is a tiny random-weight NVAE (``res_mbconv``, 32 px, 10 latent groups) saved by NVAE's own
``train.py`` code as ``checkpoint.pt``, with the outputs of the official TR0N's decoder wrapper (``NVAE_Dec_Wrapper``:
top group = z, groups 1-7 at their prior means, groups 8-9 sampled with the stored ``eps_g08``/``eps_g09``) and of
NVAE's own ``AutoEncoder.sample`` (every group sampled, stored eps). The port loads the checkpoint through the converter
only (no upstream code) and must reproduce images within rtol = atol = 1e-4 and logits and latents within 1e-5.
"""

import argparse
import importlib.util
import inspect
import os
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import tiny_clip
from safetensors.torch import load_file

from tron_pipelines import NVAEGenerator, TranslatorModel
from tron_pipelines.conversion.checkpoints import CheckpointMismatchError
from tron_pipelines.conversion.formats import UnknownGeneratorFormatError, detect_generator_format
from tron_pipelines.conversion.network_pickle import UnsafePickleError
from tron_pipelines.conversion.nvae import convert_nvae, load_nvae_checkpoint, nvae_config_from_args
from tron_pipelines.conversion.tr0n import assemble_pipeline
from tron_pipelines.models.batch_norm_folding import fold_batch_norms
from tron_pipelines.models.nvae import discretized_logistic_mixture_mean


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "nvae"
CHECKPOINT = FIXTURES / "checkpoint-nvae-dev.pt"
SCRIPTS = Path(__file__).resolve().parents[1] / "conversion_scripts"
NUM_GROUPS = 10
IMAGE_TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}
LATENT_TOLERANCE = {"rtol": 0, "atol": 1e-5}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "reference.safetensors")


@pytest.fixture(scope="module")
def generator() -> NVAEGenerator:
    return load_nvae_checkpoint(CHECKPOINT)


def tr0n_noise(reference) -> list[torch.Tensor]:
    return [reference["eps_g08"], reference["eps_g09"]]


def raw_checkpoint() -> dict:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(CHECKPOINT, weights_only=True)


# --------------------------------------------------------------------------------------------------------------------
# Upstream outputs


def test_the_tr0n_decoder_wrapper_is_reproduced(generator, reference):
    assert generator.config.temperature == pytest.approx(reference["temp"].item())
    assert (
        generator.top_latent_shape == (4, 8, 8) and generator.latent_dim == 256 and generator.sampled_groups == [8, 9]
    )
    with torch.no_grad():
        out = generator.decode(reference["z"], noise=tr0n_noise(reference))
    torch.testing.assert_close(out.logits, reference["logits"], **LATENT_TOLERANCE)
    torch.testing.assert_close(out.images, reference["img"], **IMAGE_TOLERANCE)
    torch.testing.assert_close(out.images / 2 + 0.5, reference["x01_mean"], **IMAGE_TOLERANCE)
    assert len(out.group_latents) == NUM_GROUPS and len(out.prior_parameters) == NUM_GROUPS - 1
    for group in range(NUM_GROUPS):
        torch.testing.assert_close(out.group_latents[group], reference[f"z_used_g{group:02d}"], **LATENT_TOLERANCE)
        if group > 0:
            torch.testing.assert_close(
                out.prior_parameters[group - 1], reference[f"prior_param_g{group:02d}"], **LATENT_TOLERANCE
            )
    # `generate` is the same map.
    with torch.no_grad():
        torch.testing.assert_close(generator.generate(reference["z"], tr0n_noise(reference)), out.images)


def test_the_temperature_scales_the_sampled_groups(reference):
    generator = load_nvae_checkpoint(CHECKPOINT, temperature=1.0)
    with torch.no_grad():
        images = generator.generate(reference["z"], noise=tr0n_noise(reference))
    torch.testing.assert_close(images, reference["img_temp1"], **IMAGE_TOLERANCE)


def test_nvae_own_sampling_is_every_group_drawn_from_its_prior(reference):
    # AutoEncoder.sample(1, t=0.6): the top group is N(0, (1.01 t)^2), every later group mu + sigma eps.
    generator = load_nvae_checkpoint(CHECKPOINT, prior_mean_groups=0)
    assert generator.sampled_groups == list(range(1, NUM_GROUPS))
    z = (reference["sample_eps_g00"] * generator.top_prior_std).flatten(1)
    noise = [reference[f"sample_eps_g{group:02d}"] for group in range(1, NUM_GROUPS)]
    with torch.no_grad():
        logits = generator.decode(z, noise=noise).logits
    # Every group sampled and logits up to 11 here (measured: 7.6e-6 off, ~8 float32 steps at 11): relative slack too.
    torch.testing.assert_close(logits, reference["sample_logits"], rtol=1e-5, atol=1e-5)


def test_the_mixture_mean_matches_a_per_pixel_restatement():
    # The mean of one pixel written out component by component, against the vectorised version.
    torch.manual_seed(0)
    num_mixtures = 3
    logits = torch.randn(2, 10 * num_mixtures, 2, 2) * 2
    images = discretized_logistic_mixture_mean(logits, num_mixtures)
    for b, i, j in [(0, 0, 0), (1, 1, 0), (1, 0, 1)]:
        pixel = logits[b, :, i, j]
        weights = torch.softmax(pixel[:num_mixtures], dim=0)
        rest = pixel[num_mixtures:].view(3, 3 * num_mixtures)
        mean = [sum(weights[k] * rest[c, k] for k in range(num_mixtures)) for c in range(3)]
        coeff = [
            sum(weights[k] * torch.tanh(rest[c, 2 * num_mixtures + k]) for k in range(num_mixtures)) for c in range(3)
        ]
        red = mean[0].clamp(-1, 1)
        green = (mean[1] + coeff[0] * red).clamp(-1, 1)
        blue = (mean[2] + coeff[1] * red + coeff[2] * green).clamp(-1, 1)
        torch.testing.assert_close(images[b, :, i, j], torch.stack([red, green, blue]))


# --------------------------------------------------------------------------------------------------------------------
# The latent, the prior and the two noise modes


def test_the_prior_is_tr0ns_top_group_prior(generator):
    latents = generator.sample_latents(3, generator=torch.Generator().manual_seed(4))
    expected = torch.randn(3, 256, generator=torch.Generator().manual_seed(4)) * (1.01 * 0.6)
    torch.testing.assert_close(latents, expected)
    assert generator.main_latent.prior == "normal(std=0.606)" and generator.main_latent.threshold is None


def test_fresh_noise_makes_g_stochastic_and_follows_torchs_global_seed(generator, reference):
    z = reference["z"]
    with torch.no_grad():
        torch.manual_seed(1)
        first = generator.generate(z)
        second = generator.generate(z)
        torch.manual_seed(1)
        again = generator.generate(z)
    assert (first - second).abs().max() > 1e-3  # a new draw of groups 8-9
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    # A fresh draw is `sample_noise` from the global state: drawn explicitly after the same seed, the same image.
    torch.manual_seed(1)
    noise = generator.sample_noise(2)
    with torch.no_grad():
        torch.testing.assert_close(generator.generate(z, noise), first, rtol=0, atol=0)


def test_a_noise_seed_makes_g_a_fixed_map_shared_by_every_sample(reference, tmp_path):
    fixed = load_nvae_checkpoint(CHECKPOINT, noise_seed=3)
    z = reference["z"]
    with torch.no_grad():
        torch.manual_seed(0)
        first = fixed.generate(z)
        torch.manual_seed(1)
        second = fixed.generate(z)
        singles = torch.cat([fixed.generate(z[i : i + 1]) for i in range(2)])
        explicit = fixed.generate(z, fixed.sample_noise(1, torch.Generator().manual_seed(3)))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(singles, first, **IMAGE_TOLERANCE)  # item i of a batch = the single run
    torch.testing.assert_close(explicit, first, rtol=0, atol=0)  # the seed's noise: one draw per group, batch 1
    # The seed is part of the saved config.
    fixed.save_pretrained(tmp_path / "g")
    reloaded = NVAEGenerator.from_pretrained(tmp_path / "g")
    assert reloaded.config.noise_seed == 3
    with torch.no_grad():
        torch.testing.assert_close(reloaded.generate(z), first, rtol=0, atol=0)


def test_sample_draws_each_images_noise_with_its_own_generator(generator):
    def seeds(*values):
        return [torch.Generator().manual_seed(value) for value in values]

    batch = generator.sample(2, generator=seeds(5, 6))
    single = generator.sample(1, generator=seeds(6))
    torch.testing.assert_close(batch[1:], single, **IMAGE_TOLERANCE)


def test_in_the_pipeline_fresh_noise_follows_torchs_seed_not_the_generators(generator, tokenizer):
    clip = tiny_clip(len(tokenizer))
    torch.manual_seed(0)
    translator = TranslatorModel(
        condition_dim=clip.config.projection_dim, latent_dim=256, num_components=2, hidden_dim=32
    )
    pipe = assemble_pipeline(translator.eval(), generator, clip, tokenizer, preset="nvae")
    pipe.set_progress_bar_config(disable=True)

    def sample(global_seed: int) -> torch.Tensor:
        torch.manual_seed(global_seed)
        generators = [torch.Generator().manual_seed(seed) for seed in range(2)]
        return pipe(
            "a cat",
            num_images_per_prompt=2,
            num_inference_steps=2,
            num_augmentations=2,
            generator=generators,
            output_type="pt",
        ).images

    first, again, other = sample(0), sample(0), sample(1)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert (first - other).abs().max() > 1e-3  # same generators, another draw of the sampled groups


def test_bad_noise_is_refused_naming_the_group(generator, reference):
    with pytest.raises(ValueError, match=r"one tensor per sampled group \(2: groups \[8, 9\]\), got 1"):
        generator.generate(reference["z"], noise=[reference["eps_g08"]])
    with pytest.raises(ValueError, match=r"`noise\[1\]` \(group 9\) must have shape \(2 or 1, 4, 16, 16\)"):
        generator.generate(reference["z"], noise=[reference["eps_g08"], torch.zeros(2, 4, 8, 8)])
    with pytest.raises(ValueError, match=r"`latents` must have shape \(batch, 256\)"):
        generator.generate(torch.zeros(2, 255))


def test_the_gradient_wrt_z_matches_finite_differences(generator, reference):
    # Langevin's gradient path: d<v, G(z)>/dz along a direction u, in float64.
    model = load_nvae_checkpoint(CHECKPOINT).double()
    noise = [eps[:1].double() for eps in tr0n_noise(reference)]
    z = reference["z"][:1].double().requires_grad_(True)
    direction = torch.randn(z.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weights = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (gradient,) = torch.autograd.grad((model.generate(z, noise) * weights).sum(), z)
    step = 1e-5
    with torch.no_grad():
        plus = (model.generate(z + step * direction, noise) * weights).sum()
        minus = (model.generate(z - step * direction, noise) * weights).sum()
    assert (gradient * direction).sum().item() == pytest.approx(((plus - minus) / (2 * step)).item(), rel=1e-5)


def test_folding_the_batch_norms_keeps_the_images(reference):
    model = load_nvae_checkpoint(CHECKPOINT)
    with torch.no_grad():
        before = model.generate(reference["z"], tr0n_noise(reference))
        # Every BatchNorm after a convolution: the two in each conv-BN-Swish and the one after the projection.
        assert fold_batch_norms(model) == 3 * sum(len(cell.ops) for cell in model.modules() if hasattr(cell, "ops"))
        after = model.generate(reference["z"], tr0n_noise(reference))
    torch.testing.assert_close(after, before, **IMAGE_TOLERANCE)


# --------------------------------------------------------------------------------------------------------------------
# The converter


def test_the_ffhq_256_configuration_builds(tmp_path):
    # NVAE's README FFHQ command line, as its args namespace (random weights, built on the meta device).
    args = argparse.Namespace(
        dataset="ffhq",
        num_channels_dec=30,
        num_preprocess_blocks=1,
        num_latent_scales=5,
        num_groups_per_scale=16,
        ada_groups=True,
        min_groups_per_scale=4,
        num_latent_per_group=20,
        num_cell_per_cond_dec=2,
        num_postprocess_blocks=1,
        num_postprocess_cells=2,
        use_se=True,
        arch_instance="res_mbconv",
        num_mixture_dec=10,
    )
    config = nvae_config_from_args(args)
    assert config["groups_per_scale"] == (16, 8, 4, 4, 4)
    defaults = inspect.signature(NVAEGenerator.__init__).parameters
    assert {key: defaults[key].default for key in config} == config  # the class defaults are this model
    with torch.device("meta"):
        model = NVAEGenerator(**config)
    assert model.latent_dim == 1280 == 20 * 8 * 8 and model.resolution == 256 and model.num_groups == 36
    assert model.group_sides == [8] * 4 + [16] * 4 + [32] * 4 + [64] * 8 + [128] * 16
    assert len(model.sampled_groups) == 28 and model.noise_shapes[0] == (20, 32, 32)
    assert model.prior_features.shape == (960, 8, 8) and model.image_head[1].weight.shape == (100, 30, 3, 3)


def test_every_decoder_mismatch_is_listed():
    checkpoint = raw_checkpoint()
    state_dict = dict(checkpoint["state_dict"])
    del state_dict["dec_tower.1._ops.0.conv.4.bn.running_var"]
    state_dict["dec_sampler.0.1.bias"] = torch.zeros(3)
    state_dict["dec_tower.99.conv.weight"] = torch.zeros(1)
    state_dict["enc_tower.99.conv.weight"] = torch.zeros(1)  # the encoder side is not read
    with pytest.raises(CheckpointMismatchError) as error:
        convert_nvae(state_dict, checkpoint["args"], checkpoint["arch_instance"])
    message = str(error.value)
    assert "1 missing keys:\n  dec_tower.1._ops.0.conv.4.bn.running_var" in message
    assert "dec_sampler.0.1.bias: expected (8,), found (3,)" in message
    assert "1 unexpected keys:\n  dec_tower.99.conv.weight" in message and "enc_tower" not in message


def test_unsupported_models_are_refused_by_name():
    args = raw_checkpoint()["args"]
    with pytest.raises(ValueError, match="Unsupported NVAE dataset 'mnist'"):
        nvae_config_from_args({**vars(args), "dataset": "mnist"})
    with pytest.raises(ValueError, match="Unsupported NVAE cell operation 'res_bnswish'"):
        NVAEGenerator(**{**nvae_config_from_args(args), "decoder_cell_ops": ("res_bnswish",)})
    with pytest.raises(ValueError, match=r"arch_instance is 'res_bnswish'; only 'res_mbconv'"):
        nvae_config_from_args({**vars(args), "arch_instance": "res_bnswish"})


def test_the_conversion_script_writes_a_folder_that_reloads(reference, tmp_path):
    spec = importlib.util.spec_from_file_location("convert_nvae", SCRIPTS / "convert_nvae_to_diffusers.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--checkpoint_path", str(CHECKPOINT), "--dump_path", str(tmp_path / "nvae"), "--noise_seed", "7"])
    model = NVAEGenerator.from_pretrained(tmp_path / "nvae")
    assert model.config.noise_seed == 7 and model.config.temperature == 0.6
    assert (tmp_path / "nvae" / "diffusion_pytorch_model.safetensors").is_file()
    with torch.no_grad():
        images = model.generate(reference["z"], tr0n_noise(reference))
    torch.testing.assert_close(images, reference["img"], **IMAGE_TOLERANCE)


def test_the_format_table_recognises_nvae_checkpoints():
    entry = detect_generator_format(CHECKPOINT)
    assert (entry.name, entry.default_preset(str(CHECKPOINT))) == ("nvae", "nvae")
    assert entry.load(str(CHECKPOINT), temperature=0.8).config.temperature == 0.8


# --------------------------------------------------------------------------------------------------------------------
# The checkpoint reader never runs code from the file


class PlantedGlobal:
    """Pickles as a call of ``os.system`` (``posix.system``) that creates ``sentinel``."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


def malicious_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """An NVAE checkpoint (the fixture's tensors) whose ``args`` run ``os.system`` when unpickled."""
    sentinel = tmp_path / "pwned"
    checkpoint = raw_checkpoint()
    path = tmp_path / "checkpoint.pt"
    torch.save({**checkpoint, "args": PlantedGlobal(sentinel)}, path)
    return path, sentinel


def test_a_planted_global_is_refused_by_name_without_running(tmp_path):
    path, sentinel = malicious_checkpoint(tmp_path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(
        UnsafePickleError, match=r"Refusing to load .*checkpoint\.pt: its pickle asks for `posix\.system`"
    ):
        load_nvae_checkpoint(path)
    with pytest.raises(UnknownGeneratorFormatError, match=r"asks for `posix\.system`.*Nothing from it was executed"):
        detect_generator_format(path)
    assert not sentinel.exists()


def test_the_planted_payload_is_live_under_a_plain_load(tmp_path):
    # Control for the test above: the same file does run code when loaded without weights_only. The only unsafe load
    # in the project, on purpose: the file is this test's own, and its payload only creates the sentinel in tmp_path.
    path, sentinel = malicious_checkpoint(tmp_path)
    torch.load(path, weights_only=False)
    assert sentinel.exists()
