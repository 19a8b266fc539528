"""`spikelm convert`: dense BERT or BART -> calibrated spiking model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spikelm_core.convert import NeuronSettings, convert_model

from .. import render
from ..console import err
from ..errors import friendly_errors
from ..params import ForceOpt, FormatOpt, Levels, NeuronKind, OutputFormat, Reset


@friendly_errors
def convert_command(
    source: Annotated[str, typer.Argument(help="Local model directory, alias (bert-base, bert-large, bart-base, bart-large, minilm) or hub id.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory for the spiking model.")],
    neuron: Annotated[NeuronKind, typer.Option(help="elastic_bi (SpikeLM) or lif (LIF-BERT baseline).")] = NeuronKind.elastic_bi,
    timesteps: Annotated[int, typer.Option("--timesteps", "-T", help="Time steps T per forward.")] = 4,
    k: Annotated[float, typer.Option(help="Frequency coefficient: a_t = k * mean|u_t|.")] = 2.0,
    reset: Annotated[Reset, typer.Option(help="Membrane reset form.")] = Reset.official,
    levels: Annotated[Levels, typer.Option(help="Spike levels.")] = Levels.ternary,
    calib_data: Annotated[Optional[Path], typer.Option(help="UTF-8 text file to calibrate on (default: packaged text).")] = None,
    calib_batches: Annotated[int, typer.Option(help="Batches of text: the first calibrates, all measure firing.")] = 4,
    batch_size: Annotated[int, typer.Option(help="Sequences per calibration batch.")] = 8,
    seq_len: Annotated[int, typer.Option(help="Tokens per calibration sequence.")] = 128,
    tokenizer: Annotated[Optional[str], typer.Option(help="Tokenizer directory if SOURCE has none.")] = None,
    force: ForceOpt = False,
    format: FormatOpt = OutputFormat.table,
) -> None:
    """Convert a dense BERT or BART into a spiking model, calibrate its amplitudes and save it.

    Example: spikelm convert minilm --out runs/minilm-spiking
    """
    settings = NeuronSettings(
        neuron_kind=neuron.value, num_timesteps=timesteps, k=k, reset=reset.value, levels=levels.value
    )
    if format is OutputFormat.table:
        err.print(f"converting [bold]{source}[/] ...")
    result = convert_model(
        source, out, settings, calib_data=calib_data, calib_batches=calib_batches, batch_size=batch_size,
        seq_len=seq_len, tokenizer=tokenizer, force=force,
    )
    if format is OutputFormat.json:
        render.print_json(result.to_dict())
    else:
        render.convert_summary(result)
