"""BigGAN-deep (pytorch-pretrained-biggan) and BigGAN (BigGAN-PyTorch / official TR0N) generators and converters."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import diffusers
import pytest
import torch
import torch.nn.functional as F
from pytorch_pretrained_biggan import BigGAN, BigGANConfig
from pytorch_pretrained_biggan.convert_tf_to_pytorch import BigGAN128

import tron_pipelines.models.biggan as biggan_module
import tron_pipelines.models.biggan_deep as biggan_deep_module
from tron_pipelines import BigGANDeepGenerator, BigGANGenerator
from tron_pipelines.conversion.biggan import (
    convert_biggan_pytorch,
    convert_pytorch_pretrained_biggan,
    load_biggan_pytorch,
)
from tron_pipelines.conversion.checkpoints import CheckpointMismatchError
from tron_pipelines.models.biggan import BIGGAN_ARCHITECTURES
from tron_pipelines.utils.files import save_pretrained_atomically


REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "conversion_scripts"

# A 64 px BigGAN-deep with every feature of the released ones (drop-channel and plain shortcuts, upsampling and
# non-upsampling blocks, attention in the middle), small enough to run in milliseconds.
SMALL_DEEP_CONFIG = BigGANConfig(
    output_dim=64,
    z_dim=16,
    class_embed_dim=16,
    channel_width=4,
    num_classes=10,
    layers=[(True, 16, 8), (False, 8, 8), (True, 8, 4), (True, 4, 2), (True, 2, 1)],
    attention_layer_position=3,
    eps=1e-4,
    n_stats=51,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def load_script(name: str):
    """Import a conversion script as a module, to call its `main(argv)` in-process (no interpreter start-up)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def comparable_config(model) -> dict:
    """The registered config with tuples as lists (as it reads back from config.json), minus private entries."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in model.config.items()
        if not key.startswith("_")
    }


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DIFFUSERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------------------------------------------------
# BigGAN-deep


def random_package_biggan(config: BigGANConfig, seed: int = 0) -> BigGAN:
    """A `pytorch_pretrained_biggan.BigGAN` in eval mode with random weights that look like a released checkpoint:
    non-trivial truncation statistics and attention gain, and spectral-norm vectors after one power iteration (what
    the package's TF converter stores)."""
    torch.manual_seed(seed)
    model = BigGAN(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_means"):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
            elif name.endswith("running_vars"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif name.endswith("gamma"):
                tensor.fill_(0.5)
            elif name == "generator.bn.weight":
                tensor.copy_(1 + 0.1 * torch.randn(tensor.shape, generator=generator))
            elif name.endswith("bias"):
                tensor.copy_(0.05 * torch.randn(tensor.shape, generator=generator))
        for module in model.modules():
            if hasattr(module, "weight_u"):
                matrix = module.weight_orig.reshape(module.weight_orig.shape[0], -1)
                v = F.normalize(matrix.t() @ module.weight_u, dim=0, eps=config.eps)
                module.weight_v.copy_(v)
                module.weight_u.copy_(F.normalize(matrix @ v, dim=0, eps=config.eps))
    return model.eval()


def deep_inputs(config: BigGANConfig, batch_size: int, truncation: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    noise = truncation * torch.randn(batch_size, config.z_dim, generator=generator).clamp(-2, 2)
    classes = torch.randint(config.num_classes, (batch_size,), generator=generator)
    return noise, F.one_hot(classes, config.num_classes).float()


def max_abs_diff(model_a, model_b, *inputs) -> float:
    with torch.no_grad():
        return (model_a(*inputs) - model_b(*inputs)).abs().max().item()


@pytest.fixture(scope="module")
def small_package_model():
    return random_package_biggan(SMALL_DEEP_CONFIG)


@pytest.fixture(scope="module")
def small_deep(small_package_model):
    return convert_pytorch_pretrained_biggan(small_package_model.state_dict(), SMALL_DEEP_CONFIG.to_dict())


# Grid points, two points between grid points (0.55) and one grid point whose lookup rounds down in the package (0.58).
@pytest.mark.parametrize("truncation", [0.02, 0.4, 0.55, 0.58, 0.7, 1.0])
def test_deep_matches_package_small(small_package_model, small_deep, truncation):
    noise, class_vector = deep_inputs(SMALL_DEEP_CONFIG, 3, truncation, seed=1)
    with torch.no_grad():
        expected = small_package_model(noise, class_vector, truncation)
        assert (expected.abs() < 0.99).float().mean() > 0.9, "outputs saturated: the comparison would be vacuous"
    assert max_abs_diff(small_package_model, small_deep, noise, class_vector, truncation) <= 1e-5
    # Soft class vectors go through the same linear embedding.
    soft = torch.softmax(torch.randn(3, SMALL_DEEP_CONFIG.num_classes), dim=1)
    assert max_abs_diff(small_package_model, small_deep, noise, soft, truncation) <= 1e-5


def test_deep_matches_package_full_size_128():
    package_model = random_package_biggan(BigGAN128)
    model = convert_pytorch_pretrained_biggan(package_model.state_dict(), BigGAN128.to_dict())
    assert model.resolution == 128
    for seed, truncation in enumerate([0.4, 0.7, 1.0]):
        noise, class_vector = deep_inputs(BigGAN128, 1, truncation, seed)
        assert max_abs_diff(package_model, model, noise, class_vector, truncation) <= 1e-5


def test_deep_conversion_script(tmp_path, small_package_model):
    checkpoint = tmp_path / "biggan-deep-small"
    checkpoint.mkdir()
    torch.save(small_package_model.state_dict(), checkpoint / "pytorch_model.bin")
    (checkpoint / "config.json").write_text(SMALL_DEEP_CONFIG.to_json_string())
    dump_path = tmp_path / "converted"

    result = run_script(
        str(SCRIPTS / "convert_biggan_deep_to_diffusers.py"),
        "--checkpoint_path", str(checkpoint), "--dump_path", str(dump_path), "--default_truncation", "0.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dump_path.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    model = BigGANDeepGenerator.from_pretrained(dump_path)
    assert model.config.default_truncation == 0.5
    for truncation in (0.4, 1.0):
        noise, class_vector = deep_inputs(SMALL_DEEP_CONFIG, 2, truncation, seed=3)
        assert max_abs_diff(small_package_model, model, noise, class_vector, truncation) <= 1e-5


def test_deep_converter_rejects_missing_and_misshaped_keys(tmp_path, small_package_model):
    state_dict = dict(small_package_model.state_dict())
    del state_dict["generator.layers.2.conv_1.weight_v"]
    state_dict["embeddings.weight"] = state_dict["embeddings.weight"].t()
    state_dict["generator.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as error:
        convert_pytorch_pretrained_biggan(state_dict, SMALL_DEEP_CONFIG.to_dict())
    message = str(error.value)
    assert "1 missing keys:\n  generator.layers.2.conv_1.weight_v" in message
    assert "embeddings.weight: expected (16, 10), found (10, 16)" in message
    assert "1 unexpected keys:\n  generator.extra" in message

    # The script exits with the listing and writes nothing.
    checkpoint = tmp_path / "broken"
    checkpoint.mkdir()
    torch.save(state_dict, checkpoint / "pytorch_model.bin")
    (checkpoint / "config.json").write_text(SMALL_DEEP_CONFIG.to_json_string())
    script = load_script("convert_biggan_deep_to_diffusers")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--checkpoint_path", str(checkpoint), "--dump_path", str(tmp_path / "converted")])
    assert "generator.layers.2.conv_1.weight_v" in str(exit_info.value.code)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_deep_generate_uses_default_truncation(small_package_model):
    model = convert_pytorch_pretrained_biggan(
        small_package_model.state_dict(), SMALL_DEEP_CONFIG.to_dict(), default_truncation=0.4
    )
    assert [(spec.name, spec.dim, spec.prior, spec.threshold) for spec in model.latent_specs] == [
        ("z", 16, "truncated_normal", 2.0),
        ("y", 16, "normal", None),
    ]
    z = torch.randn(2, 16).clamp(-2, 2)
    classes = torch.tensor([3, 7])
    y = model.class_embedding.weight[classes]
    with torch.no_grad():
        images = model.generate(model.pack_latents({"z": z, "y": y}))
        assert images.shape == (2, 3, 64, 64)
        assert torch.equal(images, model.synthesize(0.4 * z, y, 0.4))
        # ... which is the package's output for truncated noise 0.4 * z and the one-hot classes.
        expected = small_package_model(0.4 * z, F.one_hot(classes, 10).float(), 0.4)
    assert (images - expected).abs().max() <= 1e-5


def test_deep_sample_latents_and_gradients(small_deep):
    generator = torch.Generator().manual_seed(0)
    latents = small_deep.sample_latents(5, generator=generator)
    assert latents.shape == (5, small_deep.total_latent_dim) == (5, 32)
    parts = small_deep.split_latents(latents)
    assert parts["z"].abs().max() <= 2.0
    table = small_deep.class_embedding.weight
    assert all((row == table).all(dim=1).any() for row in parts["y"])

    # One generator per sample: item i equals a batch of one drawn with generator i.
    batch = small_deep.sample_latents(3, generator=[torch.Generator().manual_seed(seed) for seed in (4, 5, 6)])
    singles = [small_deep.sample_latents(1, generator=torch.Generator().manual_seed(seed)) for seed in (4, 5, 6)]
    assert torch.equal(batch, torch.cat(singles))
    with pytest.raises(ValueError, match="one per sample"):
        small_deep.sample_latents(2, generator=[torch.Generator()])

    # TR0N refines both latents by gradient descent through G.
    latents = latents[:2].clone().requires_grad_(True)
    small_deep.generate(latents).square().mean().backward()
    assert latents.grad[:, :16].abs().sum() > 0 and latents.grad[:, 16:].abs().sum() > 0


def test_deep_save_load_round_trip(tmp_path, small_deep):
    save_pretrained_atomically(small_deep, tmp_path / "model")
    reloaded = BigGANDeepGenerator.from_pretrained(tmp_path / "model")
    assert comparable_config(reloaded) == comparable_config(small_deep)
    assert all(torch.equal(tensor, small_deep.state_dict()[name]) for name, tensor in reloaded.state_dict().items())
    latents = small_deep.sample_latents(2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # Same weights; CPU kernels may still pick a different summation order for differently aligned buffers.
        torch.testing.assert_close(reloaded.generate(latents), small_deep.generate(latents), rtol=0, atol=1e-6)


def test_modules_expose_model_mixin_for_the_diffusers_loader():
    assert biggan_module.ModelMixin is diffusers.ModelMixin
    assert biggan_deep_module.ModelMixin is diffusers.ModelMixin


def test_save_pretrained_atomically_replaces_or_keeps_the_folder(tmp_path, small_deep, monkeypatch):
    dump_path = tmp_path / "model"
    dump_path.mkdir()
    (dump_path / "stale.txt").write_text("old")
    save_pretrained_atomically(small_deep, dump_path)
    assert sorted(p.name for p in dump_path.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]

    # A save that dies halfway leaves the previous folder untouched and no partial folder behind.
    def failing_save(self, path, **kwargs):
        Path(path).mkdir()
        (Path(path) / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    before = {p.name: p.read_bytes() for p in dump_path.iterdir()}
    monkeypatch.setattr(BigGANDeepGenerator, "save_pretrained", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_pretrained_atomically(small_deep, dump_path)
    assert {p.name: p.read_bytes() for p in dump_path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# ---------------------------------------------------------------------------------------------------------------------
# BigGAN (BigGAN-PyTorch layout, official TR0N)


def biggan_pytorch_state_dict(resolution: int, channel_width: int = 96, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random BigGAN-PyTorch generator state dict with the key names and shapes of TR0N's ``biggan-{res}.pth``
    (method reference, section 10), ``sv0`` entries included."""
    architecture = BIGGAN_ARCHITECTURES[resolution]
    multipliers = architecture["channel_multipliers"]
    num_blocks = len(multipliers) - 1
    chunk = architecture["latent_dim"] // (num_blocks + 1)
    attention_block = {256: 4, 512: 3}[resolution]
    generator = torch.Generator().manual_seed(seed)
    state_dict = {}

    def randn(*shape, scale=1.0):
        return scale * torch.randn(shape, generator=generator)

    def spectral_norm_layer(prefix, shape, bias):
        state_dict[f"{prefix}.weight"] = randn(*shape, scale=0.05)
        if bias:
            state_dict[f"{prefix}.bias"] = randn(shape[0], scale=0.05)
        state_dict[f"{prefix}.u0"] = randn(1, shape[0])
        state_dict[f"{prefix}.sv0"] = torch.ones(1)

    def statistics(prefix, channels):
        state_dict[f"{prefix}.stored_mean"] = randn(channels, scale=0.1)
        state_dict[f"{prefix}.stored_var"] = 0.5 + torch.rand(channels, generator=generator)

    state_dict["shared.weight"] = randn(1000, 128)
    spectral_norm_layer("linear", (16 * channel_width * 16, chunk), bias=True)
    for index in range(num_blocks):
        c_in, c_out = multipliers[index] * channel_width, multipliers[index + 1] * channel_width
        prefix = f"blocks.{index}.0"
        spectral_norm_layer(f"{prefix}.conv1", (c_out, c_in, 3, 3), bias=True)
        spectral_norm_layer(f"{prefix}.conv2", (c_out, c_out, 3, 3), bias=True)
        spectral_norm_layer(f"{prefix}.conv_sc", (c_out, c_in, 1, 1), bias=True)
        for norm, channels in (("bn1", c_in), ("bn2", c_out)):
            spectral_norm_layer(f"{prefix}.{norm}.gain", (channels, 128 + chunk), bias=False)
            spectral_norm_layer(f"{prefix}.{norm}.bias", (channels, 128 + chunk), bias=False)
            statistics(f"{prefix}.{norm}", channels)
        if index == attention_block:
            for name, shape in (
                ("theta", (c_out // 8, c_out, 1, 1)),
                ("phi", (c_out // 8, c_out, 1, 1)),
                ("g", (c_out // 2, c_out, 1, 1)),
                ("o", (c_out, c_out // 2, 1, 1)),
            ):
                spectral_norm_layer(f"blocks.{index}.1.{name}", shape, bias=False)
            state_dict[f"blocks.{index}.1.gamma"] = torch.tensor(0.7)
    # A small output gain keeps the random network's tanh out of saturation, so that comparisons are meaningful.
    state_dict["output_layer.0.gain"] = 0.05 + 0.1 * torch.rand(channel_width, generator=generator)
    state_dict["output_layer.0.bias"] = randn(channel_width, scale=0.1)
    statistics("output_layer.0", channel_width)
    spectral_norm_layer("output_layer.2", (3, channel_width, 3, 3), bias=True)
    return state_dict


def without_sv0(state_dict):
    return {key: value for key, value in state_dict.items() if not key.endswith(".sv0")}


def reference_sn_weight(state_dict, prefix, eps=1e-8):
    """W / sigma with sigma from one power iteration from u0 (method reference section 10), sigma in float64."""
    weight = state_dict[f"{prefix}.weight"]
    matrix = weight.reshape(weight.shape[0], -1).double()
    v = state_dict[f"{prefix}.u0"].double() @ matrix
    v = v / v.norm().clamp_min(eps)
    u = v @ matrix.t()
    u = u / u.norm().clamp_min(eps)
    sigma = (v @ matrix.t() @ u.t()).item()
    return weight / sigma


def reference_biggan_forward(state_dict, z, y, resolution, eps=1e-5):
    """BigGAN-PyTorch's eval-mode `G(z, y)` written directly on the raw state dict, in float64."""
    sd = {key: value.double() for key, value in state_dict.items()}
    z, y = z.double(), y.double()
    num_blocks = len(BIGGAN_ARCHITECTURES[resolution]["channel_multipliers"]) - 1
    chunks = z.split(z.shape[1] // (num_blocks + 1), dim=1)
    hidden = F.linear(chunks[0], reference_sn_weight(sd, "linear"), sd["linear.bias"]).view(z.shape[0], -1, 4, 4)

    def ccbn(x, prefix, condition):
        gain = 1 + F.linear(condition, reference_sn_weight(sd, f"{prefix}.gain"))
        bias = F.linear(condition, reference_sn_weight(sd, f"{prefix}.bias"))
        out = F.batch_norm(x, sd[f"{prefix}.stored_mean"], sd[f"{prefix}.stored_var"], None, None, False, 0.1, eps)
        return out * gain[:, :, None, None] + bias[:, :, None, None]

    def conv(x, prefix, padding):
        return F.conv2d(x, reference_sn_weight(sd, prefix), sd.get(f"{prefix}.bias"), padding=padding)

    for index in range(num_blocks):
        condition = torch.cat([y, chunks[index + 1]], dim=1)
        prefix = f"blocks.{index}.0"
        h = F.relu(ccbn(hidden, f"{prefix}.bn1", condition))
        h = conv(F.interpolate(h, scale_factor=2), f"{prefix}.conv1", 1)
        h = conv(F.relu(ccbn(h, f"{prefix}.bn2", condition)), f"{prefix}.conv2", 1)
        hidden = h + conv(F.interpolate(hidden, scale_factor=2), f"{prefix}.conv_sc", 0)
        attention = f"blocks.{index}.1"
        if f"{attention}.gamma" in sd:
            batch, channels, height, width = hidden.shape
            theta = conv(hidden, f"{attention}.theta", 0).view(batch, channels // 8, -1)
            phi = F.max_pool2d(conv(hidden, f"{attention}.phi", 0), 2).view(batch, channels // 8, -1)
            g = F.max_pool2d(conv(hidden, f"{attention}.g", 0), 2).view(batch, channels // 2, -1)
            beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)
            o = conv(torch.bmm(g, beta.transpose(1, 2)).view(batch, channels // 2, height, width), f"{attention}.o", 0)
            hidden = sd[f"{attention}.gamma"] * o + hidden
    statistics = sd["output_layer.0.stored_mean"], sd["output_layer.0.stored_var"]
    hidden = F.batch_norm(hidden, *statistics, sd["output_layer.0.gain"], sd["output_layer.0.bias"], False, 0.1, eps)
    return torch.tanh(conv(F.relu(hidden), "output_layer.2", 1))


def expected_biggan_tensors(state_dict, resolution):
    """Where every checkpoint tensor must land in `BigGANGenerator`, computed independently of the converter."""
    num_blocks = len(BIGGAN_ARCHITECTURES[resolution]["channel_multipliers"]) - 1
    attention_block = {256: 4, 512: 3}[resolution]
    sd = state_dict
    expected = {
        "class_embedding.weight": sd["shared.weight"],
        "input_projection.weight": reference_sn_weight(sd, "linear"),
        "input_projection.bias": sd["linear.bias"],
        "attention.to_query.weight": reference_sn_weight(sd, f"blocks.{attention_block}.1.theta"),
        "attention.to_key.weight": reference_sn_weight(sd, f"blocks.{attention_block}.1.phi"),
        "attention.to_value.weight": reference_sn_weight(sd, f"blocks.{attention_block}.1.g"),
        "attention.to_out.weight": reference_sn_weight(sd, f"blocks.{attention_block}.1.o"),
        "attention.residual_scale": sd[f"blocks.{attention_block}.1.gamma"],
        "output_norm.weight": sd["output_layer.0.gain"],
        "output_norm.bias": sd["output_layer.0.bias"],
        "output_norm.running_mean": sd["output_layer.0.stored_mean"],
        "output_norm.running_var": sd["output_layer.0.stored_var"],
        "to_rgb.weight": reference_sn_weight(sd, "output_layer.2"),
        "to_rgb.bias": sd["output_layer.2.bias"],
    }
    for index in range(num_blocks):
        source, target = f"blocks.{index}.0", f"blocks.{index}"
        for conv_source, conv_target in (("conv1", "conv1"), ("conv2", "conv2"), ("conv_sc", "shortcut")):
            expected[f"{target}.{conv_target}.weight"] = reference_sn_weight(sd, f"{source}.{conv_source}")
            expected[f"{target}.{conv_target}.bias"] = sd[f"{source}.{conv_source}.bias"]
        for number in (1, 2):
            norm_source, norm_target = f"{source}.bn{number}", f"{target}.norm{number}"
            expected[f"{norm_target}.scale.weight"] = reference_sn_weight(sd, f"{norm_source}.gain")
            expected[f"{norm_target}.shift.weight"] = reference_sn_weight(sd, f"{norm_source}.bias")
            expected[f"{norm_target}.running_mean"] = sd[f"{norm_source}.stored_mean"]
            expected[f"{norm_target}.running_var"] = sd[f"{norm_source}.stored_var"]
    return expected


# One resolution with the logged singular values `sv0`, one without (as the TF-Hub converter writes the files).
@pytest.mark.parametrize(
    "resolution, num_keys, num_keys_without_sv0, keep_sv0", [(256, 194, 146, True), (512, 222, 167, False)]
)
def test_biggan_conversion_places_every_tensor_full_size(resolution, num_keys, num_keys_without_sv0, keep_sv0):
    state_dict = biggan_pytorch_state_dict(resolution)
    assert (len(state_dict), len(without_sv0(state_dict))) == (num_keys, num_keys_without_sv0)
    if not keep_sv0:
        state_dict = without_sv0(state_dict)
    model = convert_biggan_pytorch(state_dict, resolution)
    assert model.config.channel_width == 96 and model.resolution == resolution

    converted = model.state_dict()
    expected = expected_biggan_tensors(state_dict, resolution)
    assert sorted(converted) == sorted(expected)
    for name, tensor in converted.items():
        assert tensor.dtype == torch.float32
        torch.testing.assert_close(tensor, expected[name], msg=name)

    # Full-size shapes on the meta device (the numerics are checked at reduced width below).
    model = model.to("meta")
    images = model(torch.zeros(2, model.config.latent_dim, device="meta"), torch.zeros(2, 128, device="meta"))
    assert images.shape == (2, 3, resolution, resolution)


@pytest.mark.parametrize("resolution", [256, 512])
def test_biggan_matches_reference_forward(resolution):
    # A narrow network (channel_width 8, read from the checkpoint) keeps the float64 reference fast; every other
    # dimension is the released one.
    state_dict = biggan_pytorch_state_dict(resolution, channel_width=8)
    model = convert_biggan_pytorch(state_dict, resolution)
    assert model.config.channel_width == 8
    z = torch.randn(1, model.config.latent_dim).clamp(-2, 2)
    y = state_dict["shared.weight"][[417]]
    with torch.no_grad():
        images = model(z, y)
    expected = reference_biggan_forward(state_dict, z, y, resolution)
    assert (expected.abs() < 0.99).float().mean() > 0.9, "outputs saturated: the comparison would be vacuous"
    assert (images.double() - expected).abs().max() <= 1e-5


@pytest.fixture(scope="module")
def small_biggan_state_dict():
    return biggan_pytorch_state_dict(256, channel_width=8)


@pytest.fixture(scope="module")
def small_biggan(small_biggan_state_dict):
    return convert_biggan_pytorch(small_biggan_state_dict, 256)


def test_biggan_sv0_entries_are_optional_and_unused(small_biggan_state_dict, small_biggan):
    converted = convert_biggan_pytorch(without_sv0(small_biggan_state_dict), 256).state_dict()
    assert all(torch.equal(tensor, converted[name]) for name, tensor in small_biggan.state_dict().items())


def test_biggan_conversion_script(tmp_path, small_biggan_state_dict, small_biggan):
    checkpoint = tmp_path / "biggan-256.pth"
    torch.save(without_sv0(small_biggan_state_dict), checkpoint)
    dump_path = tmp_path / "converted"
    script = load_script("convert_biggan_pytorch_to_diffusers")
    script.main(["--checkpoint_path", str(checkpoint), "--dump_path", str(dump_path)])  # 256 px, from its 6 blocks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["biggan-256.pth", "converted"]
    reloaded = BigGANGenerator.from_pretrained(dump_path)
    assert comparable_config(reloaded) == comparable_config(small_biggan)
    expected = small_biggan.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in reloaded.state_dict().items())


def test_biggan_converter_rejects_missing_and_misshaped_keys(small_biggan_state_dict):
    state_dict = dict(small_biggan_state_dict)
    del state_dict["blocks.3.0.bn2.gain.u0"]
    del state_dict["output_layer.2.bias"]
    state_dict["blocks.4.1.theta.weight"] = torch.zeros(2, 16, 3, 3)
    state_dict["blocks.0.0.conv1.sv0"] = torch.ones(2)
    state_dict["embed.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as error:
        convert_biggan_pytorch(state_dict, 256)
    message = str(error.value)
    assert "2 missing keys:\n  blocks.3.0.bn2.gain.u0\n  output_layer.2.bias" in message
    assert "blocks.4.1.theta.weight: expected (2, 16, 1, 1), found (2, 16, 3, 3)" in message
    assert "blocks.0.0.conv1.sv0: expected (1,), found (2,)" in message
    assert "1 unexpected keys:\n  embed.weight" in message
    # The architecture is that of the requested resolution: a 256 px checkpoint is not a 512 px one.
    with pytest.raises(CheckpointMismatchError, match="missing keys"):
        convert_biggan_pytorch(small_biggan_state_dict, 512)


def test_biggan_generate_sample_latents_and_round_trip(tmp_path, small_biggan, small_biggan_state_dict):
    assert [(spec.name, spec.dim, spec.prior, spec.threshold) for spec in small_biggan.latent_specs] == [
        ("z", 140, "normal", 2.0),
        ("y", 128, "normal", None),
    ]
    latents = small_biggan.sample_latents(4, generator=torch.Generator().manual_seed(0))
    parts = small_biggan.split_latents(latents)
    assert parts["z"].abs().max() <= 2.0
    table = small_biggan_state_dict["shared.weight"]
    assert all((row == table).all(dim=1).any() for row in parts["y"])
    batch = small_biggan.sample_latents(2, generator=[torch.Generator().manual_seed(seed) for seed in (1, 2)])
    singles = [small_biggan.sample_latents(1, generator=torch.Generator().manual_seed(seed)) for seed in (1, 2)]
    assert torch.equal(batch, torch.cat(singles))

    # One sample: at 256 px the attention map alone is 16384 x 4096 per sample.
    latents = latents[:1]
    with torch.no_grad():
        images = small_biggan.generate(latents)
        assert torch.equal(images, small_biggan(parts["z"][:1], parts["y"][:1]))
    assert images.shape == (1, 3, 256, 256)

    save_pretrained_atomically(small_biggan, tmp_path / "model")
    reloaded = BigGANGenerator.from_pretrained(tmp_path / "model")
    assert all(torch.equal(tensor, small_biggan.state_dict()[name]) for name, tensor in reloaded.state_dict().items())
    with torch.no_grad():
        # Same weights; CPU kernels may still pick a different summation order for differently aligned buffers.
        torch.testing.assert_close(reloaded.generate(latents), images, rtol=0, atol=1e-6)


def test_biggan_pytorch_file_without_a_state_dict_is_refused(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "G.pth")
    with pytest.raises(CheckpointMismatchError, match="Expected a bare state dict in .*G.pth, found <class 'list'>"):
        load_biggan_pytorch(tmp_path / "G.pth", resolution=256)
