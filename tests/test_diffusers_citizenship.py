"""What a diffusers user expects of a pipeline: re-entrant calls, `from_pipe`, memory hooks refused up front."""

import copy
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import HUB_COMMIT, fill_hub_cache
from diffusers import DiffusionPipeline
from diffusers.hooks import apply_layerwise_casting
from diffusers.utils import logging as diffusers_logging

import tron_pipelines
from tron_pipelines import GradientDescentScheduler, LangevinScheduler, TranslatorModel, TronPipeline
from tron_pipelines.pipelines.loading import PipelineNotFoundError
from tron_pipelines.pipelines.pipeline_tron import per_layer_memory_hooks


def seeded(count: int, offset: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(offset + i) for i in range(count)]


# Two different calls: different prompts, batch sizes and seeds, so shared Langevin state would be caught (mixed
# momentum buffers of other shapes or values).
FIRST = {"prompt": "a bold seven", "num_images_per_prompt": 1, "offset": 0}
SECOND = {"prompt": ["a red car", "a thin three"], "num_images_per_prompt": 2, "offset": 100}
STEPS = 4


def run(pipe, call, **kwargs):
    count = (1 if isinstance(call["prompt"], str) else len(call["prompt"])) * call["num_images_per_prompt"]
    return pipe(
        prompt=call["prompt"],
        num_images_per_prompt=call["num_images_per_prompt"],
        generator=seeded(count, call["offset"]),
        num_inference_steps=STEPS,
        output_type="np",
        return_energy_trace=True,
        **kwargs,
    )


def in_threads(*targets):
    results, errors = [None] * len(targets), []

    def wrap(index, target):
        try:
            results[index] = target()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test thread
            errors.append(error)

    threads = [threading.Thread(target=wrap, args=(index, target)) for index, target in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results


def test_concurrent_calls_equal_sequential_calls(clip_pipe):
    assert clip_pipe.scheduler.config.momentum > 0  # state that a shared scheduler would mix up
    sequential = [run(clip_pipe, FIRST), run(clip_pipe, SECOND)]

    # Both calls wait for each other after every step, so their Langevin loops really interleave.
    barrier = threading.Barrier(2, timeout=60)

    def lockstep(pipe, step, timestep, tensors):
        barrier.wait()
        return tensors

    concurrent = in_threads(
        lambda: run(clip_pipe, FIRST, callback_on_step_end=lockstep),
        lambda: run(clip_pipe, SECOND, callback_on_step_end=lockstep),
    )
    # Equal up to float rounding: two threads share torch's intra-op thread pool, which may split a reduction
    # differently (measured: up to 1.5e-7). Shared Langevin state would differ by orders of magnitude more, or crash.
    for alone, together in zip(sequential, concurrent):
        torch.testing.assert_close(together.latents, alone.latents, rtol=0, atol=1e-5)
        torch.testing.assert_close(together.energy_trace, alone.energy_trace, rtol=0, atol=1e-5)
        np.testing.assert_allclose(together.images, alone.images, rtol=0, atol=1e-5)


def test_interrupt_stops_only_the_calling_thread(clip_pipe):
    expected_interrupted = run(clip_pipe, FIRST, callback_on_step_end=interrupt_at_first_step)
    expected_full = run(clip_pipe, SECOND)
    second_is_running = threading.Event()
    first_has_interrupted = threading.Event()

    def interrupt_then_wait(pipe, step, timestep, tensors):
        interrupt_at_first_step(pipe, step, timestep, tensors)
        first_has_interrupted.set()
        assert second_is_running.wait(60)
        return tensors

    def observe(pipe, step, timestep, tensors):
        if step == 0:
            assert first_has_interrupted.wait(60)
            assert not pipe.interrupt  # the other thread's interrupt is not this call's
        second_is_running.set()
        return tensors

    interrupted, full = in_threads(
        lambda: run(clip_pipe, FIRST, callback_on_step_end=interrupt_then_wait),
        lambda: run(clip_pipe, SECOND, callback_on_step_end=observe),
    )
    torch.testing.assert_close(interrupted.latents, expected_interrupted.latents, rtol=0, atol=1e-5)
    torch.testing.assert_close(full.latents, expected_full.latents, rtol=0, atol=1e-5)
    assert full.energy_trace.shape[0] == STEPS and interrupted.energy_trace.shape[0] == 1


def interrupt_at_first_step(pipe, step, timestep, tensors):
    pipe._interrupt = True
    return tensors


def test_a_call_leaves_the_configured_scheduler_untouched(clip_pipe):
    before = dict(vars(clip_pipe.scheduler))
    run(clip_pipe, FIRST)
    after = vars(clip_pipe.scheduler)
    assert before.keys() == after.keys()
    assert all(after[key] is value for key, value in before.items())


def test_a_pipeline_that_has_run_can_be_deep_copied(clip_pipe):
    first = run(clip_pipe, FIRST)  # leaves this thread's per-call state on the pipeline
    clone = copy.deepcopy(clip_pipe)
    assert clone.generator is not clip_pipe.generator
    torch.testing.assert_close(run(clone, FIRST).latents, first.latents, rtol=0, atol=0)


def test_from_pipe_shares_every_component(clip_pipe):
    new = TronPipeline.from_pipe(clip_pipe)
    for name, component in clip_pipe.components.items():
        assert getattr(new, name) is component, name
    assert new.generator.project[0].weight.data_ptr() == clip_pipe.generator.project[0].weight.data_ptr()
    assert dict(new.config) == dict(clip_pipe.config)
    torch.testing.assert_close(run(new, FIRST).latents, run(clip_pipe, FIRST).latents, rtol=0, atol=0)


def test_from_pipe_takes_replacements_and_settings(clip_pipe):
    greedy = LangevinScheduler.from_config(clip_pipe.scheduler.config, noise_std=0.0, momentum=0.0)
    torch.manual_seed(7)
    translator = TranslatorModel(**clip_pipe.translator.config).eval()
    new = TronPipeline.from_pipe(clip_pipe, scheduler=greedy, translator=translator, default_num_inference_steps=3)
    assert new.scheduler is greedy and new.translator is translator
    assert new.generator is clip_pipe.generator and new.encoder is clip_pipe.encoder
    assert new.config.default_num_inference_steps == 3 and clip_pipe.config.default_num_inference_steps == 10
    assert clip_pipe.scheduler is not greedy and clip_pipe.scheduler.config.noise_std == 0.01
    # The replacement is what runs: noise-free dynamics from the new translator's draws differ from the original's.
    assert not torch.allclose(run(new, FIRST).latents, run(clip_pipe, FIRST).latents)


def test_from_pipe_carries_settings_and_name_over(clip_pipe):
    # Settings the call does not replace come from the source pipeline, not from the defaults; so does its name.
    source = TronPipeline.from_pipe(
        clip_pipe, default_num_inference_steps=3, default_num_candidates=2, prompt_vocabulary="seven"
    )
    source.register_to_config(_name_or_path="org/tron-seven")
    new = TronPipeline.from_pipe(source, default_num_augmentations=5)
    assert new.config.default_num_inference_steps == 3 and new.config.default_num_candidates == 2
    assert new.config.prompt_vocabulary == "seven" and new.config.default_num_augmentations == 5
    assert new.config._name_or_path == "org/tron-seven"
    # Any pipeline with the components will do; a setting it does not have is taken from the call.
    components = {name: getattr(clip_pipe, name) for name in clip_pipe.components}
    other = TronPipeline.from_pipe(SimpleNamespace(config={}, **components), default_num_inference_steps=4)
    assert other.config.default_num_inference_steps == 4 and other.config.default_num_augmentations == 8


def test_from_pipe_keeps_the_models_dtype_quietly(clip_pipe):
    clip_pipe.to(torch.bfloat16)
    records, handler = diffusers_warnings()
    logger = diffusers_logging.get_logger("diffusers")
    logger.addHandler(handler)
    try:
        new = TronPipeline.from_pipe(clip_pipe)  # a demo makes one per request: no cast, no log lines
    finally:
        logger.removeHandler(handler)
    assert [record.getMessage() for record in records] == []
    assert new.generator.dtype == torch.bfloat16 and clip_pipe.generator.dtype == torch.bfloat16
    TronPipeline.from_pipe(clip_pipe, dtype=torch.float32)
    assert clip_pipe.generator.dtype == torch.float32  # the models are shared: a cast moves both pipelines


def test_from_pipe_names_what_it_cannot_use(clip_pipe):
    with pytest.raises(
        TypeError, match=r"got \['num_steps'\], which are neither components nor settings of TronPipeline"
    ):
        TronPipeline.from_pipe(clip_pipe, num_steps=3)
    with pytest.raises(
        ValueError,
        match=r"`pipeline` \(SimpleNamespace\) has no \['encoder', 'generator', 'scheduler', 'translator'\]",
    ):
        TronPipeline.from_pipe(SimpleNamespace(config={}))


@pytest.mark.parametrize("keyword", ["dtype", "torch_dtype"])
def test_from_pipe_casts_when_asked(clip_pipe, keyword):
    new = TronPipeline.from_pipe(clip_pipe, **{keyword: torch.bfloat16})
    assert new.generator.dtype == torch.bfloat16 and new.encoder.dtype == torch.bfloat16


def test_a_model_that_is_not_a_torch_module_has_no_memory_hooks():
    # An encoder may be any object with the right methods; the hook check must not ask it for `.modules()`.
    assert per_layer_memory_hooks(SimpleNamespace(config={})) == []


def test_layerwise_casting_of_the_generator_is_refused_before_sampling(clip_pipe):
    clip_pipe.generator.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    with pytest.raises(
        ValueError, match=r"`generator` has diffusers' layerwise_casting hooks: Langevin backpropagates"
    ):
        clip_pipe("a cat", num_inference_steps=1)


@pytest.mark.parametrize("model", ["encoder", "translator"])
def test_layerwise_casting_of_any_model_is_refused(clip_pipe, model):
    # transformers models have no `enable_layerwise_casting`; diffusers' hook applies to any module.
    apply_layerwise_casting(getattr(clip_pipe, model), storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    with pytest.raises(
        ValueError, match=rf"`{model}` has diffusers' layerwise_casting hooks: Langevin backpropagates"
    ):
        clip_pipe("a cat", num_inference_steps=1)


def test_group_offload_is_refused(clip_pipe):
    with pytest.raises(NotImplementedError, match="Group offloading is not supported"):
        clip_pipe.enable_group_offload(torch.device("cpu"))
    clip_pipe.generator.enable_group_offload(
        onload_device=torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1
    )
    with pytest.raises(ValueError, match="`generator` has diffusers' group_offloading hooks"):
        clip_pipe("a cat", num_inference_steps=1)


# Loading ------------------------------------------------------------------------------------------------------------
GENERIC_LOADER = """
import json, sys
import numpy as np, torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True, cache_dir=sys.argv[2])
pipe.set_progress_bar_config(disable=True)
import tron_pipelines
out = pipe("a bold seven", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
print(json.dumps({"class": type(pipe).__name__, "module": tron_pipelines.__file__, "images": out.images.tolist()}))
"""


@pytest.mark.parametrize("source", ["folder", "hub cache"])
def test_generic_diffusers_loader_opens_a_saved_pipeline(clip_pipe, tmp_path, source):
    # A fresh process that never imports tron_pipelines itself: the Hub's "Use this model" one-liner, offline.
    clip_pipe.save_pretrained(tmp_path / "saved")
    location = str(tmp_path / "saved")
    if source == "hub cache":
        fill_hub_cache(tmp_path / "saved", tmp_path / "cache", "org/tron-tiny")
        location = "org/tron-tiny"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    run_ = subprocess.run(
        [sys.executable, "-c", GENERIC_LOADER, location, str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run_.returncode == 0, run_.stderr[-3000:]
    result = json.loads(run_.stdout.strip().splitlines()[-1])
    assert result["class"] == "TronPipeline"
    assert (
        Path(result["module"]).resolve().parent == Path(tron_pipelines.__file__).resolve().parent
    )  # the code under test
    expected = clip_pipe(
        "a bold seven", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    np.testing.assert_allclose(np.array(result["images"]), expected, atol=1e-5)


LOCK_HOLDER = """
import sys, time
from pathlib import Path
from tron_pipelines.pipelines.loading import modules_cache_lock
with modules_cache_lock():
    print("locked", flush=True)
    while not Path(sys.argv[1]).exists():
        time.sleep(0.01)
"""
WAITING_LOADER = """
import sys, time
from pathlib import Path
from tron_pipelines import TronPipeline
print("ready", flush=True)
while not Path(sys.argv[3]).exists():
    time.sleep(0.01)
TronPipeline.from_pretrained(sys.argv[1])
Path(sys.argv[2]).touch()
"""


def test_a_load_waits_while_another_process_holds_the_modules_cache(clip_pipe, tmp_path):
    # diffusers copies a folder's pipeline.py and component re-export files into one shared modules cache on every
    # load (truncate, then write) and imports them from there: two processes loading at once (`accelerate launch`
    # ranks, `tron generate` processes) could import a half-written file. Loads therefore take turns on a lock.
    clip_pipe.save_pretrained(tmp_path / "saved")
    release, loaded, go = tmp_path / "release", tmp_path / "loaded", tmp_path / "go"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(release)], **pipes)
    loader = subprocess.Popen(
        [sys.executable, "-c", WAITING_LOADER, str(tmp_path / "saved"), str(loaded), str(go)], **pipes
    )
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()[-3000:]
        assert loader.stdout.readline().strip() == "ready", loader.stderr.read()[-3000:]
        go.touch()  # the loader starts only once the other process holds the lock
        time.sleep(3)  # a tiny pipeline loads in well under a second
        assert not loaded.exists() and loader.poll() is None
        release.touch()
        assert holder.wait(timeout=60) == 0
        assert loader.wait(timeout=120) == 0, loader.stderr.read()[-3000:]
        assert loaded.exists()
    finally:
        for process in (holder, loader):
            process.kill()


def test_generic_diffusers_loader_passes_the_hubs_checks(clip_pipe, tmp_path, monkeypatch):
    # Online, diffusers first asks the Hub for the repo's file listing and commit, and refuses components whose module
    # is neither diffusers, transformers nor a file of the repo. The Hub's two answers are stubbed; the rest is real.
    import diffusers.pipelines.pipeline_utils as pipeline_utils
    import diffusers.utils.dynamic_modules_utils as dynamic_modules_utils

    clip_pipe.save_pretrained(tmp_path / "saved")
    fill_hub_cache(tmp_path / "saved", tmp_path / "cache", "org/tron-tiny")
    files = [p.relative_to(tmp_path / "saved").as_posix() for p in (tmp_path / "saved").rglob("*") if p.is_file()]
    hub_answer = SimpleNamespace(siblings=[SimpleNamespace(rfilename=f) for f in files], sha=HUB_COMMIT)
    monkeypatch.setattr(pipeline_utils, "model_info", lambda *args, **kwargs: hub_answer)
    monkeypatch.setattr(dynamic_modules_utils, "model_info", lambda *args, **kwargs: hub_answer)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # files come from the cache
    pipe = DiffusionPipeline.from_pretrained("org/tron-tiny", cache_dir=tmp_path / "cache", trust_remote_code=True)
    assert type(pipe) is TronPipeline and type(pipe.generator) is type(clip_pipe.generator)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"num_inference_steps": 2, "output_type": "np"}
    np.testing.assert_allclose(
        pipe("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images,
        clip_pipe("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images,
        atol=1e-5,
    )


def test_saved_folder_declares_the_pipeline_for_the_generic_loader(clip_pipe, tmp_path):
    clip_pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "TronPipeline"]
    assert "from tron_pipelines import TronPipeline" in (tmp_path / "saved" / "pipeline.py").read_text()
    # One re-export per component defined in this package, none for transformers' components.
    shims = sorted(path.relative_to(tmp_path / "saved").as_posix() for path in (tmp_path / "saved").glob("*/*.py"))
    assert shims == [
        "generator/tron_pipelines.models.generator.py",
        "scheduler/tron_pipelines.schedulers.scheduling_langevin.py",
        "translator/tron_pipelines.models.translator.py",
    ]
    # Saving what was loaded declares the same classes and writes the same files again.
    TronPipeline.from_pretrained(tmp_path / "saved").save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "model_index.json").read_text())
    assert {k: v for k, v in again.items() if k != "_name_or_path"} == {
        k: v for k, v in index.items() if k != "_name_or_path"
    }
    for path in (tmp_path / "saved").rglob("*.py"):
        assert (tmp_path / "again" / path.relative_to(tmp_path / "saved")).read_text() == path.read_text()


def test_save_pretrained_passes_diffusers_arguments_on(clip_pipe, tmp_path):
    # Positional (safe_serialization, variant) and keyword arguments reach diffusers' save.
    clip_pipe.save_pretrained(tmp_path / "positional", True, "v1")
    clip_pipe.save_pretrained(tmp_path / "keyword", variant="v2")
    assert (tmp_path / "positional" / "translator" / "diffusion_pytorch_model.v1.safetensors").is_file()
    assert (tmp_path / "keyword" / "translator" / "diffusion_pytorch_model.v2.safetensors").is_file()


def test_tron_loader_refuses_code_it_did_not_write(clip_pipe, tmp_path):
    clip_pipe.save_pretrained(tmp_path / "saved")
    sentinel = tmp_path / "ran"
    shim = tmp_path / "saved" / "translator" / "tron_pipelines.models.translator.py"
    shim.write_text(shim.read_text() + f"open({str(sentinel)!r}, 'w').close()\n")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        TronPipeline.from_pretrained(tmp_path / "saved")
    assert not sentinel.exists()


def test_save_pretrained_pushes_the_generic_loader_files(clip_pipe, tmp_path, monkeypatch):
    import diffusers.utils.hub_utils as hub_utils

    import tron_pipelines.pipelines.pipeline_tron as pipeline_module

    uploaded, created = {}, {}

    def upload_folder(repo_id, folder_path, **kwargs):
        files = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file())
        uploaded[repo_id] = (files, {key: kwargs[key] for key in ("token", "commit_message", "create_pr")})

    def create_repo(repo_id, **kwargs):
        created[repo_id] = kwargs
        return SimpleNamespace(repo_id=repo_id)

    monkeypatch.setattr(pipeline_module, "create_repo", create_repo)
    monkeypatch.setattr(hub_utils, "upload_folder", upload_folder)
    clip_pipe.save_pretrained(
        tmp_path / "saved",
        push_to_hub=True,
        repo_id="org/tron-tiny",
        commit_message="Add TR0N",
        private=True,
        create_pr=True,
        token="hf_test",
    )
    files, options = uploaded["org/tron-tiny"]
    assert {"pipeline.py", "README.md", "model_index.json", "translator/tron_pipelines.models.translator.py"} <= set(
        files
    )
    assert options == {"token": "hf_test", "commit_message": "Add TR0N", "create_pr": True}
    assert created["org/tron-tiny"] == {"exist_ok": True, "private": True, "token": "hf_test"}
    assert "model card of a 🧨 diffusers pipeline" in (tmp_path / "saved" / "README.md").read_text(encoding="utf-8")
    # Without a repo_id the folder's name is the repo's.
    clip_pipe.save_pretrained(tmp_path / "tron-tiny-2", push_to_hub=True)
    assert "model_index.json" in uploaded["tron-tiny-2"][0] and uploaded["tron-tiny-2"][1]["create_pr"] is False


OFFLINE_REASON = "offline and not in the local Hub cache (LocalEntryNotFoundError)"


@pytest.mark.parametrize(
    "name,reason",
    [
        ("does-not-exist", OFFLINE_REASON),
        ("org/does-not-exist", OFFLINE_REASON),
        ("./no/such/folder", "not a valid Hub repo id either"),
    ],
)
def test_missing_pipeline_is_one_clear_error(name, reason, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PipelineNotFoundError) as error:
        TronPipeline.from_pretrained(name, cache_dir=tmp_path)
    assert str(error.value) == (
        f"{name!r} is neither a local folder, nor an embedded pipeline (tron-mnist, tron-mnist-ddim, tron-mnist-t2i, tron-mnist-text), nor a pipeline on "
        f"the Hub: {reason}."
    )
    assert error.value.__cause__ is None and error.value.__suppress_context__  # no 60-line chained traceback


# Schedulers -----------------------------------------------------------------------------------------------------
def diffusers_warnings():
    """Records of diffusers' logger at WARNING and above (it does not propagate to pytest's caplog)."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    return records, handler


@pytest.mark.parametrize("scheduler_class", [LangevinScheduler, GradientDescentScheduler])
def test_scheduler_config_survives_save_and_load(scheduler_class, tmp_path):
    scheduler = scheduler_class(step_size=0.3, max_grad_norm=None)
    scheduler.save_config(tmp_path)
    reloaded = scheduler_class.from_pretrained(tmp_path)
    strip = lambda config: {k: v for k, v in config.items() if k != "_use_default_values"}  # noqa: E731 - as diffusers' tests
    assert strip(reloaded.config) == strip(scheduler.config)


def test_swapping_schedulers_is_quiet_and_reversible():
    langevin = LangevinScheduler(step_size=0.3, momentum=0.9, noise_std=0.02, auxiliary_betas=(0.8, 0.99))
    records, handler = diffusers_warnings()
    logger = diffusers_logging.get_logger("diffusers")
    logger.addHandler(handler)
    try:
        descent = GradientDescentScheduler.from_config(langevin.config)
        back = LangevinScheduler.from_config(descent.config)
    finally:
        logger.removeHandler(handler)
    assert [record.getMessage() for record in records] == []
    assert descent.config.step_size == 0.3
    assert (back.config.momentum, back.config.noise_std, back.config.auxiliary_betas) == (0.9, 0.02, (0.8, 0.99))
    assert GradientDescentScheduler in langevin.compatibles and LangevinScheduler in descent.compatibles


def test_auxiliary_betas_are_checked():
    with pytest.raises(ValueError, match="`auxiliary_betas` must be two numbers in"):
        LangevinScheduler(auxiliary_betas=(0.9, 1.5))
