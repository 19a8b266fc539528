"""`spikelm finetune`: fine-tune a spiking model on a GLUE, summarization or language-modelling task."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spikelm_core.config import FinetuneConfig

from .. import render
from ..errors import friendly_errors
from ..params import FormatOpt, OutputFormat
from ._training import (DataDirOpt, GridOpt, ModelOpt, OverridesOpt, PointOpt, PrintConfigOpt, ResumeOpt,
                        RunOutDirOpt, TaskOpt, check_sweep, load_run_config, print_config_and_exit,
                        recipe_or_default, train_or_sweep)


@friendly_errors
def finetune_command(
    recipe: Annotated[Optional[Path], typer.Argument(help="Recipe YAML (or a run's run_config.yaml).")] = None,
    task: TaskOpt = None,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
    reinit_head: Annotated[Optional[bool], typer.Option("--reinit-head/--keep-head", help="--reinit-head: start a fresh classifier when the model's saved one has another label count; --keep-head (the default): refuse such a model.", show_default=False)] = None,
    overrides: OverridesOpt = None,
    grid: GridOpt = None,
    point: PointOpt = None,
    out_dir: RunOutDirOpt = None,
    resume: ResumeOpt = "never",
    print_config: PrintConfigOpt = False,
    format: FormatOpt = OutputFormat.table,
) -> None:
    """Fine-tune a spiking model (or a dense model converted on the fly) on a GLUE, summarization or language-modelling task.

    Example: spikelm finetune --task sst2 --model minilm --data-dir ../shared/data/glue -s train.max_steps=20 -s train.logging_steps=5
    Example: spikelm finetune --task wikitext2 --model smollm2 -s data.train_file=../shared/data/text/wikitext-2/valid.txt -s data.validation_file=../shared/data/text/wikitext-2/test.txt

    Sweep (one run per point, then a table and a Pareto plot of metric against energy):
    spikelm finetune recipes/tiny/finetune.yaml -g neuron.k=2,3,4 -g neuron.num_timesteps=1,4 --out-dir runs/sweep
    """
    from spikelm_core.training import run_finetune

    path = recipe_or_default(recipe, task, "finetune")
    render.enable_library_logs()
    cfg = load_run_config(FinetuneConfig, path, overrides, task=task, model=model, data_dir=data_dir, out_dir=out_dir,
                          grid=grid, reinit_head=reinit_head)
    check_sweep(cfg, point, overrides, {"--model": ("model", model), "--task": ("data.task", task),
                                        "--data-dir": ("data.data_dir", data_dir)})
    if print_config:
        print_config_and_exit(cfg, format)
    train_or_sweep(cfg, run_finetune, resume, format, point)
