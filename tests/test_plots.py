"""Plots: every kind renders to a non-trivial PNG on the bundled data, from Python and the CLI."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image
from typer.testing import CliRunner

from flowfit import FlowDensity, datasets
from flowfit.cli.app import app
from flowfit.diagnostics import (
    latent_diagnostics,
    plot_corner,
    plot_density_1d,
    plot_density_2d,
    plot_fit,
    plot_latent,
    plot_training_curves,
    save_png,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_nontrivial_png(path, *, min_width=300, min_height=200):
    """Check that ``path`` is a PNG of real size with drawn content, not a blank canvas."""
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    assert len(data) > 10_000, f"{path} has only {len(data)} bytes"
    with Image.open(path) as image:
        image.load()
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert width >= min_width
    assert height >= min_height
    colours = np.unique(pixels.reshape(-1, 3), axis=0).shape[0]
    assert colours > 50, f"{path} has only {colours} distinct colours"
    # Share of pixels that are not white: axes, labels, bars and points.
    inked = np.mean(np.any(pixels < 250, axis=2))
    assert 0.02 < inked < 0.98, f"{path} has {inked:.1%} non-white pixels"


@pytest.fixture(scope="module")
def faithful():
    return datasets.load("old_faithful")


@pytest.fixture(scope="module")
def eruptions_model(faithful):
    return FlowDensity(flow="spline", max_epochs=20, random_state=0).fit(faithful[["eruptions"]])


@pytest.fixture(scope="module")
def faithful_model(faithful):
    return FlowDensity(flow="spline", max_epochs=20, random_state=0).fit(faithful)


@pytest.fixture(scope="module")
def ccpp():
    return datasets.load("ccpp").iloc[:300]


@pytest.fixture(scope="module")
def ccpp_model(ccpp):
    return FlowDensity(flow="spline", max_epochs=5, random_state=0).fit(ccpp)


def test_density_1d_png(eruptions_model, faithful, tmp_path):
    figure = plot_density_1d(eruptions_model, faithful[["eruptions"]])
    save_png(figure, tmp_path / "density.png")
    axes = figure.axes[0]
    labels = [line.get_label() for line in axes.get_lines()]

    assert isinstance(figure, Figure)
    assert labels == ["Gaussian KDE (Scott's rule)", "flow (spline)"]
    assert_nontrivial_png(tmp_path / "density.png")


def test_density_1d_curve_is_model_density(eruptions_model, faithful):
    figure = plot_density_1d(eruptions_model, faithful[["eruptions"]])
    curve = figure.axes[0].get_lines()[1]
    x, density = curve.get_xdata(), curve.get_ydata()
    expected = np.exp(eruptions_model.score_samples(pd.DataFrame({"eruptions": x})))

    assert eruptions_model.grid_[0] == 0.0
    np.testing.assert_allclose(density, expected, rtol=1e-5)


@pytest.mark.parametrize("style", ["contour", "heatmap"])
def test_density_2d_png(faithful_model, faithful, tmp_path, style):
    figure = plot_density_2d(faithful_model, faithful, style=style)
    save_png(figure, tmp_path / f"{style}.png")

    assert figure.axes[0].get_xlabel() == "eruptions"
    assert figure.axes[0].get_ylabel() == "waiting"
    assert_nontrivial_png(tmp_path / f"{style}.png")


def test_corner_png(ccpp_model, ccpp, tmp_path):
    figure = plot_corner(ccpp_model, ccpp, n_samples=400, random_state=1)
    save_png(figure, tmp_path / "corner.png")
    visible = [ax for ax in figure.axes if ax.get_visible() and ax.axison]

    assert len(visible) == 15  # the diagonal and the lower triangle of 5 x 5 panels
    assert_nontrivial_png(tmp_path / "corner.png", min_width=800, min_height=800)


def test_training_curves_png(ccpp_model, tmp_path):
    figure = plot_training_curves(ccpp_model)
    save_png(figure, tmp_path / "training.png")
    lines = figure.axes[0].get_lines()

    assert len(lines[0].get_xdata()) == len(ccpp_model.history_.train)
    assert len(lines[1].get_xdata()) == len(ccpp_model.history_.val)
    assert_nontrivial_png(tmp_path / "training.png")


def test_latent_png(faithful_model, faithful, tmp_path):
    diagnostics = latent_diagnostics(faithful_model, faithful)
    figure = plot_latent(diagnostics)
    save_png(figure, tmp_path / "latent.png")

    assert len(figure.axes) == 4  # Q-Q and PIT for each of two dimensions
    assert_nontrivial_png(tmp_path / "latent.png", min_height=500)


def test_plot_fit_chooses_by_column_count(eruptions_model, faithful_model, ccpp_model,
                                          faithful, ccpp):
    one_column = plot_fit(eruptions_model, faithful[["eruptions"]])
    two_columns = plot_fit(faithful_model, faithful)
    five_columns = plot_fit(ccpp_model, ccpp)

    assert one_column.axes[0].get_title() == "Fitted density of eruptions"
    assert two_columns.axes[0].get_title() == "Fitted density of eruptions and waiting"
    assert len(five_columns.axes) == 25


def test_plots_reject_wrong_column_count(eruptions_model, faithful_model, faithful):
    with pytest.raises(ValueError, match="needs a model of 1 modelled column"):
        plot_density_1d(faithful_model, faithful)
    with pytest.raises(ValueError, match="needs a model of 2 modelled column"):
        plot_density_2d(eruptions_model, faithful[["eruptions"]])
    with pytest.raises(ValueError, match="two or more modelled columns"):
        plot_corner(eruptions_model, faithful[["eruptions"]])


def test_density_2d_rejects_unknown_style(faithful_model, faithful):
    with pytest.raises(ValueError, match="style must be"):
        plot_density_2d(faithful_model, faithful, style="surface")


def test_save_png_keeps_existing_file(eruptions_model, faithful, tmp_path):
    target = tmp_path / "kept.png"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        save_png(plot_density_1d(eruptions_model, faithful[["eruptions"]]), target)

    assert target.read_bytes() == b"old"


def test_diagnostics_import_leaves_pyplot_alone():
    code = (
        "import sys, flowfit.diagnostics, flowfit.cli.app; "
        "sys.exit('matplotlib.pyplot' in sys.modules)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)

    assert completed.returncode == 0, completed.stderr.decode()


# -- command line ------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, eruptions_model, faithful_model, ccpp_model, faithful, ccpp):
    folder = tmp_path_factory.mktemp("plot")
    eruptions_model.save(folder / "eruptions.flowfit")
    faithful_model.save(folder / "faithful.flowfit")
    ccpp_model.save(folder / "ccpp.flowfit")
    faithful.to_csv(folder / "faithful.csv", index=False)
    ccpp.to_csv(folder / "ccpp.csv", index=False)
    return folder


@pytest.mark.parametrize(
    ("model", "data", "kind"),
    [
        ("eruptions", "faithful", "auto"),
        ("faithful", "faithful", "density"),
        ("faithful", "faithful", "heatmap"),
        ("ccpp", "ccpp", "auto"),
        ("faithful", "faithful", "corner"),
        ("ccpp", None, "training"),
        ("faithful", "faithful", "latent"),
    ],
)
def test_cli_plot_writes_png(model_files, model, data, kind):
    output = model_files / f"{model}-{kind}.png"
    arguments = ["plot", str(model_files / f"{model}.flowfit")]
    if data is not None:
        arguments.append(str(model_files / f"{data}.csv"))
    result = CliRunner().invoke(app, [*arguments, "-o", str(output), "--kind", kind])

    assert result.exit_code == 0, result.output
    assert f"wrote {output}" in result.stdout
    assert_nontrivial_png(output)


def test_cli_plot_latent_prints_summary(model_files):
    output = model_files / "summary-latent.png"
    result = CliRunner().invoke(app, [
        "plot", str(model_files / "faithful.flowfit"), str(model_files / "faithful.csv"),
        "-o", str(output), "--kind", "latent",
    ])

    assert result.exit_code == 0, result.output
    assert "latent of 272 rows" in result.stdout


@pytest.mark.parametrize(
    ("model", "kind", "message"),
    [
        ("faithful", "latent", "--kind latent needs DATA"),
        ("ccpp", "density", "--kind density draws 1 or 2 columns"),
    ],
)
def test_cli_plot_reports_user_errors(model_files, model, kind, message):
    arguments = ["plot", str(model_files / f"{model}.flowfit")]
    if kind != "latent":
        arguments.append(str(model_files / "ccpp.csv"))
    result = CliRunner().invoke(app, [*arguments, "-o", str(model_files / "x.png"),
                                      "--kind", kind])

    assert result.exit_code == 1
    assert message in result.stderr
    assert not (model_files / "x.png").exists()


def test_cli_plot_needs_force_to_replace(model_files):
    output = model_files / "existing.png"
    output.write_bytes(b"old")
    result = CliRunner().invoke(app, [
        "plot", str(model_files / "ccpp.flowfit"), "-o", str(output), "--kind", "training",
    ])

    assert result.exit_code == 1
    assert "--force" in result.stderr
    assert output.read_bytes() == b"old"
