"""StyleGAN-XL: the generator, its converter and the dill network-pickle reader, against upstream outputs.

`tests/fixtures/stylegan-xl/` is a tiny class-conditional StyleGAN-XL (a 16 px StyleGAN3-T stem and two
super-resolution stages, 64 px, 10 classes, 8 ws) written by autonomousvision/stylegan-xl's own code and training loop
(``dill.dump`` of the snapshot dict), with the upstream outputs for stored inputs and TR0N's own calls (its
``config.json`` says how each was made). The port loads it through the converter only and must reproduce every
output: images within rtol = atol = 1e-4, latents within atol = 1e-5.
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from test_stylegan import IMAGE_TOLERANCE, LATENT_TOLERANCE, load_script, with_settings

from tron_pipelines.conversion.checkpoints import CheckpointMismatchError
from tron_pipelines.conversion.network_pickle import TorchModuleRecord, UnsafePickleError, load_network_pickle
from tron_pipelines.conversion.stylegan import convert_nvlabs_network, load_nvlabs_pickle, network_architecture
from tron_pipelines.models import StyleGAN2Generator, StyleGANXLGenerator
from tron_pipelines.models.stylegan_xl import imagenet_superres_stages, stylegan_xl_synthesis_layers


FIXTURE = Path(__file__).resolve().parent / "fixtures" / "stylegan-xl"
SGXL_PICKLE = FIXTURE / "network-snapshot-stylegan-xl-dev.pkl"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(FIXTURE / "reference.safetensors")


@pytest.fixture(scope="module")
def stylegan_xl():
    return load_nvlabs_pickle(SGXL_PICKLE)


# --------------------------------------------------------------------------------------------------------------------
# Upstream outputs


@torch.no_grad()
def test_the_converted_network_reproduces_every_upstream_output(stylegan_xl, ref):
    model = stylegan_xl
    assert (model.num_ws, model.resolution, model.config.num_classes) == (8, 64, 10)
    torch.testing.assert_close(model.mapping.w_avg, ref["w_avg"], rtol=0, atol=0)
    # Upstream's one-hot `c` and plain class indices are the same input.
    for classes in (ref["c"], ref["class_idx"]):
        torch.testing.assert_close(
            model.map_latents(ref["z"], classes, truncation_psi=1), ref["ws"], **LATENT_TOLERANCE
        )
    torch.testing.assert_close(model.map_latents(ref["z"], ref["c"])[:, 0], ref["w"], **LATENT_TOLERANCE)
    torch.testing.assert_close(model.map_latents(ref["z"], ref["c"], 0.7), ref["ws_psi07"], **LATENT_TOLERANCE)
    torch.testing.assert_close(model(ref["z"], ref["c"]), ref["img"], **IMAGE_TOLERANCE)
    torch.testing.assert_close(model(ref["z"], ref["class_idx"], 0.7), ref["img_psi07"], **IMAGE_TOLERANCE)
    torch.testing.assert_close(model.synthesize(ref["ws_given"]), ref["img_from_ws"], **IMAGE_TOLERANCE)
    broadcast = ref["w_given"].unsqueeze(1).expand(-1, model.num_ws, -1)
    torch.testing.assert_close(model.synthesize(broadcast), ref["img_from_w_given_noclamp"], **IMAGE_TOLERANCE)
    # Truncation is per class: psi 0.7 moves each sample's ws towards its own class's centre.
    assert (ref["ws_psi07"] - ref["ws"]).abs().max() > 0.1


@torch.no_grad()
def test_tr0n_calls_are_reproduced(stylegan_xl, ref):
    """TR0N's synthetic pairs (w = mapping(z, one-hot y) at psi 1, the first ws) and its generator call (one w
    broadcast to every layer, synthesis, clamp) are the port's `sample_latents` prior and `generate`."""
    model = stylegan_xl
    torch.testing.assert_close(model.map_latents(ref["z"], ref["class_idx"])[:, 0], ref["w_tr0n"], **LATENT_TOLERANCE)
    torch.testing.assert_close(model.generate(ref["w_tr0n"]), ref["img_tr0n"], **IMAGE_TOLERANCE)
    torch.testing.assert_close(model.generate(ref["w_given"]), ref["img_tr0n_w_given"], **IMAGE_TOLERANCE)


@torch.no_grad()
def test_the_non_ema_generator_converts_too(ref):
    model = load_nvlabs_pickle(SGXL_PICKLE, network_key="G")
    torch.testing.assert_close(model(ref["z"], ref["c"]), ref["img_G_nonema"], **IMAGE_TOLERANCE)


def test_the_published_growth_is_replayed_from_its_hyperparameters(stylegan_xl):
    """The band of every layer as the converter read it from the pickle equals the progressive growing replayed from
    the fixture's train.py arguments (stem 16 px, 4 layers; two stages of 3 head layers, x2)."""
    config = json.loads((FIXTURE / "config.json").read_text())["G_kwargs"]
    stem = config["stem"]
    replayed = stylegan_xl_synthesis_layers(
        stem_resolution=stem["img_resolution"],
        stem_num_layers=stem["num_layers"],
        superres_stages=[(stage["head_layers"], stage["up_factor"]) for stage in config["superres_stages"]],
        channel_base=stem["channel_base"],
        channel_max=stem["channel_max"],
    )
    assert replayed == stylegan_xl.config.synthesis_layers
    # ImageNet: TR0N hard-codes num_ws = 37 for imagenet512.pkl; imagenet256.pkl has 32 (the class default).
    assert len(stylegan_xl_synthesis_layers(superres_stages=imagenet_superres_stages(512))) + 1 == 37
    with torch.device("meta"):
        imagenet256 = StyleGANXLGenerator()
    assert (imagenet256.num_ws, imagenet256.resolution, imagenet256.latent_dim) == (32, 256, 512)
    assert imagenet256.mapping.embed.weight.shape == (1000, 320) and imagenet256.mapping.w_avg.shape == (1000, 512)


# --------------------------------------------------------------------------------------------------------------------
# TR0N latents


def test_the_w_prior_draws_z_then_a_uniform_class_per_generator(stylegan_xl):
    psi = 0.6
    model = with_settings(stylegan_xl, truncation_psi=psi)
    seeds = (3, 4, 5)
    latents = model.sample_latents(3, generator=[torch.Generator().manual_seed(seed) for seed in seeds])
    z, classes = [], []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        z.append(torch.randn(1, 16, generator=generator))
        classes.append(torch.randint(10, (1,), generator=generator))
    z, classes = torch.cat(z), torch.cat(classes)
    with torch.no_grad():
        w = model.map_latents(z, classes, truncation_psi=1)[:, 0]
    centre = model.mapping.w_avg[classes]
    torch.testing.assert_close(latents, centre + psi * (w - centre), rtol=1e-6, atol=1e-6)
    single = model.sample_latents(1, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(single[0], latents[2], rtol=1e-6, atol=1e-6)


@torch.no_grad()
def test_w_plus_and_z_latents_render_like_upstream(stylegan_xl, ref):
    plus = with_settings(stylegan_xl, latent_space="w+")
    assert plus.latent_dim == 8 * 32
    torch.testing.assert_close(
        plus.generate(ref["ws_given"].flatten(1)), ref["img_from_ws"].clamp(-1, 1), **IMAGE_TOLERANCE
    )
    # z with the class's embedding row as a continuous auxiliary latent y: upstream's G(z, c), at psi 1 and 0.7 (the
    # truncation centre is the class whose row is nearest to y).
    rows = stylegan_xl.mapping.embed.weight[ref["class_idx"]]
    for psi, expected in ((1.0, ref["img"]), (0.7, ref["img_psi07"])):
        z_space = with_settings(stylegan_xl, latent_space="z", truncation_psi=psi)
        assert [(spec.name, spec.dim) for spec in z_space.latent_specs] == [("z", 16), ("y", 16)]
        torch.testing.assert_close(
            z_space.generate(torch.cat([ref["z"], rows], dim=1)), expected.clamp(-1, 1), **IMAGE_TOLERANCE
        )
    drawn = z_space.sample_latents(4, generator=torch.Generator().manual_seed(0))
    z_part, y_part = drawn.split([16, 16], dim=1)
    assert (torch.cdist(y_part, stylegan_xl.mapping.embed.weight).min(dim=1).values == 0).all()  # table rows


def test_gradients_reach_every_latent(stylegan_xl, ref):
    w = ref["w_given"].clone().requires_grad_(True)
    stylegan_xl.generate(w).sum().backward()
    assert torch.isfinite(w.grad).all() and (w.grad.abs().sum(dim=1) > 0).all()
    z_space = with_settings(stylegan_xl, latent_space="z")
    rows = stylegan_xl.mapping.embed.weight[ref["class_idx"]].detach()
    latents = torch.cat([ref["z"], rows], dim=1).requires_grad_(True)
    z_space.generate(latents).sum().backward()
    z_grad, y_grad = latents.grad.split([16, 16], dim=1)
    assert (z_grad.abs().sum(dim=1) > 0).all() and (y_grad.abs().sum(dim=1) > 0).all()


def test_gradient_checkpointing_recomputes_each_layer_with_the_same_gradients(ref):
    model = load_nvlabs_pickle(SGXL_PICKLE)

    def gradient():
        w = ref["w_given"].clone().requires_grad_(True)
        (model.generate(w) * ref["img_tr0n"]).sum().backward()
        return w.grad

    plain = gradient()
    model.enable_gradient_checkpointing()
    calls = []
    hooks = [layer.register_forward_pre_hook(lambda *_: calls.append(1)) for layer in model.layers]
    torch.testing.assert_close(gradient(), plain, rtol=0, atol=0)
    assert len(calls) == 2 * len(model.layers)  # every layer ran again in the backward pass
    for hook in hooks:
        hook.remove()


def test_save_and_load_round_trip(stylegan_xl, ref, tmp_path):
    stylegan_xl.save_pretrained(tmp_path / "sgxl")
    reloaded = StyleGANXLGenerator.from_pretrained(tmp_path / "sgxl")
    assert reloaded.config.synthesis_layers == stylegan_xl.config.synthesis_layers  # the bands survive JSON exactly
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ref["z"], ref["c"]), stylegan_xl(ref["z"], ref["c"]), rtol=0, atol=0)


@torch.no_grad()
def test_conversion_script_writes_a_loadable_folder(ref, tmp_path):
    load_script("convert_stylegan_to_diffusers").main(
        ["--checkpoint_path", str(SGXL_PICKLE), "--dump_path", str(tmp_path / "generator"), "--truncation_psi", "0.7"]
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["generator"]
    model = StyleGANXLGenerator.from_pretrained(tmp_path / "generator")
    assert model.config.truncation_psi == 0.7 and not model.training
    torch.testing.assert_close(model(ref["z"], ref["c"], truncation_psi=1), ref["img"], **IMAGE_TOLERANCE)
    torch.testing.assert_close(model(ref["z"], ref["c"]), ref["img_psi07"], **IMAGE_TOLERANCE)


# --------------------------------------------------------------------------------------------------------------------
# The dill pickle is read as data


def test_the_dill_snapshot_is_read_as_data():
    snapshot = load_network_pickle(SGXL_PICKLE)
    assert sorted(snapshot) == ["D", "G", "G_ema", "augment_pipe", "progress", "training_set_kwargs"]
    network = snapshot["G_ema"]
    assert network.class_name == "SuperresGenerator" and network_architecture(network) == "stylegan-xl"
    assert isinstance(network.children["mapping"].children["embed"], TorchModuleRecord)
    # dill's array wrapper gave plain numeric arrays (the layers' sizes are numpy arrays upstream).
    assert network.children["synthesis"].children["L5_84_4"].attribute("out_size").tolist() == [84, 84]
    assert not {"torch_utils", "dnnlib", "training", "legacy"} & set(sys.modules)


def dill_style_payloads(sentinel: Path) -> dict[str, bytes]:
    """Hand-written pickles asking for globals that a dill snapshot could use to run code; the first creates
    ``sentinel`` under dill's own unpickler (``dill._dill._create_array`` calls its first argument)."""
    touch = f"touch {sentinel}".encode()
    return {
        # dill's array wrapper `_create_array(f, args, state, npdict)` calls `f(*args)`: here f is os.system.
        "os.system": b"cdill._dill\n_create_array\n(cos\nsystem\n(V" + touch + b"\ntNNtR.",
        # dill pickles functions by value (code objects): a planted function in the snapshot dict.
        "dill._dill._create_function": b"(dVG\ncdill._dill\n_create_function\n(V" + touch + b"\ntRs.",
        # The mapping network's class embedding, but built by calling the class with arguments (a REDUCE, not the
        # empty NEWOBJ that pickles a module): the stand-in takes none.
        "torch.nn.modules.sparse.Embedding": b"ctorch.nn.modules.sparse\nEmbedding\n(V" + touch + b"\ntR.",
    }


@pytest.mark.parametrize(
    "name,error",
    [
        ("os.system", "Refusing to load `os.system`"),
        ("dill._dill._create_function", "Refusing to load `dill._dill._create_function`"),
        ("torch.nn.modules.sparse.Embedding", "torch.nn.Embedding takes no constructor"),
    ],
)
def test_a_malicious_dill_pickle_is_refused_without_running_anything(name, error, tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(dill_style_payloads(sentinel)[name])
    with pytest.raises(UnsafePickleError, match=error):
        load_network_pickle(path)
    with pytest.raises(UnsafePickleError, match=error):
        load_nvlabs_pickle(path)
    assert not sentinel.exists()


# --------------------------------------------------------------------------------------------------------------------
# Checks of the converter and of the inputs


def test_dills_array_wrapper_rebuilds_numeric_numpy_arrays_only(tmp_path):
    path = tmp_path / "odd.pkl"
    # An allowed global (numpy.dtype) passed as the array reconstructor that dill's wrapper would call.
    path.write_bytes(b"cdill._dill\n_create_array\n(cnumpy\ndtype\n(Vf8\ntNNtR.")
    with pytest.raises(UnsafePickleError, match="dill's array wrapper must rebuild a numpy array"):
        load_network_pickle(path)


def test_layers_are_checked_against_the_resampling_their_bands_imply():
    network = load_network_pickle(SGXL_PICKLE)["G_ema"]
    network.children["synthesis"].children["L5_84_4"].state["padding"] = [-36, -42, -36, -42]
    with pytest.raises(CheckpointMismatchError, match=r"L5_84_4\.padding: configuration implies \(-36, -43"):
        convert_nvlabs_network(network)


def test_mismatched_tensors_are_all_listed():
    network = load_network_pickle(SGXL_PICKLE)["G_ema"]
    mapping = network.children["mapping"]
    mapping.state["_buffers"]["w_avg"] = torch.zeros(32)  # an unconditional centre
    del mapping.children["embed_proj"].state["_parameters"]["bias"]
    with pytest.raises(CheckpointMismatchError) as error:
        convert_nvlabs_network(network)
    assert "mapping.w_avg: expected (10, 32), found (32,)" in str(error.value)
    assert "mapping.embed_proj.bias" in str(error.value)


def test_unsupported_settings_are_named():
    network = load_network_pickle(SGXL_PICKLE)["G_ema"]
    network.state["c_dim"] = 0
    with pytest.raises(ValueError, match="c_dim=0: unconditional StyleGAN-XL"):
        convert_nvlabs_network(network)
    with pytest.raises(ValueError, match="StyleGAN-XL has no noise inputs"):
        load_nvlabs_pickle(SGXL_PICKLE, noise_mode="none")


def test_bad_inputs_are_refused(stylegan_xl, ref):
    with pytest.raises(ValueError, match=r"`class_labels` must be class indices \(batch,\) or one-hot \(batch, 10\)"):
        stylegan_xl.map_latents(ref["z"], ref["c"][:, :5])
    with pytest.raises(ValueError, match=r"Class labels must be in \[0, 10\), got \[1, 10, 2\]"):
        stylegan_xl.map_latents(ref["z"], torch.tensor([1, 10, 2]))
    with pytest.raises(ValueError, match="`latent_space` must be one of"):
        StyleGAN2Generator(latent_space="z")  # z with a class is StyleGAN-XL's only
    layers = [dict(band) for band in stylegan_xl.config.synthesis_layers]
    layers[3]["in_size"] = 40
    with pytest.raises(ValueError, match=r"`synthesis_layers\[3\]` does not take layer 2's output: \['size'\]"):
        StyleGANXLGenerator(z_dim=16, w_dim=32, num_classes=10, class_embed_dim=16, synthesis_layers=layers)
