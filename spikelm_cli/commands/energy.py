"""`spikelm energy`: audited dense-MAC vs spiking-AC energy estimate, swept over k and T."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from typer.core import TyperCommand

from spikelm_core.energy import EnergyArgs, run_energy
from spikelm_core.energy.tables import csv_text, markdown_text
from spikelm_core.errors import ConfigError

from .. import render, render_energy
from ..console import err
from ..errors import friendly_errors
from ..params import ForceOpt

_VARIADIC = ("--k", "--timesteps", "-T")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(inf|nan)$", re.IGNORECASE)


class EnergyCommand(TyperCommand):
    """Lets `--k 2 3 4` and `--timesteps 1 4` take several values (Click options take one each).

    Before parsing, every number that follows such an option is given the option again:
    `--k 2 3 4 -T 1 4` becomes `--k 2 --k 3 --k 4 -T 1 -T 4`. The one positional argument (the
    model) is a path or a name, so a bare number after `--k` or `-T` belongs to that option (a model
    directory named like a number goes before the option, after `--`, or with `--model`).
    """

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_variadic(args))


COMMAND_CLASS = EnergyCommand  # the class `spikelm_cli.main.load_command` builds `energy` with


def _split_attached(args: list[str]) -> list[str]:
    """`--k=2` -> `--k 2`, `-T1` / `-T=1` -> `-T 1`, so the numbers after them are read the same way."""
    out: list[str] = []
    for i, token in enumerate(args):
        if token == "--":  # what follows is positional
            out += args[i:]
            break
        option, value = None, None
        if token.startswith(("--k=", "--timesteps=")):
            option, _, value = token.partition("=")
        elif token.startswith("-T") and len(token) > 2 and not token.startswith("--"):
            option, value = "-T", token[2:].removeprefix("=")
        out += [option, value] if option is not None and _NUMBER.match(value or "") else [token]
    return out


def expand_variadic(args: list[str]) -> list[str]:
    expanded: list[str] = []
    current: str | None = None
    values = 0
    for token in _split_attached(args):
        if token == "--":
            current = None
            expanded.append(token)
            continue
        if current is not None and (values == 0 or _NUMBER.match(token)):
            if values > 0:
                expanded.append(current)
            expanded.append(token)
            values += 1
            continue
        current, values = (token, 0) if token in _VARIADIC else (None, 0)
        expanded.append(token)
    return expanded


class EnergyFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


class Memory(str, Enum):
    none = "none"
    weight_stationary = "weight-stationary"
    event_driven = "event-driven"
    both = "both"


class Profile(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


@friendly_errors
def energy_command(
    source: Annotated[Optional[str], typer.Argument(
        metavar="MODEL", show_default=False,
        help="The model to audit, as --model (the two are the same; give one).")] = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m",
        help="Spiking checkpoint dir, dense BERT, BART or Llama dir (converted on the fly), alias ('minilm', "
        "'smollm2') or hub id, or a dir with only config.json (architecture audit, random weights). "
        "Default: the bundled MiniLM.")] = None,
    k: Annotated[Optional[list[float]], typer.Option(
        "--k", help="Frequency coefficient(s) k to sweep (a_t = k * mean|u_t|; larger k: fewer spikes), e.g. --k 2 3 4. Default: the checkpoint's own k "
        "(its saved amplitudes), else 2.")] = None,
    timesteps: Annotated[Optional[list[int]], typer.Option(
        "--timesteps", "-T", help="Time step count(s) T to sweep, e.g. -T 1 4. Default: the checkpoint's own T, else 4.")] = None,
    seq_len: Annotated[Optional[int], typer.Option(
        help="Tokens per sequence, at least 3 (MACs are per sample at this length); for BART the source length, for a "
        "Llama also the prompt length of generation. Default: 128, or fewer where the model has fewer "
        "positions (a Llama's prompt and generation share them).")] = None,
    target_len: Annotated[Optional[int], typer.Option(
        help="BART and Llama: tokens generated per input (decoder steps: a BART summary, or a Llama's "
        "continuation of the --seq-len prompt). Default: 64.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="UTF-8 calibration text (default: the packaged text).")] = None,
    batches: Annotated[int, typer.Option(help="Calibration batches: the first calibrates, all are traced.")] = 4,
    batch_size: Annotated[int, typer.Option(help="Sequences per calibration batch.")] = 8,
    profile: Annotated[Profile, typer.Option(help="Energy cost profile (Horowitz, ISSCC 2014, 45 nm).")] = Profile.fp32,
    e_mac: Annotated[Optional[float], typer.Option(help="Override E_MAC in pJ.")] = None,
    e_ac: Annotated[Optional[float], typer.Option(help="Override E_AC in pJ.")] = None,
    memory: Annotated[Optional[Memory], typer.Option(
        "--memory", help="Memory bounds beside the arithmetic: none, weight-stationary, event-driven or both "
        "(default: both, or the cost file's bounds).")] = None,
    memory_cost: Annotated[Optional[str], typer.Option(
        "--memory-cost", help="Cost of a byte moved: lemaire (default, buffer-size dependent), flat, sram, dram, "
        "or a YAML cost file (docs/energy-report.md).")] = None,
    neurobench: Annotated[bool, typer.Option(
        "--neurobench", help="Add NeuroBench-compatible metrics (Footprint, ConnectionSparsity, ActivationSparsity, "
        "SynapticOperations, MembraneUpdates) per sample.")] = False,
    format: Annotated[EnergyFormat, typer.Option("--format", help="table (rich), json, csv or markdown (stdout).")] = EnergyFormat.table,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Also write report.json/.csv/.md and PNG plots to this directory (atomically).")] = None,
    force: ForceOpt = False,
    detail: Annotated[bool, typer.Option("--detail", help="Add the per-component and per-layer breakdown.")] = False,
    count_norm: Annotated[bool, typer.Option("--count-norm", help="Also count LayerNorm (MAC, both sides).")] = False,
    count_neuron_updates: Annotated[bool, typer.Option(
        "--count-neuron-updates", help="Also bill the membrane updates: one AC per element of a neuron that keeps a "
        "membrane, for each step after the first (spiking side only).")] = False,
    count_alpha_scale: Annotated[bool, typer.Option(
        "--count-alpha-scale", help="Also bill the rescaling by alpha left after folding the first step's into the "
        "weights: one MAC per output element of a spike-driven op for each later step (spiking side only).")] = False,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the ratio's confidence interval (0: none).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap (and of random weights / token ids).")] = 0,
) -> None:
    """Estimate dense vs spiking energy (arithmetic, and two memory bounds), sweeping k and T.

    BERT: per sample at --seq-len tokens. BART: encoder once per input
    (--seq-len source tokens), decoder per generated token (--target-len per
    summary), with and without the KV cache. Llama: one forward over --seq-len
    tokens, and per generated token after a --seq-len prompt (--target-len
    tokens), with and without the KV cache.

    Example: spikelm energy --k 2 3 4
    Example: spikelm energy smollm2 --seq-len 64 --target-len 16
    """
    if source is not None and model is not None and source != model:
        raise ConfigError("two models given: the MODEL argument and --model differ",
                          details=[f"MODEL: {source}", f"--model: {model}"], hint="give the model once")
    args = EnergyArgs(
        model=model if model is not None else source,
        ks=tuple(k) if k else None,
        timesteps=tuple(timesteps) if timesteps else None,
        seq_len=seq_len,
        target_len=target_len,
        data=str(data) if data is not None else None,
        batches=batches,
        batch_size=batch_size,
        profile=profile.value,
        e_mac_pj=e_mac,
        e_ac_pj=e_ac,
        count_norm=count_norm,
        count_neuron_updates=count_neuron_updates,
        count_alpha_scale=count_alpha_scale,
        bootstrap=bootstrap,
        seed=seed,
        memory=memory.value if memory is not None else None,
        memory_cost=memory_cost,
        neurobench=neurobench,
    )
    if out is not None:
        from spikelm_core.io import check_output_dir

        check_output_dir(out, force, inputs=[args.model, data, memory_cost])  # fail before any work
    render.enable_library_logs()  # the library's warnings (e.g. a calibration text shorter than one sequence) reach the user
    progress = (lambda message: err.print(f"[dim]{escape(message)} ...[/]")) if format is EnergyFormat.table else None
    report = run_energy(args, progress=progress)
    if format is EnergyFormat.table:
        render_energy.print_table(report, detail=detail)
    elif format is EnergyFormat.json:
        render.print_text(render_energy.json_text(report))
    elif format is EnergyFormat.csv:
        render.print_text(csv_text(report))
        render_energy.print_caveat_to_stderr(report)
    else:
        render.print_text(markdown_text(report, detail=detail))
    if out is not None:
        render_energy.print_written(render_energy.write_outputs(report, out, force=force))
