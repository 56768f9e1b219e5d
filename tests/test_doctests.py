"""Run the examples in flowfit's docstrings as doctests, one test per module.

Each module's examples run in that module's namespace with torch and NumPy seeded
with 0 and torch's default dtype float32, so printed values are reproducible.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import numpy as np
import pytest
import torch

import flowfit

# Running the package's __main__ would start the command line.
SKIPPED_MODULES = {"flowfit.__main__"}

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples() -> dict[str, list[doctest.DocTest]]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = {}
    for info in pkgutil.walk_packages(flowfit.__path__, "flowfit."):
        if info.name in SKIPPED_MODULES:
            continue
        module = importlib.import_module(info.name)
        tests = [test for test in finder.find(module) if test.examples]
        if tests:
            found[info.name] = tests
    return found


MODULES = _modules_with_examples()


def test_docstring_examples_exist():
    examples = sum(len(test.examples) for tests in MODULES.values() for test in tests)
    assert examples > 0, "no docstring examples found in flowfit"


@pytest.mark.parametrize("module_name", sorted(MODULES))
def test_docstring_examples(module_name):
    output = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    previous_dtype = torch.get_default_dtype()
    try:
        for test in MODULES[module_name]:
            torch.manual_seed(0)
            np.random.seed(0)
            torch.set_default_dtype(torch.float32)
            runner.run(test, out=output.write)
    finally:
        torch.set_default_dtype(previous_dtype)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{module_name}: docstring examples failed:\n{output.getvalue()}"
