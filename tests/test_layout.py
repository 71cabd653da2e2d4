"""The package's layout: old module paths that moved keep working, as the same module objects, with a warning; every
model name of `tron_pipelines.models` is a name of the package too."""

import os
import subprocess
import sys

import pytest

import tron_pipelines
import tron_pipelines.models


@pytest.mark.parametrize("old, new", sorted(tron_pipelines.MOVED_MODULES.items()))
def test_moved_module_imports_as_its_new_module_with_a_warning(old, new):
    code = (
        "import importlib, warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    old = importlib.import_module({old!r})\n"
        f"new = importlib.import_module({new!r})\n"
        "print(old is new, new.__spec__.name, [str(w.message) for w in caught if w.category is FutureWarning])\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr
    same, spec_name, warnings = run.stdout.split(" ", 2)
    assert same == "True" and spec_name == new
    assert f"`{old}` moved to `{new}`" in warnings


def test_every_model_is_importable_from_the_package():
    # `from tron_pipelines import X` works for every generator, encoder and translator name of `tron_pipelines.models`.
    missing = sorted(set(tron_pipelines.models.__all__) - set(tron_pipelines.__all__))
    assert not missing, f"in tron_pipelines.models but not in tron_pipelines: {missing}"
    for name in tron_pipelines.models.__all__:
        assert getattr(tron_pipelines, name) is getattr(tron_pipelines.models, name), name
