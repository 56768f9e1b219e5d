"""MkDocs hooks for flowfit's site: where tutorial code runs, and math as MathML.

- Code blocks that markdown-exec runs at build time execute in a fresh scratch folder
  per page, so tutorials that write files leave nothing in the repository. Shell
  commands find the ``flowfit`` and ``torchrun`` installed next to the Python that runs
  MkDocs, and ``docs/hooks`` is importable, for the helpers in ``transcript.py``.
- ``pymdownx.arithmatex`` (generic mode) marks ``$...$`` and ``$$...$$``. This hook
  converts the marked LaTeX to MathML with ``latex2mathml``, which browsers render
  without scripts or fonts from the network. A formula that does not convert is
  logged as a warning, which fails ``mkdocs build --strict``.
"""

from __future__ import annotations

import html
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from latex2mathml.converter import convert
from mkdocs.plugins import event_priority

logger = logging.getLogger("mkdocs.hooks.flowfit")

HOOKS_DIR = Path(__file__).resolve().parent

INLINE_MATH = re.compile(r'<span class="arithmatex">\\\((.+?)\\\)</span>', re.DOTALL)
BLOCK_MATH = re.compile(r'<div class="arithmatex">\\\[(.+?)\\\]</div>', re.DOTALL)

_state: dict = {}


@event_priority(100)  # before the plugins, which read config_file_path
def on_config(config):
    # mkdocstrings resolves its paths against the config file's folder when it first
    # renders an object, which may happen while a page runs in its scratch folder.
    config.config_file_path = os.path.abspath(config.config_file_path)
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.environ["MPLBACKEND"] = "Agg"
    # The tutorials' fits are small, and the test suite builds the site beside another
    # worker; one thread per process avoids oversubscribing the cores. Set the variable
    # before building to choose otherwise.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if str(HOOKS_DIR) not in sys.path:
        sys.path.insert(0, str(HOOKS_DIR))
    return config


def on_pre_build(config):
    _state["home"] = Path.cwd()
    _state["scratch"] = Path(tempfile.mkdtemp(prefix="flowfit-docs-"))


def on_page_markdown(markdown, page, config, files):
    folder = _state["scratch"] / page.file.src_uri.replace("/", "_").removesuffix(".md")
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    _state["page_start"] = time.perf_counter()
    return markdown


def on_page_content(html_text, page, config, files):
    os.chdir(_state["home"])
    seconds = time.perf_counter() - _state.pop("page_start")
    # The build time is mostly the tutorials' fits; this shows which page costs what.
    logger.info("%s rendered in %.1f s", page.file.src_uri, seconds)
    html_text = BLOCK_MATH.sub(lambda m: _mathml(m.group(1), "block", page), html_text)
    return INLINE_MATH.sub(lambda m: _mathml(m.group(1), "inline", page), html_text)


def on_post_build(config):
    _clean_up()


def on_build_error(error):
    _clean_up()


def _clean_up():
    if "home" in _state:
        os.chdir(_state["home"])
    scratch = _state.pop("scratch", None)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)


def _mathml(latex: str, display: str, page) -> str:
    source = html.unescape(latex).strip()
    try:
        return convert(source, display=display)
    except Exception as error:  # noqa: BLE001
        # latex2mathml raises assorted exception types for commands it lacks.
        logger.warning("%s: cannot convert the formula %r to MathML (%s: %s).",
                       page.file.src_uri, source, type(error).__name__, error)
        return f"<code>{html.escape(source)}</code>"
