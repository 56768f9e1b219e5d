"""Helpers that tutorial pages call at build time to show real command output.

Pages import this module from their ``exec="on"`` code blocks (``build.py`` puts this
folder on ``sys.path``). Every helper raises on an unexpected outcome, so that
markdown-exec logs a warning and ``mkdocs build --strict`` fails.
"""

from __future__ import annotations

import base64
import io
import re
import shlex
import subprocess
from pathlib import Path

# The repository that this site is built from.
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

# Help texts are wrapped at this width so that they fit the page's code blocks.
HELP_WIDTH = 88

# Characters that make a command need a real shell.
SHELL_SYNTAX = re.compile(r"[|&;<>()$`*?~]")


def terminal_text(raw: str) -> str:
    """Return what a terminal shows at the end for ``raw`` output.

    A progress bar redraws its line with carriage returns. A terminal keeps only the
    text after the last carriage return of each line, and so does this function.
    """
    lines = [line.rsplit("\r", 1)[-1] for line in raw.split("\n")]
    return "\n".join(line.rstrip() for line in lines).rstrip("\n")


def shell(command: str, *, expect_status: int = 0, new_process: bool = False,
          timeout: float = 300.0) -> str:
    """Run ``command`` in the page's scratch folder; return a console transcript.

    The transcript is ``$ command`` followed by standard output and standard error, as
    a terminal would show them. A plain ``flowfit ...`` command (no pipes, redirects or
    variables) runs in this process through the command line's entry point, which
    saves the few seconds of imports that a new process pays. Any other command, and
    every command with ``new_process=True``, runs in bash. Commands that start other
    processes, such as ``flowfit fit --nproc``, need ``new_process=True``.

    Raises:
        RuntimeError: The command exited with a status other than ``expect_status``.
    """
    command = command.strip()
    words = shlex.split(command)
    if words[:1] == ["flowfit"] and not new_process and not SHELL_SYNTAX.search(command):
        status, raw = _run_flowfit(words[1:])
    else:
        process = subprocess.run(
            ["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=timeout, check=False,
        )
        status, raw = process.returncode, process.stdout
    output = terminal_text(raw)
    if status != expect_status:
        raise RuntimeError(
            f"{command!r} exited with status {status}, expected {expect_status}. "
            f"Output:\n{output}"
        )
    return f"$ {command}\n{output}".rstrip("\n")


def _run_flowfit(arguments: list[str]) -> tuple[int, str]:
    """Run ``flowfit ARGUMENTS`` in-process; return the exit status and the output."""
    from typer.testing import CliRunner

    from flowfit.cli.app import app

    result = CliRunner().invoke(app, arguments, terminal_width=HELP_WIDTH)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise RuntimeError(f"flowfit {shlex.join(arguments)} raised "
                           f"{type(result.exception).__name__}: {result.exception}")
    # flowfit writes progress bars, notes and errors to standard error before its
    # results. The runner's mixed output can place a bar's final newline after them,
    # so standard error goes first, as a terminal shows it.
    errors = result.stderr
    if errors and not errors.endswith("\n"):
        errors += "\n"
    return result.exit_code, errors + result.stdout


def console(*commands: str, expect_status: int = 0, new_process: bool = False) -> str:
    """Return a fenced console block with the transcripts of ``commands``, run in order.

    Pages print the result: markdown-exec captures only the ``print`` of the page's
    own code block.
    """
    transcripts = [shell(command, expect_status=expect_status, new_process=new_process)
                   for command in commands]
    return "```console\n" + "\n".join(transcripts) + "\n```"


def command_help(command: str) -> str:
    """Return a Markdown section with the ``--help`` text of ``flowfit COMMAND``.

    The help comes from the installed command line, run in-process.
    """
    from typer.testing import CliRunner

    from flowfit.cli.app import app

    arguments = [*shlex.split(command), "--help"]
    result = CliRunner().invoke(app, arguments, terminal_width=HELP_WIDTH,
                                env={"COLUMNS": str(HELP_WIDTH), "NO_COLOR": "1"})
    if result.exit_code != 0:
        raise RuntimeError(f"flowfit {command} --help exited with {result.exit_code}:\n"
                           f"{result.output}")
    title = f"flowfit {command}".strip()
    text = terminal_text(result.output)
    return f"## `{title}`\n\n```text\n{text}\n```\n"


def figure_html(figure, alt: str, *, dpi: int = 90) -> str:
    """Return an ``<img>`` element with ``figure`` embedded as a base64 PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'


def png_html(path: str, alt: str) -> str:
    """Return an ``<img>`` element with the PNG file at ``path`` embedded as base64."""
    with open(path, "rb") as stream:
        data = base64.b64encode(stream.read()).decode("ascii")
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'
