"""Exceptions that flowfit raises for problems a user can fix.

Each is also a :class:`ValueError` or :class:`RuntimeError`, so code that catches the
standard classes keeps working.
"""

__all__ = ["FlowfitError", "CheckpointError", "DataError", "ModelFileError", "TrainingError"]


class FlowfitError(Exception):
    """Base class of flowfit's user-facing errors; the command line prints its message."""


class DataError(FlowfitError, ValueError):
    """Input data are missing, unreadable or invalid (text, NaN, wrong shape, ...)."""


class ModelFileError(FlowfitError, ValueError):
    """A model file is missing, corrupt, of an unknown version or not a flowfit model."""


class TrainingError(FlowfitError, RuntimeError):
    """Training could not continue, for example after repeated non-finite losses."""


class CheckpointError(FlowfitError, ValueError):
    """A training checkpoint is missing or corrupt, or belongs to a run with other settings."""
