"""Finding the bundled recipes (recipes/ at the project root) from a checkout or an editable install."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError


def recipes_dir() -> Path | None:
    """$SPIKELM_RECIPES, else recipes/ next to the spikelm_core package (source checkout or
    editable install), else ./recipes; None when none exists."""
    candidates = []
    if os.environ.get("SPIKELM_RECIPES"):
        candidates.append(Path(os.environ["SPIKELM_RECIPES"]))
    candidates.append(Path(__file__).resolve().parents[2] / "recipes")
    candidates.append(Path.cwd() / "recipes")
    for c in candidates:
        if c.is_dir():
            return c
    return None


def paper_recipe(command: str, glue_task: str) -> Path:
    """recipes/bert_base/<command>_<task>.yaml (GLUE, e.g. the paper's MNLI fine-tuning recipe) or
    recipes/bart_base/<command>_<task>.yaml (summarisation: xsum, cnn_dm)."""
    from ..config.schema import _summarization_name
    from ..data.glue import get_glue_task

    summarization = _summarization_name(glue_task)
    task = summarization or get_glue_task(glue_task).name
    family = "bart_base" if summarization else "bert_base"
    root = recipes_dir()
    if root is None:
        raise ConfigError(
            "cannot find the recipes/ directory",
            hint="give a recipe path, or set SPIKELM_RECIPES to the recipes/ directory of a spikelm checkout",
        )
    path = root / family / f"{command}_{task}.yaml"
    if not path.is_file():
        raise ConfigError(f"no bundled {command} recipe for {task}: {path} does not exist",
                          hint="give a recipe path")
    return path
