"""scikit-learn estimators: fit a flow to a table, score rows, draw samples.

:class:`FlowDensity` models the joint density of the columns of ``X``;
:class:`ConditionalFlowDensity` models the density of targets ``y`` given features
``X``. Both choose each column's preprocessing with
:func:`flowfit.preprocessing.choose_columns`, store the choices in ``columns_`` and in
the model file, and report log-densities in the data's original units.
"""

from __future__ import annotations

__all__ = ["ConditionalFlowDensity", "FlowDensity"]

import math
import warnings
from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from flowfit.distributions import Flow
from flowfit.errors import DataError, ModelFileError
from flowfit.flows import PRESETS
from flowfit.io.model_file import load_flow, save_flow
from flowfit.preprocessing import (
    Column,
    PooledSample,
    build_flow,
    choose_columns,
    choose_columns_sharded,
    clip_to_support,
    context_statistics,
    context_statistics_sharded,
    default_flow,
    default_flow_options,
    outside_support,
    size_candidates,
    standardised,
)
from flowfit.tails import has_heavy_tails
from flowfit.training import History, TrainingInterrupted, distributed, fit
from flowfit.training.distributed import DistributedSetup

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Rows per batch when scoring. A rounded column of a multivariate flow is integrated
# with 256 quasi-Monte Carlo points per row, so those batches are smaller to bound
# memory at about 256 * 1024 points.
SCORE_BATCH_ROWS = 65536
CELL_SCORE_BATCH_ROWS = 1024


class _FlowEstimator(BaseEstimator):
    """Parameters, training and model files shared by the two estimators."""

    _parameter_constraints: dict = {
        "flow": [str],
        "flow_options": [dict, None],
        "select_size": ["boolean"],
        "support": [StrOptions({"auto", "real", "positive"}), tuple, list, dict],
        "grid": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left"), list, dict,
                 None],
        "constant_columns": [StrOptions({"raise", "drop"})],
        "tails": [StrOptions({"auto", "normal", "student-t"})],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "val_fraction": [Interval(Real, 0, 1, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "dtype": [StrOptions({"float32", "float64"})],
        "random_state": ["random_state"],
        "show_progress": ["boolean"],
        "progress": [StrOptions({"bar", "jsonl", "quiet"})],
    }

    def __init__(
        self,
        *,
        flow: str = "auto",
        flow_options: dict[str, Any] | None = None,
        select_size: bool = False,
        support: str | tuple | list | dict = "auto",
        grid: str | float | list | dict | None = "auto",
        constant_columns: str = "raise",
        tails: str = "auto",
        max_epochs: int = 200,
        batch_size: int | None = 256,
        learning_rate: float = 5e-3,
        val_fraction: float = 0.1,
        patience: int = 20,
        dtype: str = "float32",
        random_state: int | np.random.RandomState | None = 0,
        show_progress: bool = False,
        progress: str = "bar",
    ) -> None:
        self.flow = flow
        self.flow_options = flow_options
        self.select_size = select_size
        self.support = support
        self.grid = grid
        self.constant_columns = constant_columns
        self.tails = tails
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.val_fraction = val_fraction
        self.patience = patience
        self.dtype = dtype
        self.random_state = random_state
        self.show_progress = show_progress
        self.progress = progress

    # -- checks ------------------------------------------------------------------

    def _choose(self, values: np.ndarray, names: list[str], weight: np.ndarray | None
                ) -> list[Column]:
        return choose_columns(
            values, names, support=self.support, grid=self.grid,
            constant_columns=self.constant_columns, sample_weight=weight,
            dtype=DTYPES[self.dtype],
        )

    def _choose_sharded(self, values: np.ndarray, names: list[str], weight: np.ndarray | None,
                        setup: DistributedSetup) -> tuple[list[Column], PooledSample]:
        return choose_columns_sharded(
            values, names, setup=setup, support=self.support, grid=self.grid,
            constant_columns=self.constant_columns, sample_weight=weight,
            dtype=DTYPES[self.dtype],
        )

    def _check_weights(self, sample_weight: Any, values: np.ndarray) -> np.ndarray | None:
        if sample_weight is None:
            return None
        weight = _check_sample_weight(sample_weight, values, dtype=np.float64,
                                      ensure_non_negative=True)
        if not np.all(np.isfinite(weight)):
            rows = np.flatnonzero(~np.isfinite(weight))[:5].tolist()
            raise DataError(f"sample_weight contains NaN or inf, first in rows {rows}.")
        return weight

    # -- training ----------------------------------------------------------------

    def _train(
        self,
        x: np.ndarray,
        columns: list[Column],
        *,
        context: np.ndarray | None,
        weight: np.ndarray | None,
        checkpointing: dict[str, Any] | None = None,
        pooled: PooledSample | None = None,
    ) -> None:
        """Fit the flow (or the candidate sizes) and set the fitted attributes.

        ``checkpointing`` contains the ``checkpoint``, ``checkpoint_every`` and
        ``resume_from`` arguments of :func:`flowfit.fit`. On Ctrl-C the fitted
        attributes are set to the best flow so far before the interrupt is re-raised.

        In a sharded run ``x``, ``context`` and ``weight`` are this process's rows, and
        ``pooled`` is the sample of the modelled columns pooled from all processes: the
        choices that need the values (tails, spline bound) use it, and the model size
        uses its row count over all processes.
        """
        modelled = [c for c in columns if not c.dropped]
        n_context = 0 if context is None else context.shape[1]
        n_rows = x.shape[0] if pooled is None else pooled.total_rows
        rows_for_choices = x if pooled is None else pooled.values
        preset = self.flow
        if self.flow == "auto":
            preset = default_flow(len(modelled), n_context)
            # Splines spread over the wide interval of a power-law column lose resolution
            # in the bulk: on the 2-D funnel "nsf" scored KL 0.041 and "maf" 0.0035.
            heavy = self.tails != "normal" and has_heavy_tails(
                standardised(rows_for_choices, modelled))
            if heavy and len(modelled) > 1 and "maf" in PRESETS:
                preset = "maf"
        explicit = dict(self.flow_options or {})
        if self.select_size:
            if self.val_fraction <= 0:
                raise ValueError(
                    "select_size=True picks the size by validation log-likelihood, so it "
                    f"needs val_fraction > 0; got {self.val_fraction}."
                )
            candidates = size_candidates(preset, n_rows, len(modelled))
        else:
            candidates = [default_flow_options(preset, n_rows, len(modelled))]
        candidates = [{**options, **explicit} for options in candidates]
        if checkpointing and len(candidates) > 1:
            raise ValueError("Checkpoints cover a single fit; they need select_size=False.")

        dtype = DTYPES[self.dtype]
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        context_loc = context_scale = None
        if context is not None and pooled is None:
            context_loc, context_scale = context_statistics(context, weight)
        elif context is not None:
            context_loc, context_scale = context_statistics_sharded(
                context, weight, distributed.detect())
        x_t = torch.tensor(x, dtype=dtype)
        context_t = None if context is None else torch.tensor(context, dtype=dtype)
        # Equal weights give the same loss as none, so they take the unweighted path. In
        # a sharded run one process cannot tell, so weights are kept.
        weight_t = None
        if weight is not None and (pooled is not None or not np.all(weight == weight[0])):
            weight_t = torch.tensor(weight, dtype=dtype)

        runs = [(preset, options) for options in candidates]
        if self.flow == "auto" and preset == "spline" and self.val_fraction > 0 \
                and not checkpointing:
            # On normal data the spline's extra parameters cost accuracy: on N(2, 1) with
            # 18,000 rows it scored KL 0.0012 and the 2-parameter "affine" model 0.0002.
            # So the better of the two on the validation rows is kept.
            runs.append(("affine", {}))
        results = []
        presets = []
        for run_preset, options in runs:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                flow = build_flow(columns, flow=run_preset, flow_options=options,
                                  context_loc=context_loc, context_scale=context_scale,
                                  dtype=dtype, data=rows_for_choices, tails=self.tails,
                                  extremes=None if pooled is None else pooled.extremes)
                try:
                    history = fit(
                        flow, x_t, context=context_t, sample_weight=weight_t,
                        max_epochs=self.max_epochs, batch_size=self.batch_size,
                        learning_rate=self.learning_rate, val_fraction=self.val_fraction,
                        patience=self.patience, seed=seed, show_progress=self.show_progress,
                        progress=self.progress, sharded=pooled is not None,
                        **(checkpointing or {}),
                    )
                except TrainingInterrupted as interrupt:
                    flow.eval()
                    self._keep_fit(run_preset, [(options, flow, interrupt.history)], 0)
                    raise
            flow.eval()
            results.append((options, flow, history))
            presets.append(run_preset)

        best = min(range(len(results)), key=lambda i: _validation_loss(results[i][2]))
        self._keep_fit(presets[best], results, best)

    def _keep_fit(self, preset: str, results: list, best: int) -> None:
        """Set the fitted attributes from ``results[best]`` of (options, flow, history)."""
        options, flow, history = results[best]
        self.flow_ = flow
        self.history_ = history
        self.n_iter_ = len(history.train)
        self.preset_ = preset
        self.flow_options_ = getattr(flow, "preset_options", options)
        self.tails_ = getattr(flow, "base_reason", "normal base")
        self.size_search_ = [
            {"options": getattr(fitted, "preset_options", tried),
             "val_log_likelihood": -_validation_loss(fit_history)}
            for tried, fitted, fit_history in results
        ] if self.select_size else []

    # -- scoring and sampling -----------------------------------------------------

    def _modelled(self) -> list[Column]:
        return [c for c in self.columns_ if not c.dropped]

    def _modelled_index(self) -> np.ndarray:
        return np.array([j for j, c in enumerate(self.columns_) if not c.dropped], dtype=int)

    def _log_prob(self, x: np.ndarray, context: np.ndarray | None) -> np.ndarray:
        """Return log p of the modelled columns ``x``, -inf for rows outside the support."""
        columns = self._modelled()
        outside = outside_support(x, columns)
        if outside.any():
            # Rows of zero density are scored at an in-support stand-in and then set to
            # -inf, because the support map gives NaN outside the support.
            x = x.copy()
            x[outside] = [c.reference for c in columns]
        flow: Flow = self.flow_
        dtype = DTYPES[self.dtype]
        cells = flow.grid is not None and flow.features > 1
        batch = CELL_SCORE_BATCH_ROWS if cells else SCORE_BATCH_ROWS
        scores = np.empty(x.shape[0])
        with torch.no_grad():
            for start in range(0, x.shape[0], batch):
                rows = slice(start, start + batch)
                context_rows = None if context is None else torch.tensor(
                    context[rows], dtype=dtype)
                log_prob = flow.log_prob(torch.tensor(x[rows], dtype=dtype), context_rows)
                scores[rows] = log_prob.double().numpy()
        scores[outside] = -math.inf
        return scores

    def _draw(self, n_samples: int, context: np.ndarray | None, random_state: Any
              ) -> np.ndarray:
        """Return float64 draws of the modelled columns, inside their supports."""
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
        dtype = DTYPES[self.dtype]
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            context_t = None if context is None else torch.tensor(context, dtype=dtype)
            draws = self.flow_.sample((n_samples,), context_t).double().numpy()
        shape = draws.shape
        flat = clip_to_support(draws.reshape(-1, shape[-1]), self._modelled())
        return flat.reshape(shape)

    # -- model files -------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        return {
            "estimator": type(self).__name__,
            "params": _jsonable(self.get_params()),
            "preset": self.preset_,
            "flow_options": _jsonable(self.flow_options_),
            "tails": self.tails_,
            "size_search": _jsonable(self.size_search_),
            "history": self.history_.to_dict(),
        }

    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Write the fitted model to a flowfit model file (safetensors with a JSON header).

        The header stores the parameters, the per-column choices, the column names and
        the training history; ``flowfit inspect`` prints them.
        """
        check_is_fitted(self, "flow_")
        save_flow(path, self.flow_, metadata=self._metadata(), overwrite=overwrite)

    @classmethod
    def _read(cls, path: str | Path) -> tuple[Any, Flow, dict[str, Any]]:
        flow, metadata = load_flow(path)
        stored = metadata.get("estimator", "FlowDensity")
        if stored != cls.__name__:
            raise ModelFileError(
                f"{path} contains a {stored}, not a {cls.__name__}; load it with "
                f"flowfit.{stored}.load."
            )
        known = cls().get_params()
        params = {k: v for k, v in metadata.get("params", {}).items() if k in known}
        if "support" in params:
            params["support"] = _restore_support(params["support"])
        model = cls(**params)
        model.flow_ = flow
        model.history_ = History(**metadata.get("history", {}))
        model.n_iter_ = len(model.history_.train)
        model.preset_ = metadata.get("preset", params.get("flow", "spline"))
        model.flow_options_ = metadata.get("flow_options", params.get("flow_options") or {})
        model.size_search_ = metadata.get("size_search", [])
        # Files written before the reason was stored still name the base.
        model.tails_ = metadata.get("tails", type(flow.base).__name__)
        return model, flow, metadata

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class FlowDensity(DensityMixin, _FlowEstimator):
    """Density estimation with a normalizing flow, in the style of scikit-learn.

    Each column gets its own preprocessing, chosen by
    :func:`flowfit.preprocessing.choose_columns` and overridable per column: a map onto
    its support (identity, log or logit) with its exact Jacobian, standardisation, and
    dequantisation if it is rounded to a grid. Scores are therefore log-densities in
    the data's units, -inf outside the support and, for a rounded column, the log of
    each grid cell's probability divided by its step (the probability mass for
    integers).

    Parameters:
        flow: A preset name from :data:`flowfit.flows.PRESETS`, or "auto":
            "spline" for one column and the first registered of "nsf", "maf",
            "nsf-coupling", "realnvp" for more (see
            :func:`flowfit.preprocessing.default_flow`).
        flow_options: Keyword arguments for the preset (``layers``, ``hidden``,
            ``bins``, ...). They override the automatic size of
            :func:`flowfit.preprocessing.default_flow_options` key by key.
        select_size: Whether to fit the three sizes of
            :func:`flowfit.preprocessing.size_candidates` and keep the one with the
            best validation log-likelihood. It needs ``val_fraction > 0``.
        support: "auto", "real", "positive" or ``(low, high)`` (None for an open side)
            for every column. A list gives one entry per column, and a dict maps
            column names or indices to entries, with "auto" for the other columns.
        grid: "auto" detects columns rounded to a grid; None treats a column as
            continuous; a number is the step. The same forms as ``support`` apply.
        constant_columns: "raise" stops on a constant or nearly constant column with
            an error naming it. "drop" leaves it out of the flow, so scores cover the
            other columns and samples repeat its median.
        tails: "auto" gives a Student's t base, with learned degrees of freedom per
            column, when any column's Hill tail index is below 4, and a normal base
            otherwise (:func:`flowfit.tails.choose_base`). It then also picks "maf"
            over "nsf" for ``flow="auto"`` with several columns. "normal" and
            "student-t" force one base. ``tails_`` states the choice.
        max_epochs: Passes over the training rows, at most.
        batch_size: Rows per optimizer step; None uses all training rows at once.
        learning_rate: Adam's initial learning rate.
        val_fraction: Share of rows held out for early stopping and size selection.
        patience: Epochs without a better validation loss before stopping.
        dtype: "float32" or "float64".
        random_state: Seed for the initial parameters, the split and the noise; an
            int, a :class:`numpy.random.RandomState`, or None for a fresh seed.
        show_progress: Whether to report training progress.
        progress: How to report it: "bar", "jsonl" (one JSON object per epoch on
            standard error) or "quiet".

    Attributes:
        flow_: The fitted :class:`~flowfit.distributions.Flow` over the modelled
            (not dropped) columns.
        columns_: One :class:`~flowfit.preprocessing.Column` per input column.
        grid_: The grid step of each input column, 0 for continuous ones, of shape
            (n_features_in_,).
        preset_: The preset used.
        flow_options_: The preset's options used, after the size rule, with the
            spline ``bound`` chosen from the data where the preset has one.
        tails_: The base chosen and why, for example "Student's t base; Hill tail
            indices below 4: column 0: 2.75".
        size_search_: With ``select_size``, each candidate's options and validation
            mean log-likelihood; empty otherwise.
        history_: The :class:`~flowfit.training.History` of the kept fit.
        n_iter_: The number of epochs run.
        n_features_in_: The number of columns seen in fit.
        feature_names_in_: The column names, when fitted on a DataFrame with string
            column names.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(2.0, 1.0, size=(500, 1))
        >>> model = FlowDensity(flow="affine", max_epochs=50).fit(X)
        >>> model.score_samples(X[:2]).shape
        (2,)
    """

    def fit(
        self,
        X: Any,
        y: Any = None,
        sample_weight: Any = None,
        *,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 10,
        resume_from: str | Path | None = None,
        sharded: bool = False,
    ) -> FlowDensity:
        """Fit the flow to the rows of ``X``.

        Arguments:
            X: array-like or DataFrame of shape (n_samples, n_features).
            y: Ignored.
            sample_weight: Non-negative row weights of shape (n_samples,); they weight
                the column statistics and the training and validation losses. Rows of
                weight 0 are removed first.
            checkpoint: A file to write training checkpoints to, every
                ``checkpoint_every`` epochs and on Ctrl-C; see :func:`flowfit.fit`.
            checkpoint_every: Epochs between checkpoints.
            resume_from: A checkpoint of an interrupted fit with the same data and
                parameters to continue; the result equals that of an uninterrupted fit.
            sharded: Whether ``X`` and ``sample_weight`` hold only this process's rows,
                in a run on several processes started by ``torchrun`` where every
                process passes its own rows. The column choices then come from a sample
                pooled from all processes and the standardisation from all rows (see
                :func:`flowfit.preprocessing.choose_columns_sharded`), and each process
                trains on its own rows (``sharded`` of :func:`flowfit.fit`). Ignored in
                a single process.

        Returns:
            The fitted estimator.
        """
        self._validate_params()
        setup = _sharded_setup(sharded)
        values = validate_data(self, X, dtype=np.float64, ensure_all_finite=False,
                               ensure_min_samples=2 if setup is None else 1)
        names = _column_names(X, values)
        _check_finite(values, names, "X")
        weight = self._check_weights(sample_weight, values)
        if weight is not None:
            keep = weight > 0
            values, weight = values[keep], weight[keep]
            if values.shape[0] < 2 and setup is None:
                raise DataError(
                    f"Training needs at least 2 rows of positive weight; got {values.shape[0]}."
                )
        pooled = None
        if setup is None:
            columns = self._choose(values, names, weight)
        else:
            columns, pooled = self._choose_sharded(values, names, weight, setup)
        self.columns_ = columns
        self.grid_ = np.array([c.step for c in columns])
        index = self._modelled_index()
        checkpointing = None
        if checkpoint is not None or resume_from is not None:
            checkpointing = {"checkpoint": checkpoint, "checkpoint_every": checkpoint_every,
                             "resume_from": resume_from}
        self._train(values[:, index], columns, context=None, weight=weight,
                    checkpointing=checkpointing,
                    pooled=None if pooled is None else pooled.select(index))
        return self

    def _check_rows(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "flow_")
        values = _validate_rows(self, X)
        _check_finite(values, [c.name for c in self.columns_], "X")
        return values

    def score_samples(self, X: Any) -> np.ndarray:
        """Return the log-density of each row of ``X`` in the data's units.

        Arguments:
            X: array-like or DataFrame of shape (n_samples, n_features).

        Returns:
            An array of shape (n_samples,): -inf for rows outside a column's support or
            off a rounded column's grid, and for rounded columns the log of the cell's
            probability divided by the cell's volume. Dropped columns do not count.
        """
        values = self._check_rows(X)
        return self._log_prob(values[:, self._modelled_index()], None)

    def score(self, X: Any, y: Any = None) -> float:
        """Return the total log-likelihood of ``X``, so that grid search maximises it."""
        return float(np.sum(self.score_samples(X)))

    def sample(self, n_samples: int = 1, random_state: Any = None) -> np.ndarray | pd.DataFrame:
        """Draw rows from the fitted density.

        Arguments:
            n_samples: The number of rows.
            random_state: Seed, :class:`numpy.random.RandomState` or None (NumPy's
                global generator picks the seed).

        Returns:
            An array of shape (n_samples, n_features), or a DataFrame with the fitted
            column names when fitted on one. Bounded columns lie strictly inside their
            bounds and rounded columns on their grids.
        """
        check_is_fitted(self, "flow_")
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer; got {n_samples!r}.")
        draws = self._draw(int(n_samples), None, random_state)
        samples = np.empty((int(n_samples), len(self.columns_)))
        samples[:, self._modelled_index()] = draws
        for j, column in enumerate(self.columns_):
            if column.dropped:
                samples[:, j] = column.reference
        if hasattr(self, "feature_names_in_"):
            return pd.DataFrame(samples, columns=list(self.feature_names_in_))
        return samples

    def _as_tensor(self, X: Any, *, fitting: bool = False) -> torch.Tensor:
        """Return the checked modelled columns of ``X`` as a tensor in the model's dtype."""
        if fitting:
            raise ValueError("_as_tensor checks rows for a fitted model only; call fit.")
        values = self._check_rows(X)
        return torch.tensor(values[:, self._modelled_index()], dtype=DTYPES[self.dtype])

    def _metadata(self) -> dict[str, Any]:
        metadata = super()._metadata()
        metadata["columns"] = [c.name for c in self.columns_]
        metadata["feature_names"] = _feature_names(self)
        metadata["n_features_in"] = int(self.n_features_in_)
        metadata["preprocessing"] = [c.to_dict() for c in self.columns_]
        return metadata

    @classmethod
    def load(cls, path: str | Path) -> FlowDensity:
        """Read a model file written by :meth:`save`."""
        model, flow, metadata = cls._read(path)
        model.n_features_in_ = int(metadata.get("n_features_in", flow.features))
        names = metadata.get("feature_names", metadata.get("columns"))
        if names is not None:
            model.feature_names_in_ = np.asarray(names, dtype=object)
        model.columns_ = _stored_columns(metadata, flow, model.n_features_in_)
        model.grid_ = np.array([c.step for c in model.columns_])
        return model


class ConditionalFlowDensity(_FlowEstimator):
    """The density of targets ``y`` given features ``X``, as a conditional flow.

    The targets get the per-column preprocessing of :class:`FlowDensity`; the features
    are standardised and passed to every layer of a conditional preset as the context.

    The parameters are those of :class:`FlowDensity` and apply to the target columns.
    ``flow="auto"`` picks the first registered of "nsf", "maf", "nsf-coupling",
    "realnvp", which all accept a context.

    Attributes:
        flow_: The fitted conditional :class:`~flowfit.distributions.Flow`.
        columns_: One :class:`~flowfit.preprocessing.Column` per target column.
        n_targets_: The number of target columns.
        target_names_: The target column names (from a Series or DataFrame ``y``, else
            ``y0, y1, ...``).

    The attributes ``n_features_in_``, ``feature_names_in_``, ``preset_``,
    ``flow_options_``, ``tails_``, ``size_search_``, ``history_`` and ``n_iter_`` are as in
    :class:`FlowDensity`.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(400, 1))
        >>> y = 2.0 * X[:, 0] + rng.normal(size=400)
        >>> model = ConditionalFlowDensity(max_epochs=20).fit(X, y)
        >>> model.score_samples(X[:3], y[:3]).shape
        (3,)
        >>> model.sample(X[:3], n_samples=5).shape
        (3, 5)
    """

    def fit(
        self,
        X: Any,
        y: Any,
        sample_weight: Any = None,
        *,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 10,
        resume_from: str | Path | None = None,
        sharded: bool = False,
    ) -> ConditionalFlowDensity:
        """Fit the density of ``y`` given ``X``.

        Arguments:
            X: Features, array-like or DataFrame of shape (n_samples, n_features).
            y: Targets of shape (n_samples,) or (n_samples, n_targets).
            sample_weight: Non-negative row weights of shape (n_samples,).
            checkpoint: As in :meth:`FlowDensity.fit`.
            checkpoint_every: As in :meth:`FlowDensity.fit`.
            resume_from: As in :meth:`FlowDensity.fit`.
            sharded: As in :meth:`FlowDensity.fit`: ``X``, ``y`` and ``sample_weight``
                hold this process's rows. The features are then standardised by their
                mean and standard deviation over all processes' rows.

        Returns:
            The fitted estimator.
        """
        self._validate_params()
        if y is None:
            raise ValueError(
                "ConditionalFlowDensity requires y to be passed, but the target y is None."
            )
        setup = _sharded_setup(sharded)
        X_checked, y_checked = validate_data(
            self, X, y, dtype=np.float64, ensure_all_finite=False,
            ensure_min_samples=2 if setup is None else 1, multi_output=True, y_numeric=True,
        )
        feature_names = _column_names(X, X_checked)
        target_names = _column_names(y, np.asarray(y_checked), prefix="y")
        X = X_checked
        _check_finite(X, feature_names, "X")
        targets = np.asarray(y_checked, dtype=np.float64)
        self.target_is_1d_ = targets.ndim == 1
        targets = targets.reshape(targets.shape[0], -1)
        _check_finite(targets, target_names, "y")
        weight = self._check_weights(sample_weight, X)
        if weight is not None:
            keep = weight > 0
            X, targets, weight = X[keep], targets[keep], weight[keep]
            if X.shape[0] < 2 and setup is None:
                raise DataError(
                    f"Training needs at least 2 rows of positive weight; got {X.shape[0]}."
                )
        self.n_targets_ = targets.shape[1]
        self.target_names_ = list(target_names)
        pooled = None
        if setup is None:
            self.columns_ = self._choose(targets, target_names, weight)
        else:
            self.columns_, pooled = self._choose_sharded(targets, target_names, weight, setup)
        index = self._modelled_index()
        checkpointing = None
        if checkpoint is not None or resume_from is not None:
            checkpointing = {"checkpoint": checkpoint, "checkpoint_every": checkpoint_every,
                             "resume_from": resume_from}
        self._train(targets[:, index], self.columns_, context=X, weight=weight,
                    checkpointing=checkpointing,
                    pooled=None if pooled is None else pooled.select(index))
        return self

    def _check_features(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "flow_")
        X = _validate_rows(self, X)
        _check_finite(X, _feature_names(self) or [f"x{i}" for i in range(X.shape[1])], "X")
        return X

    def score_samples(self, X: Any, y: Any) -> np.ndarray:
        """Return :math:`\\log p(y \\mid x)` of each row, in the targets' units.

        Arguments:
            X: Features of shape (n_samples, n_features).
            y: Targets of shape (n_samples,) or (n_samples, n_targets).

        Returns:
            An array of shape (n_samples,), -inf where a target lies outside its support
            or off its grid.
        """
        X = self._check_features(X)
        targets = np.asarray(y, dtype=np.float64)
        if targets.ndim == 1:
            targets = targets[:, None]
        if targets.shape != (X.shape[0], self.n_targets_):
            raise ValueError(
                f"Expected y of shape ({X.shape[0]},) or ({X.shape[0]}, {self.n_targets_}); "
                f"got {np.shape(y)}."
            )
        _check_finite(targets, self.target_names_, "y")
        return self._log_prob(targets[:, self._modelled_index()], X)

    def score(self, X: Any, y: Any) -> float:
        """Return the total conditional log-likelihood of ``y`` given ``X``."""
        return float(np.sum(self.score_samples(X, y)))

    def sample(self, X: Any, n_samples: int = 1, random_state: Any = None) -> np.ndarray:
        """Draw targets for each row of ``X``.

        Arguments:
            X: Features of shape (n_rows, n_features).
            n_samples: Draws per row.
            random_state: Seed, :class:`numpy.random.RandomState` or None.

        Returns:
            An array of shape (n_rows, n_samples) when fitted on a 1-D ``y``, else
            (n_rows, n_samples, n_targets).
        """
        X = self._check_features(X)
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer; got {n_samples!r}.")
        draws = self._draw(int(n_samples), X, random_state)  # (n_samples, n_rows, d)
        samples = np.empty((int(n_samples), X.shape[0], self.n_targets_))
        samples[..., self._modelled_index()] = draws
        for j, column in enumerate(self.columns_):
            if column.dropped:
                samples[..., j] = column.reference
        samples = samples.transpose(1, 0, 2)
        return samples[..., 0] if self.target_is_1d_ else samples

    def _metadata(self) -> dict[str, Any]:
        metadata = super()._metadata()
        metadata["feature_names"] = _feature_names(self)
        metadata["n_features_in"] = int(self.n_features_in_)
        metadata["target_names"] = self.target_names_
        metadata["target_is_1d"] = bool(self.target_is_1d_)
        metadata["preprocessing"] = [c.to_dict() for c in self.columns_]
        return metadata

    @classmethod
    def load(cls, path: str | Path) -> ConditionalFlowDensity:
        """Read a model file written by :meth:`save`."""
        model, flow, metadata = cls._read(path)
        model.n_features_in_ = int(metadata["n_features_in"])
        names = metadata.get("feature_names")
        if names is not None:
            model.feature_names_in_ = np.asarray(names, dtype=object)
        model.target_names_ = list(metadata["target_names"])
        model.target_is_1d_ = bool(metadata["target_is_1d"])
        model.n_targets_ = len(model.target_names_)
        model.columns_ = [Column.from_dict(r) for r in metadata["preprocessing"]]
        return model

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        return tags


# ---------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------


def _sharded_setup(sharded: bool) -> DistributedSetup | None:
    """Return this process's setup for a sharded fit, or None to fit as one process.

    A sharded fit joins the process group here, because the column statistics need it
    before training starts.
    """
    if not sharded:
        return None
    setup = distributed.detect()
    if not setup.enabled:
        return None
    distributed.initialize(setup)
    return setup


def _validation_loss(history: History) -> float:
    """Return the best validation NLL of a fit, or its last training NLL without one."""
    if history.val:
        return float(min(history.val))
    return float(history.train[-1]) if history.train else math.inf


def _column_names(X: Any, values: np.ndarray, prefix: str = "x") -> list[str]:
    """Return the column names of a DataFrame ``X``, else ``x0, x1, ...`` for ``values``."""
    if isinstance(X, pd.DataFrame):
        return [str(c) for c in X.columns]
    if isinstance(X, pd.Series) and X.name is not None:
        return [str(X.name)]
    width = values.shape[1] if values.ndim == 2 else 1
    return [f"{prefix}{i}" for i in range(width)]


def _feature_names(model: BaseEstimator) -> list[str] | None:
    names = getattr(model, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def _validate_rows(model: BaseEstimator, X: Any) -> np.ndarray:
    """Check rows for a fitted model; an array is taken in the fitted column order.

    scikit-learn warns when a model fitted on a DataFrame gets an array. flowfit
    accepts the array without the warning, as its command line and earlier versions do.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names",
                                category=UserWarning)
        return validate_data(model, X, dtype=np.float64, ensure_all_finite=False,
                             reset=False)


def _check_finite(values: np.ndarray, names: Sequence[str], argument: str) -> None:
    """Raise DataError naming the first column with NaN or infinite values and its rows."""
    finite = np.isfinite(values)
    if finite.all():
        return
    column = int(np.flatnonzero(~finite.all(axis=0))[0])
    rows = np.flatnonzero(~finite[:, column])
    problem = "NaN" if np.isnan(values[rows[0], column]) else "infinite values (inf)"
    name = names[column] if column < len(names) else f"x{column}"
    raise DataError(
        f"{argument} contains {problem} in column {name!r}, in {rows.size} row(s), first "
        f"{rows[:10].tolist()} (counted from 0). Remove or impute those rows first."
    )


def _jsonable(value: Any) -> Any:
    """Return ``value`` with tuples as lists and keys as strings, so JSON can store it."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.random.RandomState):
        return None
    return value


def _restore_support(value: Any) -> Any:
    """Turn the ``(low, high)`` pairs that JSON stored as lists back into tuples."""
    def is_pair(item: Any) -> bool:
        return isinstance(item, list) and len(item) == 2 and all(
            v is None or isinstance(v, int | float) for v in item
        )

    if is_pair(value):
        return tuple(value)
    if isinstance(value, dict):
        return {k: tuple(v) if is_pair(v) else v for k, v in value.items()}
    if isinstance(value, list):
        return [tuple(v) if is_pair(v) else v for v in value]
    return value


def _stored_columns(metadata: dict[str, Any], flow: Flow, n_features: int) -> list[Column]:
    """Return the column records of a model file, rebuilt for files that predate them."""
    records = metadata.get("preprocessing")
    if records is not None:
        return [Column.from_dict(r) for r in records]
    # Files from before per-column preprocessing: every column was modelled, with the
    # flow's grid; support bounds are not known, so no row is scored as outside.
    names = metadata.get("columns") or [f"x{i}" for i in range(n_features)]
    steps = [0.0] * n_features if flow.grid is None else flow.grid.tolist()
    return [Column(str(n), "real", step=float(s), reason="model file without records")
            for n, s in zip(names, steps)]
