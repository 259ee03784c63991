"""Training errors: everything wrong with the input is reported before training starts."""

from __future__ import annotations

from healthai.errors import InputFileError


class TrainingInputError(InputFileError):
    """Bad training input (data, graph or privacy settings); ``field`` names what was wrong."""


class PrivacyBudgetError(TrainingInputError):
    """The requested (epsilon, delta) cannot be met with the given sampling and epochs."""
