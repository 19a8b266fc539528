"""Shared option types and aliases of the commands."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


class Reset(str, Enum):
    official = "official"
    soft = "soft"
    none = "none"


class NeuronKind(str, Enum):
    elastic_bi = "elastic_bi"
    lif = "lif"


class Levels(str, Enum):
    ternary = "ternary"
    binary = "binary"


FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="table (rich, for people) or json (stdout, for programs).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace a non-empty output directory.")]
OutDirOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory (written atomically).")]
