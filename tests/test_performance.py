"""Properties the speed features and the benchmark suite rely on: batching changes no result, mixed precision keeps
float32 state, compiled, channels_last and batch-norm-folded energies equal eager ones, and no autograd graph outlives
its step."""

import gc
import os
import shutil
import weakref

import pytest
import torch

from tron_pipelines import LangevinScheduler


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def call(pipe, **kwargs):
    kwargs.setdefault("num_inference_steps", 4)
    kwargs.setdefault("num_augmentations", 3)
    kwargs.setdefault("output_type", "pt")
    return pipe(**kwargs)


# Batched vs one at a time -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("initialization", ["translator", "translator_mean", "prior"])
def test_batched_path_matches_one_image_at_a_time(classifier_pipe, initialization):
    # The benchmark's one-at-a-time baseline: same conditions, same seeds, one call per image.
    classifier_pipe.scheduler = LangevinScheduler(step_size=0.3, noise_std=0.01, momentum=0.5)
    labels = [0, 3, 3]
    batch = call(
        classifier_pipe,
        class_labels=labels,
        initialization=initialization,
        generator=[seeded(10 + i) for i in range(len(labels))],
    )
    for index, label in enumerate(labels):
        single = call(classifier_pipe, class_labels=label, initialization=initialization, generator=seeded(10 + index))
        torch.testing.assert_close(batch.images[index], single.images[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(batch.latents[index], single.latents[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(batch.energies[index], single.energies[0], atol=1e-4, rtol=1e-4)


def test_batched_clip_path_with_auxiliary_latents_matches_one_at_a_time(clip_pipe):
    # translator_mean adds per-dimension mixture logits driven by Adam: the auxiliary path must not mix samples either.
    prompts = ["a bold seven", "dog"]
    batch = call(clip_pipe, prompt=prompts, initialization="translator_mean", generator=[seeded(i) for i in range(2)])
    for index, prompt in enumerate(prompts):
        single = call(clip_pipe, prompt=prompt, initialization="translator_mean", generator=seeded(index))
        torch.testing.assert_close(batch.images[index], single.images[0], atol=1e-4, rtol=0)


def test_snapshot_after_t_steps_equals_a_t_step_run(classifier_pipe):
    # The quality benchmark runs the longest T once and snapshots shorter T from the callback.
    classifier_pipe.scheduler = LangevinScheduler(step_size=0.3, noise_std=0.01, momentum=0.5)
    snapshots = {}

    def snapshot(pipe, step, timestep, tensors):
        snapshots[step + 1] = tensors["latents"].clone()
        return {}

    call(
        classifier_pipe,
        class_labels=[1, 2],
        num_inference_steps=6,
        generator=[seeded(0), seeded(1)],
        callback_on_step_end=snapshot,
    )
    short = call(classifier_pipe, class_labels=[1, 2], num_inference_steps=3, generator=[seeded(0), seeded(1)])
    torch.testing.assert_close(snapshots[3], short.latents)


# Mixed precision --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dtype",
    [
        torch.bfloat16,
        pytest.param(
            torch.float16, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast needs a GPU")
        ),
    ],
)
def test_mixed_precision_runs_and_keeps_float32_state(classifier_pipe, dtype):
    device = "cuda" if dtype == torch.float16 else "cpu"
    classifier_pipe.to(device)

    class RecordingScheduler(LangevinScheduler):
        seen = []  # a class attribute: shared with the per-call copies of the scheduler that the pipeline steps

        def step(self, model_output, timestep, sample, *args, **kwargs):
            output = super().step(model_output, timestep, sample, *args, **kwargs)
            self.seen.append((model_output.dtype, sample.dtype, self._momentum_buffer.dtype, output.prev_sample.dtype))
            return output

    classifier_pipe.scheduler = RecordingScheduler(step_size=0.3, noise_std=0.01, momentum=0.5)
    generator = torch.Generator(device).manual_seed(0)
    low = call(classifier_pipe, class_labels=[0, 1, 2], autocast_dtype=dtype, generator=generator)
    full = call(classifier_pipe, class_labels=[0, 1, 2], generator=torch.Generator(device).manual_seed(0))
    assert low.latents.dtype == torch.float32 and low.energies.dtype == torch.float32
    assert RecordingScheduler.seen and all(dtypes == (torch.float32,) * 4 for dtypes in RecordingScheduler.seen)
    # Reduced precision in G and f moves the trajectory a little, not the outcome: measured energy differences of
    # 0.005-0.03 (energies 0.7-3.7) for bf16 on CPU, where float32 rounding alone would leave about 1e-6.
    difference = (low.energies - full.energies).abs()
    assert (difference < 0.06).all(), difference
    if dtype == torch.bfloat16:
        assert difference.max() > 1e-3, difference


# Compiled energy --------------------------------------------------------------------------------------------------
def test_energy_compile_hands_the_energy_to_torch_compile_and_back(classifier_pipe):
    # A recording backend (the graph runs as traced) shows that the energy goes through torch.compile with the
    # caller's arguments, cheaply; the compiled graphs themselves are compared with eager below.
    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    def energies():
        return call(
            classifier_pipe, class_labels=[1], num_inference_steps=0, num_augmentations=0, generator=seeded(0)
        ).energies

    eager = energies()
    torch._dynamo.reset()
    try:
        classifier_pipe.enable_energy_compile(backend=recording_backend)
        compiled = energies()
        assert graphs, "the energy did not go through torch.compile"
        torch.testing.assert_close(compiled, eager, atol=1e-6, rtol=1e-6)
        classifier_pipe.disable_energy_compile()
        count = len(graphs)
        torch.testing.assert_close(energies(), eager, rtol=0, atol=0)
        assert len(graphs) == count
    finally:
        torch._dynamo.reset()


def test_compiled_energy_graph_matches_eager(classifier_pipe):
    # aot_eager traces the energy with Dynamo and splits forward/backward with AOTAutograd exactly as the default
    # backend does, without inductor's code generation, so it runs in seconds.
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()  # Dynamo's counters are process-wide and outlive reset(): count this test's graphs only
    eager = call(classifier_pipe, class_labels=[0, 1, 2], generator=seeded(0))
    classifier_pipe.enable_energy_compile(backend="aot_eager")
    compiled = call(classifier_pipe, class_labels=[0, 1, 2], generator=seeded(0))
    graphs_after_first_call = counters["stats"]["unique_graphs"]
    again = call(classifier_pipe, class_labels=[0, 1, 2], generator=seeded(0))
    torch.testing.assert_close(compiled.energies, eager.energies, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compiled.latents, eager.latents, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again.latents, compiled.latents)
    # One graph with gradients (the steps), one without (the final images); a new call recompiles nothing.
    assert graphs_after_first_call == 2 and counters["stats"]["unique_graphs"] == 2
    classifier_pipe.disable_energy_compile()
    torch.testing.assert_close(
        call(classifier_pipe, class_labels=[0, 1, 2], generator=seeded(0)).latents, eager.latents
    )


def _inductor_skip_reason() -> str | None:
    if os.environ.get("TRON_RUN_SLOW") != "1":
        return "inductor's first compile takes about a minute on 2 CPU cores; set TRON_RUN_SLOW=1 to run it"
    if not torch.cuda.is_available() and shutil.which(os.environ.get("CXX", "g++")) is None:
        return "torch.compile's inductor backend needs a C++ compiler on CPU, and none was found"
    return None


@pytest.mark.skipif(_inductor_skip_reason() is not None, reason=str(_inductor_skip_reason()))
def test_inductor_compiled_energy_matches_eager(classifier_pipe):
    torch._dynamo.reset()
    eager = call(classifier_pipe, class_labels=[0, 1, 2], generator=seeded(0))
    classifier_pipe.enable_energy_compile()
    compiled = call(classifier_pipe, class_labels=[0, 1, 2], generator=seeded(0))
    torch.testing.assert_close(compiled.energies, eager.energies, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(compiled.latents, eager.latents, atol=1e-4, rtol=1e-4)


# channels_last ----------------------------------------------------------------------------------------------------
def test_channels_last_models_give_the_same_result(classifier_pipe):
    reference = call(classifier_pipe, class_labels=[0, 1, 2], generator=seeded(0))
    classifier_pipe.generator.to(memory_format=torch.channels_last)
    classifier_pipe.encoder.to(memory_format=torch.channels_last)
    assert classifier_pipe.encoder.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    out = call(classifier_pipe, class_labels=[0, 1, 2], generator=seeded(0))
    torch.testing.assert_close(out.energies, reference.energies, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.images, reference.images, atol=1e-4, rtol=0)


# Folded batch norms -----------------------------------------------------------------------------------------------
def _batch_norms(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_fused_batch_norm_gives_the_same_result_and_unfuses_exactly(classifier_pipe):
    reference = call(classifier_pipe, class_labels=[0, 1, 2], generator=seeded(0))
    originals = {
        name: {k: v.clone() for k, v in getattr(classifier_pipe, name).state_dict().items()}
        for name in ("generator", "encoder")
    }
    expected = len(_batch_norms(classifier_pipe.generator)) + len(_batch_norms(classifier_pipe.encoder))
    assert classifier_pipe.fuse_batch_norm() == expected == 5  # G: Linear+BN1d, 2 x ConvTranspose+BN; f: 2 x Conv+BN
    assert not _batch_norms(classifier_pipe.generator) and not _batch_norms(classifier_pipe.encoder)
    out = call(classifier_pipe, class_labels=[0, 1, 2], generator=seeded(0))
    torch.testing.assert_close(out.energies, reference.energies, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.images, reference.images, atol=1e-4, rtol=0)
    classifier_pipe.unfuse_batch_norm()
    for name, state in originals.items():
        restored = getattr(classifier_pipe, name).state_dict()
        assert restored.keys() == state.keys() and all(torch.equal(restored[k], v) for k, v in state.items())
    assert classifier_pipe.fuse_batch_norm(encoder=False) == 3
    # A model moved while folded gets its original layers back where it is now.
    classifier_pipe.generator.to(torch.float64)
    classifier_pipe.unfuse_batch_norm()
    assert {p.dtype for p in classifier_pipe.generator.parameters()} == {torch.float64}
    assert all(
        b.dtype == torch.float64
        for m in _batch_norms(classifier_pipe.generator)
        for b in (m.running_mean, m.running_var)
    )


def test_save_pretrained_while_fused_writes_the_original_weights(classifier_pipe, tmp_path):
    from tron_pipelines import TronPipeline

    original = {k: v.clone() for k, v in classifier_pipe.generator.state_dict().items()}
    classifier_pipe.fuse_batch_norm()
    # The models carry their folds: a pipeline built from the same components saves and unfuses them too.
    rebuilt = TronPipeline(**classifier_pipe.components)
    rebuilt.save_pretrained(tmp_path / "saved")
    assert not _batch_norms(classifier_pipe.generator)  # still folded after the save
    loaded = TronPipeline.from_pretrained(tmp_path / "saved").generator.state_dict()
    assert loaded.keys() == original.keys() and all(torch.equal(loaded[k], v) for k, v in original.items())
    rebuilt.unfuse_batch_norm()
    assert len(_batch_norms(classifier_pipe.generator)) == 3


def test_fuse_batch_norm_refuses_training_mode_and_warns_when_nothing_folds(classifier_pipe, clip_pipe, caplog):
    classifier_pipe.encoder.train()
    with pytest.raises(ValueError, match="training mode"):
        classifier_pipe.fuse_batch_norm()
    classifier_pipe.encoder.eval()
    classifier_pipe.encoder.features[1].train()  # one BatchNorm left training inside an eval model
    with pytest.raises(ValueError, match="training mode"):
        classifier_pipe.fuse_batch_norm()
    # Both models are checked before either is changed.
    assert len(_batch_norms(classifier_pipe.generator)) == 3 and len(_batch_norms(classifier_pipe.encoder)) == 2
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.enable_propagation()
    try:
        assert clip_pipe.fuse_batch_norm(generator=False) == 0  # CLIP has LayerNorms only
        assert (
            "nothing folded in ['encoder']: no BatchNorm directly after a linear or convolution layer." in caplog.text
        )
        classifier_pipe.encoder.features[1].eval()
        assert classifier_pipe.fuse_batch_norm() == 5
        assert classifier_pipe.fuse_batch_norm() == 0
        assert "nothing folded in ['generator', 'encoder']: ['generator', 'encoder'] folded already." in caplog.text
    finally:
        diffusers_logging.disable_propagation()


# Memory -----------------------------------------------------------------------------------------------------------
def test_no_autograd_state_outlives_its_step(classifier_pipe):
    # Every tensor autograd saves for a step's backward must be freed by the next step: a graph kept from step to
    # step would make memory grow with the number of steps. Weights and batch-norm statistics are saved as
    # themselves and always alive.
    models = (classifier_pipe.generator, classifier_pipe.encoder)
    model_state = {id(t) for model in models for t in [*model.parameters(), *model.buffers()]}
    saved_per_step, step_index = {}, [0]

    def pack(tensor):
        if id(tensor) not in model_state:
            saved_per_step.setdefault(step_index[0], []).append(weakref.ref(tensor))
        return tensor

    alive_after_step = []

    def check(pipe, step, timestep, tensors):
        gc.collect()
        alive_after_step.append(sum(ref() is not None for ref in saved_per_step.get(step, [])))
        step_index[0] = step + 1
        assert not tensors["latents"].requires_grad and tensors["latents"].grad_fn is None
        return {}

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        call(
            classifier_pipe,
            class_labels=[0, 1],
            num_inference_steps=5,
            generator=seeded(0),
            callback_on_step_end=check,
        )
    assert len(saved_per_step) == 5 and all(len(refs) > 0 for refs in saved_per_step.values())
    assert alive_after_step == [0] * 5
