"""Shared option types and aliases of the commands."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from spikelm_core.neurons.settings import LEVELS, RESETS, SALIENT_MODES, SPIKING_KINDS


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


def choice_enum(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str Enum with one member per value (member name = value), for typer choices.

    The choices come from the library's vocabulary (e.g. `spikelm_core.neurons.settings.RESETS`),
    so the CLI never restates them.
    """
    return Enum(name, [(v, v) for v in values], type=str)


SpikingKind = choice_enum("SpikingKind", SPIKING_KINDS)
Reset = choice_enum("Reset", RESETS)
Levels = choice_enum("Levels", LEVELS)
SalientMode = choice_enum("SalientMode", SALIENT_MODES)

FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="table (rich, for people) or json (stdout, for programs).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace a non-empty output directory.")]
OutDirOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory (written atomically).")]
