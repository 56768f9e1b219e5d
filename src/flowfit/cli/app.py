"""The ``flowfit`` command: one sub-command per module in this package."""

from __future__ import annotations

import typer

from flowfit.cli.demo import demo_command
from flowfit.cli.evaluate import evaluate_command
from flowfit.cli.fit import fit_command
from flowfit.cli.inspect import inspect_command
from flowfit.cli.plot import plot_command
from flowfit.cli.report import report_command
from flowfit.cli.sample import sample_command
from flowfit.cli.score import score_command

app = typer.Typer(
    name="flowfit",
    help="Fit normalizing flows to tables by maximum likelihood; score rows; draw samples.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("fit")(fit_command)
app.command("score")(score_command)
app.command("sample")(sample_command)
app.command("demo")(demo_command)
app.command("plot")(plot_command)
app.command("evaluate")(evaluate_command)
app.command("report")(report_command)
app.command("inspect")(inspect_command)


def main() -> None:
    """Run the command line."""
    app()
