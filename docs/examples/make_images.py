"""Write the example images of docs/diagnostics.md into docs/images/.

Every image comes from the bundled data sets, with fixed seeds:

    python docs/examples/make_images.py            # writes docs/images/*.png
    python docs/examples/make_images.py --output /tmp/images

Fitting the flows takes about a minute on a laptop CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from matplotlib.figure import Figure

from flowfit import FlowDensity, datasets
from flowfit.diagnostics import (
    evaluate,
    latent_diagnostics,
    plot_corner,
    plot_density_1d,
    plot_density_2d,
    plot_latent,
    plot_training_curves,
    save_png,
    split_rows,
)

IMAGES = Path(__file__).resolve().parents[1] / "images"


def main() -> None:
    """Fit the example models and write one PNG per plot kind."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=IMAGES, help="Folder for the PNG files.")
    arguments = parser.parse_args()
    output: Path = arguments.output
    output.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    faithful = datasets.load("old_faithful")
    train, test = split_rows(faithful, test_fraction=0.25, random_state=0)

    # One column: a spline flow, and a Gaussian that cannot follow the two clusters.
    eruptions = FlowDensity(flow="spline", max_epochs=300, random_state=0)
    eruptions.fit(train[["eruptions"]])
    gaussian = FlowDensity(flow="affine", max_epochs=300, random_state=0)
    gaussian.fit(train[["eruptions"]])
    write(plot_density_1d(eruptions, faithful[["eruptions"]]), output / "density_1d.png")
    for name, model in [("spline", eruptions), ("gaussian", gaussian)]:
        diagnostics = latent_diagnostics(model, test[["eruptions"]])
        print(f"{name}: {diagnostics.summary()}")
        write(plot_latent(diagnostics), output / f"latent_{name}.png")
    print(evaluate(eruptions, test[["eruptions"]], train=train[["eruptions"]]).format_table())

    # Two columns: the default multivariate flow.
    joint = FlowDensity(max_epochs=300, random_state=0).fit(train)
    write(plot_density_2d(joint, faithful), output / "density_2d_contour.png")
    write(plot_density_2d(joint, faithful, style="heatmap"), output / "density_2d_heatmap.png")
    write(plot_training_curves(joint), output / "training_curves.png")

    # Five columns: a corner plot of data against samples.
    power = datasets.load("ccpp").iloc[:2000]
    power_model = FlowDensity(max_epochs=100, random_state=0).fit(power)
    write(plot_corner(power_model, power, random_state=0), output / "corner.png")


def write(figure: Figure, path: Path) -> None:
    """Save ``figure`` to ``path``, replacing an older image, and print the path."""
    save_png(figure, path, overwrite=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
