"""The documentation site: a strict, offline build whose tutorials run, and its coverage.

The build runs every tutorial's code (markdown-exec) and renders the API reference
from the docstrings (mkdocstrings). It fails on any warning: a broken link or anchor,
a docstring reference that does not resolve, a formula that does not convert, or a
code block that raises or exits non-zero.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import flowfit

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Pages whose code runs at build time, with a line of output each must contain.
TUTORIAL_OUTPUT = {
    "index.html": "held-out rows:",
    "tutorials/maximum-likelihood/index.html": "fitted mu:",
    "tutorials/density-1d/index.html": "KernelDensity, bandwidth",
    "tutorials/tables/index.html": "ROC AUC of -log p(x)",
    "tutorials/conditional/index.html": "flow minus line",
    "tutorials/command-line/index.html": "wrote report.html",
    "tutorials/distributed/index.html": "largest difference in log p(x):",
    "errors/index.html": "error: Data file not found",
    "reference/command-line/index.html": "Usage: flowfit fit",
}

# The build's time limit. It took about 2 minutes on a shared 2-core machine under
# heavy load; the limit leaves room for slower CI machines.
BUILD_TIMEOUT_SECONDS = 900

# Modules documented elsewhere: the command line has its own reference page built from
# `flowfit COMMAND --help`, and `python -m flowfit` only runs it.
UNDOCUMENTED_MODULES = ("flowfit.cli", "flowfit.__main__")


def _public_modules() -> list[str]:
    """Return the flowfit modules that define public classes, functions or constants."""
    names = []
    for info in pkgutil.walk_packages(flowfit.__path__, "flowfit."):
        name = info.name
        private = any(part.startswith("_") for part in name.split(".")[1:])
        if private or name.startswith(UNDOCUMENTED_MODULES):
            continue
        module = importlib.import_module(name)
        if any(_defined_in(module, export) for export in getattr(module, "__all__", [])):
            names.append(name)
    return names


def _defined_in(module, export: str) -> bool:
    obj = getattr(module, export)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return obj.__module__ == module.__name__
    # Constants carry no module; a package's __init__ only re-exports them.
    return not hasattr(module, "__path__")


def test_site_builds_strict_with_tutorial_output(tmp_path):
    site = tmp_path / "site"
    environment = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT, env=environment, capture_output=True, text=True,
        timeout=BUILD_TIMEOUT_SECONDS, check=False,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{log[-6000:]}"

    for page, expected in TUTORIAL_OUTPUT.items():
        html = (site / page).read_text(encoding="utf-8")
        assert expected in html, f"{page} lacks the output {expected!r}"
        assert "Traceback (most recent call last)" not in html, f"{page} shows a traceback"
        assert "```" not in html, f"{page} shows a Markdown fence as text"

    # Offline: no page loads a script, style sheet or font from another host.
    remote = re.compile(r"""<(?:script|link|img)\b[^>]*(?:src|href)=["']https?://""")
    for page in site.rglob("*.html"):
        match = remote.search(page.read_text(encoding="utf-8"))
        assert match is None, f"{page.relative_to(site)} fetches {match.group(0)!r}"


def test_reference_pages_cover_public_modules():
    directives = set()
    for page in (DOCS / "reference").glob("*.md"):
        directives.update(re.findall(r"^::: (flowfit[\w.]*)", page.read_text(), re.M))
    missing = [name for name in _public_modules() if name not in directives]
    assert not missing, f"modules without a '::: module' block in docs/reference: {missing}"


def test_public_classes_and_functions_have_docstrings():
    # Without a docstring, an object's entry on the reference pages is a bare signature.
    undocumented = []
    for name in _public_modules():
        module = importlib.import_module(name)
        for export in getattr(module, "__all__", []):
            obj = getattr(module, export)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj):
                undocumented.append(f"{name}.{export}")
    assert not undocumented, f"public objects without a docstring: {undocumented}"


def test_readme_links_to_existing_pages():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\((?!https?://)([^)#]+)", readme)
    assert targets, "README.md links to no documentation page"
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
