"""Real data sets bundled with flowfit, each with its provenance note in ``data/``.

The loaders read files shipped inside the package; nothing is downloaded.
"""

from __future__ import annotations

__all__ = ["DATASETS", "load", "path"]

from importlib import resources
from pathlib import Path

import pandas as pd

MAGIC_COLUMNS = [
    "fLength", "fWidth", "fSize", "fConc", "fConc1", "fAsym", "fM3Long", "fM3Trans",
    "fAlpha", "fDist", "class",
]
PROTEIN_COLUMNS = ["F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "F9", "RMSD"]
WINE_COLUMNS = [
    "fixed_acidity", "volatile_acidity", "citric_acid", "residual_sugar", "chlorides",
    "free_sulfur_dioxide", "total_sulfur_dioxide", "density", "pH", "sulphates", "alcohol",
    "quality",
]


def _gamma_label(value: str) -> float:
    """Map the MAGIC class letter to a number: "g" (gamma) is 1, "h" (hadron) is 0."""
    labels = {"g": 1.0, "h": 0.0}
    if value not in labels:
        raise ValueError(f"Unknown MAGIC class {value!r}; expected 'g' or 'h'.")
    return labels[value]


# name -> (file, read options, provenance note, description). Files ending in .gz are
# gzip-compressed, and pandas decompresses them by their extension.
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
    "magic_gamma": (
        "magic04.csv.gz",
        {"header": None, "names": MAGIC_COLUMNS, "converters": {"class": _gamma_label}},
        "PROVENANCE-magic_gamma.md",
        "MAGIC gamma telescope: 10 image features and class, 1 = gamma, 0 = hadron "
        "(19020 rows).",
    ),
    "htru2": (
        "HTRU_2.csv.gz",
        {},
        "PROVENANCE-htru2.md",
        "HTRU2 pulsar candidates: 8 profile and DM-SNR statistics and class, 1 = pulsar "
        "(17898 rows).",
    ),
    "protein_casp": (
        "casp.txt.gz",
        {"sep": " ", "header": None, "names": PROTEIN_COLUMNS},
        "PROVENANCE-protein_casp.md",
        "Protein tertiary structure (CASP): 9 physico-chemical features and RMSD (45730 rows).",
    ),
    "wine_quality_red": (
        "winequality-red.csv.gz",
        {"header": None, "names": WINE_COLUMNS},
        "PROVENANCE-wine_quality.md",
        "Red wine: 11 physico-chemical measurements and a quality score (1599 rows).",
    ),
    "wine_quality_white": (
        "winequality-white.csv.gz",
        {"header": None, "names": WINE_COLUMNS},
        "PROVENANCE-wine_quality.md",
        "White wine: 11 physico-chemical measurements and a quality score (4898 rows).",
    ),
    "banknote": (
        "banknote.csv",
        {"header": None, "names": ["variance", "skewness", "curtosis", "entropy", "class"]},
        "PROVENANCE-banknote.md",
        "Banknote authentication: 4 wavelet image statistics and a 0/1 class (1372 rows).",
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
