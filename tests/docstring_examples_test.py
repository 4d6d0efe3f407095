"""The Example sections of the public docstrings run and print what they show."""

import doctest
import importlib
import pathlib

import pytest

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parent.parent / "mtl_layers"


def _modules_with_examples():
    names = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        if ">>>" in path.read_text(encoding="utf-8"):
            relative = path.relative_to(PACKAGE_ROOT.parent).with_suffix("")
            names.append(".".join(relative.parts))
    return names


MODULES = _modules_with_examples()


def test_examples_found():
    # The layers and model builders document themselves with examples.
    assert "mtl_layers.layers.hypergrid_dense" in MODULES
    assert "mtl_layers.models.mose" in MODULES


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{module_name} has no example that doctest reads"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module_name}"
