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
    plot_firing: Annotated[Optional[Path], typer.Option(
        "--plot-firing", help="Also draw the firing rate per token (columns) and layer (rows) of one input as this PNG, "
        "with its data as JSON beside it (same name, .json); dead layers are hatched. The input is the first dev "
        "example, or --firing-example / --firing-text. See docs/firing-pictures.md. Example: --plot-firing firing.png "
        "--firing-text 'a gripping , funny film'.")] = None,
    firing_text: Annotated[Optional[str], typer.Option(
        "--firing-text", help="A sentence for --plot-firing to picture instead of a dev example (one segment; "
        "BART: encoder only).")] = None,
    firing_example: Annotated[Optional[int], typer.Option(
        "--firing-example", help="Index of the example --plot-firing pictures, in the first split scored (default "
        "0; BART: the decoder is teacher-forced with its reference summary).")] = None,
) -> None:
    """Evaluate a checkpoint: GLUE dev metrics, or beam-search ROUGE for xsum/cnn_dm; per-layer firing rates.

    Example: spikelm eval runs/sst2/final --task sst2 --data-dir ../shared/data/glue --format json

    Firing picture: spikelm eval runs/sst2/final --task sst2 --data-dir ../shared/data/glue --plot-firing firing.png
    """
    from spikelm_core.errors import ConfigError
    from spikelm_core.training.evaluate import run_eval

    is_recipe = source is not None and source.endswith((".yaml", ".yml"))
    if source is None and model is None:
        raise ConfigError("give a model to evaluate (MODEL argument or --model) or an eval recipe",
                          hint="spikelm eval runs/sst2/final --task sst2 --data-dir ../shared/data/glue")
    if plot_firing is None and (firing_text is not None or firing_example is not None):
        raise ConfigError("--firing-text and --firing-example choose the input of --plot-firing",
                          hint="add --plot-firing firing.png")
    if plot_firing is not None:
        from spikelm_core.firing_plots import check_picture_path

        check_picture_path(plot_firing)  # fail before any work
    render.enable_library_logs()
    cfg = load_run_config(EvalConfig, Path(source) if is_recipe else None, overrides, task=task,
                          model=model or (None if is_recipe else source), data_dir=data_dir, out_dir=out_dir)
    if print_config:
        print_config_and_exit(cfg)
    if plot_firing is not None:  # before scoring: a bad input fails at once, and the picture is kept
        from spikelm_core.firing_plots import write_firing_picture
        from spikelm_core.training.firing_picture import run_firing_picture

        picture = run_firing_picture(cfg, text=firing_text, example=firing_example)
        render.firing_picture_written(picture, write_firing_picture(picture, plot_firing))
    render.eval_result(run_eval(cfg), format)
