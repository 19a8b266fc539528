"""`spikelm finetune`: fine-tune a spiking model on a GLUE or summarization task."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spikelm_core.config import FinetuneConfig

from .. import render
from ..errors import friendly_errors
from ..params import FormatOpt, OutputFormat
from ._training import (DataDirOpt, ModelOpt, OverridesOpt, PrintConfigOpt, ResumeOpt, RunOutDirOpt,
                        TaskOpt, load_run_config, print_config_and_exit, recipe_or_default)


@friendly_errors
def finetune_command(
    recipe: Annotated[Optional[Path], typer.Argument(help="Recipe YAML (or a run's run_config.yaml).")] = None,
    task: TaskOpt = None,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
    reinit_head: Annotated[Optional[bool], typer.Option("--reinit-head/--keep-head", help="Start a fresh classifier when the model's saved one has another label count (default: refuse such a model).", show_default=False)] = None,
    overrides: OverridesOpt = None,
    out_dir: RunOutDirOpt = None,
    resume: ResumeOpt = "never",
    print_config: PrintConfigOpt = False,
    format: FormatOpt = OutputFormat.table,
) -> None:
    """Fine-tune a spiking model (or a dense model converted on the fly) on a GLUE or summarization task.

    Example: spikelm finetune --task sst2 --model minilm --data-dir ../shared/data/glue -s train.max_steps=20
    """
    from spikelm_core.training import run_finetune

    path = recipe_or_default(recipe, task, "finetune")
    render.enable_library_logs()
    cfg = load_run_config(FinetuneConfig, path, overrides, task=task, model=model, data_dir=data_dir, out_dir=out_dir,
                          reinit_head=reinit_head)
    if print_config:
        print_config_and_exit(cfg)
    result = run_finetune(cfg, resume=resume, callbacks=[render.progress_callback()])
    render.training_result(result, format)
