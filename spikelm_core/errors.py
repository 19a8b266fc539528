"""Errors that reach the user as a message, not a traceback.

Each carries a message (what is wrong), optional details (where) and a hint (what to do next).
The CLI prints them and exits with `exit_code`; any other exception is a bug.
"""

from __future__ import annotations


class SpikelmError(Exception):
    """Base class of the errors spikelm reports to users."""

    exit_code = 1

    def __init__(self, message: str, *, details: list[str] | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = list(details or [])
        self.hint = hint

    def __str__(self) -> str:
        parts = [self.message, *(f"  - {d}" for d in self.details)]
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)


def first_details(items: list[str], limit: int = 5) -> list[str]:
    """The first `limit` of `items` as error details, and a line counting the rest."""
    return items[:limit] + ([f"... and {len(items) - limit} more"] if len(items) > limit else [])


class ConfigError(SpikelmError):
    """A bad option, recipe key or setting."""

    exit_code = 2


class CheckpointError(SpikelmError):
    """A model source that cannot be found, read or used."""

    exit_code = 3
    recipe: str | None = None
    """The bundled recipe that writes a missing run output ('recipes/minilm_glue/cola_teacher.yaml'), if any."""


class DataError(SpikelmError):
    """A data file or directory that cannot be found, read or used."""

    exit_code = 4


class OutputError(SpikelmError):
    """An output location that cannot be written (read-only, full disk, busy device)."""

    exit_code = 5
