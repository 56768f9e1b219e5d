"""Training loops for maximum-likelihood fitting."""

from flowfit.training.checkpoint import load_checkpoint, save_checkpoint
from flowfit.training.loop import History, TrainingError, TrainingInterrupted, fit

__all__ = [
    "History",
    "TrainingError",
    "TrainingInterrupted",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
]
