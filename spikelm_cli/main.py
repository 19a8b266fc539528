"""The `spikelm` command. Each verb lives in `commands/<verb>.py`; only built verbs are registered."""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings

import typer

from .commands.convert import convert_command
from .commands.distill import distill_command
from .commands.energy import EnergyCommand, energy_command
from .commands.eval import eval_command
from .commands.finetune import finetune_command
from .commands.pretrain import pretrain_command
from .errors import Terminated

app = typer.Typer(
    name="spikelm",
    help="Spiking language models (SpikeLM, ICML 2024): convert, train, evaluate and audit the energy of "
    "spike-driven BERT, BART and Llama-family decoders.\n\n"
    "Example: spikelm convert minilm --out runs/minilm-spiking\nExample: spikelm energy --k 2 3 4",
    no_args_is_help=True,
    invoke_without_command=False,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    """Eager: runs while the options are parsed, before typer asks for a command."""
    if value:
        from spikelm_core import __version__

        typer.echo(f"spikelm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    """Spiking language models (SpikeLM, ICML 2024).

    Example: spikelm convert minilm --out runs/minilm-spiking
    """


app.command("convert")(convert_command)
app.command("finetune")(finetune_command)
app.command("eval")(eval_command)
app.command("distill")(distill_command)
app.command("pretrain")(pretrain_command)
app.command("energy", cls=EnergyCommand)(energy_command)


def _quiet_libraries() -> None:
    """Keep library chatter (load reports, progress bars) off the terminal; errors still surface."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not sys.stderr.isatty():  # datasets' tqdm bars redraw with carriage returns: garbage in a log file
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", module="fvcore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("fvcore").setLevel(logging.ERROR)


def _terminated(signum, frame) -> None:
    """SIGTERM (a scheduler's or torchrun's stop) unwinds as Ctrl-C does, so every cleanup that handles
    Ctrl-C runs (`io.atomic_output_dir`, run directories, the temporary files of `datasets`); the
    exit status is 128 + 15 (`errors.friendly_errors`)."""
    raise Terminated()


def main() -> None:
    _quiet_libraries()
    signal.signal(signal.SIGTERM, _terminated)
    app()


if __name__ == "__main__":
    main()
