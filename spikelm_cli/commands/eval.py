"""`spikelm eval`: dev metrics (GLUE) or ROUGE (xsum, cnn_dm) and firing rates of a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spikelm_core.config import EvalConfig, load_config

from .. import render
from ..errors import friendly_errors
from ..params import FormatOpt, OutputFormat
from ._training import DataDirOpt, OverridesOpt, RunOutDirOpt


@friendly_errors
def eval_command(
    source: Annotated[str, typer.Argument(help="Checkpoint directory (e.g. runs/sst2/final) or an eval recipe (.yaml).")],
    task: Annotated[Optional[str], typer.Option("--task", help="GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte) or summarization task (xsum, cnn_dm: beam search + ROUGE).")] = None,
    overrides: OverridesOpt = None,
    data_dir: DataDirOpt = None,
    out_dir: RunOutDirOpt = None,
    format: FormatOpt = OutputFormat.table,
) -> None:
    """Evaluate a checkpoint: GLUE dev metrics, or beam-search ROUGE for xsum/cnn_dm; per-layer firing rates.

    Example: spikelm eval runs/sst2/final --task sst2 --data-dir ../shared/data/glue --format json
    """
    from spikelm_core.training.evaluate import run_eval

    is_recipe = source.endswith((".yaml", ".yml"))
    cfg = load_config(
        EvalConfig, Path(source) if is_recipe else None, overrides or [],
        model=None if is_recipe else source, glue_task=task, out_dir=str(out_dir) if out_dir else None,
        **{"data.data_dir": str(data_dir) if data_dir else None},
    )
    render.enable_library_logs()
    render.eval_result(run_eval(cfg), format)
