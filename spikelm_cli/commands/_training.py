"""Options shared by the training commands (finetune, distill, pretrain, eval)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spikelm_core.errors import ConfigError

OverridesOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a recipe key: -s train.lr=3e-5 (repeatable)."),
]
RunOutDirOpt = Annotated[Optional[Path], typer.Option("--out-dir", help="Run directory (overrides the recipe's out_dir).")]
ResumeOpt = Annotated[
    str,
    typer.Option("--resume", help="never (default), auto (latest checkpoint in the run directory, else fresh), or a checkpoint directory."),
]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Local GLUE root (SST-2/, MNLI/, ...; overrides $GLUE_DIR), or for xsum/cnn_dm a directory with train.jsonl / validation.jsonl.")]


def recipe_or_default(recipe: Path | None, task: str | None, command: str) -> Path:
    """The recipe given, or the paper's recipe for `--task`."""
    if recipe is not None:
        return recipe
    if task is None:
        raise ConfigError(f"give a recipe, or --task to use the paper's {command} recipe",
                          hint=f"spikelm {command} recipes/tiny/{command}.yaml  or  spikelm {command} --task sst2")
    from spikelm_core.training.recipes import paper_recipe

    return paper_recipe(command, task)
