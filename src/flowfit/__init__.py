"""flowfit: fit normalizing flows to data by maximum likelihood."""

__version__ = "0.1.0"

from flowfit.distributions import DiagonalNormal, Flow, StandardNormal
from flowfit.errors import DataError, FlowfitError, ModelFileError, TrainingError
from flowfit.estimators import ConditionalFlowDensity, FlowDensity
from flowfit.io import load_flow, read_table, save_flow
from flowfit.preprocessing import make_flow
from flowfit.training import History, fit

__all__ = [
    "ConditionalFlowDensity",
    "DataError",
    "DiagonalNormal",
    "Flow",
    "FlowDensity",
    "FlowfitError",
    "History",
    "ModelFileError",
    "StandardNormal",
    "TrainingError",
    "__version__",
    "fit",
    "load_flow",
    "make_flow",
    "read_table",
    "save_flow",
]
