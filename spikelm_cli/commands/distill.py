"""`spikelm distill`: knowledge distillation from a dense teacher into a spiking student."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spikelm_core.config import DistillConfig, load_config

from .. import render
from ..errors import friendly_errors
from ..params import FormatOpt, OutputFormat
from ._training import DataDirOpt, OverridesOpt, ResumeOpt, RunOutDirOpt, recipe_or_default


@friendly_errors
def distill_command(
    recipe: Annotated[Optional[Path], typer.Argument(help="Recipe YAML (or a run's run_config.yaml).")] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="GLUE task (sst2, ...) or summarization task (xsum, cnn_dm); without RECIPE, picks the paper recipe (recipes/bert_base/ or recipes/bart_base/).")] = None,
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="Dense teacher fine-tuned on the task (overrides distill.teacher).")] = None,
    overrides: OverridesOpt = None,
    out_dir: RunOutDirOpt = None,
    resume: ResumeOpt = "never",
    data_dir: DataDirOpt = None,
    format: FormatOpt = OutputFormat.table,
) -> None:
    """Distill a dense teacher into a spiking student (logit KL, hidden-state and attention MSE).

    Example: spikelm distill recipes/tiny/distill.yaml --teacher runs/teacher -s train.max_steps=10
    """
    from spikelm_core.training import run_distill

    path = recipe_or_default(recipe, task, "distill")
    cfg = load_config(DistillConfig, path, overrides or [], out_dir=str(out_dir) if out_dir else None,
                      glue_task=task, **{"data.data_dir": str(data_dir) if data_dir else None,
                                         "distill.teacher": teacher})
    render.enable_library_logs()
    result = run_distill(cfg, resume=resume, callbacks=[render.progress_callback()])
    render.training_result(result, format)
