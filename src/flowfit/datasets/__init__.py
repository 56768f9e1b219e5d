"""Real data sets bundled with flowfit, each with its provenance note in ``data/``.

The loaders read files shipped inside the package; nothing is downloaded.
"""

from __future__ import annotations

__all__ = ["DATASETS", "load", "path"]

from importlib import resources
from pathlib import Path

import pandas as pd

# name -> (file, read options, provenance note, description)
DATASETS: dict[str, tuple[str, dict, str, str]] = {
    "old_faithful": (
        "faithful.csv",
        {"index_col": 0},
        "PROVENANCE-old_faithful.md",
        "Old Faithful geyser: eruption duration and waiting time, minutes (272 rows).",
    ),
    "galaxies": (
        "galaxies.csv",
        {"index_col": 0},
        "PROVENANCE-galaxies.md",
        "Velocities of 82 galaxies in the Corona Borealis region, km/s.",
    ),
    "danish_fire": (
        "danish.csv",
        {"index_col": 0},
        "PROVENANCE-danish_fire.md",
        "Danish fire insurance losses 1980-1990, millions of kroner (2167 rows).",
    ),
    "ccpp": (
        "ccpp.txt",
        {"sep": r"\s+", "header": None, "names": ["AT", "V", "AP", "RH", "PE"]},
        "PROVENANCE-ccpp.md",
        "Combined cycle power plant: temperature, vacuum, pressure, humidity, output (9568 rows).",
    ),
}


def path(name: str) -> Path:
    """Return the path of a bundled data set's file."""
    if name not in DATASETS:
        raise KeyError(f"Unknown data set {name!r}; bundled: {', '.join(sorted(DATASETS))}.")
    return Path(str(resources.files("flowfit.datasets") / "data" / DATASETS[name][0]))


def load(name: str) -> pd.DataFrame:
    """Load a bundled data set as a DataFrame of float columns."""
    file_path = path(name)
    frame = pd.read_csv(file_path, **DATASETS[name][1])
    frame = frame.rename(columns={"dat": {"galaxies": "velocity"}.get(name, "loss")})
    return frame.astype("float64").reset_index(drop=True)
