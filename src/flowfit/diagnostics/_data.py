"""Checks shared by the diagnostics: rows against a fitted model, modelled columns."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from flowfit.errors import DataError
from flowfit.estimators import FlowDensity
from flowfit.preprocessing import Column


def column_names(model: FlowDensity) -> list[str]:
    """Return the names of all columns the model was fitted on, dropped ones included."""
    return [column.name for column in model.columns_]


def modelled_columns(model: FlowDensity) -> list[Column]:
    """Return the column records the flow models, leaving out dropped constant columns."""
    return [column for column in model.columns_ if not column.dropped]


def modelled_index(model: FlowDensity) -> np.ndarray:
    """Return the positions of the modelled columns among all fitted columns."""
    return np.array([j for j, c in enumerate(model.columns_) if not c.dropped], dtype=int)


def check_rows(model: FlowDensity, data: Any) -> np.ndarray:
    """Return ``data`` as float64 of shape (n_samples, n_features_in_) after checking it.

    Raises:
        DataError: A DataFrame's columns differ from the model's, the shape is wrong,
            or a value is NaN or infinite.
    """
    names = getattr(model, "feature_names_in_", None)
    if isinstance(data, pd.DataFrame) and names is not None:
        given_names = [str(c) for c in data.columns]
        fitted_names = [str(n) for n in names]
        if given_names != fitted_names:
            raise DataError(
                f"The columns {given_names} differ from the model's, {fitted_names}. "
                "Pass the same columns in the same order."
            )
    values = np.asarray(data, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != model.n_features_in_:
        raise DataError(
            f"Expected rows of shape (n_samples, {model.n_features_in_}), one column per "
            f"fitted column; got shape {values.shape}."
        )
    if values.shape[0] == 0:
        raise DataError("The table has no rows.")
    finite = np.isfinite(values)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))[:5].tolist()
        raise DataError(
            f"The data contain NaN or infinite values, first in rows {rows} (counted "
            "from 0). Remove or impute those rows first."
        )
    return values


def model_input(model: FlowDensity, values: np.ndarray) -> np.ndarray | pd.DataFrame:
    """Return checked ``values`` in the form the model was fitted on: named or plain."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return values
    return pd.DataFrame(values, columns=[str(n) for n in names])
