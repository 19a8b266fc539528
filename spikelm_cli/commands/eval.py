"""`spikelm eval`: dev metrics (GLUE) or ROUGE (xsum, cnn_dm) and firing rates of a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spikelm_core.config import EvalConfig

from .. import render
from ..errors import friendly_errors
from ..params import FormatOpt, OutputFormat
from ._training import (DataDirOpt, ModelOpt, OverridesOpt, PrintConfigOpt, TaskOpt,
                        load_run_config, print_config_and_exit)


@friendly_errors
def eval_command(
    source: Annotated[Optional[str], typer.Argument(help="Checkpoint directory (e.g. runs/sst2/final), alias, or an eval recipe (.yaml).")] = None,
    task: TaskOpt = None,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
    overrides: OverridesOpt = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", help="Where eval_results.json and eval_config.yaml go (a training run's directory is fine: its run_config.yaml is left alone).")] = None,
    print_config: PrintConfigOpt = False,
    format: FormatOpt = OutputFormat.table,
) -> None:
    """Evaluate a checkpoint: GLUE dev metrics, or beam-search ROUGE for xsum/cnn_dm; per-layer firing rates.

    Example: spikelm eval runs/sst2/final --task sst2 --data-dir ../shared/data/glue --format json
    """
    from spikelm_core.errors import ConfigError
    from spikelm_core.training.evaluate import run_eval

    is_recipe = source is not None and source.endswith((".yaml", ".yml"))
    if source is None and model is None:
        raise ConfigError("give a model to evaluate (MODEL argument or --model) or an eval recipe",
                          hint="spikelm eval runs/sst2/final --task sst2 --data-dir ../shared/data/glue")
    render.enable_library_logs()
    cfg = load_run_config(EvalConfig, Path(source) if is_recipe else None, overrides, task=task,
                          model=model or (None if is_recipe else source), data_dir=data_dir, out_dir=out_dir)
    if print_config:
        print_config_and_exit(cfg)
    render.eval_result(run_eval(cfg), format)
