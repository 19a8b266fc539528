"""`spikelm distill`: knowledge distillation from a dense teacher into a spiking student."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spikelm_core.config import DistillConfig
from spikelm_core.errors import SpikelmError

from .. import render
from ..errors import friendly_errors
from ..params import FormatOpt, OutputFormat
from ._training import (DataDirOpt, GridOpt, ModelOpt, OverridesOpt, PointOpt, PrintConfigOpt, ResumeOpt,
                        RunOutDirOpt, TaskOpt, check_sweep, load_run_config, print_config_and_exit,
                        recipe_or_default, train_or_sweep)


@friendly_errors
def distill_command(
    recipe: Annotated[Optional[Path], typer.Argument(help="Recipe YAML (or a run's run_config.yaml).")] = None,
    task: TaskOpt = None,
    model: ModelOpt = None,
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="Dense teacher fine-tuned on the task: a directory, alias or hub id (beats distill.teacher). Where the recipe's student is its teacher's twin (model equal to distill.teacher), the student too, unless --model is given.")] = None,
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
    """Distill a dense teacher into a spiking student (logit KL, hidden-state and attention MSE).

    Example (a tiny dense teacher, then its spiking twin; seconds on CPU):
    spikelm finetune recipes/tiny/finetune.yaml -s neuron.kind=dense --out-dir runs/tiny-teacher
    spikelm distill recipes/tiny/distill.yaml --teacher runs/tiny-teacher/final --out-dir runs/tiny-distill

    A spiking decoder (KL to the dense model's next-token distribution; recipes/smollm2/distill_wikitext2.yaml):
    spikelm distill --task wikitext2 -s data.train_file=../shared/data/text/wikitext-2/valid.txt -s data.validation_file=../shared/data/text/wikitext-2/test.txt

    Sweep (one run per point, then a table and a Pareto plot of metric against energy):
    spikelm distill recipes/minilm/sst2_distill_spikelm.yaml --data-dir ../shared/data/glue -g neuron.k=2,3,4 --out-dir runs/k-sweep
    (-p k2 runs that point alone now; the same call without -p later runs the rest)
    """
    from spikelm_core.training import run_distill

    path = recipe_or_default(recipe, task, "distill")
    render.enable_library_logs()
    common = dict(task=task, data_dir=data_dir, out_dir=out_dir, reinit_head=reinit_head)
    flags = {"--model": ("model", model), "--teacher": ("distill.teacher", teacher), "--task": ("data.task", task),
             "--data-dir": ("data.data_dir", data_dir)}  # as given (before --teacher stands in for the twin's model)
    if teacher is not None and model is None and _student_is_twin(path, overrides, common, grid):
        model = teacher  # the recipe's student is its teacher's spiking twin: so with the teacher given here
    cfg = load_run_config(DistillConfig, path, overrides, model=model, grid=grid, **common,
                          **{"distill.teacher": teacher})
    check_sweep(cfg, point, overrides, flags)
    if print_config:
        print_config_and_exit(cfg, format)
    train_or_sweep(cfg, run_distill, resume, format, point)


def _student_is_twin(path, overrides, common, grid=None) -> bool:
    """Whether the recipe (with its -s overrides and --grid) starts the student from its own teacher."""
    try:
        recipe = load_run_config(DistillConfig, path, overrides, grid=grid, **common)
    except SpikelmError:  # e.g. no teacher in the recipe: the load with --teacher says what is wrong
        return False
    return recipe.model == recipe.distill.teacher
