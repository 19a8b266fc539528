"""`spikelm finetune`: fine-tune a spiking model on a GLUE task."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spikelm_core.config import FinetuneConfig, load_config

from .. import render
from ..errors import friendly_errors
from ..params import FormatOpt, OutputFormat
from ._training import DataDirOpt, OverridesOpt, ResumeOpt, RunOutDirOpt, recipe_or_default


@friendly_errors
def finetune_command(
    recipe: Annotated[Optional[Path], typer.Argument(help="Recipe YAML (or a run's run_config.yaml).")] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="GLUE task (cola, sst2, ...) or summarization task (xsum, cnn_dm); without RECIPE, picks the paper recipe (recipes/bert_base/ or recipes/bart_base/).")] = None,
    overrides: OverridesOpt = None,
    out_dir: RunOutDirOpt = None,
    resume: ResumeOpt = "never",
    data_dir: DataDirOpt = None,
    format: FormatOpt = OutputFormat.table,
) -> None:
    """Fine-tune a spiking model (or a dense model converted on the fly) on a GLUE or summarization task.

    Example: spikelm finetune recipes/tiny/finetune.yaml -s train.max_steps=10
    """
    from spikelm_core.training import run_finetune

    path = recipe_or_default(recipe, task, "finetune")
    cfg = load_config(FinetuneConfig, path, overrides or [], out_dir=str(out_dir) if out_dir else None,
                      glue_task=task, **{"data.data_dir": str(data_dir) if data_dir else None})
    render.enable_library_logs()
    result = run_finetune(cfg, resume=resume, callbacks=[render.progress_callback()])
    render.training_result(result, format)
