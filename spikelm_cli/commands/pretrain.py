"""`spikelm pretrain`: masked-LM pretraining of a spiking BERT on local text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spikelm_core.config import PretrainConfig

from .. import render
from ..errors import friendly_errors
from ..params import FormatOpt, OutputFormat
from ._training import (ModelOpt, OverridesOpt, PrintConfigOpt, ResumeOpt, RunOutDirOpt,
                        load_run_config, print_config_and_exit)


@friendly_errors
def pretrain_command(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (or a run's run_config.yaml).")],
    model: ModelOpt = None,
    text: Annotated[Optional[Path], typer.Option("--text", help="Text file, or directory of .txt files (its subfolders too), to pretrain on (beats data.source).")] = None,
    held_out: Annotated[Optional[Path], typer.Option(
        "--held-out", help="Held-out text (file, or directory of .txt files and its subfolders) scored after training: masked-LM loss, "
        "accuracy and perplexity on masks fixed for every run (beats data.validation_file).")] = None,
    overrides: OverridesOpt = None,
    out_dir: RunOutDirOpt = None,
    resume: ResumeOpt = "never",
    print_config: PrintConfigOpt = False,
    format: FormatOpt = OutputFormat.table,
) -> None:
    """Pretrain a spiking BERT with masked-LM (optionally NSP and a dense teacher) on text files.

    Example (a tiny model from scratch; seconds on CPU): spikelm pretrain recipes/tiny/pretrain.yaml --out-dir runs/tiny-pretrain
    From the bundled MiniLM's weights instead (the recipe's model sizes dropped): add --model minilm -s model_config=null
    Scored on held-out text after training: add --held-out ../shared/data/text/wikitext-2/test.txt
    Multi-GPU: torchrun --nproc-per-node 8 -m spikelm_cli pretrain recipes/bert_base/pretrain_base.yaml
    """
    from spikelm_core.training import run_pretrain

    render.enable_library_logs()
    cfg = load_run_config(PretrainConfig, recipe, overrides, model=model, out_dir=out_dir,
                          **{"data.source": str(text) if text else None,
                             "data.validation_file": str(held_out) if held_out else None})
    if print_config:
        print_config_and_exit(cfg, format)
    result = run_pretrain(cfg, resume=resume, callbacks=[render.progress_callback()])
    render.training_result(result, format)
