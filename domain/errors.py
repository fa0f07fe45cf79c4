"""Errors raised when a command would break an invariant of the domain."""

from __future__ import annotations


class DomainError(ValueError):
    """A command is invalid for the current state; retrying it unchanged will fail again."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidOrderError(DomainError):
    """The order's data breaks a rule: bad lines, amounts or currency."""


class InvalidTransitionError(DomainError):
    """The order's status does not allow the command."""
