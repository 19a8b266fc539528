"""`spikelm pretrain`: masked-LM pretraining of a spiking BERT on local text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spikelm_core.config import PretrainConfig, load_config

from .. import render
from ..errors import friendly_errors
from ..params import FormatOpt, OutputFormat
from ._training import OverridesOpt, ResumeOpt, RunOutDirOpt


@friendly_errors
def pretrain_command(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (or a run's run_config.yaml).")],
    overrides: OverridesOpt = None,
    out_dir: RunOutDirOpt = None,
    resume: ResumeOpt = "never",
    format: FormatOpt = OutputFormat.table,
) -> None:
    """Pretrain a spiking BERT with masked-LM (optionally NSP and a dense teacher) on text files.

    Example: spikelm pretrain recipes/tiny/pretrain.yaml --out-dir runs/tiny-pretrain
    Multi-GPU: torchrun --nproc-per-node 8 -m spikelm_cli pretrain recipes/bert_base/pretrain_base.yaml
    """
    from spikelm_core.training import run_pretrain

    cfg = load_config(PretrainConfig, recipe, overrides or [], out_dir=str(out_dir) if out_dir else None)
    render.enable_library_logs()
    result = run_pretrain(cfg, resume=resume, callbacks=[render.progress_callback()])
    render.training_result(result, format)
