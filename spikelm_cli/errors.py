"""Turn `SpikelmError`s into `error: ...` lines on stderr and an exit code, without a traceback.

`SPIKELM_DEBUG=1` re-raises instead. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
import os
import signal

import typer
from rich.markup import escape

from spikelm_core.errors import OutputError, SpikelmError

from .console import err


def report(exc: SpikelmError) -> None:
    """`error: ...`, its details and hint. Under torchrun a rank other than 0 says its message and
    details on one line naming the rank, without the hint (most errors stop every rank alike: the main
    process gives the whole)."""
    rank = int(os.environ.get("RANK", "0") or 0)
    if rank > 0:
        details = f" ({'; '.join(exc.details)})" if exc.details else ""
        err.print(f"[bold red]error[/] {escape(f'[rank {rank}]: {exc.message}{details}')}", soft_wrap=True)
        return
    err.print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)
    for d in exc.details:
        err.print(f"  - {escape(d)}", soft_wrap=True)
    if exc.hint:
        err.print(f"[yellow]hint:[/] {escape(exc.hint)}", soft_wrap=True)


def run_script(main) -> None:
    """A script's `main()` (benchmarks/*.py) run as the CLI runs a command: a SpikelmError (a bad model,
    task or data folder) or a neuron setting out of range gives its `error:` lines and exit code, not
    a traceback."""
    from pydantic import ValidationError

    try:
        main()
    except SpikelmError as exc:
        report(exc)
        raise SystemExit(exc.exit_code) from None
    except ValidationError as exc:
        from spikelm_core.errors import ConfigError
        from spikelm_core.neurons.settings import validation_messages

        report(ConfigError("invalid neuron settings", details=validation_messages(exc, "neuron")))
        raise SystemExit(2) from None


#: errno values that mean "the output location cannot take the write", not a bug.
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EBUSY, errno.EDQUOT, errno.EFBIG}


def output_error(exc: OSError) -> OutputError:
    where = exc.filename or "the output location"
    return OutputError(
        f"cannot write '{where}': {exc.strerror or exc}",
        hint="free disk space, choose a writable location (--out / --out-dir), or check the permissions; "
        "earlier outputs and checkpoints are left as they were",
    )


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as a KeyboardInterrupt so that every cleanup written for Ctrl-C runs (libraries
    such as `datasets` clean their temporary files on KeyboardInterrupt but not on SystemExit)."""


def friendly_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpikelmError as exc:
            if os.environ.get("SPIKELM_DEBUG") == "1":
                raise
            report(exc)
            raise typer.Exit(exc.exit_code) from None
        except Exception as exc:  # an OSError, or a library's wrapper around one (safetensors on a full disk)
            from spikelm_core.io import wrapped_os_error

            wrapped = exc if isinstance(exc, OSError) else wrapped_os_error(exc)
            if wrapped is None or wrapped.errno not in _OUTPUT_ERRNOS or os.environ.get("SPIKELM_DEBUG") == "1":
                raise
            error = output_error(wrapped)
            report(error)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (`Terminated`, raised by the CLI's handler)
            from spikelm_core.training.rundir import is_main_process

            stopped = isinstance(exc, Terminated)
            if is_main_process():  # every rank is stopped; the main process says so
                err.print(f"[red]{'terminated' if stopped else 'interrupted'}[/]")
            raise typer.Exit(128 + (signal.SIGTERM if stopped else signal.SIGINT)) from None

    return wrapper
