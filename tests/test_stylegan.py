"""StyleGAN2 / StyleGAN3 generators, their converters and the network-pickle reader, against upstream outputs.

`tests/fixtures/{stylegan2-nvlabs,stylegan3-nvlabs,stylegan2-rosinality,tr0n-translator}` are tiny random-weight
checkpoints written by the upstream code bases in their own formats, with the upstream outputs for stored inputs
(each folder's config.json says how they were made). The ports load them through the converters only (no upstream
code) and must reproduce every output: images within rtol = atol = 1e-4, latents and logits within atol = 1e-5.
"""

import importlib.util
import json
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import scipy.special
import torch
from accelerate.state import AcceleratorState, GradientState
from conftest import tiny_clip
from safetensors.torch import load_file

from tron_pipelines import TranslatorModel, TronPipeline
from tron_pipelines.conversion.checkpoints import CheckpointMismatchError
from tron_pipelines.conversion.network_pickle import UnsafePickleError, load_network_pickle
from tron_pipelines.conversion.stylegan import (
    convert_nvlabs_network,
    convert_rosinality_stylegan2,
    load_nvlabs_pickle,
    load_rosinality_checkpoint,
)
from tron_pipelines.conversion.tr0n import load_tr0n_translator
from tron_pipelines.models import StyleGAN2Generator, StyleGAN3Generator
from tron_pipelines.models.stylegan3 import kaiser_lowpass_filter, radial_lowpass_filter
from tron_pipelines.training import parse_train_args, train_translator


FIXTURES = Path(__file__).resolve().parent / "fixtures"
SCRIPTS = Path(__file__).resolve().parents[1] / "conversion_scripts"
SG2_PICKLE = FIXTURES / "stylegan2-nvlabs" / "network-snapshot-stylegan2-nvlabs-dev.pkl"
SG3_PICKLE = FIXTURES / "stylegan3-nvlabs" / "network-snapshot-stylegan3-nvlabs-dev.pkl"
ROSINALITY = FIXTURES / "stylegan2-rosinality" / "stylegan2-rosinality-dev.pt"

IMAGE_TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}
LATENT_TOLERANCE = {"rtol": 0, "atol": 1e-5}

pytestmark = pytest.mark.usefixtures("one_thread")


def reference(folder: str) -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / folder / "reference.safetensors")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def nvlabs_stylegan2():
    return load_nvlabs_pickle(SG2_PICKLE)


@pytest.fixture(scope="module")
def nvlabs_stylegan3():
    return load_nvlabs_pickle(SG3_PICKLE)


@pytest.fixture(scope="module")
def rosinality_stylegan2():
    return load_rosinality_checkpoint(ROSINALITY)


# --------------------------------------------------------------------------------------------------------------------
# Upstream outputs


@pytest.mark.parametrize(
    "folder,model_fixture", [("stylegan2-nvlabs", "nvlabs_stylegan2"), ("stylegan3-nvlabs", "nvlabs_stylegan3")]
)
@torch.no_grad()
def test_nvlabs_networks_reproduce_the_upstream_outputs(folder, model_fixture, request):
    model, ref = request.getfixturevalue(model_fixture), reference(folder)
    assert model.num_ws == ref["ws"].shape[1] == 8
    torch.testing.assert_close(model.mapping.w_avg, ref["w_avg"], rtol=0, atol=0)
    ws = model.map_latents(ref["z"], truncation_psi=1)
    torch.testing.assert_close(ws, ref["ws"], **LATENT_TOLERANCE)
    torch.testing.assert_close(model.mapping(ref["z"]), ref["w"], **LATENT_TOLERANCE)
    torch.testing.assert_close(model.map_latents(ref["z"], truncation_psi=0.7), ref["ws_psi07"], **LATENT_TOLERANCE)
    torch.testing.assert_close(model(ref["z"], truncation_psi=1), ref["img"], **IMAGE_TOLERANCE)
    torch.testing.assert_close(model(ref["z"], truncation_psi=0.7), ref["img_psi07"], **IMAGE_TOLERANCE)
    torch.testing.assert_close(model.synthesize(ref["ws_given"]), ref["img_from_ws"], **IMAGE_TOLERANCE)
    if "img_noise_none" in ref:
        torch.testing.assert_close(model(ref["z"], noise_mode="none"), ref["img_noise_none"], **IMAGE_TOLERANCE)
        assert (ref["img_noise_none"] - ref["img"]).abs().max() > 0.1  # the noise inputs matter in this fixture


@pytest.mark.parametrize("pickle_path,folder", [(SG2_PICKLE, "stylegan2-nvlabs"), (SG3_PICKLE, "stylegan3-nvlabs")])
@torch.no_grad()
def test_the_non_ema_generator_converts_too(pickle_path, folder):
    ref = reference(folder)
    model = load_nvlabs_pickle(pickle_path, network_key="G")
    torch.testing.assert_close(model(ref["z"]), ref["img_G_nonema"], **IMAGE_TOLERANCE)


@torch.no_grad()
def test_rosinality_generator_reproduces_the_upstream_outputs(rosinality_stylegan2):
    model, ref = rosinality_stylegan2, reference("stylegan2-rosinality")
    assert model.config.block_channels == (32, 32, 32, 16) and model.config.conv_clamp is None
    torch.testing.assert_close(model.mapping(ref["z"]), ref["w"], **LATENT_TOLERANCE)
    torch.testing.assert_close(model.map_latents(ref["z"]), ref["latents"], **LATENT_TOLERANCE)
    torch.testing.assert_close(model(ref["z"]), ref["img"], **IMAGE_TOLERANCE)
    torch.testing.assert_close(model(ref["z"], truncation_psi=0.7), ref["img_trunc07"], **IMAGE_TOLERANCE)
    broadcast = ref["w_given"].unsqueeze(1).expand(-1, model.num_ws, -1)
    torch.testing.assert_close(model.synthesize(broadcast), ref["img_w"], **IMAGE_TOLERANCE)
    torch.testing.assert_close(model.synthesize(ref["ws_given"]), ref["img_ws"], **IMAGE_TOLERANCE)
    # Style mixing is a w+ input: the first 3 inputs from z, the rest from z2 (upstream's inject_index=3).
    mixed = torch.cat([model.map_latents(ref["z"])[:, :3], model.map_latents(ref["z2"])[:, 3:]], dim=1)
    torch.testing.assert_close(mixed, ref["latents_mix"], **LATENT_TOLERANCE)
    torch.testing.assert_close(model.synthesize(mixed), ref["img_mix"], **IMAGE_TOLERANCE)


@pytest.mark.parametrize(
    "checkpoint,folder,cls",
    [
        (SG2_PICKLE, "stylegan2-nvlabs", StyleGAN2Generator),
        (SG3_PICKLE, "stylegan3-nvlabs", StyleGAN3Generator),
        (ROSINALITY, "stylegan2-rosinality", StyleGAN2Generator),
    ],
)
@torch.no_grad()
def test_conversion_script_detects_the_format_and_writes_a_loadable_folder(checkpoint, folder, cls, tmp_path):
    load_script("convert_stylegan_to_diffusers").main(
        ["--checkpoint_path", str(checkpoint), "--dump_path", str(tmp_path / "generator"), "--truncation_psi", "0.7"]
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["generator"]  # no partial folder left behind
    model = cls.from_pretrained(tmp_path / "generator")
    assert model.config.truncation_psi == 0.7 and not model.training
    ref = reference(folder)
    torch.testing.assert_close(model(ref["z"], truncation_psi=1), ref["img"], **IMAGE_TOLERANCE)
    assert model.sample_latents(1, generator=torch.Generator().manual_seed(0)).shape == (1, 32)


# --------------------------------------------------------------------------------------------------------------------
# Resampling and filters


def zero_insertion_upfirdn2d(x, fir, up, down, padding, gain):
    """`upfirdn2d` as its definition reads: insert zeros, pad (negative crops), convolve each map with the flipped
    filter (1-D filters separably, sqrt(gain) per pass), keep every `down`-th sample."""
    batch, channels, height, width = x.shape
    x = x.reshape(batch * channels, 1, height, width)
    upsampled = x.new_zeros(batch * channels, 1, height * up, width * up)
    upsampled[:, :, ::up, ::up] = x
    x = torch.nn.functional.pad(upsampled, list(padding))
    fir = torch.ones(1, 1, dtype=x.dtype) if fir is None else fir
    kernels = [fir.view(1, -1) * gain**0.5, fir.view(-1, 1) * gain**0.5] if fir.ndim == 1 else [fir * gain]
    for kernel in kernels:
        x = torch.nn.functional.conv2d(x, kernel.flip(0, 1)[None, None])
    return x[:, :, ::down, ::down].reshape(batch, channels, x[:, :, ::down, ::down].shape[2], -1)


def test_upfirdn2d_equals_zero_insertion_padding_and_convolution():
    from tron_pipelines.models.stylegan2 import upfirdn2d

    generator = torch.Generator().manual_seed(0)
    cases = 0
    for fir_kind in ("none", "1d", "2d"):
        for up, down in ((1, 1), (2, 1), (1, 2), (8, 2), (4, 4), (3, 2)):
            for padding in ((0, 0, 0, 0), (9, 8, 9, 8), (-3, 5, 2, -1), (-36, -43, -36, -43)):
                x = torch.randn(2, 3, 36, 31, generator=generator, dtype=torch.float64)
                fir = {
                    "none": None,
                    "1d": torch.randn(12, generator=generator, dtype=torch.float64),
                    "2d": torch.randn(5, 4, generator=generator, dtype=torch.float64),
                }[fir_kind]
                kernel_h, kernel_w = (1, 1) if fir is None else (12, 12) if fir.ndim == 1 else fir.shape
                left, right, top, bottom = padding
                if 36 * up + top + bottom < kernel_h or 31 * up + left + right < kernel_w:
                    continue  # nothing left after cropping
                expected = zero_insertion_upfirdn2d(x, fir, up, down, padding, gain=up**2)
                torch.testing.assert_close(upfirdn2d(x, fir, up, down, padding, gain=up**2), expected)
                cases += 1
    assert cases > 60


@pytest.mark.parametrize(
    "numtaps,cutoff,width,fs", [(12, 2.0, 12.0, 32), (12, 5.66, 4.69, 32), (24, 8.0, 3.7, 64), (13, 3.1, 2.0, 20)]
)
def test_kaiser_lowpass_filter_equals_scipy_firwin(numtaps, cutoff, width, fs):
    expected = torch.as_tensor(scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs), dtype=torch.float32)
    torch.testing.assert_close(kaiser_lowpass_filter(numtaps, cutoff, width, fs), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("numtaps,cutoff,width,fs", [(12, 4.0, 4.0, 32), (24, 11.3, 9.4, 64), (7, 2.0, 3.0, 16)])
def test_radial_lowpass_filter_is_a_kaiser_windowed_jinc(numtaps, cutoff, width, fs):
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    with np.errstate(divide="ignore", invalid="ignore"):
        jinc = np.where(r > 0, scipy.special.j1(2 * np.pi * cutoff * r) / (np.pi * r), cutoff)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = scipy.signal.windows.kaiser(numtaps, beta)
    expected = jinc * np.outer(window, window)
    expected = torch.as_tensor(expected / expected.sum(), dtype=torch.float32)
    torch.testing.assert_close(radial_lowpass_filter(numtaps, cutoff, width, fs), expected, rtol=0, atol=1e-7)


def test_a_stylegan3_built_from_its_config_designs_the_checkpoint_filters(nvlabs_stylegan3):
    designed = with_settings(nvlabs_stylegan3)  # filters designed in __init__, then overwritten by load_state_dict
    for ours, theirs in zip(designed.layers, nvlabs_stylegan3.layers):
        for name in ("up_filter", "down_filter"):
            if getattr(theirs, name) is None:
                assert getattr(ours, name) is None
            else:
                torch.testing.assert_close(getattr(ours, name), getattr(theirs, name), rtol=0, atol=1e-8)


@torch.no_grad()
def test_stylegan3_r_runs_with_radial_filters_and_1x1_convs():
    torch.manual_seed(0)
    model = StyleGAN3Generator(
        z_dim=8,
        w_dim=8,
        img_resolution=16,
        channel_base=512,
        channel_max=16,
        num_layers=4,
        num_critical=1,
        conv_kernel=1,
        use_radial_filters=True,
        margin_size=4,
    ).eval()
    radial = [layer.down_filter.ndim == 2 for layer in model.layers[:-1]]
    assert radial == [True, True, True, False]  # the critically sampled layer keeps the separable filter
    assert all(layer.weight.shape[-1] == 1 for layer in model.layers)
    images = model(torch.randn(2, 8))
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all() and images.std() > 0


# --------------------------------------------------------------------------------------------------------------------
# The network-pickle reader never runs code from the file


def malicious_pickles(sentinel: Path) -> dict[str, bytes]:
    """Hand-written protocol-0 pickles that create ``sentinel`` when loaded with `pickle.loads`."""
    return {
        "os.system": b"cos\nsystem\n(V" + f"touch {sentinel}".encode() + b"\ntR.",
        "builtins.eval": b"cbuiltins\neval\n(V" + f"open({str(sentinel)!r}, 'w').close()".encode() + b"\ntR.",
        "subprocess.Popen": b"csubprocess\nPopen\n((Vtouch\nV" + str(sentinel).encode() + b"\nltR.",
        # A legitimate-looking network pickle whose state asks for a torch class: refused too (an allow-list).
        "torch.nn.modules.linear.Linear": b"ctorch_utils.persistence\n_reconstruct_persistent_obj\n((dVstate\n"
        b"ctorch.nn.modules.linear\nLinear\n(I1\nI1\ntRstR.",
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "subprocess.Popen", "torch.nn.modules.linear.Linear"])
def test_the_reader_refuses_globals_outside_the_allow_list_without_running_them(name, tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(malicious_pickles(sentinel)[name])
    with pytest.raises(UnsafePickleError, match=f"Refusing to load `{name}`"):
        load_network_pickle(path)
    with pytest.raises(UnsafePickleError, match=name):
        load_nvlabs_pickle(path)
    assert not sentinel.exists()


def test_the_malicious_payload_is_live_under_the_plain_unpickler(tmp_path):
    # Control for the test above: the same bytes do run code when loaded without the allow-list.
    sentinel = tmp_path / "pwned"
    pickle.loads(malicious_pickles(sentinel)["builtins.eval"])
    assert sentinel.exists()


def test_reading_the_network_pickle_imports_nothing_from_it():
    snapshot = load_network_pickle(SG3_PICKLE)
    assert sorted(snapshot) == ["D", "G", "G_ema", "augment_pipe", "training_set_kwargs"]
    assert "training/networks_stylegan3.py" in snapshot["G_ema"].module_src  # kept as text
    assert not {"torch_utils", "dnnlib", "training"} & set(sys.modules)


# --------------------------------------------------------------------------------------------------------------------
# Checks of the converters


def test_rosinality_mismatches_are_all_listed():
    checkpoint = torch.load(ROSINALITY, weights_only=True)
    state_dict = dict(checkpoint["g_ema"])
    del state_dict["convs.1.noise.weight"]
    state_dict["to_rgbs.0.bias"] = torch.zeros(3)
    state_dict["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as error:
        convert_rosinality_stylegan2(state_dict, checkpoint["latent_avg"])
    message = str(error.value)
    assert "convs.1.noise.weight" in message
    assert "to_rgbs.0.bias: expected (1, 3, 1, 1), found (3,)" in message
    assert "extra.weight" in message


def test_rosinality_blur_kernel_is_checked_against_the_stored_kernels():
    checkpoint = torch.load(ROSINALITY, weights_only=True)
    with pytest.raises(CheckpointMismatchError, match="filter buffers differ"):
        convert_rosinality_stylegan2(checkpoint["g_ema"], checkpoint["latent_avg"], blur_kernel=(1, 1, 1, 1))


def test_rosinality_train_checkpoints_without_latent_avg_get_an_estimate(tmp_path):
    import argparse

    checkpoint = torch.load(ROSINALITY, weights_only=True)
    torch.save({"g_ema": checkpoint["g_ema"], "args": argparse.Namespace(size=32, n_mlp=8)}, tmp_path / "010000.pt")
    model = load_rosinality_checkpoint(tmp_path / "010000.pt")
    # The fixture's latent_avg is upstream's mean_latent(4096): the estimate is the same statistic, other draws.
    assert (model.mapping.w_avg - checkpoint["latent_avg"]).abs().max() < 0.1


def test_nvlabs_mismatches_are_all_listed():
    network = load_network_pickle(SG2_PICKLE)["G_ema"]
    layer = network.children["synthesis"].children["b8"].children["conv0"]
    del layer.state["_buffers"]["noise_const"]
    layer.state["_parameters"]["extra"] = torch.zeros(2)
    network.children["mapping"].state["_buffers"]["w_avg"] = torch.zeros(5)
    with pytest.raises(CheckpointMismatchError) as error:
        convert_nvlabs_network(network)
    message = str(error.value)
    assert "synthesis.b8.conv0.noise_const" in message and "synthesis.b8.conv0.extra" in message
    assert "mapping.w_avg: expected (32,), found (5,)" in message


def test_stylegan3_layers_are_checked_against_the_configuration():
    network = load_network_pickle(SG3_PICKLE)["G_ema"]
    network.children["synthesis"].state["_init_kwargs"]["first_cutoff"] = 3
    with pytest.raises(CheckpointMismatchError, match="L0_36_16.in_cutoff: configuration implies 3.0"):
        convert_nvlabs_network(network)


def test_unsupported_settings_are_named():
    network = load_network_pickle(SG2_PICKLE)["G_ema"]
    network.state["c_dim"] = 10
    with pytest.raises(ValueError, match="c_dim=10: class-conditional"):
        convert_nvlabs_network(network)
    with pytest.raises(ValueError, match="StyleGAN3 has no noise inputs"):
        load_nvlabs_pickle(SG3_PICKLE, noise_mode="none")


# --------------------------------------------------------------------------------------------------------------------
# The TR0N generator interface


def test_latent_specs_describe_the_mapping_prior(nvlabs_stylegan2):
    (spec,) = nvlabs_stylegan2.latent_specs
    assert (spec.name, spec.dim, spec.threshold) == ("w", 32, None)
    assert spec.prior == "stylegan_mapping(psi=1.0)"
    plus = with_settings(nvlabs_stylegan2, latent_space="w+", truncation_psi=0.5)
    assert [(s.name, s.dim, s.prior) for s in plus.latent_specs] == [("w_plus", 8 * 32, "stylegan_mapping(psi=0.5)")]


def with_settings(model, **settings):
    """A copy of ``model`` with other TR0N settings (same weights)."""
    config = {key: value for key, value in model.config.items() if not key.startswith("_")}
    copy = type(model).from_config({**config, **settings})
    copy.load_state_dict(model.state_dict())
    return copy.eval()


@pytest.mark.parametrize("model_fixture", ["nvlabs_stylegan2", "nvlabs_stylegan3"])
@torch.no_grad()
def test_sample_latents_maps_and_truncates_per_sample_draws(model_fixture, request):
    psi = 0.6
    model = with_settings(request.getfixturevalue(model_fixture), truncation_psi=psi)
    latents = model.sample_latents(2, generator=[torch.Generator().manual_seed(seed) for seed in (3, 4)])
    z = torch.cat([torch.randn(1, 32, generator=torch.Generator().manual_seed(seed)) for seed in (3, 4)])
    w_avg = model.mapping.w_avg
    torch.testing.assert_close(latents, w_avg + psi * (model.mapping(z) - w_avg), rtol=1e-6, atol=1e-6)
    single = model.sample_latents(1, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(single[0], latents[1], rtol=1e-6, atol=1e-6)
    shared = model.sample_latents(2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(shared[0], latents[0], rtol=1e-6, atol=1e-6)  # one generator: its first draw is z[0]


@pytest.mark.parametrize(
    "model_fixture,folder", [("nvlabs_stylegan2", "stylegan2-nvlabs"), ("nvlabs_stylegan3", "stylegan3-nvlabs")]
)
@torch.no_grad()
def test_generate_broadcasts_w_or_takes_w_plus_and_clamps(model_fixture, folder, request):
    model, ref = request.getfixturevalue(model_fixture), reference(folder)
    w = ref["ws_given"][:, 0]
    broadcast = w.unsqueeze(1).expand(-1, model.num_ws, -1)
    torch.testing.assert_close(model.generate(w), model.synthesize(broadcast).clamp(-1, 1))
    plus = with_settings(model, latent_space="w+")
    assert plus.latent_dim == model.num_ws * 32
    torch.testing.assert_close(
        plus.generate(ref["ws_given"].flatten(1)), model.synthesize(ref["ws_given"]).clamp(-1, 1)
    )
    with pytest.raises(ValueError, match="`ws` must have shape"):
        model.synthesize(ref["ws_given"][:, :3])
    with pytest.raises(ValueError, match="`latents` must have shape"):
        model.generate(ref["ws_given"])


@pytest.mark.parametrize("model_fixture", ["nvlabs_stylegan2", "nvlabs_stylegan3"])
def test_gradients_reach_w_and_match_finite_differences(model_fixture, request):
    model = request.getfixturevalue(model_fixture)
    double = with_settings(model).double()
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(2, 32, generator=generator, dtype=torch.float64)
    target = torch.randn(2, 3, double.resolution, double.resolution, generator=generator, dtype=torch.float64)

    def energy(latents):
        ws = latents.unsqueeze(1).expand(-1, double.num_ws, -1)
        return (double.synthesize(ws) * target).sum()

    w.requires_grad_(True)
    (gradient,) = torch.autograd.grad(energy(w), w)
    assert (gradient.abs().sum(dim=1) > 0).all()
    direction = torch.randn(2, 32, generator=generator, dtype=torch.float64)
    # A small step: many leaky-ReLU inputs lie near 0, and a step across a kink biases the difference quotient.
    eps = 1e-7
    with torch.no_grad():
        numeric = (energy(w + eps * direction) - energy(w - eps * direction)) / (2 * eps)
    torch.testing.assert_close((gradient * direction).sum(), numeric, rtol=1e-6, atol=1e-8)
    # Through `generate` (clamped, float32) the gradient still reaches every sample's w.
    latents = w.detach().float().requires_grad_(True)
    model.generate(latents).sum().backward()
    assert torch.isfinite(latents.grad).all() and (latents.grad.abs().sum(dim=1) > 0).all()


def test_save_and_load_round_trip(nvlabs_stylegan3, rosinality_stylegan2, tmp_path):
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    for name, model in (("sg3", nvlabs_stylegan3), ("sg2", rosinality_stylegan2)):
        model.save_pretrained(tmp_path / name)
        reloaded = type(model).from_pretrained(tmp_path / name)
        # As config.json reads back: tuples become lists.
        public = lambda config: json.loads(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))  # noqa: E731
        assert public(reloaded.config) == public(model.config)
        with torch.no_grad():
            torch.testing.assert_close(reloaded(z), model(z), rtol=0, atol=0)


def test_bad_settings_are_refused_before_building():
    with pytest.raises(ValueError, match="`latent_space` must be one of"):
        StyleGAN2Generator(latent_space="z")
    with pytest.raises(ValueError, match="`truncation_psi` must be in"):
        StyleGAN3Generator(truncation_psi=1.5)
    with pytest.raises(ValueError, match="`noise_mode` must be one of"):
        StyleGAN2Generator(noise_mode="random")


# --------------------------------------------------------------------------------------------------------------------
# Official TR0N translators


@pytest.mark.parametrize("variant,prefix,threshold", [("stylegan", "w", None), ("biggan", "z", 2.0)])
@torch.no_grad()
def test_official_translators_reproduce_the_upstream_outputs(variant, prefix, threshold):
    ref = reference(f"tr0n-translator/{variant}")
    translator = load_tr0n_translator(FIXTURES / "tr0n-translator" / variant / "model_best.pth", threshold)
    out = translator(ref["conditions"])
    torch.testing.assert_close(out.mixture_logits, ref[f"{prefix}_mixture_logits"], **LATENT_TOLERANCE)
    torch.testing.assert_close(out.mixture_logits.softmax(-1), ref[f"{prefix}_mixture_probs"], **LATENT_TOLERANCE)
    torch.testing.assert_close(out.means, ref[f"{prefix}_means"], **LATENT_TOLERANCE)
    torch.testing.assert_close(out.stds, ref[f"{prefix}_stds"], **LATENT_TOLERANCE)
    torch.testing.assert_close(translator.log_stds, ref[f"{prefix}_log_stds_param"].flatten(), rtol=0, atol=0)
    argmax = out.means[torch.arange(len(out.means)), out.mixture_logits.argmax(dim=1)]
    torch.testing.assert_close(argmax, ref[f"{prefix}_argmax"], **LATENT_TOLERANCE)
    for query in ("query", "argmax"):
        log_prob = translator.log_prob(ref[f"{prefix}_{query}"], ref["conditions"])
        torch.testing.assert_close(log_prob, ref[f"{prefix}_gmm_log_prob_{query}"], rtol=1e-5, atol=1e-3)
    if variant == "biggan":
        torch.testing.assert_close(out.auxiliary_latents["y"], ref["y"], **LATENT_TOLERANCE)
    else:
        assert out.auxiliary_latents == {}


def test_official_stylegan_translator_and_network_pickle_make_a_pipeline(clip_components, tmp_path):
    load_script("convert_stylegan_to_diffusers").main(
        ["--checkpoint_path", str(SG2_PICKLE), "--dump_path", str(tmp_path / "generator")]
    )
    for name in ("encoder", "tokenizer", "image_processor"):
        clip_components[name].save_pretrained(tmp_path / "clip")
    load_script("convert_tr0n_original_to_diffusers").main(
        [
            "--checkpoint_path",
            str(FIXTURES / "tr0n-translator" / "stylegan" / "model_best.pth"),
            "--generator",
            str(tmp_path / "generator"),
            "--encoder",
            str(tmp_path / "clip"),
            "--preset",
            "stylegan",
            "--dump_path",
            str(tmp_path / "pipe"),
        ]
    )
    pipe = TronPipeline.from_pretrained(tmp_path / "pipe")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.translator.config.latent_threshold is None and pipe.scheduler.config.clamp_threshold is None
    out = pipe(
        "a red car",
        num_inference_steps=2,
        num_augmentations=2,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    )
    assert out.images.shape == (1, 32, 32, 3) and torch.isfinite(out.latents).all()


# --------------------------------------------------------------------------------------------------------------------
# StyleGAN + CLIP pipeline end to end


def test_tiny_stylegan_clip_pipeline_end_to_end(tokenizer, tmp_path):
    """Build (script, preset "stylegan") -> pairs and a few training steps -> save/load -> Langevin lowers E."""
    torch.manual_seed(0)
    generator = StyleGAN2Generator(z_dim=16, w_dim=16, block_channels=(32, 16, 16), mapping_layers=2).eval()
    generator.save_pretrained(tmp_path / "generator")
    clip = tiny_clip(len(tokenizer))
    clip.save_pretrained(tmp_path / "clip")
    tokenizer.save_pretrained(tmp_path / "clip")
    from transformers import CLIPImageProcessor

    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(
        tmp_path / "clip"
    )
    TranslatorModel(condition_dim=16, latent_dim=16, num_components=3, hidden_dim=32).save_pretrained(
        tmp_path / "untrained"
    )
    load_script("build_tron_pipeline").main(
        [
            "--generator",
            str(tmp_path / "generator"),
            "--encoder",
            str(tmp_path / "clip"),
            "--translator",
            str(tmp_path / "untrained"),
            "--preset",
            "stylegan",
            "--dump_path",
            str(tmp_path / "pipe"),
        ]
    )
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["generator"] == ["tron_pipelines.models.stylegan2", "StyleGAN2Generator"]

    try:
        result = train_translator(
            parse_train_args(
                [
                    "--pipeline",
                    str(tmp_path / "pipe"),
                    "--output_dir",
                    str(tmp_path / "trained"),
                    "--num_pairs",
                    "128",
                    "--num_components",
                    "3",
                    "--hidden_dim",
                    "32",
                    "--train_batch_size",
                    "16",
                    "--max_train_steps",
                    "24",
                    "--learning_rate",
                    "3e-3",
                    "--generation_batch_size",
                    "32",
                    "--num_validation_pairs",
                    "32",
                    "--num_validation_conditions",
                    "2",
                    "--report_to",
                    "none",
                ]
            )
        )
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    assert result.global_step == 24 and result.metrics["nll"] < result.initial_metrics["nll"]
    shutil.rmtree(tmp_path / "pipe")

    pipe = TronPipeline.from_pretrained(tmp_path / "trained")
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.generator, StyleGAN2Generator) and pipe.scheduler.config.step_size == 0.1
    out = pipe(
        ["a red car", "a cat"],
        num_inference_steps=12,
        num_augmentations=4,
        return_energy_trace=True,
        output_type="np",
        generator=[torch.Generator().manual_seed(seed) for seed in range(2)],
    )
    assert out.images.shape == (2, 16, 16, 3) and out.latents.shape == (2, 16)
    start, end = out.energy_trace[:2].mean(dim=0), out.energy_trace[-2:].mean(dim=0)
    # Measured on this setup: the two images' energies fall by 0.015 and 0.028; require a third of the smaller drop.
    assert (start - end > 0.005).all(), out.energy_trace
