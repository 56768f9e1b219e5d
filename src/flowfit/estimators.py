"""scikit-learn estimators: fit a flow to a table, score rows, draw samples."""

from __future__ import annotations

__all__ = ["FlowDensity"]

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from flowfit.errors import DataError
from flowfit.io.model_file import load_flow, save_flow
from flowfit.preprocessing import make_flow
from flowfit.training import History, fit

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class FlowDensity(BaseEstimator):
    """Density estimation with a normalizing flow, in the style of scikit-learn.

    Arguments:
        flow: The preset name: "spline" (default), "affine", "shift", or a
            multivariate preset such as "maf" or "nsf".
        flow_options: Keyword arguments for the preset (``layers``, ``bins``, ...).
        support: "real", "positive" or a ``(low, high)`` interval for every column.
        grid: "auto" detects columns rounded to a grid and dequantises them; a number,
            one number per column, or None (all continuous).
        max_epochs: Passes over the training rows, at most.
        batch_size: Rows per optimizer step.
        learning_rate: Adam's initial learning rate.
        val_fraction: Share of rows held out for early stopping.
        patience: Epochs without a better validation loss before stopping.
        dtype: "float32" or "float64".
        random_state: Seed for the initial parameters, the split and the noise.
        show_progress: Whether to show a progress bar.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(2.0, 1.0, size=(500, 1))
        >>> model = FlowDensity(flow="affine", max_epochs=50).fit(X)
        >>> model.score_samples(X[:2]).shape
        (2,)
    """

    def __init__(
        self,
        *,
        flow: str = "spline",
        flow_options: dict[str, Any] | None = None,
        support: str | tuple[float, float] = "real",
        grid: str | float | list[float] | None = "auto",
        max_epochs: int = 200,
        batch_size: int = 256,
        learning_rate: float = 5e-3,
        val_fraction: float = 0.1,
        patience: int = 20,
        dtype: str = "float32",
        random_state: int = 0,
        show_progress: bool = False,
    ) -> None:
        self.flow = flow
        self.flow_options = flow_options
        self.support = support
        self.grid = grid
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.val_fraction = val_fraction
        self.patience = patience
        self.dtype = dtype
        self.random_state = random_state
        self.show_progress = show_progress

    def _as_tensor(self, X: Any, *, fitting: bool) -> torch.Tensor:
        if isinstance(X, pd.DataFrame):
            names = [str(c) for c in X.columns]
            if fitting:
                self.feature_names_in_ = np.asarray(names, dtype=object)
            elif hasattr(self, "feature_names_in_") and list(self.feature_names_in_) != names:
                raise DataError(
                    f"The columns {names} differ from those seen in fit, "
                    f"{list(self.feature_names_in_)}; pass the same columns in the same order."
                )
        array = np.asarray(X, dtype=np.float64)
        if array.ndim == 1:
            raise DataError(
                f"Expected a 2-D array of shape (n_samples, n_features); got shape {array.shape}. "
                "Reshape a single column with X.reshape(-1, 1)."
            )
        if array.ndim != 2:
            raise DataError(f"Expected a 2-D array; got shape {array.shape}.")
        if fitting:
            self.n_features_in_ = array.shape[1]
        elif array.shape[1] != self.n_features_in_:
            raise DataError(
                f"X has {array.shape[1]} features, but the model was fitted with "
                f"{self.n_features_in_}."
            )
        if not np.all(np.isfinite(array)):
            rows = np.flatnonzero(~np.isfinite(array).all(axis=1))[:5].tolist()
            raise DataError(f"X contains NaN or infinite values, first in rows {rows}.")
        return torch.tensor(array, dtype=DTYPES[self.dtype])

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> FlowDensity:
        """Fit the flow to the rows of ``X`` of shape (n_samples, n_features)."""
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {self.dtype!r}.")
        x = self._as_tensor(X, fitting=True)
        torch.manual_seed(self.random_state)
        flow = make_flow(
            x, flow=self.flow, support=self.support, grid=self.grid,
            flow_options=self.flow_options,
        )
        weight = None if sample_weight is None else torch.as_tensor(
            np.asarray(sample_weight, dtype=np.float64), dtype=x.dtype
        )
        history = fit(
            flow, x, sample_weight=weight, max_epochs=self.max_epochs,
            batch_size=self.batch_size, learning_rate=self.learning_rate,
            val_fraction=self.val_fraction, patience=self.patience,
            seed=self.random_state, show_progress=self.show_progress,
        )
        self.flow_ = flow
        self.history_ = history
        self.grid_ = (
            np.zeros(x.shape[1]) if flow.grid is None else flow.grid.cpu().numpy().copy()
        )
        return self

    def score_samples(self, X: Any) -> np.ndarray:
        """Return the log-density of each row of ``X``, in the data's units, shape (n,)."""
        check_is_fitted(self, "flow_")
        x = self._as_tensor(X, fitting=False)
        with torch.no_grad():
            return self.flow_.log_prob(x).cpu().numpy().astype(np.float64)

    def score(self, X: Any, y: Any = None) -> float:
        """Return the total log-likelihood of ``X``, so that grid search maximises it."""
        return float(np.sum(self.score_samples(X)))

    def sample(self, n_samples: int = 1, random_state: int | None = None) -> np.ndarray | pd.DataFrame:
        """Draw ``n_samples`` rows; a DataFrame with the fitted column names when fitted on one."""
        check_is_fitted(self, "flow_")
        if random_state is not None:
            torch.manual_seed(random_state)
        samples = self.flow_.sample((n_samples,)).cpu().numpy().astype(np.float64)
        if hasattr(self, "feature_names_in_"):
            return pd.DataFrame(samples, columns=list(self.feature_names_in_))
        return samples

    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Write the fitted model to a flowfit model file (safetensors with a JSON header)."""
        check_is_fitted(self, "flow_")
        names = getattr(self, "feature_names_in_", None)
        metadata = {
            "estimator": "FlowDensity",
            "params": _jsonable(self.get_params()),
            "columns": None if names is None else [str(n) for n in names],
            "n_features_in": int(self.n_features_in_),
            "history": self.history_.to_dict(),
        }
        save_flow(path, self.flow_, metadata=metadata, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> FlowDensity:
        """Read a model file written by :meth:`save`."""
        flow, metadata = load_flow(path)
        model = cls(**metadata.get("params", {}))
        model.flow_ = flow
        model.n_features_in_ = int(metadata.get("n_features_in", flow.features))
        columns = metadata.get("columns")
        if columns is not None:
            model.feature_names_in_ = np.asarray(columns, dtype=object)
        model.history_ = History(**metadata.get("history", {}))
        model.grid_ = np.zeros(flow.features) if flow.grid is None else flow.grid.numpy().copy()
        return model


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        out[key] = list(value) if isinstance(value, tuple) else value
    return out
