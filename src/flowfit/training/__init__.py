"""Training loops for maximum-likelihood fitting."""

from flowfit.training.loop import History, TrainingError, fit

__all__ = ["History", "TrainingError", "fit"]
