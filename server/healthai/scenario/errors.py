"""Scenario input errors: INVALID_ARGUMENT whose message starts with the field it names."""

from __future__ import annotations

from healthai.errors import InvalidInput


class FieldError(InvalidInput):
    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message, field=field)
