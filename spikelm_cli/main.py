"""The `spikelm` command. Each verb lives in `commands/<verb>.py`; only built verbs are registered.

A verb's module is imported only to run it or show its own --help (`LazyGroup`): `spikelm --help`,
`spikelm --version` and the shell completion of the verbs answer without importing torch."""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:  # typer (>= 0.29) runs on its own copy of click; the `click` package is not a dependency
    import click

# The verbs in the order `spikelm --help` lists them; each is `<verb>_command` in `commands/<verb>.py`, with
# `COMMAND_CLASS` there when it needs its own click command class.
COMMANDS = ("convert", "finetune", "eval", "distill", "pretrain", "energy")


def summary(verb: str) -> str:
    """The first paragraph of `<verb>_command`'s docstring, read from its source without importing it."""
    tree = ast.parse((Path(__file__).parent / "commands" / f"{verb}.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == f"{verb}_command":
            return (ast.get_docstring(node) or "").split("\n\n")[0]
    raise LookupError(f"commands/{verb}.py has no {verb}_command")


class LazyGroup(TyperGroup):
    """Imports a command only to run it (or to show its own --help): each pulls in torch, transformers and
    the models (seconds of CPU), which `spikelm --help`, `--version` and shell completion of the verbs
    need not wait for. The listing in `spikelm --help` shows each verb's `summary`."""

    _listing = False
    _loaded: dict[str, click.Command] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        if self._listing:
            return TyperCommand(name, help=summary(name))
        if name not in self._loaded:
            self._loaded[name] = load_command(name)
        return self._loaded[name]

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """A mistyped verb gets typer's 'Did you mean ...?', which typer draws from the registered commands, none
        in a lazy group: the same suggestion from `COMMANDS`."""
        name = args[0] if args else None
        if name is not None and name not in COMMANDS and not name.startswith("-") and not ctx.resilient_parsing:
            matches = difflib.get_close_matches(name, COMMANDS)
            if matches:
                ctx.fail(f"No such command {name!r}. Did you mean {', '.join(repr(m) for m in matches)}?")
        return super().resolve_command(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list:
        """Completing a verb's name lists the verbs with their summaries, importing none of them (click
        asks `get_command` of every verb whose name matches); completing a verb's options still loads that
        verb (click resolves it through `get_command` before it gets here)."""
        self._listing = True
        try:
            return super().shell_complete(ctx, incomplete)
        finally:
            self._listing = False


def load_command(verb: str) -> click.Command:
    """The click command of one verb, built by typer from `commands/<verb>.py`. Importing it takes seconds
    (torch, transformers, the models): a Ctrl-C then ends the command as one during its work does
    (`interrupted`, exit 130), not with a traceback from inside an import; SIGTERM is turned into
    `Terminated` from here on (before, nothing needs cleaning up)."""
    _quiet_libraries()
    try:
        module = importlib.import_module(f"{__package__}.commands.{verb}")
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(128 + signal.SIGINT) from None
    signal.signal(signal.SIGTERM, _terminated)
    one = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    one.command(verb, cls=getattr(module, "COMMAND_CLASS", None))(getattr(module, f"{verb}_command"))
    return typer.main.get_command(one)


def version() -> str:
    """`spikelm_core.__version__` (its one home), read from the package's source without importing it."""
    spec = importlib.util.find_spec("spikelm_core")
    init = Path(spec.origin) if spec is not None and spec.origin else None
    if init is not None and init.is_file():
        for node in ast.parse(init.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
                return ast.literal_eval(node.value)
    from spikelm_core import __version__  # not a plain source file (a zip import): import it

    return __version__


app = typer.Typer(
    cls=LazyGroup,
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
        typer.echo(f"spikelm {version()}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    """Spiking language models (SpikeLM, ICML 2024).

    Example: spikelm convert minilm --out runs/minilm-spiking
    """


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
    exit status is 128 + 15 (`errors.friendly_errors`). Installed once a verb's module (and with it
    `errors`) is imported (`load_command`)."""
    from .errors import Terminated

    raise Terminated()


def main() -> None:
    # One program name however it is started (`spikelm`, `python -m spikelm_cli`, `torchrun -m spikelm_cli`):
    # click would otherwise call it `python -m spikelm_cli`, and --show-completion / --install-completion
    # would write a script for a command named `python` (and a file named `python -m spikelm_cli.sh`).
    app(prog_name="spikelm")


if __name__ == "__main__":
    main()
