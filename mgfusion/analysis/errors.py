"""The error types of :mod:`mgfusion.analysis`."""

from __future__ import annotations

__all__ = ["AnalysisError", "UnfinishedRunError"]


class AnalysisError(ValueError):
    """Inputs that cannot be analysed as asked (missing runs, mixed datasets, damaged files); the message names the
    folder or file, the problem and the fix."""


class UnfinishedRunError(AnalysisError):
    """A run folder without final results (the run did not finish, or failed)."""
